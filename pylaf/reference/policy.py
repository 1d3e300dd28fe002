"""THP policy: resolution of the raw knobs and the questions a fault asks
(mm/huge_memory.c thp_vma_allowable_orders(), include/linux/huge_mm.h
vma_thp_disabled(), the LAF v3 / Huang tables, kernel/sys.c prctl_set_thp_disable()).

The model resolves a :class:`pylaf.Policy` from its raw fields only (kind,
enabled, per-size states as given, ``thp_anon``, ``sizes_exclusive``, fixed
order, use_zero_page, anon_beside_full); it calls no Policy method, so a bug in
``Policy.per_size_states()`` or ``fill_c()`` shows up as a differential mismatch.
"""
from __future__ import annotations

from pylaf.policy import Policy
from pylaf.reference.abi import (
    EINVAL,
    PAGE_ALLOC_COSTLY_ORDER,
    PR_GET_THP_DISABLE,
    PR_SET_THP_DISABLE,
    PR_THP_DISABLE_EXCEPT_ADVISED,
    VM_HUGEPAGE,
    VM_NOHUGEPAGE,
    VM_UFFD_FLAGS,
    error_for,
)
from pylaf.reference.mm_types import MmStruct, PageGeometry, PolicyState, RefVma
from pylaf.sizes import parse_size

KINDS = ("upstream", "laf-v3", "huang-a", "huang-b", "huang-sysfs", "fixed")
GLOBAL_STATES = ("never", "madvise", "always")
HUANG_GLOBAL_STATES = ("never", "madvise", "always", "small", "auto")
PER_SIZE_STATES = ("always", "inherit", "madvise", "never")
DEFRAG_STATES = ("always", "defer", "defer+madvise", "madvise", "never")


# ----------------------------------------------------------------- resolution
def folio_order(size: str | int, geo: PageGeometry) -> int:
    """Order of a folio of ``size`` bytes; ValueError unless a power-of-two
    number of base pages."""
    nbytes = parse_size(size)
    pages, rem = divmod(nbytes, geo.page_size)
    if rem or pages <= 0 or pages & (pages - 1):
        raise ValueError(f"invalid folio size {size!r} with {geo.page_size}-byte pages")
    return pages.bit_length() - 1


def thp_anon_states(spec: str, geo: PageGeometry) -> dict[int, str]:
    """mm/huge_memory.c setup_thp_anon(): ``"16K-64K:always;2M:never"`` -> {order: state}.

    Every ';'-token is ``<sizes>:<state>``; sizes are a ','-list of sizes or
    ``lo-hi`` ranges (lo <= hi), each an anonymous order 2..PMD_ORDER.
    """
    out: dict[int, str] = {}
    for token in spec.strip().split(";"):
        sizes, colon, state = token.rpartition(":")
        if not colon or state not in PER_SIZE_STATES:
            raise ValueError(f"thp_anon={spec!r}: bad token {token!r}")
        for item in sizes.split(","):
            lo, dash, hi = item.partition("-")
            o_lo = folio_order(lo, geo)
            o_hi = folio_order(hi, geo) if dash else o_lo
            if o_lo > o_hi or o_lo < 2 or o_hi > geo.pmd_order:
                raise ValueError(f"thp_anon={spec!r}: {item!r} is not a range of anonymous THP sizes")
            for o in range(o_lo, o_hi + 1):
                out[o] = state
    return out


def per_size_states(policy: Policy, geo: PageGeometry) -> dict[int, str]:
    """hugepages-<N>kB/enabled for orders 2..PMD_ORDER: the kernel default
    (PMD ``inherit``, others ``never``; all ``never`` with thp_anon= or an
    exclusive size list), then thp_anon=, then the explicit sizes."""
    exclusive = bool(policy.sizes_exclusive) or policy.thp_anon is not None
    states = {o: "never" for o in range(2, geo.pmd_order + 1)}
    if not exclusive:
        states[geo.pmd_order] = "inherit"
    if policy.thp_anon is not None:
        states.update(thp_anon_states(policy.thp_anon, geo))
    for size, state in dict(policy.sizes).items():
        o = folio_order(size, geo)
        if not 2 <= o <= geo.pmd_order or state not in PER_SIZE_STATES:
            raise ValueError(f"hugepages-{size}/enabled={state!r} is not valid with "
                             f"{geo.page_size}-byte pages")
        states[o] = state
    return states


