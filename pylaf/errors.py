"""Exceptions, and the one place where C return codes become exceptions."""
from __future__ import annotations

from pylaf._ffi import ffi, lib


class LafError(Exception):
    """Base class of pylaf errors; ``errno`` is the negative C code."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


class LafValueError(LafError, ValueError):
    """Invalid argument (EINVAL, ERANGE, EPERM, ENOENT, EEXIST)."""


class LafMemoryError(LafError, MemoryError):
    """The emulated machine (or the host) ran out of memory (ENOMEM), or a
    VMA split was refused at vm.max_map_count (ENOMEM; EAGAIN from madvise)."""


class LafBusyError(LafError, RuntimeError):
    """The address space is being used by another thread (EBUSY)."""


class InvariantError(LafError, AssertionError):
    """check_invariants() found corrupt emulator state (EUCLEAN)."""


class ClosedError(LafError, RuntimeError):
    """The address space was closed."""


class HostUnavailable(Exception):
    """This machine lacks something a live-host command needs (root, perf, a C
    compiler, ``/proc/kpageflags``, the THP-settings lock): a missing
    capability, not a finding.  The ``pylaf`` command reports it in one line
    and exits 2 (exit 1 is for real disagreements)."""


#: the one map from C return codes to exception classes (the reference model
#: raises through :func:`error_for` too)
_BY_CODE: dict[int, type[LafError]] = {
    lib.LAF_EINVAL: LafValueError,
    lib.LAF_ERANGE: LafValueError,
    lib.LAF_EPERM: LafValueError,
    lib.LAF_ENOENT: LafValueError,
    lib.LAF_EEXIST: LafValueError,
    lib.LAF_ENOMEM: LafMemoryError,
    lib.LAF_EAGAIN: LafMemoryError,
    lib.LAF_ENOSPC: LafMemoryError,
    lib.LAF_EBUSY: LafBusyError,
    lib.LAF_EUCLEAN: InvariantError,
}


def error_for(code: int, what: str = "") -> LafError:
    """The exception for a negative C return code (``laf_strerror()`` text,
    prefixed with ``what``)."""
    text = ffi.string(lib.laf_strerror(code)).decode()
    cls = _BY_CODE.get(code, LafError)
    return cls(f"{what}: {text}" if what else text, code)


def check(rv: int, what: str = "") -> int:
    """Raise the exception for a negative C return code; return ``rv`` otherwise."""
    if rv >= 0:
        return rv
    raise error_for(rv, what)
