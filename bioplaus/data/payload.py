"""Reading a data file's bytes, gunzipping them when the file is gzip-compressed."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

from bioplaus.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_HINT = "replace the file with a good copy"


def data_error(path: str | os.PathLike[str], problem: str, hint: str = DEFAULT_HINT) -> DataError:
    """Build the `DataError` for a bad data file: the file, the problem, then how to fix it.

    Args:
        path: The offending file.
        problem: What is wrong with it, without a trailing period.
        hint: How to get a good copy of the file.

    Returns:
        The error, ready to raise.
    """
    return DataError(f"{path}: {problem}; {hint.rstrip('.')}.")


def read_payload(path: str | os.PathLike[str], hint: str = DEFAULT_HINT) -> bytes:
    """Return the contents of a file, gunzipped if it starts with the gzip magic bytes.

    Compression is recognised by the file's first two bytes (``1f 8b``), not by its name, so a
    gzip file without ``.gz`` and a plain file named ``*.gz`` both read correctly.

    Args:
        path: The file to read.
        hint: How to get a good copy; it ends every error message.

    Returns:
        The (decompressed) bytes.

    Raises:
        DataError: If the file cannot be read or its gzip stream is corrupt or truncated.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise data_error(path, f"cannot read the file ({exc.strerror or exc})", hint) from exc
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise data_error(path, f"corrupt or truncated gzip stream ({exc})", hint) from exc
