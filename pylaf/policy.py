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
order 4), ``order-64K``, ``kernel`` (this machine's live sysfs settings).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Optional

from pylaf._ffi import lib
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


def parse_thp_anon(spec: str, page_size: int = 4096) -> dict[str, str]:
    """Parse the kernel's ``thp_anon=`` boot parameter into ``{size: state}``.

    ``"16K-64K:always;128K,512K:inherit;2M:never"`` →
    ``{"16K": "always", "32K": "always", "64K": "always", "128K": "inherit",
    "512K": "inherit", "2M": "never"}``.  Like the kernel, sizes must be powers
    of two in the anonymous range (order 2 up to the PMD order) and a range's
    start must not exceed its end.
    """
    pmd_order = (page_size // 8).bit_length() - 1
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
            if not item:
                raise ValueError(f"thp_anon={spec!r}: empty size in {token!r}")
            lo, dash, hi = item.partition("-")
            try:
                o_lo = order_of(lo, page_size)
                o_hi = order_of(hi, page_size) if dash else o_lo   # "16K-" is an error
            except ValueError as exc:
                raise ValueError(f"thp_anon={spec!r}: {exc}") from None
            if o_lo > o_hi:
                raise ValueError(f"thp_anon={spec!r}: range {item!r} runs backwards")
            for o in range(o_lo, o_hi + 1):
                if not 2 <= o <= pmd_order:
                    raise ValueError(
                        f"thp_anon={spec!r}: {format_size(page_size << o)} is not an anonymous "
                        f"THP size ({format_size(page_size << 2)}.."
                        f"{format_size(page_size << pmd_order)} with {format_size(page_size)} pages)")
                out[format_size(page_size << o)] = state
    return out


@dataclass(frozen=True)
class Policy:
    """One THP policy.  ``sizes`` maps a folio size (``"64K"``) to its per-size
    ``enabled`` value; unlisted sizes take the kernel default (PMD size
    ``inherit``, others ``never``) unless ``thp_anon`` semantics apply
    (``sizes_exclusive=True``: unlisted sizes are ``never``)."""

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
        for size, state in self.sizes.items():
            parse_size(size)
            if state not in PER_SIZE_VALUES:
                raise ValueError(f"invalid hugepages-{size}/enabled value {state!r} "
                                 f"(expected one of {', '.join(PER_SIZE_VALUES)})")
        if self.kind == "fixed":
            if self.fixed_order is None:
                raise ValueError("policy 'fixed' needs fixed_order")
            if isinstance(self.fixed_order, str):
                parse_size(self.fixed_order)
            elif self.fixed_order < 0 or self.fixed_order == 1:
                raise ValueError(f"invalid fixed order {self.fixed_order}: anonymous folios are "
                                 "order 0 or 2..PMD order (order 1 is not an anon THP size)")
        if self.thp_anon is not None:
            errors = []
            for ps in (4096, 16384, 65536):
                try:
                    parse_thp_anon(self.thp_anon, ps)
                    break
                except ValueError as exc:
                    errors.append(exc)
            else:
                raise errors[0]
            object.__setattr__(self, "sizes_exclusive", True)
        object.__setattr__(self, "sizes", MappingProxyType(dict(self.sizes)))

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
    def from_sysfs(cls, thp_dir: str | Path = "/sys/kernel/mm/transparent_hugepage") -> Policy:
        """This machine's live settings as an ``upstream`` policy."""
        from pylaf.live.host import read_thp_settings

        s = read_thp_settings(Path(thp_dir))
        sizes = {format_size(kb * 1024): state for kb, state in s.per_size.items()}
        return cls(kind="upstream", enabled=s.enabled, sizes=sizes, sizes_exclusive=True,
                   defrag=s.defrag, use_zero_page=bool(s.use_zero_page),
                   anon_beside_full=bool(s.anon_beside_full or 0), name="kernel")

    @classmethod
    def parse(cls, spec: str) -> Policy:
        """Parse a policy spec string (see the module docstring)."""
        text = spec.strip()
        if not text:
            raise ValueError("empty policy spec")
        if text == "kernel":
            return cls.from_sysfs()
        head, *opts = text.split("/")
        kw: dict[str, object] = {}
        base: Optional[Policy] = None
        kind = head
        if head.startswith("order-"):
            arg = head[len("order-"):]
            base = cls.fixed(int(arg) if arg.isdigit() else arg)
        elif head not in KINDS:
            raise ValueError(f"unknown policy {head!r} in {spec!r} (expected one of "
                             f"{', '.join(KINDS)}, order-N, order-<size>, kernel)")
        sizes: dict[str, str] = {}
        exclusive = False
        thp_anon_spec: str | None = None
        for opt in opts:
            key, eq, value = opt.partition("=")
            if not eq:
                raise ValueError(f"policy {spec!r}: option {opt!r} is not key=value")
            if key == "enabled":
                kw["enabled"] = value
            elif key == "defrag":
                kw["defrag"] = value
            elif key == "use_zero_page":
                if value not in ("0", "1"):
                    raise ValueError(f"policy {spec!r}: use_zero_page must be 0 or 1")
                kw["use_zero_page"] = value == "1"
            elif key == "anon_beside_full":
                if value not in ("0", "1"):
                    raise ValueError(f"policy {spec!r}: anon_beside_full must be 0 or 1")
                kw["anon_beside_full"] = value == "1"
            elif key == "thp_anon":
                thp_anon_spec = value
                exclusive = True
            else:
                try:
                    parse_size(key)
                except ValueError:
                    raise ValueError(f"policy {spec!r}: unknown option {key!r}") from None
                sizes[key] = value
        if thp_anon_spec is not None:
            kw["thp_anon"] = thp_anon_spec
        if base is not None:
            return replace(base, name=text, **kw)  # type: ignore[arg-type]
        return cls(kind=kind, sizes=sizes, sizes_exclusive=exclusive, name=text, **kw)  # type: ignore[arg-type]

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

    def per_size_states(self, page_size: int) -> dict[int, str]:
        """Resolved per-order ``enabled`` values for anonymous orders 2..PMD."""
        pmd_order = (page_size // 8).bit_length() - 1
        states = {o: "never" for o in range(2, pmd_order + 1)}
        if not self.sizes_exclusive:
            states[pmd_order] = "inherit"
        if self.thp_anon is not None:
            for size, state in parse_thp_anon(self.thp_anon, page_size).items():
                states[order_of(size, page_size)] = state
        for size, state in self.sizes.items():
            o = order_of(size, page_size)
            if not 2 <= o <= pmd_order:
                raise ValueError(f"{size} is not an anonymous THP size with "
                                 f"{format_size(page_size)} pages")
            states[o] = state
        return states

    def fill_c(self, cpol: object, page_size: int) -> None:
        """Fill a ``struct laf_policy`` (cffi cdata) for an mm with ``page_size`` pages."""
        pmd_order = (page_size // 8).bit_length() - 1
        cpol.kind = KINDS[self.kind]  # type: ignore[attr-defined]
        cpol.enabled = MODES[self.enabled]  # type: ignore[attr-defined]
        cpol.defrag = DEFRAG[self.defrag]  # type: ignore[attr-defined]
        cpol.use_zero_page = int(self.use_zero_page)  # type: ignore[attr-defined]
        cpol.anon_beside_full = int(self.anon_beside_full)  # type: ignore[attr-defined]
        fixed = self.fixed_order
        if isinstance(fixed, str):
            fixed = order_of(fixed, page_size)
        if self.kind == "fixed":
            if fixed is None or not (fixed == 0 or 2 <= fixed <= pmd_order):
                raise ValueError(f"invalid fixed order {fixed}: expected 0 or 2..{pmd_order} "
                                 f"with {format_size(page_size)} pages")
        cpol.fixed_order = int(fixed or 0)  # type: ignore[attr-defined]
        for o in range(len(cpol.per_size)):  # type: ignore[attr-defined]
            cpol.per_size[o] = lib.LAF_THP_NEVER  # type: ignore[attr-defined]
        for o, state in self.per_size_states(page_size).items():
            cpol.per_size[o] = MODES[state]  # type: ignore[attr-defined]


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
