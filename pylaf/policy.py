"""THP policies: the kernel's knobs (sysfs values, ``thp_anon=``) and the
LAF-era alternatives, as a frozen dataclass that maps onto ``struct laf_policy``.

Policy kinds (``Policy.kind``):

``upstream``     mainline mTHP (6.8..6.18): global ``enabled`` + per-size
                 ``hugepages-<N>kB/enabled`` (always/inherit/madvise/never).
``laf-v3``       the LAF v3 patch as posted (Ryan Roberts' prctl x sysfs x hint table).
``huang-a``      Huang Ying's first alternative table (sysfs=never → S).
``huang-b``      Huang Ying's second table (LAF only where THP is eligible).
``huang-sysfs``  Huang Ying's long-term global values never/madvise/always/small/auto.
``fixed``        every write fault tries exactly one order, then order 0.

Spec strings (CLI and :meth:`Policy.parse`): ``KIND[/key=value]...``, e.g.
``upstream/enabled=always/thp_anon=16K-64K:always;2M:never``,
``laf-v3/enabled=madvise``, ``huang-sysfs/enabled=auto``, ``order-4`` (fixed
order 4), ``order-64K``.  An unknown, repeated or contradicting key is a
ValueError naming it.  ``kernel`` (this machine's live sysfs settings) is not
a value this module can compute: the experiments and the CLI resolve it
through the live host (:meth:`Policy.from_sysfs_values` builds the policy from
the values read there).

A policy is independent of the page size; :meth:`Policy.resolve` checks it
against one machine's :class:`~pylaf.geometry.Geometry` and gives the
per-order ``enabled`` states that machine would use.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Optional

from pylaf._ffi import lib
from pylaf.geometry import DEFAULT_PAGE_SIZE, PAGE_SIZES, Geometry
from pylaf.sizes import format_size, order_of, parse_size

KINDS: Mapping[str, int] = MappingProxyType({
    "upstream": lib.LAF_POLICY_UPSTREAM,
    "laf-v3": lib.LAF_POLICY_LAF_V3,
    "huang-a": lib.LAF_POLICY_HUANG_A,
    "huang-b": lib.LAF_POLICY_HUANG_B,
    "huang-sysfs": lib.LAF_POLICY_HUANG_SYSFS,
    "fixed": lib.LAF_POLICY_FIXED,
})

#: sysfs spellings of enum laf_thp_mode
MODES: Mapping[str, int] = MappingProxyType({
    "never": lib.LAF_THP_NEVER,
    "always": lib.LAF_THP_ALWAYS,
    "madvise": lib.LAF_THP_MADVISE,
    "inherit": lib.LAF_THP_INHERIT,
    "small": lib.LAF_THP_SMALL,
    "auto": lib.LAF_THP_AUTO,
})

DEFRAG: Mapping[str, int] = MappingProxyType({
    "always": lib.LAF_DEFRAG_ALWAYS,
    "defer": lib.LAF_DEFRAG_DEFER,
    "defer+madvise": lib.LAF_DEFRAG_DEFER_MADVISE,
    "madvise": lib.LAF_DEFRAG_MADVISE,
    "never": lib.LAF_DEFRAG_NEVER,
})

GLOBAL_VALUES = ("never", "madvise", "always")
HUANG_GLOBAL_VALUES = ("never", "madvise", "always", "small", "auto")
PER_SIZE_VALUES = ("always", "inherit", "madvise", "never")
#: the spec word for this machine's live settings (resolved above this module)
KERNEL_SPEC = "kernel"
#: sysfs files (relative to /sys/kernel/mm/transparent_hugepage) that
#: :meth:`Policy.from_sysfs_values` reads; ``hugepages-<N>kB/enabled`` besides
SYSFS_GLOBAL_KEYS = ("enabled", "defrag", "use_zero_page", "anon_beside_full")


def _geometry(machine: Geometry | int) -> Geometry:
    return machine if isinstance(machine, Geometry) else Geometry.for_machine(machine)


def parse_thp_anon(spec: str, page_size: Geometry | int = DEFAULT_PAGE_SIZE) -> dict[str, str]:
    """Parse the kernel's ``thp_anon=`` boot parameter into ``{size: state}``.

    ``"16K-64K:always;128K,512K:inherit;2M:never"`` →
    ``{"16K": "always", "32K": "always", "64K": "always", "128K": "inherit",
    "512K": "inherit", "2M": "never"}``.  Like the kernel's setup_thp_anon()
    (mm/huge_memory.c), sizes must be powers of two in the anonymous range
    (order 2 up to the PMD order of ``page_size``: a page size or a
    :class:`Geometry`) and a range's start must not exceed its end.
    """
    geo = _geometry(page_size)
    out: dict[str, str] = {}
    if not spec or not spec.strip():
        raise ValueError("empty thp_anon= string")
    for token in spec.strip().split(";"):
        # setup_thp_anon(): every ';'-separated token, an empty one included
        # (a trailing ';'), must be "<sizes>:<state>"
        if ":" not in token:
            raise ValueError(f"thp_anon={spec!r}: {token!r} lacks ':<state>'")
        sizes, state = token.rsplit(":", 1)
        if state not in PER_SIZE_VALUES:
            raise ValueError(f"thp_anon={spec!r}: unknown state {state!r} "
                             f"(expected one of {', '.join(PER_SIZE_VALUES)})")
        for item in sizes.split(","):
            for o in _thp_anon_orders(spec, token, item, geo):
                out[format_size(geo.size_of(o))] = state
    return out


def _thp_anon_orders(spec: str, token: str, item: str, geo: Geometry) -> range:
    """The orders of one ``thp_anon=`` size or size range."""
    if not item:
        raise ValueError(f"thp_anon={spec!r}: empty size in {token!r}")
    lo, dash, hi = item.partition("-")
    try:
        o_lo = order_of(lo, geo.page_size)
        o_hi = order_of(hi, geo.page_size) if dash else o_lo   # "16K-" is an error
    except ValueError as exc:
        raise ValueError(f"thp_anon={spec!r}: {exc}") from None
    if o_lo > o_hi:
        raise ValueError(f"thp_anon={spec!r}: range {item!r} runs backwards")
    for o in (o_lo, o_hi):
        if o not in geo.anon_orders:
            raise ValueError(
                f"thp_anon={spec!r}: {format_size(geo.size_of(o))} is not an anonymous "
                f"THP size ({format_size(geo.size_of(geo.anon_orders[0]))}.."
                f"{format_size(geo.pmd_size)} with {format_size(geo.page_size)} pages)")
    return range(o_lo, o_hi + 1)


def _thp_anon_sizes(spec: str) -> set[int]:
    """Byte sizes a ``thp_anon=`` string names, at the first page size that
    accepts it (ValueError, the 4K page's, if none does)."""
    errors = []
    for ps in PAGE_SIZES:
        try:
            return {parse_size(k) for k in parse_thp_anon(spec, ps)}
        except ValueError as exc:
            errors.append(exc)
    raise errors[0]


def _bit(key: str, value: str, spec: str) -> bool:
    if value not in ("0", "1"):
        raise ValueError(f"policy {spec!r}: {key} must be 0 or 1, got {value!r}")
    return value == "1"


@dataclass(frozen=True)
class Policy:
    """One THP policy.  ``sizes`` maps a folio size (``"64K"``) to its per-size
    ``enabled`` value; unlisted sizes take the kernel default (PMD size
    ``inherit``, others ``never``) unless ``thp_anon`` semantics apply
    (``sizes_exclusive=True``: unlisted sizes are ``never``).

    A frozen value: hashable fields, picklable, no host access."""

    kind: str = "upstream"
    enabled: str = "madvise"
    sizes: Mapping[str, str] = field(default_factory=dict)
    sizes_exclusive: bool = False
    defrag: str = "madvise"
    use_zero_page: bool = True
    fixed_order: Optional[int | str] = None
    anon_beside_full: bool = False
    name: Optional[str] = None
    #: the kernel's ``thp_anon=`` string; resolved against the page size of the
    #: address space (``16K`` is order 2 with 4K pages, order 0 with 16K pages)
    thp_anon: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown policy kind {self.kind!r} (expected one of {', '.join(KINDS)})")
        allowed = HUANG_GLOBAL_VALUES if self.kind == "huang-sysfs" else GLOBAL_VALUES
        if self.enabled not in allowed:
            raise ValueError(f"invalid enabled={self.enabled!r} for policy {self.kind!r} "
                             f"(expected one of {', '.join(allowed)})")
        if self.defrag not in DEFRAG:
            raise ValueError(f"invalid defrag={self.defrag!r} (expected one of {', '.join(DEFRAG)})")
        self._check_sizes()
        if self.kind == "fixed":
            if self.fixed_order is None:
                raise ValueError("policy 'fixed' needs fixed_order")
            if isinstance(self.fixed_order, str):
                parse_size(self.fixed_order)
            elif self.fixed_order < 0 or self.fixed_order == 1:
                raise ValueError(f"invalid fixed order {self.fixed_order}: anonymous folios are "
                                 "order 0 or 2..PMD order (order 1 is not an anon THP size)")
        if self.thp_anon is not None:
            _thp_anon_sizes(self.thp_anon)
            object.__setattr__(self, "sizes_exclusive", True)
        object.__setattr__(self, "sizes", MappingProxyType(dict(self.sizes)))

    def _check_sizes(self) -> None:
        seen: dict[int, str] = {}
        for size, state in self.sizes.items():
            nbytes = parse_size(size)
            if nbytes in seen:
                raise ValueError(f"size {size!r} given twice (also as {seen[nbytes]!r})")
            seen[nbytes] = size
            if state not in PER_SIZE_VALUES:
                raise ValueError(f"invalid hugepages-{size}/enabled value {state!r} "
                                 f"(expected one of {', '.join(PER_SIZE_VALUES)})")

    def __hash__(self) -> int:
        return hash((self.kind, self.enabled, frozenset(self.sizes.items()), self.sizes_exclusive,
                     self.defrag, self.use_zero_page, self.fixed_order, self.anon_beside_full,
                     self.name, self.thp_anon))

    def __reduce__(self) -> tuple[object, ...]:
        # MappingProxyType does not pickle: rebuild from a plain dict
        return (_rebuild, (self.kind, self.enabled, dict(self.sizes), self.sizes_exclusive,
                           self.defrag, self.use_zero_page, self.fixed_order,
                           self.anon_beside_full, self.name, self.thp_anon))

    # ---------------------------------------------------------- builders
    @classmethod
    def upstream(cls, enabled: str = "madvise", sizes: Mapping[str, str] | None = None,
                 thp_anon: str | None = None, **kw: object) -> Policy:
        """Mainline policy; ``thp_anon`` takes the kernel's boot-parameter syntax."""
        return cls(kind="upstream", enabled=enabled, sizes=dict(sizes or {}), thp_anon=thp_anon,
                   **kw)  # type: ignore[arg-type]

    @classmethod
    def fixed(cls, order: int | str, **kw: object) -> Policy:
        """Every write fault tries exactly ``order`` (0, 2..PMD, or a size like
        ``"64K"``), then order 0."""
        return cls(kind="fixed", fixed_order=order, enabled="always", **kw)  # type: ignore[arg-type]

    @classmethod
    def from_sysfs_values(cls, values: Mapping[str, str], name: str = KERNEL_SPEC) -> Policy:
        """An ``upstream`` policy from THP sysfs values.

        Keys are paths relative to /sys/kernel/mm/transparent_hugepage, values
        the selected word: ``{"enabled": "madvise", "defrag": "madvise",
        "use_zero_page": "1", "anon_beside_full": "0",
        "hugepages-64kB/enabled": "always", ...}``.  ``enabled`` is required;
        the other global keys default to the kernel's defaults; keys that do
        not steer anonymous faults (khugepaged/..., shmem_enabled, ...) are
        ignored.  Only listed sizes are enabled (``sizes_exclusive``), as
        sysfs lists every size the machine has.

        >>> Policy.from_sysfs_values({"enabled": "never", "hugepages-64kB/enabled": "always"}).sizes
        mappingproxy({'64K': 'always'})
        """
        if "enabled" not in values:
            raise ValueError("sysfs values lack 'enabled'")
        sizes: dict[str, str] = {}
        for key, value in values.items():
            kb, sep, rest = key.removeprefix("hugepages-").partition("kB/")
            if key.startswith("hugepages-") and sep and rest == "enabled":
                if not kb.isascii() or not kb.isdigit():
                    raise ValueError(f"sysfs key {key!r}: not hugepages-<N>kB/enabled")
                sizes[format_size(int(kb) << 10)] = value
        return cls(kind="upstream", enabled=values["enabled"], sizes=sizes, sizes_exclusive=True,
                   defrag=values.get("defrag", "madvise"),
                   use_zero_page=_bit("use_zero_page", values.get("use_zero_page", "1"), "sysfs"),
                   anon_beside_full=_bit("anon_beside_full", values.get("anon_beside_full", "0"),
                                         "sysfs"),
                   name=name)

    @classmethod
    def parse(cls, spec: str) -> Policy:
        """Parse a policy spec string (see the module docstring)."""
        text = spec.strip()
        if not text:
            raise ValueError("empty policy spec")
        if text == KERNEL_SPEC:
            raise ValueError(f"policy {KERNEL_SPEC!r} is this machine's live sysfs settings: read them "
                             "with pylaf.live (host_policy()), or pass it to pylaf.experiments.compare")
        head, *opts = text.split("/")
        if head.startswith("order-"):
            arg = head[len("order-"):]
            base: Optional[Policy] = cls.fixed(int(arg) if arg.isascii() and arg.isdigit() else arg)
        elif head in KINDS:
            base = None
        else:
            raise ValueError(f"unknown policy {head!r} in {spec!r} (expected one of "
                             f"{', '.join(KINDS)}, order-N, order-<size>, {KERNEL_SPEC})")
        kw, sizes = _parse_options(text, opts, fixed=base is not None)
        if base is not None:
            return replace(base, name=text, **kw)  # type: ignore[arg-type]
        return cls(kind=head, sizes=sizes, name=text, **kw)  # type: ignore[arg-type]

    # ------------------------------------------------------------ output
    @property
    def label(self) -> str:
        return self.name or self.describe()

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"order-{self.fixed_order}"
        parts = [self.kind, f"enabled={self.enabled}"]
        if self.thp_anon:
            parts.append(f"thp_anon={self.thp_anon}")
        if self.sizes:
            parts.append(";".join(f"{k}:{v}" for k, v in self.sizes.items()))
        return "/".join(parts)

    # ------------------------------------------------------- resolution
    def resolve(self, geometry: Geometry) -> dict[int, str]:
        """The per-order ``enabled`` states (anonymous orders 2..PMD) this policy
        gives on a machine with ``geometry``; ValueError if it cannot run there
        (a size or a fixed order outside the machine's anonymous orders).

        >>> Policy.upstream(sizes={"64K": "always"}).resolve(Geometry.for_machine(4096))[4]
        'always'
        """
        self.fixed_order_on(geometry)
        states = {o: "never" for o in geometry.anon_orders}
        if not self.sizes_exclusive:
            states[geometry.pmd_order] = "inherit"
        if self.thp_anon is not None:
            for size, state in parse_thp_anon(self.thp_anon, geometry).items():
                states[order_of(size, geometry.page_size)] = state
        for size, state in self.sizes.items():
            o = order_of(size, geometry.page_size)
            if o not in states:
                raise ValueError(f"{size} is not an anonymous THP size with "
                                 f"{format_size(geometry.page_size)} pages")
            states[o] = state
        return states

    def fixed_order_on(self, geometry: Geometry) -> int:
        """The order a ``fixed`` policy tries on ``geometry`` (0 for other kinds)."""
        if self.kind != "fixed":
            return 0
        fixed = self.fixed_order
        if isinstance(fixed, str):
            fixed = order_of(fixed, geometry.page_size)
        if fixed is None or not (fixed == 0 or fixed in geometry.anon_orders):
            raise ValueError(f"invalid fixed order {fixed}: expected 0 or 2..{geometry.pmd_order} "
                             f"with {format_size(geometry.page_size)} pages")
        return fixed

    def per_size_states(self, page_size: int) -> dict[int, str]:
        """:meth:`resolve` on the default machine with ``page_size`` pages."""
        return self.resolve(Geometry.for_machine(page_size))

    def fill_c(self, cpol: object, geometry: Geometry) -> None:
        """Fill a ``struct laf_policy`` (cffi cdata) for an mm with ``geometry``."""
        states = self.resolve(geometry)
        cpol.kind = KINDS[self.kind]  # type: ignore[attr-defined]
        cpol.enabled = MODES[self.enabled]  # type: ignore[attr-defined]
        cpol.defrag = DEFRAG[self.defrag]  # type: ignore[attr-defined]
        cpol.use_zero_page = int(self.use_zero_page)  # type: ignore[attr-defined]
        cpol.anon_beside_full = int(self.anon_beside_full)  # type: ignore[attr-defined]
        cpol.fixed_order = self.fixed_order_on(geometry)  # type: ignore[attr-defined]
        for o in range(len(cpol.per_size)):  # type: ignore[attr-defined]
            cpol.per_size[o] = MODES[states.get(o, "never")]  # type: ignore[attr-defined]


def _rebuild(kind: str, enabled: str, sizes: dict[str, str], sizes_exclusive: bool, defrag: str,
             use_zero_page: bool, fixed_order: Optional[int | str], anon_beside_full: bool,
             name: Optional[str], thp_anon: Optional[str]) -> Policy:
    return Policy(kind=kind, enabled=enabled, sizes=sizes, sizes_exclusive=sizes_exclusive,
                  defrag=defrag, use_zero_page=use_zero_page, fixed_order=fixed_order,
                  anon_beside_full=anon_beside_full, name=name, thp_anon=thp_anon)


#: options a fixed-order policy takes (it has no per-size or global enabled knob)
_FIXED_OPTIONS = ("defrag", "use_zero_page", "anon_beside_full")


def _parse_options(spec: str, opts: list[str], *, fixed: bool) -> tuple[dict[str, object], dict[str, str]]:
    """``key=value`` options of a spec: (Policy keywords, per-size states).
    Unknown, repeated and contradicting keys raise ValueError naming them."""
    kw: dict[str, object] = {}
    sizes: dict[str, str] = {}
    seen_sizes: dict[int, str] = {}
    for opt in opts:
        key, eq, value = opt.partition("=")
        if not eq:
            raise ValueError(f"policy {spec!r}: option {opt!r} is not key=value")
        if key in kw:
            raise ValueError(f"policy {spec!r}: option {key!r} given twice")
        if key in ("enabled", "defrag", "thp_anon"):
            kw[key] = value
        elif key in ("use_zero_page", "anon_beside_full"):
            kw[key] = _bit(key, value, spec)
        else:
            nbytes = _size_key(spec, key)
            if nbytes in seen_sizes:
                raise ValueError(f"policy {spec!r}: size {key!r} given twice "
                                 f"(also as {seen_sizes[nbytes]!r})")
            seen_sizes[nbytes] = key
            sizes[key] = value
        if fixed and key not in _FIXED_OPTIONS:
            raise ValueError(f"policy {spec!r}: option {key!r} contradicts a fixed-order policy "
                             f"(it takes only {', '.join(_FIXED_OPTIONS)})")
    thp_anon = kw.get("thp_anon")
    if isinstance(thp_anon, str):
        both = sorted(set(seen_sizes) & _thp_anon_sizes(thp_anon))
        if both:
            raise ValueError(f"policy {spec!r}: size {seen_sizes[both[0]]!r} contradicts "
                             f"thp_anon={thp_anon} (give each size once)")
    return kw, sizes


def _size_key(spec: str, key: str) -> int:
    try:
        return parse_size(key)
    except ValueError:
        raise ValueError(f"policy {spec!r}: unknown option {key!r}") from None


#: The policies `pylaf compare` runs by default, besides order-0 and order-4.
DEFAULT_COMPARE = (
    "order-0",
    "order-4",
    "upstream/enabled=never/64K=always",
    "upstream/enabled=always/thp_anon=16K-64K:always;2M:inherit",
    "laf-v3/enabled=madvise",
    "huang-a/enabled=madvise",
    "huang-b/enabled=madvise",
    "huang-sysfs/enabled=small",
    "huang-sysfs/enabled=auto",
)