def resolve_policy(policy: Policy, geo: PageGeometry) -> PolicyState:
    """The model's own ``struct laf_policy`` for ``policy`` on this machine."""
    kind, enabled = str(policy.kind), str(policy.enabled)
    if kind not in KINDS:
        raise ValueError(f"unknown policy kind {kind!r}")
    allowed = HUANG_GLOBAL_STATES if kind == "huang-sysfs" else GLOBAL_STATES
    if enabled not in allowed or policy.defrag not in DEFRAG_STATES:
        raise ValueError(f"invalid enabled={enabled!r}/defrag={policy.defrag!r} for {kind!r}")
    fixed = policy.fixed_order
    order = folio_order(fixed, geo) if isinstance(fixed, str) else int(fixed or 0)
    if kind == "fixed" and (fixed is None or not (order == 0 or 2 <= order <= geo.pmd_order)):
        raise ValueError(f"invalid fixed order {fixed!r}: expected 0 or 2..{geo.pmd_order}")
    return PolicyState(kind, enabled, bool(policy.use_zero_page), order,
                       bool(policy.anon_beside_full), per_size_states(policy, geo))


# ------------------------------------------------------------------- prctl
def prctl(mm: MmStruct, option: int, arg2: int, arg3: int) -> int:
    """kernel/sys.c PR_SET/GET_THP_DISABLE: any non-zero arg2 disables;
    PR_THP_DISABLE_EXCEPT_ADVISED only with a disable; GET takes no args."""
    what = f"prctl({option}, {arg2}, {arg3})"
    if option == PR_SET_THP_DISABLE:
        disable = bool(arg2)
        if (not disable and arg3) or (arg3 & ~PR_THP_DISABLE_EXCEPT_ADVISED):
            raise error_for(EINVAL, what)
        if disable:
            mm.thp_disable = 3 if arg3 & PR_THP_DISABLE_EXCEPT_ADVISED else 1
        else:
            mm.thp_disable = 0
        return 0
    if option == PR_GET_THP_DISABLE:
        if arg2 or arg3:
            raise error_for(EINVAL, what)
        return mm.thp_disable
    raise error_for(EINVAL, what)


# --------------------------------------------------- which orders may a fault use
def vma_thp_disabled(mm: MmStruct, vma: RefVma) -> bool:
    """vma_thp_disabled(): VM_NOHUGEPAGE, prctl completely, prctl except-advised."""
    if vma.flags & VM_NOHUGEPAGE or mm.thp_disable == 1:
        return True
    if vma.flags & VM_HUGEPAGE:
        return False
    return mm.thp_disable == 3


def upstream_allowed(mm: MmStruct, vma: RefVma) -> int:
    """thp_vma_allowable_orders(): bitmask of allowed orders 2..PMD_ORDER."""
    hinted = bool(vma.flags & VM_HUGEPAGE)
    glob = mm.pol.enabled
    inherit_on = glob == "always" or (glob == "madvise" and hinted)
    mask = 0
    for o, state in mm.pol.per_size.items():
        if state == "always" or (state == "madvise" and hinted) or (state == "inherit" and inherit_on):
            mask |= 1 << o
    if not mask or vma_thp_disabled(mm, vma):
        return 0
    return mask


def laf_table(mm: MmStruct, vma: RefVma) -> tuple[bool, bool, bool]:
    """LAF-family tables: (THP allowed, LAF allowed, LAF uncapped)."""
    kind, glob = mm.pol.kind, mm.pol.enabled
    hinted = bool(vma.flags & VM_HUGEPAGE)
    if vma_thp_disabled(mm, vma):
        return False, False, False
    eligible = glob == "always" or (glob in ("madvise", "small", "auto") and hinted)
    if kind == "laf-v3":
        return eligible, True, eligible
    if kind == "huang-b":
        return eligible, eligible, eligible
    if glob == "never":                        # huang-a and huang-sysfs: never means never
        return False, False, False
    if kind == "huang-a" or glob in ("madvise", "always"):
        return eligible, kind == "huang-a" or eligible, eligible
    if glob == "small":
        return False, True, hinted
    return hinted, True, hinted                # auto: hinted THP>LAF>S, unhinted the ramp


