"""Unpickling data files without running code: only the classes and functions a numeric batch needs."""

from __future__ import annotations

import codecs
import io
import pickle
from collections.abc import Callable

import numpy as np


def _numpy_rebuilders() -> dict[str, Callable[..., object]]:
    """The functions numpy pickles arrays with, found from numpy itself (their module moved in numpy 2)."""
    probe = np.zeros(1, np.uint8)
    found = [probe.__reduce_ex__(protocol)[0] for protocol in (2, 5)]
    return {function.__name__: function for function in found}


_REBUILDERS = _numpy_rebuilders()
_ALLOWED: dict[tuple[str, str], object] = {
    ("_codecs", "encode"): codecs.encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{
        (module, name): function
        for module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric")
        for name, function in _REBUILDERS.items()
    },
}
"""What a pickle may name: text-to-bytes (Python 3 pickles ``bytes`` that way at protocol 2) and numpy's array
and dtype reconstruction, under the module names numpy 1 and numpy 2 write."""


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only builtin containers and numpy arrays are allowed"
            )
        return _ALLOWED[module, name]


def restricted_loads(payload: bytes, *, encoding: str = "bytes") -> object:
    """Unpickle ``payload`` allowing only builtin values (dicts, lists, tuples, numbers, strings, bytes) and numpy
    arrays and dtypes.

    A pickle names the callables that rebuild its objects, and ``pickle.loads`` imports and calls whatever it
    names (``os.system`` included). Here any name outside numpy's array reconstruction is refused before it is
    looked up, so a crafted file raises and runs nothing.

    Args:
        payload: The pickled bytes.
        encoding: How Python 2 ``str`` objects are decoded (``"bytes"`` keeps them as bytes).

    Returns:
        The unpickled object.

    Raises:
        pickle.UnpicklingError: If the pickle names anything else, or is malformed.
    """
    return _Restricted(io.BytesIO(payload), encoding=encoding).load()
