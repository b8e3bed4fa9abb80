"""Reading and writing the IDX format of MNIST and Fashion-MNIST.

An IDX file starts with a magic number: two zero bytes, a dtype code and the number of
dimensions. Each dimension follows as a big-endian ``uint32``, then the data, big-endian, in
C order. Files may be gzip-compressed.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from bioplaus.data.payload import DEFAULT_HINT, data_error, read_payload

_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in _DTYPES.items()}
_KNOWN = ", ".join(f"0x{code:02X} ({dtype.newbyteorder('=').name})" for code, dtype in _DTYPES.items())


def read_idx(path: str | os.PathLike[str], hint: str = DEFAULT_HINT) -> np.ndarray:
    """Read an IDX file, plain or gzip-compressed, into a native-endian array.

    Args:
        path: The file to read.
        hint: How to get a good copy of the file; it ends every error message.

    Returns:
        A writable array with the file's shape and dtype.

    Raises:
        DataError: If the file is unreadable, not an IDX file, has an unknown dtype code, a
            truncated header, or a payload shorter or longer than its dimensions promise. The
            message names the file.
    """
    path = Path(path)
    data = read_payload(path, hint)
    if len(data) < 4:
        raise data_error(path, f"truncated IDX header: {len(data)} bytes, the magic number alone needs 4", hint)
    if data[0] != 0 or data[1] != 0:
        raise data_error(path, f"not an IDX file (magic bytes {data[:4].hex()} do not start with two zero bytes)", hint)
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise data_error(path, f"unknown IDX dtype code 0x{code:02X} (known: {_KNOWN})", hint)
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise data_error(
            path,
            f"truncated IDX header: {ndim} dimensions need {header_len} bytes, the file has {len(data)}",
            hint,
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = _DTYPES[code]
    count = math.prod(shape)
    expected = count * dtype.itemsize
    found = len(data) - header_len
    if found != expected:
        kind = "truncated IDX payload" if found < expected else "IDX payload longer than its dimensions promise"
        raise data_error(
            path,
            f"{kind}: shape {shape} of {dtype.newbyteorder('=').name} needs {expected} bytes "
            f"after the {header_len}-byte header, found {found}",
            hint,
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header_len)
    return array.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def write_idx(path: str | os.PathLike[str], array: ArrayLike) -> None:
    """Write an array as an IDX file, gzip-compressed if the name ends with ``.gz``.

    Args:
        path: The file to write (replaced if it exists).
        array: The data; its dtype must be uint8, int8, int16, int32, float32 or float64.

    Raises:
        DataError: If the dtype has no IDX code.
    """
    path = Path(path)
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES:
        raise data_error(
            path,
            f"cannot write dtype {array.dtype} as IDX",
            "convert it to uint8, int8, int16, int32, float32 or float64",
        )
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, _CODES[native], array.ndim, *array.shape)
    payload = header + array.astype(native.newbyteorder(">")).tobytes()
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    path.write_bytes(payload)
