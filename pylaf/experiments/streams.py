"""Op-stream records for the built-in workloads (:mod:`pylaf.opstream`).

A workload whose accesses do not depend on what the emulator returns, except
the address of the one mapping it makes, is an op stream: a map with no hint,
then records at offsets from it (``LAF_OPF_RELATIVE``).  Every record carries
``LAF_OPF_STOP``, so the first failure ends the stream where the Python path
would raise.
"""
from __future__ import annotations

import numpy as np

from pylaf._ffi import lib
from pylaf.opstream import op_array

_RW = lib.LAF_PROT_READ | lib.LAF_PROT_WRITE
_REL = lib.LAF_OPF_RELATIVE | lib.LAF_OPF_STOP


def map_anon(length: int) -> np.ndarray:
    """``mm.mmap(length)``: read-write, no hint."""
    out = op_array(1)
    out[0] = (lib.LAF_OP_MAP, lib.LAF_OPF_STOP, 0, 0, length, _RW, 0)
    return out


def touch_run(offset: int, length: int, stride: int, write: bool) -> np.ndarray:
    """``mm.touch_range(base + offset, length, stride, write)``."""
    out = op_array(1)
    out[0] = (lib.LAF_OP_TOUCH, _REL | (lib.LAF_OPF_WRITE if write else 0), 0, offset, length,
              stride, 0)
    return out


def touch_each(offsets: np.ndarray, write: bool) -> np.ndarray:
    """``mm.touch(base + offsets, write)``: one single-access record each."""
    out = op_array(len(offsets))
    out["op"] = lib.LAF_OP_TOUCH
    out["flags"] = _REL | (lib.LAF_OPF_WRITE if write else 0)
    out["addr"] = offsets
    out["len"] = 1
    out["arg"] = 1
    return out


def madvise(offset: int, length: int, advice: int) -> np.ndarray:
    """``mm.madvise(base + offset, length, advice)``."""
    out = op_array(1)
    out[0] = (lib.LAF_OP_MADVISE, _REL, 0, offset, length, advice, 0)
    return out


def stream(*parts: np.ndarray) -> np.ndarray:
    """The records of *parts*, in order, as one contiguous stream."""
    return np.concatenate(parts)


__all__ = ["madvise", "map_anon", "stream", "touch_each", "touch_run"]
