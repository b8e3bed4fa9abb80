"""Small C kernels for the hot loops of bioplaus, compiled on first use and loaded with :mod:`ctypes`.

Some rules cost more in PyTorch's per-operation overhead than in arithmetic: BDETT's threshold is
about twenty element-wise operations on a few thousand numbers per time step. A kernel here does
the same arithmetic in one pass. Each kernel is an optional accelerator, never a requirement:

* the C source ships with the package (``bioplaus/native/*.c`` and the shared ``*.h``) and is compiled by the system's C
  compiler (``$CC``, else ``cc``, ``gcc``, ``clang``) with ``-O3 -march=native`` into a cache folder
  (``$BIOPLAUS_CACHE_DIR``, else ``$XDG_CACHE_HOME/bioplaus``, else ``~/.cache/bioplaus``, else the
  temporary folder), under a name that hashes the source and headers, the flags, the compiler and this CPU, so
  a shared home folder never hands one machine's binary to another;
* compilation takes well under a second, happens once per source and machine, and is safe when
  several processes (``pytest -n``, sweeps) race for it;
* where no compiler works, or ``BIOPLAUS_NATIVE=0`` is set, :func:`load` returns ``None`` and the
  caller runs its PyTorch path, which is the reference the kernel is tested against.

:func:`status` tells which kernels loaded and why the others did not.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

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


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_identity() -> str:
    """What ``-march=native`` depends on: the architecture and, on Linux, the CPU model and flags."""
    parts = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            parts += sorted({line.strip() for line in cpuinfo if line.startswith(("model name", "flags", "Features"))})
    except OSError:
        parts.append(platform.processor())
    return "\n".join(parts)


def _compile(name: str, compiler: str, flags: tuple[str, ...], folders: list[Path]) -> Path:
    source = SOURCE_DIR / f"{name}.c"
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    headers = [header.read_text() for header in sorted(SOURCE_DIR.glob("*.h"))]
    key = hashlib.sha256("\0".join([source.read_text(), *headers, *flags, version, _cpu_identity()]).encode())
    key = key.hexdigest()
    errors = []
    for folder in folders:
        target = folder / f"{name}-{key[:16]}{'.dylib' if platform.system() == 'Darwin' else '.so'}"
        if target.exists():
            return target
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                built = Path(scratch) / target.name
                command = [compiler, *flags, "-shared", "-fPIC", "-o", str(built), str(source), "-lm"]
                done = subprocess.run(command, capture_output=True, text=True, timeout=300)
                if done.returncode != 0:
                    raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
                os.replace(built, target)  # atomic: a racing process sees no file or a whole one
            return target
        except OSError as err:  # an unwritable cache folder: try the next one
            errors.append(f"{folder}: {err}")
    raise RuntimeError("no writable folder for compiled kernels: " + "; ".join(errors))


def load(name: str) -> ctypes.CDLL | None:
    """The compiled kernel library ``name`` (``bioplaus/native/<name>.c``), or ``None`` if unavailable.

    The first call compiles (or finds in the cache) and loads; later calls return the same object.
    The reason for a ``None`` is in :func:`status`.
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
        folders = [cache_dir(), Path(tempfile.gettempdir()) / f"bioplaus-{os.getuid() if hasattr(os, 'getuid') else 0}"]
        for flags in FLAG_SETS:
            try:
                library = ctypes.CDLL(str(_compile(name, compiler, flags, folders)))
                _reasons[name] = f"compiled with {' '.join(flags)}"
                break
            except (RuntimeError, OSError, subprocess.SubprocessError) as err:
                failures.append(str(err))
    if library is None:
        _reasons[name] = "unavailable: " + " | ".join(failures)
    _loaded[name] = library
    return library


def check_backend(backend: str, name: str, owner: str) -> str:
    """Validate a layer's ``backend`` choice for kernel ``name`` (one of :data:`BACKENDS`).

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
    """Forget loaded kernels and reasons (the next :func:`load` looks again; for tests)."""
    _loaded.clear()
    _reasons.clear()
