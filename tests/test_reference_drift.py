"""Drift between the reference model's own facts and the C core's ABI.

The reference (pylaf/reference/) restates the ABI numbers on purpose, so that
it shares no code with the C core; these tests make sure the restatement
stays equal to ``csrc/laf.h`` (through ``lib``), to ``struct laf_stats``, to
the C core's geometry, and that ``Reference`` keeps ``AddressSpace``'s API.
"""
from __future__ import annotations

import inspect

import pytest

from pylaf import AddressSpace, Config
from pylaf._ffi import ffi, lib
from pylaf.geometry import ARCHES, PAGE_SIZES, Geometry
from pylaf.reference import Reference, abi
from pylaf.reference.mm_types import PageGeometry

#: reference constant -> laf.h name
CONSTANTS = {
    "PAGE_SHIFT_4K": "LAF_PAGE_SHIFT_4K", "PAGE_SHIFT_16K": "LAF_PAGE_SHIFT_16K",
    "PAGE_SHIFT_64K": "LAF_PAGE_SHIFT_64K", "NR_ORDERS": "LAF_NR_ORDERS",
    "PAGE_ALLOC_COSTLY_ORDER": "LAF_COSTLY_ORDER",
    "ORDER_NONE": "LAF_ORDER_NONE", "ORDER_ZERO": "LAF_ORDER_ZERO", "ORDER_HUGE_ZERO": "LAF_ORDER_HUGE_ZERO",
    "PFN_SHIFT": "LAF_PTE_PFN_SHIFT", "MEMCG_UNLIMITED": "LAF_MEMCG_UNLIMITED",
    **{f"PTE_{b}": f"LAF_PTE_{b}" for b in ("PRESENT", "WRITE", "DIRTY", "YOUNG", "SPECIAL", "CONT",
                                           "UFFD_WP", "TOUCHED", "HUGE")},
    **{f"VM_{f}": f"LAF_VM_{f}" for f in ("READ", "WRITE", "EXEC", "SHARED", "UFFD_MISSING", "UFFD_WP",
                                         "UFFD_MINOR", "HUGEPAGE", "NOHUGEPAGE", "DONTCOPY", "WIPEONFORK")},
    **{f"VM_FAULT_{f}": f"LAF_VM_FAULT_{f}" for f in ("OOM", "SIGBUS", "SIGSEGV", "NOPAGE", "RETRY",
                                                     "FALLBACK", "USERFAULT")},
    **{e: f"LAF_{e}" for e in ("EPERM", "ENOENT", "ENOMEM", "EFAULT", "EBUSY", "EEXIST", "EINVAL",
                               "ENOSPC", "ERANGE", "ENOSYS", "EUCLEAN")},
    "MADV_DONTNEED": "LAF_MADV_DONTNEED", "MADV_HUGEPAGE": "LAF_MADV_HUGEPAGE",
    "MADV_NOHUGEPAGE": "LAF_MADV_NOHUGEPAGE",
    **{f"MADV_{a}": f"LAF_MADV_{a}" for a in ("DONTFORK", "DOFORK", "WIPEONFORK", "KEEPONFORK")},
    "PR_SET_THP_DISABLE": "LAF_PR_SET_THP_DISABLE", "PR_GET_THP_DISABLE": "LAF_PR_GET_THP_DISABLE",
    "PR_THP_DISABLE_EXCEPT_ADVISED": "LAF_PR_THP_DISABLE_EXCEPT_ADVISED",
    "UFFD_MODE_MISSING": "LAF_UFFDIO_REGISTER_MODE_MISSING", "UFFD_MODE_WP": "LAF_UFFDIO_REGISTER_MODE_WP",
    "UFFD_MODE_MINOR": "LAF_UFFDIO_REGISTER_MODE_MINOR",
}


@pytest.mark.parametrize("ref_name,c_name", sorted(CONSTANTS.items()))
def test_constant_matches_laf_h(ref_name: str, c_name: str) -> None:
    assert getattr(abi, ref_name) == getattr(lib, c_name), f"{ref_name} != {c_name}"


