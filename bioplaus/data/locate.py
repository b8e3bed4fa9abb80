"""Finding the folder that holds a data set's files.

Without an explicit ``root`` the search order is ``$BIOPLAUS_DATA/<name>``, ``$BIOPLAUS_DATA``,
the loader's system folders (e.g. ``/usr/share/datasets/fashion-mnist`` from a Debian package),
then ``~/.cache/bioplaus/<name>``. A folder named by the user (``root``) is the only place
looked at: when it is missing or incomplete that is an error, never silently replaced.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bioplaus.errors import DataError

ENV_VAR = "BIOPLAUS_DATA"
DEFAULT_HOME = "~/.cache/bioplaus"
DEFAULT_INSTRUCTIONS = (
    f"Put the files in one of these folders, set {ENV_VAR} to the folder that holds them, or pass root=<folder>."
)


def data_home() -> Path:
    """Return the folder for downloaded data: ``$BIOPLAUS_DATA`` if set, else ``~/.cache/bioplaus``.

    Returns:
        The folder (which need not exist yet).
    """
    return Path(os.environ.get(ENV_VAR) or DEFAULT_HOME).expanduser()


def candidate_folders(
    name: str, root: str | os.PathLike[str] | None = None, system_dirs: Sequence[Path] = ()
) -> list[Path]:
    """List the folders to search for a data set, in order, without duplicates.

    Args:
        name: The data set's folder name, e.g. ``"fashion-mnist"``.
        root: A folder named by the user; if given, only it and ``root/name`` are listed.
        system_dirs: Folders where system packages install the data set.

    Returns:
        The folders to try, first match wins.
    """
    if root is not None:
        base = Path(root).expanduser()
        return [base, base / name]
    folders = []
    env = os.environ.get(ENV_VAR)
    if env:
        folders += [Path(env).expanduser() / name, Path(env).expanduser()]
    folders += [Path(folder) for folder in system_dirs]
    folders.append(Path(DEFAULT_HOME).expanduser() / name)
    return list(dict.fromkeys(folders))


def _variants(filename: str) -> tuple[str, str]:
    """The accepted names of a file: as given, and with ``.gz`` added (or removed)."""
    return (filename, filename[:-3]) if filename.endswith(".gz") else (filename, filename + ".gz")


def _existing(folder: Path, filename: str) -> Path | None:
    """The path of ``filename`` (plain or gzipped) in ``folder``, or None if neither exists."""
    return next((folder / n for n in _variants(filename) if (folder / n).is_file()), None)


def resolve_file(folder: str | os.PathLike[str], filename: str) -> Path:
    """Return the path of a required file in a folder, as named or with ``.gz`` added or removed.

    Args:
        folder: The folder that holds the file.
        filename: The required name, e.g. ``"train-images-idx3-ubyte"``.

    Returns:
        The existing file, preferring the name as given.

    Raises:
        DataError: If neither variant of the name exists in the folder.
    """
    path = _existing(Path(folder), filename)
    if path is None:
        raise DataError(f"{folder}: no file named {' or '.join(_variants(filename))}")
    return path


def missing_files(folder: Path, required: Sequence[str]) -> list[str]:
    """List the required files that a folder lacks (all of them if the folder does not exist).

    Args:
        folder: The folder to check.
        required: File names; each may also be present with ``.gz`` added or removed.

    Returns:
        The missing names, in the order given.
    """
    return [filename for filename in required if _existing(folder, filename) is None]


def folder_problem(folder: Path, missing: Sequence[str]) -> str:
    """Say in a few words why a folder does not qualify.

    Args:
        folder: The folder that was tried.
        missing: The required files it lacks.

    Returns:
        ``"does not exist"``, ``"not a folder"`` or ``"missing: a, b"``.
    """
    if not folder.exists():
        return "does not exist"
    if not folder.is_dir():
        return "not a folder"
    return "missing: " + ", ".join(missing)


def not_found_error(name: str, tried: Sequence[str], instructions: str) -> DataError:
    """Build the error for a data set found in none of the folders tried.

    Args:
        name: The data set's name.
        tried: One line per folder tried, saying why it did not qualify.
        instructions: How to get the data.

    Returns:
        The error, ready to raise.
    """
    lines = "\n".join(f"  - {line}" for line in tried)
    return DataError(f"Data set {name!r} not found. Folders tried:\n{lines}\n{instructions}")


def find_dataset_folder(
    name: str,
    required: Sequence[str],
    root: str | os.PathLike[str] | None = None,
    system_dirs: Sequence[Path] = (),
    *,
    instructions: str = DEFAULT_INSTRUCTIONS,
) -> Path:
    """Find the first folder that holds every required file of a data set.

    A file counts as present as named or with ``.gz`` added (or removed, if the name has it).

    Args:
        name: The data set's folder name, e.g. ``"fashion-mnist"``.
        required: The file names the folder must hold.
        root: A folder named by the user. If given, only ``root`` and ``root/name`` are tried.
        system_dirs: Folders where system packages install the data set, tried after
            ``$BIOPLAUS_DATA`` and before ``~/.cache/bioplaus/<name>``.
        instructions: How to get the data; ends the error message.

    Returns:
        The folder.

    Raises:
        DataError: If no folder qualifies. The message lists every folder tried, the files
            missing from those that exist, and the instructions.
    """
    tried = []
    for folder in candidate_folders(name, root, system_dirs):
        missing = missing_files(folder, required)
        if folder.is_dir() and not missing:
            return folder
        tried.append(f"{folder} ({folder_problem(folder, missing)})")
    raise not_found_error(name, tried, instructions)
