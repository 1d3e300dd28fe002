"""The lifetime guard of a C handle (an mm or a machine).

Every call into the core holds the guard; ``close()`` marks the owner closed,
waits until no call is in flight, and only then frees the handle, so no thread
ever uses a freed handle (issue 13).  The owner keeps the state the guard
reads: ``_lock`` (a ``threading.Lock``), ``_idle`` (a ``Condition`` on it),
``_closing``, ``_inflight`` and ``_handle``.
"""
from __future__ import annotations

from typing import Any

from pylaf.errors import ClosedError


class InFlight:
    """``with owner._in_flight as handle:`` counts one call in flight and hands
    out the handle; it keeps no per-call state, so one instance serves every
    call and every thread."""

    __slots__ = ("_owner", "_what")

    def __init__(self, owner: Any, what: str) -> None:
        self._owner = owner
        self._what = what

    def __enter__(self) -> Any:
        o = self._owner
        with o._lock:
            if o._closing:
                raise ClosedError(f"{self._what} is closed")
            o._inflight += 1
            return o._handle

    def __exit__(self, *exc: object) -> None:
        o = self._owner
        with o._lock:
            o._inflight -= 1
            if o._inflight == 0 and o._closing:
                o._idle.notify_all()


__all__ = ["InFlight"]
