"""Raw cffi bindings (private): ``ffi`` and ``lib`` of the compiled core."""
from __future__ import annotations

try:
    from pylaf._laf import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "pylaf's C core is not built: run `pip install -e .` (or `python build.py`) "
        "in the repository"
    ) from exc

__all__ = ["ffi", "lib"]
