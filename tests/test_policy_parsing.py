"""Policy parsing: the kernel's ``thp_anon=`` boot-parameter syntax, the
sysfs values, spec strings, and the kernel defaults (docs/kernel-semantics.md §1.9:
PMD size ``inherit``, every other size ``never``; once ``thp_anon=`` is
given, every size it does not mention, the PMD size included, is
``never``)."""
from __future__ import annotations

import pytest
from conftest import M, place

from pylaf import Config, Policy, parse_thp_anon
from pylaf.policy import MODES


@pytest.mark.parametrize("spec,want", [
    ("16K-64K:always;128K,512K:inherit;2M:never",
     {"16K": "always", "32K": "always", "64K": "always", "128K": "inherit",
      "512K": "inherit", "2M": "never"}),
    ("64K:always", {"64K": "always"}),
    ("2M:madvise", {"2M": "madvise"}),
    ("16K-2M:inherit", {s: "inherit" for s in
                        ("16K", "32K", "64K", "128K", "256K", "512K", "1M", "2M")}),
    ("16K:always;16K:never", {"16K": "never"}),          # the last one wins
    ("32K-32K:madvise", {"32K": "madvise"}),
    ("16k:always", {"16K": "always"}),                  # memparse: k or K
])
def test_thp_anon_valid(spec, want) -> None:
    assert parse_thp_anon(spec) == want


@pytest.mark.parametrize("spec", [
    "", "  ", "16K", "16K:", ":always",
    "8K:always",          # order 1: not an anonymous THP size
    "4K:always",          # order 0
    "4M:always",          # beyond the PMD size
    "64K-16K:always",     # backwards
    "48K:always",         # not a power of two
    "64K:sometimes", "64K:Always", "16K,:always", "16K-:always", "-16K:always",
    "abc:always",
    "64K:always;",        # setup_thp_anon(): the empty token after ';' has no ':'
    "64K:always;;2M:never",
])
def test_thp_anon_invalid(spec) -> None:
    with pytest.raises(ValueError):
        parse_thp_anon(spec)


def test_thp_anon_other_page_sizes() -> None:
    assert parse_thp_anon("64K-256K:always", page_size=16384) == {
        "64K": "always", "128K": "always", "256K": "always"}
    assert parse_thp_anon("32M:inherit", page_size=16384) == {"32M": "inherit"}
    with pytest.raises(ValueError):
        parse_thp_anon("16K:always", page_size=16384)          # order 0 at 16K pages
    with pytest.raises(ValueError):
        parse_thp_anon("128K:always", page_size=65536)         # order 1 at 64K pages
    assert parse_thp_anon("256K:always;512M:never", page_size=65536) == {
        "256K": "always", "512M": "never"}


def test_default_per_size_states() -> None:
    st = Policy().per_size_states(4096)
    assert st == {2: "never", 3: "never", 4: "never", 5: "never", 6: "never", 7: "never",
                  8: "never", 9: "inherit"}
    assert Policy().enabled == "madvise" and Policy().kind == "upstream"
    st16 = Policy().per_size_states(16384)
    assert st16[11] == "inherit" and all(v == "never" for o, v in st16.items() if o != 11)


def test_thp_anon_makes_unmentioned_sizes_never() -> None:
    p = Policy.upstream(thp_anon="16K-64K:always")
    st = p.per_size_states(4096)
    assert st[9] == "never" and st[4] == "always" and st[5] == "never"
    p = Policy.upstream(thp_anon="64K:always;2M:inherit")
    assert p.per_size_states(4096)[9] == "inherit"


def test_sizes_override() -> None:
    p = Policy.upstream(sizes={"64K": "always", "2M": "never"})
    st = p.per_size_states(4096)
    assert st[4] == "always" and st[9] == "never"
    with pytest.raises(ValueError):
        Policy.upstream(sizes={"64K": "sometimes"})
    with pytest.raises(ValueError):
        Policy.upstream(sizes={"8K": "always"}).per_size_states(4096)


