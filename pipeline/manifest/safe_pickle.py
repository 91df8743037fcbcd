"""Reading a dataset's annotation pickle without running what it names.

MTL-AQA and FineDiving ship their annotations as pickles, and unpickling runs whatever callable
a pickle names. `load_pickle` admits what annotations are made of and refuses anything else
before it is called, naming it (as ``torch.load(weights_only=True)`` does): plain containers
(dict, list, tuple, set, frozenset), numbers (complex too), strings, bytes, None, booleans, and numpy
arrays, dtypes and scalars of plain dtypes, through the exact globals numpy's pickles name
(``numpy.core.multiarray._reconstruct`` and ``scalar``, their ``numpy._core`` names,
``numpy.core.numeric._frombuffer``, ``numpy.ndarray``, ``numpy.dtype``) and ``_codecs.encode``
(bytes in protocol 2). Object arrays and structured or flagged dtypes are refused too: their
state could make numpy read raw memory as objects. It runs on the pure-Python unpickler, whose
steps it can check (annotation files are small).
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from skill.pipeline.takes import ManifestError


class UnsafePickleError(ManifestError):
    """A pickle that names something a safe load does not admit, or that does not load."""


def _numpy_module(name: str):
    """numpy's ``_core`` module of that name (``core`` before numpy 2)."""
    import importlib

    try:
        return importlib.import_module(f"numpy._core.{name}")
    except ImportError:  # numpy 1
        return importlib.import_module(f"numpy.core.{name}")


_multiarray = _numpy_module("multiarray")
_numeric = _numpy_module("numeric")


class _Refused(pickle.UnpicklingError):
    """Raised inside the unpickler; `load_pickle` turns it into an UnsafePickleError."""


def _plain_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise _Refused(f"the numpy dtype {dtype} (objects, fields or sub-arrays)")
    return dtype


def _dtype(*args) -> np.dtype:
    """``numpy.dtype(...)`` for plain dtypes only."""
    return _plain_dtype(np.dtype(*args))


class _NdarrayClass:
    """What ``numpy.ndarray`` loads as: the argument `_reconstruct` expects, never callable."""


_NDARRAY = _NdarrayClass()


def _reconstruct(subtype, shape, typecode) -> np.ndarray:
    """numpy's array reconstructor, for plain ndarrays only (no subclass runs its code)."""
    if subtype is not _NDARRAY:
        raise _Refused("an array whose class is not numpy.ndarray")
    return _multiarray._reconstruct(np.ndarray, shape, _plain_dtype(np.dtype(typecode)))


def _scalar(dtype, data=None):
    """numpy's scalar reconstructor, for plain dtypes given as bytes (text, from Python 2:
    its bytes were read as latin-1)."""
    if isinstance(data, str):
        data = data.encode("latin-1")
    if not isinstance(dtype, np.dtype) or not isinstance(data, bytes):
        raise _Refused("a numpy scalar that is not a plain dtype and its bytes")
    return _multiarray.scalar(_plain_dtype(dtype), data)


def _frombuffer(buffer, dtype, shape, order):
    """numpy's array-from-buffer reconstructor (protocol 5), for plain dtypes only."""
    if not isinstance(dtype, np.dtype):
        raise _Refused("an array from a buffer without a plain dtype")
    return _numeric._frombuffer(buffer, _plain_dtype(dtype), shape, order)


def _encode(text, encoding="utf-8"):
    """``_codecs.encode``, as protocol 2 writes bytes: a str in latin-1."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode of anything but a str in latin1")
    return text.encode("latin-1")


_ALLOWED: dict[tuple[str, str], Any] = {
    **{(module, name): value for module in ("builtins", "__builtin__")
       for name, value in (("set", set), ("frozenset", frozenset), ("complex", complex))},
    **{(module, "_reconstruct"): _reconstruct
       for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _scalar
       for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _frombuffer
       for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _encode,
}  # fmt: skip


def _dtype_state_problem(dtype: np.dtype, state: Any) -> str:
    """What is wrong with a dtype's pickled state ``(version, byteorder, subarray, names,
    fields, itemsize, alignment, flags[, metadata])``: it may set the byte order (and a
    datetime's unit), nothing that changes what memory means: no sub-array, names or fields,
    the size and flags the dtype has (an array may already use it; flags mark objects)."""
    if not isinstance(state, tuple) or len(state) not in (8, 9):
        return "a numpy dtype state that is not numpy's"
    if state[2] is not None or state[3] is not None or state[4] is not None:
        return "a numpy dtype with fields or sub-arrays"
    if state[5] not in (-1, dtype.itemsize) or state[6] not in (-1, dtype.alignment):
        return f"a numpy dtype {dtype} resized to {state[5]!r} bytes"
    if state[7] != dtype.flags:
        return f"a numpy dtype {dtype} with flags {state[7]!r} (flags mark objects)"
    return ""


class _SafeUnpickler(pickle._Unpickler):  # the Python one: its BUILD step can be checked
    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise _Refused(f"{module}.{name}")
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("a persistent id")

    def load_build(self) -> None:
        """BUILD sets an object's state: allowed on numpy dtypes and arrays only, checked."""
        state, target = self.stack[-1], self.stack[-2]
        if isinstance(target, np.dtype):
            problem = _dtype_state_problem(target, state)
            if problem:
                raise _Refused(problem)
        elif isinstance(target, np.ndarray) and type(target) is np.ndarray:
            dtype = state[2] if isinstance(state, tuple) and len(state) == 5 else None
            if not isinstance(dtype, np.dtype):
                raise _Refused("a numpy array state that is not numpy's")
            _plain_dtype(dtype)
        else:
            raise _Refused(f"setting the state of a {type(target).__name__}")
        pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build


def load_pickle(data: bytes, source: str) -> Any:
    """The object `data` pickles, built from admitted parts only (see the module docstring);
    `UnsafePickleError` naming `source` and what was refused, or why it does not load."""
    unpickler = _SafeUnpickler(io.BytesIO(data), encoding="latin1")
    try:
        return unpickler.load()
    except _Refused as refused:
        raise UnsafePickleError(
            source,
            None,
            f"refused to unpickle {refused}: only plain containers, numbers, strings, bytes and "
            "numpy arrays are read from a pickle (convert the file to JSON to read anything "
            "else)",
        ) from None
    except Exception as err:  # a broken or truncated pickle: any step may fail
        raise UnsafePickleError(
            source, None, f"not a readable pickle: {type(err).__name__}: {err}"
        ) from None
