"""pylaf - a native-accelerated emulator of the Linux anonymous page-fault
path with large folios (LARGE_ANON_FOLIO / multi-size THP).

The C core (csrc/) keeps the kernel's names: handle_mm_fault(),
do_anonymous_page(), alloc_anon_folio(), pte_range_none(), set_ptes() ...
This package gives it a Python API:

    from pylaf import AddressSpace, Config, Policy
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from pylaf._ffi import lib as _lib
from pylaf.address_space import (
                            Access,
                            AddressSpace,
                            FaultKind,
                            FaultResult,
                            Folio,
                            FolioFlags,
                            Pte,
                            PteFlags,
                            TouchResult,
                            Vma,
                            VmFlags,
                            open_address_space,
)
from pylaf.config import Config
from pylaf.errors import ClosedError, InvariantError, LafBusyError, LafError, LafMemoryError, LafValueError
from pylaf.geometry import Geometry
from pylaf.machine import Machine
from pylaf.policy import Policy, parse_thp_anon
from pylaf.results import results_to_frame
from pylaf.sizes import format_size, order_of, parse_size
from pylaf.stats import Stats

try:
    #: The installed distribution's version; the number lives only in pyproject.toml.
    __version__: str = version("pylaf")
except PackageNotFoundError:     # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

#: Orders in per-order arrays (LAF_NR_ORDERS), read from the C core.
NR_ORDERS: int = _lib.LAF_NR_ORDERS
COSTLY_ORDER: int = _lib.LAF_COSTLY_ORDER

__all__ = [
                            "COSTLY_ORDER",
                            "NR_ORDERS",
                            "Access",
                            "AddressSpace",
                            "ClosedError",
                            "Config",
                            "FaultKind",
                            "FaultResult",
                            "Folio",
                            "FolioFlags",
                            "Geometry",
                            "InvariantError",
                            "LafBusyError",
                            "LafError",
                            "LafMemoryError",
                            "LafValueError",
                            "Machine",
                            "Policy",
                            "Pte",
                            "PteFlags",
                            "Stats",
                            "TouchResult",
                            "VmFlags",
                            "Vma",
                            "format_size",
                            "open_address_space",
                            "order_of",
                            "parse_size",
                            "parse_thp_anon",
                            "results_to_frame",
]