@pytest.mark.parametrize("spec,kind,enabled", [
    ("upstream", "upstream", "madvise"),
    ("upstream/enabled=always", "upstream", "always"),
    ("upstream/enabled=never/64K=always", "upstream", "never"),
    ("laf-v3/enabled=madvise", "laf-v3", "madvise"),
    ("huang-a/enabled=always", "huang-a", "always"),
    ("huang-b", "huang-b", "madvise"),
    ("huang-sysfs/enabled=small", "huang-sysfs", "small"),
    ("huang-sysfs/enabled=auto", "huang-sysfs", "auto"),
])
def test_spec_strings(spec, kind, enabled) -> None:
    p = Policy.parse(spec)
    assert (p.kind, p.enabled) == (kind, enabled)
    assert p.label == spec


def test_spec_string_options() -> None:
    p = Policy.parse("upstream/enabled=always/thp_anon=16K-64K:always;2M:inherit/defrag=never"
                     "/use_zero_page=0/anon_beside_full=1")
    st = p.per_size_states(4096)
    assert st[2] == st[3] == st[4] == "always" and st[9] == "inherit" and st[8] == "never"
    assert p.defrag == "never" and p.use_zero_page is False and p.anon_beside_full is True
    p = Policy.parse("upstream/64K=always/2M=never")
    assert p.per_size_states(4096)[4] == "always" and p.per_size_states(4096)[9] == "never"


@pytest.mark.parametrize("spec,order", [("order-4", 4), ("order-0", 0), ("order-9", 9),
                                        ("order-64K", "64K"), ("order-2M", "2M")])
def test_fixed_specs(spec, order) -> None:
    p = Policy.parse(spec)
    assert p.kind == "fixed" and p.fixed_order == order


@pytest.mark.parametrize("spec", [
    "", "bogus", "upstream/enabled=small", "laf-v3/enabled=auto", "upstream/foo=bar",
    "upstream/enabled", "order-1", "order-", "order-48K", "upstream/use_zero_page=2",
    "upstream/anon_beside_full=yes", "upstream/64K=sometimes", "upstream/defrag=sometimes",
    "upstream/thp_anon=8K:always", "upstream/enabled=inherit",
])
def test_spec_invalid(spec) -> None:
    with pytest.raises(ValueError):
        p = Policy.parse(spec)
        Config(ram="64M", policy=p).policy.fill_c  # noqa: B018
        p.per_size_states(4096)
        from pylaf import AddressSpace
        AddressSpace(Config(ram="64M", policy=p)).close()


def test_fixed_order_validated_against_page_size(mm_factory) -> None:
    with pytest.raises(ValueError):
        mm_factory(Policy.fixed(11))                    # beyond PMD order 9 at 4K
    mm = mm_factory(Policy.fixed(11), page_size="16K", ram="256M")   # the PMD order
    a = mm.mmap(32 * M)
    assert mm.fault(a, write=True).order == 11
    with pytest.raises(ValueError):
        mm.set_policy(Policy.fixed(12))
    with pytest.raises(ValueError):
        Policy.fixed(1)                                 # order 1 is never an anon folio


def test_global_values_per_kind() -> None:
    for v in ("never", "madvise", "always"):
        Policy(kind="upstream", enabled=v)
    for v in ("small", "auto"):
        Policy(kind="huang-sysfs", enabled=v)
        with pytest.raises(ValueError):
            Policy(kind="upstream", enabled=v)
    assert set(MODES) == {"never", "always", "madvise", "inherit", "small", "auto"}


def test_spec_string_drives_the_emulator(mm_factory) -> None:
    mm = mm_factory("upstream/enabled=never/thp_anon=64K:always")
    a = place(mm, "2M")
    assert mm.fault(a, write=True).order == 4
    mm.set_policy("order-0")
    assert mm.fault(a + 1 * M, write=True).order == 0
    assert mm.policy.label == "order-0"
    mm.set_policy("upstream/enabled=always")
    b = place(mm, "2M")
    assert mm.fault(b, write=True).order == 9