def pmd_allowed(mm: MmStruct, vma: RefVma) -> bool:
    """May this fault try a PMD-sized THP?"""
    kind = mm.pol.kind
    if kind == "upstream":
        return bool(upstream_allowed(mm, vma) & (1 << mm.geo.pmd_order))
    if kind == "fixed":
        return (mm.pol.fixed_order == mm.geo.pmd_order and not vma_thp_disabled(mm, vma)
                and not (vma.flags & VM_UFFD_FLAGS))
    return laf_table(mm, vma)[0]


def unhinted_cap(geo: PageGeometry) -> int:
    """ANON_FOLIO_MAX_ORDER_UNHINTED: ilog2(max(64K, PAGE_SIZE)) - PAGE_SHIFT."""
    return max(16, geo.page_shift) - geo.page_shift


def laf_prefer(geo: PageGeometry, uncapped: bool) -> int:
    """anon_folio_order(): max(arch_wants_pte_order(), COSTLY), capped at 64K
    for VMAs that are not THP-eligible (and kept below the PMD order)."""
    order = max(geo.arch_pte_order, PAGE_ALLOC_COSTLY_ORDER)
    if not uncapped:
        order = min(order, unhinted_cap(geo))
    return min(order, geo.pmd_order - 1)


def anon_orders(mm: MmStruct, vma: RefVma) -> int:
    """Candidate mTHP orders (bitmask over 2..PMD_ORDER-1) before fit/emptiness."""
    kind, geo = mm.pol.kind, mm.geo
    below_pmd = (1 << geo.pmd_order) - 1
    if kind == "upstream":
        return upstream_allowed(mm, vma) & below_pmd & ~3
    if kind == "fixed":
        o = mm.pol.fixed_order
        if o < 2 or o >= geo.pmd_order or vma_thp_disabled(mm, vma):
            return 0
        return 1 << o
    _thp, laf, uncapped = laf_table(mm, vma)
    if not laf:
        return 0
    if kind == "huang-sysfs" and mm.pol.enabled == "auto" and not vma.flags & VM_HUGEPAGE:
        # the readahead-style ramp: every order from 2 up to the ramp
        ramp = min(vma.auto_ramp, unhinted_cap(geo))
        return sum(1 << o for o in range(2, ramp + 1)) & below_pmd
    prefer = laf_prefer(geo, uncapped)
    mask = 0
    for o in (prefer, PAGE_ALLOC_COSTLY_ORDER if prefer > PAGE_ALLOC_COSTLY_ORDER else 0):
        if o == 0:
            break
        if 2 <= o < geo.pmd_order:
            mask |= 1 << o
    return mask


def policy_auto_update(mm: MmStruct, vma: RefVma, addr: int, order: int) -> None:
    """huang-sysfs "auto": a write fault at exactly the end of the last folio
    mapped (the stream continues) raises the ramp by 2 orders (at least to
    2, at most the 64K cap); any other write fault lowers it by 2 (0 below 4)."""
    if mm.pol.kind != "huang-sysfs" or mm.pol.enabled != "auto":
        return
    ps = mm.geo.page_size
    size = ps << order
    if addr & ~(ps - 1) == vma.auto_next:
        vma.auto_ramp = min(2 if vma.auto_ramp < 2 else vma.auto_ramp + 2, unhinted_cap(mm.geo))
    else:
        vma.auto_ramp = 0 if vma.auto_ramp <= 3 else vma.auto_ramp - 2
    vma.auto_next = (addr & ~(size - 1)) + size


def charge_in_loop(mm: MmStruct) -> bool:
    """Upstream charges inside the order loop (a refused charge falls back);
    LAF v3 charges once after allocating (a refusal is OOM)."""
    return mm.pol.kind in ("upstream", "fixed")
