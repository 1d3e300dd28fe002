"""Argument checks of the AddressSpace API, done before anything reaches cffi.

cffi turns an out-of-range integer into ``OverflowError`` and passes any
buffer to C as is, whatever its dtype, byte order or alignment.  Here every
integer argument is range-checked and every array is converted or rejected,
with an error naming the argument: :class:`~pylaf.errors.LafValueError`
(a ``LafError`` and a ``ValueError``) for a bad value, ``TypeError`` for a
bad type.  The C core re-checks what it needs (wrap-around after page
alignment, as the kernel's ``PAGE_ALIGN(len)`` overflow check does).
"""
from __future__ import annotations

import operator
from typing import Any

import numpy as np

from pylaf._ffi import lib
from pylaf.errors import LafValueError
from pylaf.sizes import parse_size

U64_MAX = (1 << 64) - 1
INT_MAX = (1 << 31) - 1
INT_MIN = -(1 << 31)


def integer(name: str, value: Any, lo: int = 0, hi: int = U64_MAX) -> int:
    """``value`` as an int in ``lo..hi`` (an index-able integer, bool excluded)."""
    if type(value) is int and lo <= value <= hi:     # the common case, first
        return value
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, not bool")
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}") from None
    if not lo <= n <= hi:
        raise LafValueError(f"invalid address or size {name}={n:#x}: out of range {lo:#x}..{hi:#x}"
                            if lo >= 0 else f"invalid {name}={n}: out of range {lo}..{hi}",
                            lib.LAF_ERANGE)
    return n


def u64(name: str, value: Any) -> int:
    """An address, length or count that C takes as ``uint64_t``."""
    return integer(name, value)


def c_int(name: str, value: Any) -> int:
    """A C ``int`` argument (the C core judges its value)."""
    return integer(name, value, INT_MIN, INT_MAX)


def size(name: str, value: Any) -> int:
    """A length: bytes, or the kernel's spelling (``"64K"``, ``"2M"``)."""
    if isinstance(value, str):
        try:
            return u64(name, parse_size(value))
        except ValueError as exc:
            raise LafValueError(f"invalid {name} {value!r}: {exc}", lib.LAF_EINVAL) from None
    return u64(name, value)


def flag(name: str, value: Any) -> bool:
    """A bool (Python or numpy); nothing else, so that a list is not taken as ``True``."""
    if value is True or value is False:
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be a bool, not {type(value).__name__}")


def address_array(name: str, arr: Any) -> np.ndarray:
    """A 1-D, C-contiguous, aligned, native-endian ``uint64`` array of addresses.

    A list (or other iterable) of integers is converted; a numpy array must
    have an unsigned 64-bit dtype (a non-native byte order or a misaligned
    view is copied into a native, aligned array), be 1-D and C-contiguous.
    """
    if isinstance(arr, (str, bytes)):
        raise TypeError(f"{name} must be an array of addresses, not {type(arr).__name__}")
    if not isinstance(arr, np.ndarray):
        return _addresses_from_iterable(name, arr)
    if arr.dtype.kind != "u" or arr.dtype.itemsize != 8:
        raise TypeError(f"{name} must have dtype uint64, got {arr.dtype}")
    _check_layout(name, arr)
    if not arr.dtype.isnative or not arr.flags.aligned:
        arr = np.array(arr, dtype=np.uint64, order="C")     # a native, aligned copy
    out: np.ndarray = arr
    return out


def _addresses_from_iterable(name: str, items: Any) -> np.ndarray:
    try:
        values = [u64(f"{name}[{i}]", v) for i, v in enumerate(items)]
    except TypeError as exc:
        if "must be an integer" in str(exc):
            raise
        raise TypeError(f"{name} must be an array of addresses, not {type(items).__name__}") from None
    return np.array(values, dtype=np.uint64)


def _check_layout(name: str, arr: np.ndarray) -> None:
    if arr.ndim != 1:
        raise LafValueError(f"{name} must be 1-D, got shape {arr.shape}", lib.LAF_EINVAL)
    if not arr.flags.c_contiguous:
        raise LafValueError(f"{name} must be C-contiguous (got a strided view; use "
                            "np.ascontiguousarray)", lib.LAF_EINVAL)


def record_array(name: str, arr: Any, dtype: np.dtype[Any], align: int) -> np.ndarray:
    """A 1-D, C-contiguous numpy array of exactly ``dtype`` (a C struct's
    records) whose data is ``align``-byte aligned; anything else is refused,
    never copied (a stream is executed in place)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of dtype {dtype}, not {type(arr).__name__}")
    if arr.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {arr.dtype}")
    _check_layout(name, arr)
    if arr.ctypes.data % align:
        raise LafValueError(f"{name} data is not {align}-byte aligned (use a fresh array)",
                            lib.LAF_EINVAL)
    return arr


def write_array(write: Any, n: int) -> np.ndarray | None:
    """``write=`` of a batch: None for a bool (same for every access), or the
    per-access bool/uint8 array (one entry per access, C-contiguous)."""
    if isinstance(write, np.ndarray):
        if write.dtype not in (np.bool_, np.uint8):
            raise TypeError(f"write array must have dtype bool or uint8, got {write.dtype}")
        if write.shape != (n,):
            raise LafValueError(f"write array has shape {write.shape}, addrs has {n} entries",
                                lib.LAF_EINVAL)
        _check_layout("write", write)
        return write
    if not isinstance(write, (bool, np.bool_)):
        raise TypeError("write must be a bool or a bool/uint8 numpy array with one entry per "
                        f"access, not {type(write).__name__}")
    return None


__all__ = ["INT_MAX", "INT_MIN", "U64_MAX", "address_array", "c_int", "flag", "integer", "record_array", "size",
           "u64", "write_array"]


def prot(value: Any) -> int:
    """An mprotect() protection spelled as mmap's (``"rw"``, ``"r"``, ``""``
    for PROT_NONE, ``"rx"``, ``"rwx"``) as LAF_PROT_* bits."""
    if not isinstance(value, str):
        raise TypeError(f"prot must be a string such as 'rw', not {type(value).__name__}")
    if set(value) - set("rwx"):
        raise ValueError(f"invalid prot {value!r}: use a combination of 'r', 'w' and 'x'")
    return ((lib.LAF_PROT_READ if "r" in value else 0) | (lib.LAF_PROT_WRITE if "w" in value else 0)
            | (lib.LAF_PROT_EXEC if "x" in value else 0))