def test_page_shifts_are_the_c_cores() -> None:
    assert {1 << s for s in abi.PAGE_SHIFTS} == set(PAGE_SIZES)


def test_counters_match_struct_laf_stats() -> None:
    """Names, order and kind (per-order array or scalar) of every counter."""
    fields = ffi.typeof("struct laf_stats").fields
    per_order = tuple(n for n, f in fields if f.type.kind == "array")
    scalars = tuple(n for n, f in fields if f.type.kind != "array")
    assert per_order == abi.PER_ORDER_COUNTERS
    assert scalars == abi.SCALAR_COUNTERS
    assert all(f.type.length == abi.NR_ORDERS for n, f in fields if f.type.kind == "array")
    assert set(per_order) | set(scalars) >= abi.GAUGES
    assert set(scalars) >= abi.STATE_COUNTERS


@pytest.mark.parametrize("page_size", sorted(PAGE_SIZES))
@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_geometry_matches_the_c_core(page_size: int, arch: str) -> None:
    """The model derives its geometry itself; every field the C core hands out agrees."""
    c = Geometry.for_machine(page_size, arch)
    r = PageGeometry.derive(page_size, arch, None)
    for name in ("page_size", "page_shift", "ptrs_per_pte", "pmd_size", "pmd_order", "task_size",
                 "mmap_base", "arch_pte_order", "cont_pte_order"):
        assert getattr(r, name) == getattr(c, name), name
    assert r.max_order == c.max_page_order


def _public(cls: type) -> dict[str, object]:
    return {n: m for n, m in inspect.getmembers(cls) if not n.startswith("_")}


#: public names of AddressSpace that Reference deliberately lacks: the cffi handle, and the
#: op-stream executor (a batch of the calls the model has; its reference is the Python engine
#: of replay_into and the workloads' run(), see tests/test_opstream.py)
NOT_ON_REFERENCE = {"mm", "run_ops"}
#: public names of Reference that AddressSpace lacks (the model's state and geometry)
ONLY_ON_REFERENCE = {"geo", "mm", "ram_pages"}


def test_reference_has_every_public_method_of_address_space() -> None:
    cs, rs = _public(AddressSpace), _public(Reference)
    with Reference(Config(ram="64M")) as r:   # attributes the model sets per instance count too
        names = {n for n in dir(r) if not n.startswith("_")}
    missing = set(cs) - names - NOT_ON_REFERENCE
    assert not missing, f"Reference lacks {sorted(missing)}"
    for name, member in cs.items():
        if name in NOT_ON_REFERENCE or not callable(member):
            continue
        if not callable(rs.get(name)):
            continue   # an AddressSpace property the model keeps as an attribute
        cp = inspect.signature(member).parameters
        rp = inspect.signature(rs[name]).parameters  # type: ignore[arg-type]
        assert [(p.name, p.kind, p.default) for p in cp.values()] == \
               [(p.name, p.kind, p.default) for p in rp.values()], name


def test_instance_attributes_match() -> None:
    """The geometry attributes an AddressSpace instance carries."""
    cfg = Config(ram="64M", page_size="16K", arch="arm64")
    props = {n for n, m in inspect.getmembers(AddressSpace) if isinstance(m, property)
             and not n.startswith("_")}
    with AddressSpace(cfg) as c, Reference(cfg) as r:
        # geometry: the model derives its own (test_geometry_matches_the_c_core)
        # machine: until the reference model's RefMachine lands (issue 9, a parallel branch)
        names = ({n for n in vars(c) if not n.startswith("_")} | props) - {"geometry", "closed", "mm",
                                                                           "machine"}
        assert names - set(dir(r)) == set()
        for n in names - {"config"}:
            assert getattr(c, n) == getattr(r, n), n
        extra = {n for n in vars(r) if not n.startswith("_")} - names - props
        assert extra <= ONLY_ON_REFERENCE
