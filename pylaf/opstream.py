"""Op streams: a workload as one array of records run by one C call.

An op stream is a numpy structured array of :data:`OP_DTYPE` records, the
``struct laf_op`` of ``csrc/laf.h`` (the dtype is read from the cffi type, so
the layout has one home): map, unmap, madvise, touch (a run of accesses),
prctl, populate, mremap and the old traces' mremap stand-in; the op codes and flags are
``lib.LAF_OP_*`` / ``lib.LAF_OPF_*``.  :meth:`pylaf.AddressSpace.run_ops`
executes it with ``laf_run_ops()`` (csrc/ops.c): one call, the GIL released
(cffi releases it around every C call), no Python between records.

>>> from pylaf import open_address_space
>>> from pylaf._ffi import lib
>>> ops = op_array(2)
>>> ops[0] = (lib.LAF_OP_MAP, 0, 0, 0, 1 << 20, lib.LAF_PROT_READ | lib.LAF_PROT_WRITE, 0)
>>> ops[1] = (lib.LAF_OP_TOUCH, lib.LAF_OPF_WRITE | lib.LAF_OPF_RELATIVE, 0, 0, 1 << 20, 4096, 0)
>>> with open_address_space("order-0") as mm:
...     r = mm.run_ops(ops)
>>> (r.touch.accesses, r.touch.faulted, r.failed)
(256, 256, 0)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pylaf._ffi import ffi, lib
from pylaf.records import TouchResult

#: numpy scalar types of the C field types of struct laf_op
_C_TO_NUMPY = {"uint16_t": np.uint16, "uint32_t": np.uint32, "uint64_t": np.uint64}


def _op_dtype() -> np.dtype[Any]:
    """The numpy dtype of ``struct laf_op``, field by field from the cffi type."""
    fields = ffi.typeof("struct laf_op").fields
    return np.dtype({"names": [name for name, _ in fields],
                     "formats": [_C_TO_NUMPY[f.type.cname] for _, f in fields],
                     "offsets": [f.offset for _, f in fields],
                     "itemsize": ffi.sizeof("struct laf_op")})


#: one record of an op stream (struct laf_op): op, flags, mm, addr, len, arg, arg2
OP_DTYPE: np.dtype[Any] = _op_dtype()

#: error rows of :attr:`OpsResult.errors` that are not an op code
STEP_NAMES = {lib.LAF_OPS_STEP_RECORD: "record", lib.LAF_OPS_STEP_UFFD_REGISTER: "uffd register",
              lib.LAF_OPS_STEP_UFFD_FILL: "uffd fill"}


def op_array(n: int) -> np.ndarray:
    """``n`` zeroed records (``LAF_OP_NOP`` on mm 0)."""
    return np.zeros(n, dtype=OP_DTYPE)


def error_text(code: int) -> str:
    """``laf_strerror()`` of a negative C return code."""
    text: bytes = ffi.string(lib.laf_strerror(code))
    return text.decode()


@dataclass(frozen=True)
class OpsResult:
    """What ``laf_run_ops()`` reported for a stream."""

    done: int            #: records executed (failed ones included)
    failed: int          #: records with a failure
    first_error: int     #: index of the first failing record, -1 if none
    first_errno: int     #: its negative code, 0 if none
    stopped: bool        #: a ``LAF_OPF_STOP`` record failed and ended the stream
    last_map_addr: int   #: address of the last successful ``LAF_OP_MAP``
    touch: TouchResult   #: every access of every ``LAF_OP_TOUCH`` (first_error: a record index)
    #: failures by step (an op code or ``lib.LAF_OPS_STEP_*``) and -errno
    errors: dict[tuple[int, int], int]

    @property
    def ok(self) -> bool:
        return self.failed == 0


def result_from_c(res: Any) -> OpsResult:
    """An :class:`OpsResult` from a filled ``struct laf_ops_result``."""
    errors: dict[tuple[int, int], int] = {}
    if res.failed:      # the table is all zeros otherwise: skip reading it
        table = np.frombuffer(ffi.buffer(res.errors), dtype=np.uint64)
        errors = {(int(i) // lib.LAF_OPS_NR_ERRNO, -(int(i) % lib.LAF_OPS_NR_ERRNO)): int(table[i])
                  for i in np.flatnonzero(table)}
    t = res.touch
    touch = TouchResult(int(t.accesses), int(t.hits), int(t.faulted), int(t.sigsegv), int(t.oom),
                        int(t.sigbus), int(t.userfault), int(t.first_error))
    return OpsResult(int(res.done), int(res.failed), int(res.first_error), int(res.first_errno),
                     bool(res.stopped), int(res.last_map_addr), touch, errors)


__all__ = ["OP_DTYPE", "STEP_NAMES", "OpsResult", "error_text", "op_array", "result_from_c"]
