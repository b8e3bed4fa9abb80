"""Small C kernels for the hot loops of bioplaus, compiled on first use and loaded with `ctypes`.

Some rules cost more in PyTorch's per-operation overhead than in arithmetic: BDETT's threshold is
about twenty element-wise operations on a few thousand numbers per time step. A kernel here does
the same arithmetic in one pass. Each kernel is an optional accelerator, never a requirement:

* the C source ships with the package (``bioplaus/native/*.c`` and the shared ``*.h``) and is compiled by the system's C
  compiler (``$CC``, else ``cc``, ``gcc``, ``clang``) with ``-O3 -march=native`` into a cache folder
  (``$BIOPLAUS_CACHE_DIR``, else ``$XDG_CACHE_HOME/bioplaus``, else ``~/.cache/bioplaus``, else the
  temporary folder), under a name that hashes the source and headers, the flags, the compiler and this CPU, so
  a shared home folder never hands one machine's binary to another;
* a cache folder is created private (mode 0700), and one that another user owns or that group or others may
  write is refused with a warning (a library planted there would run in this process); each library is stored
  with its SHA-256, written to disk before the library is renamed into place, and one that does not match
  (cut short by a crash, or changed) is rebuilt;
* compilation takes well under a second, happens once per source and machine, and is safe when
  several processes (``pytest -n``, sweeps) race for it;
* where no compiler works, or ``BIOPLAUS_NATIVE=0`` is set, [`load`][bioplaus.native.load] returns ``None`` and the
  caller runs its PyTorch path, which is the reference the kernel is tested against.

Where a step's Python bookkeeping costs as much as its kernel, the step can also be a C++ autograd
operator (``bioplaus/native/<name>.cpp``, [`load_op`][bioplaus.native.load_op]): built against the installed PyTorch's
headers by the C++ compiler, linked with the C kernels, cached the same way (about 20 s, once per
machine and PyTorch version) and registered as ``torch.ops.bioplaus.*``; where it cannot be built,
its caller keeps the Python autograd node over the same kernel.

[`status`][bioplaus.native.status] tells which kernels loaded and why the others did not.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from bioplaus.errors import ConfigError

SOURCE_DIR = Path(__file__).resolve().parent
FLAG_SETS = (
    ("-O3", "-march=native", "-fno-trapping-math", "-fopenmp-simd"),
    ("-O3", "-fno-trapping-math"),
)
"""Compiler flags tried in order; the second set serves compilers without ``-march=native``."""

BACKENDS = ("auto", "native", "torch")
"""What a layer with a kernel may be asked to run: the kernel where it applies, insist on it, or PyTorch only."""

_loaded: dict[str, ctypes.CDLL | None] = {}
_operators: dict[str, bool] = {}
"""Operator libraries tried in this process: loaded (kept for good) or not."""
_log = logging.getLogger(__name__)
_reasons: dict[str, str] = {}


def enabled() -> bool:
    """Whether native kernels may be used (``BIOPLAUS_NATIVE`` is unset or not ``0``/``false``/``no``/``off``)."""
    return os.environ.get("BIOPLAUS_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """The folder that holds compiled kernels (see the module docstring for the order of choice)."""
    if os.environ.get("BIOPLAUS_CACHE_DIR"):
        return Path(os.environ["BIOPLAUS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bioplaus"


def _find(*names: str | None) -> str | None:
    for name in names:
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compiler() -> str | None:
    """The C compiler: ``$CC``, else ``cc``, ``gcc``, ``clang``."""
    return _find(os.environ.get("CC"), "cc", "gcc", "clang")


def _cxx_compiler() -> str | None:
    """The C++ compiler of the autograd nodes: ``$CXX``, else ``c++``, ``g++``, ``clang++``."""
    return _find(os.environ.get("CXX"), "c++", "g++", "clang++")


def _cpu_identity() -> str:
    """What ``-march=native`` depends on: the architecture and, on Linux, the CPU model and flags."""
    parts = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            parts += sorted({line.strip() for line in cpuinfo if line.startswith(("model name", "flags", "Features"))})
    except OSError:
        parts.append(platform.processor())
    return "\n".join(parts)


def _version(compiler: str) -> str:
    return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout


def _owner_problem(path: Path, info: os.stat_result) -> str | None:
    """Why ``path`` (a cache folder or a library in one) may hold code someone else wrote, or ``None``."""
    if os.name == "nt":  # no POSIX owners or modes to check
        return None
    if info.st_uid != os.getuid():
        return f"owned by user id {info.st_uid}, not by you (user id {os.getuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def _private_folder(folder: Path) -> None:
    """Create ``folder`` (mode 0700) if absent; refuse one that another user owns or others may write.

    A compiled kernel is loaded into this process and run, so a folder in which another user could plant
    or replace a library is never used: ``ConfigError`` names it and the fix.
    """
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.mkdir(mode=0o700)
            folder.chmod(0o700)  # mkdir's mode is filtered by the umask
        except FileExistsError:  # a racing process created it: checked below like any other
            pass
    info = folder.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"{folder} is not a folder")
    problem = _owner_problem(folder, info)
    if problem:
        raise ConfigError(
            f"refusing the kernel cache folder {folder}: it is {problem}, so a library in it may not be ours; "
            f"remove it, or run chmod 700 {folder} if you own it and trust its contents, "
            "or set BIOPLAUS_CACHE_DIR to a private folder"
        )


def _digest(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hash_file(library: Path) -> Path:
    """Where the SHA-256 of a cached library is stored: beside it, as ``<library>.sha256``."""
    return library.with_name(library.name + ".sha256")


def _verified(library: Path) -> bool:
    """Whether the cached ``library`` is whole: private to this user and matching its stored SHA-256.

    A library cut short (a crash or full disk during an earlier build) or changed since fails, and is rebuilt.
    """
    try:
        if _owner_problem(library, library.stat()):
            return False
        return _hash_file(library).read_text().strip() == _digest(library)
    except OSError:  # no library, or no hash (a library from before hashes were stored)
        return False


def _durable_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to disk before returning."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _install(built: Path, target: Path) -> None:
    """Move the library ``built`` (in a scratch folder beside ``target``) into place with its hash.

    The hash file is written, flushed to disk and renamed into place before the library is, and the library is
    flushed before its own atomic rename, so a crash leaves no library, or one whose hash does not match
    (rebuilt on the next use), never a truncated library taken for a whole one.
    """
    with open(built, "rb") as handle:
        os.fsync(handle.fileno())
    scratch_hash = built.with_name(built.name + ".sha256")
    _durable_write(scratch_hash, (_digest(built) + "\n").encode())
    os.replace(scratch_hash, _hash_file(target))
    os.replace(built, target)
    if hasattr(os, "O_DIRECTORY"):  # make the renames durable too
        folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def _build(
    stem: str, identity: list[str], commands: Callable[[Path, Path], list[list[str]]], folders: list[Path]
) -> Path:
    """The cached library ``<stem>-<hash of identity>`` in the first private, writable folder, built there
    unless a verified copy is present (`_verified`).

    ``commands(scratch, target)`` lists the commands that build ``target`` in the ``scratch`` folder; the
    result is moved into place atomically with its hash (`_install`), so a racing process sees no file
    or a whole one. A folder that is not private (`_private_folder`) is skipped with a warning.
    """
    headers = [header.read_text() for header in sorted(SOURCE_DIR.glob("*.h"))]
    key = hashlib.sha256("\0".join([*identity, *headers, _cpu_identity()]).encode()).hexdigest()
    errors = []
    for folder in folders:
        target = folder / f"{stem}-{key[:16]}{'.dylib' if platform.system() == 'Darwin' else '.so'}"
        try:
            _private_folder(folder)
        except ConfigError as err:
            warnings.warn(str(err), RuntimeWarning, stacklevel=2)
            errors.append(str(err))
            continue
        except OSError as err:  # an unwritable cache folder: try the next one
            errors.append(f"{folder}: {err}")
            continue
        if _verified(target):
            return target
        if target.exists():
            _log.warning("%s does not match its stored hash: rebuilding it", target)
        try:
            _log.info("compiling %s into %s (once per machine and source)", stem, folder)
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                built = Path(scratch) / target.name
                for command in commands(Path(scratch), built):
                    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
                    if done.returncode != 0:
                        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
                _install(built, target)
            return target
        except OSError as err:  # an unwritable cache folder: try the next one
            errors.append(f"{folder}: {err}")
    raise RuntimeError("no private, writable folder for compiled kernels: " + "; ".join(errors))


def _folders() -> list[Path]:
    return [cache_dir(), Path(tempfile.gettempdir()) / f"bioplaus-{os.getuid() if hasattr(os, 'getuid') else 0}"]


def _c_build(name: str, compiler: str, flags: tuple[str, ...]) -> Path:
    """``<name>.c`` as a shared library for `ctypes`."""
    source = SOURCE_DIR / f"{name}.c"
    return _build(
        name,
        [source.read_text(), *flags, _version(compiler)],
        lambda _, target: [[compiler, *flags, "-shared", "-fPIC", "-o", str(target), str(source), "-lm"]],
        _folders(),
    )


def load(name: str) -> ctypes.CDLL | None:
    """The compiled kernel library ``name`` (``bioplaus/native/<name>.c``), or ``None`` if unavailable.

    The first call compiles (or finds in the cache) and loads; later calls return the same object.
    The reason for a ``None`` is in [`status`][bioplaus.native.status].
    """
    if not enabled():
        _reasons[name] = "disabled by BIOPLAUS_NATIVE"
        return None
    if name in _loaded:
        return _loaded[name]
    library, compiler, failures = None, _compiler(), []
    if compiler is None:
        failures.append("no C compiler found (set CC, or install gcc or clang)")
    else:
        for flags in FLAG_SETS:
            try:
                library = ctypes.CDLL(str(_c_build(name, compiler, flags)))
                _reasons[name] = f"compiled with {' '.join(flags)}"
                break
            except (RuntimeError, OSError, subprocess.SubprocessError) as err:
                failures.append(str(err))
    if library is None:
        _reasons[name] = "unavailable: " + " | ".join(failures)
    _loaded[name] = library
    return library


def _torch_flags() -> tuple[list[str], list[str]]:
    """Compiler and linker flags of a library built against the installed PyTorch (its headers, ABI and
    ``libtorch``), as ``torch.utils.cpp_extension`` would pass them."""
    root = Path(torch.__file__).resolve().parent
    include, lib = root / "include", root / "lib"
    compile_flags = [
        "-std=c++20",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        f"-I{include}",
        f"-I{include / 'torch' / 'csrc' / 'api' / 'include'}",
    ]
    return compile_flags, [f"-L{lib}", f"-Wl,-rpath,{lib}", "-lc10", "-ltorch_cpu", "-ltorch"]


def load_op(name: str, kernels: tuple[str, ...]) -> bool:
    """Build and load the C++ autograd operators of ``bioplaus/native/<name>.cpp``, linked with the C kernels
    ``<kernel>.c``; whether they are available (as ``torch.ops.bioplaus.*``).

    The library includes PyTorch's C++ headers and links ``libtorch``, so it is built for the installed
    PyTorch (its version is part of the cache key) by the C++ compiler (`_cxx_compiler`), once per
    machine: about 20 s, the first time. A process loads it at most once and keeps it (operators cannot be
    unregistered): [`clear`][bioplaus.native.clear] does not forget it. The reason for a ``False`` is in
    [`status`][bioplaus.native.status].
    """
    if not enabled():
        _reasons[name] = "disabled by BIOPLAUS_NATIVE"
        return False
    if name in _operators:
        return _operators[name]
    compiler, cxx, failures = _compiler(), _cxx_compiler(), []
    if compiler is None or cxx is None:
        failures.append("no C and C++ compilers found (set CC and CXX, or install gcc and g++, or clang)")
    else:
        source = SOURCE_DIR / f"{name}.cpp"
        sources = [SOURCE_DIR / f"{kernel}.c" for kernel in kernels]
        compile_flags, link_flags = _torch_flags()
        for flags in FLAG_SETS:

            def commands(scratch: Path, target: Path, flags: tuple[str, ...] = flags) -> list[list[str]]:
                objects = [str(scratch / f"{c.stem}.o") for c in sources]
                pairs = zip(objects, sources, strict=True)
                steps = [[compiler, *flags, "-fPIC", "-c", "-o", o, str(c)] for o, c in pairs]
                link = [cxx, "-O2", *compile_flags, "-shared", "-fPIC", "-o", str(target), str(source), *objects]
                return [*steps, [*link, *link_flags, "-lm"]]

            try:
                identity = [source.read_text(), *(c.read_text() for c in sources), *flags, *compile_flags]
                identity += [_version(compiler), _version(cxx), torch.__version__]
                torch.ops.load_library(str(_build(name, identity, commands, _folders())))
                _reasons[name] = f"compiled with {' '.join(flags)}"
                _operators[name] = True
                return True
            except (RuntimeError, OSError, subprocess.SubprocessError) as err:
                failures.append(str(err))
    _reasons[name] = "unavailable: " + " | ".join(failures)
    _operators[name] = False
    return False


def check_backend(backend: str, name: str, owner: str) -> str:
    """Validate a layer's ``backend`` choice for kernel ``name`` (one of [`BACKENDS`][bioplaus.native.BACKENDS]).

    ``"native"`` needs the kernel to load: where it cannot, ``ConfigError`` gives the reason and the fix.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"{owner} backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "native" and load(name) is None:
        raise ConfigError(
            f"{owner} backend='native' but the C kernel is unavailable ({_reasons.get(name)}); "
            "install a C compiler (gcc or clang), unset BIOPLAUS_NATIVE=0, or use backend='auto'"
        )
    return backend


def status() -> dict[str, str]:
    """For each kernel asked for so far: how it was compiled, or why it is unavailable."""
    return dict(_reasons)


def clear() -> None:
    """Forget loaded kernels and reasons (the next [`load`][bioplaus.native.load] looks again; for tests). Operator
    libraries ([`load_op`][bioplaus.native.load_op]) that loaded stay loaded; those that failed are tried again."""
    _loaded.clear()
    _reasons.clear()
    for name in [name for name, ok in _operators.items() if not ok]:
        del _operators[name]
