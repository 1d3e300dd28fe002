"""One source of truth (issue 8): the Python API carries what the C core says
and fails here when the two drift apart."""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from pylaf import AddressSpace, Config, Policy
from pylaf._ffi import ffi, lib
from pylaf.errors import (
    ClosedError,
    InvariantError,
    LafBusyError,
    LafError,
    LafMemoryError,
    LafValueError,
    error_for,
)
from pylaf.experiments import compare as experiments_compare
from pylaf.experiments.compare import compare
from pylaf.geometry import ARCHES, PAGE_SIZES, Geometry
from pylaf.policy import MODES
from pylaf.stats import PER_ORDER_FIELDS, SCALAR_FIELDS, Stats

ROOT = Path(__file__).resolve().parent.parent
HEADER_DIR = ROOT / "csrc"


# ------------------------------------------------------------------ Stats
def test_stats_declares_every_counter_of_struct_laf_stats() -> None:
    """A counter added to struct laf_stats (csrc/laf.h) without a Stats field,
    or a field without a counter, fails here."""
    c_fields = ffi.typeof("struct laf_stats").fields
    c_arrays = [n for n, f in c_fields if f.type.kind == "array"]
    c_scalars = [n for n, f in c_fields if f.type.kind != "array"]
    assert list(PER_ORDER_FIELDS) == c_arrays
    assert list(SCALAR_FIELDS) == c_scalars
    declared = {f.name: f.type for f in dataclasses.fields(Stats)}
    assert set(declared) == {*c_arrays, *c_scalars, "page_size", "pmd_order", "per_order"}
    assert all(declared[n] == "dict[str, int]" for n in c_arrays)
    assert all(declared[n] == "int" for n in c_scalars)


def test_stats_values_come_from_the_c_struct() -> None:
    with AddressSpace(Config(ram="64M", policy=Policy.fixed(4))) as mm:
        a = mm.mmap("2M")
        start = (a + (64 << 10) - 1) & ~((64 << 10) - 1)     # a 64K-aligned 1M inside
        mm.touch_range(start, "1M", write=True)
        st = mm.stats()
        cst = ffi.new("struct laf_stats *")
        assert lib.laf_get_stats(mm.mm, cst) == 0
    assert st.faults == 16 and st.mm_anonpages == 256
    assert all(getattr(st, n) == getattr(cst, n) for n in SCALAR_FIELDS)
    assert st.anon_fault_alloc == {**{k: 0 for k in st.anon_fault_alloc}, "64K": 16}
    assert list(st.anon_fault_alloc) == ["16K", "32K", "64K", "128K", "256K", "512K", "1M", "2M"]
    assert next(iter(st.folios_mapped)) == "4K"
    assert int(st.per_order["anon_fault_alloc"][4]) == 16


# ----------------------------------------------------- struct sizes (gcc)
def _has_layout(struct: str) -> bool:
    """False for an opaque struct (laf_mm); cffi aborts on .fields of one."""
    try:
        ffi.sizeof(f"struct {struct}")
    except ffi.error:
        return False
    return True


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_laf_h_struct_layouts_match_the_cdef(tmp_path: Path) -> None:
    """sizeof and field offsets of every struct of the cdef, as the C compiler
    lays out csrc/laf.h, against cffi's view (ffi.sizeof / ffi.offsetof)."""
    structs = [n for n in sorted(ffi.list_types()[1]) if _has_layout(n)]
    assert {"laf_stats", "laf_config", "laf_policy", "laf_geometry"} <= set(structs)
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "laf.h"', "int main(void) {"]
    want = []
    for s in structs:
        lines.append(f'printf("%zu\\n", sizeof(struct {s}));')
        want.append(ffi.sizeof(f"struct {s}"))
        for name, _ in ffi.typeof(f"struct {s}").fields:
            lines.append(f'printf("%zu\\n", offsetof(struct {s}, {name}));')
            want.append(ffi.offsetof(f"struct {s}", name))
    lines += ["return 0;", "}"]
    src, exe = tmp_path / "layout.c", tmp_path / "layout"
    src.write_text("\n".join(lines) + "\n")
    subprocess.run(["cc", "-std=gnu11", "-I", str(HEADER_DIR), str(src), "-o", str(exe)], check=True)
    got = [int(x) for x in subprocess.run([str(exe)], capture_output=True, text=True,
                                          check=True).stdout.split()]
    assert got == want


# --------------------------------------------------------------- Geometry
@pytest.mark.parametrize("page_size", list(PAGE_SIZES))
@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_config_and_address_space_carry_the_c_geometry(page_size: int, arch: str) -> None:
    cfg = Config(page_size=page_size, arch=arch, ram="1G")
    with AddressSpace(cfg) as mm:
        assert mm.geometry == cfg.geometry
        geo = ffi.new("struct laf_geometry *")
        assert lib.laf_get_geometry(mm.mm, geo) == 0
        assert Geometry.from_c(geo) == mm.geometry
        assert (mm.page_size, mm.pmd_size, mm.pmd_order) == (geo.page_size, geo.pmd_size, geo.pmd_order)
    assert cfg.geometry.page_shift == PAGE_SIZES[page_size]
    assert cfg.geometry.ram_pages == (1 << 30) // page_size


def test_arches_and_page_sizes_come_from_lib() -> None:
    assert set(ARCHES.values()) == {lib.LAF_ARCH_GENERIC, lib.LAF_ARCH_ARM64}
    assert sorted(PAGE_SIZES.values()) == sorted([lib.LAF_PAGE_SHIFT_4K, lib.LAF_PAGE_SHIFT_16K,
                                                  lib.LAF_PAGE_SHIFT_64K])


# ---------------------------------------------------------- Policy.resolve
@pytest.mark.parametrize("page_size", list(PAGE_SIZES))
def test_resolve_gives_a_state_for_every_anonymous_order(page_size: int) -> None:
    geo = Geometry.for_machine(page_size)
    states = Policy().resolve(geo)
    assert sorted(states) == list(geo.anon_orders)
    assert states[geo.pmd_order] == "inherit"
    assert {s for o, s in states.items() if o != geo.pmd_order} == {"never"}


def test_resolve_agrees_with_the_c_core() -> None:
    """What resolve() says is what laf_set_policy() stores (laf_get_policy)."""
    pol = Policy.parse("upstream/enabled=always/thp_anon=64K-256K:always;32M:inherit")
    geo = Geometry.for_machine(16384)
    with AddressSpace(Config(page_size=16384, policy=pol)) as mm:
        cpol = ffi.new("struct laf_policy *")
        assert lib.laf_get_policy(mm.mm, cpol) == 0
        got = {o: int(cpol.per_size[o]) for o in range(len(cpol.per_size))}
    want = {o: MODES[s] for o, s in pol.resolve(geo).items()}
    assert got == {o: want.get(o, lib.LAF_THP_NEVER) for o in got}
    assert want[2] == want[4] == lib.LAF_THP_ALWAYS and want[geo.pmd_order] == lib.LAF_THP_INHERIT


@pytest.mark.parametrize(("policy", "page_size"), [
    (Policy.parse("upstream/thp_anon=16K:always"), 16384),     # order 0 on 16K pages
    (Policy.upstream(sizes={"8K": "always"}), 4096),           # order 1
    (Policy.upstream(sizes={"4M": "always"}), 4096),           # above the PMD
    (Policy.fixed(10), 4096),
    (Policy.fixed("4M"), 4096),
])
def test_resolve_rejects_what_the_machine_cannot_run(policy: Policy, page_size: int) -> None:
    with pytest.raises(ValueError, match="pages"):
        policy.resolve(Geometry.for_machine(page_size))
    with pytest.raises(ValueError):
        AddressSpace(Config(page_size=page_size, ram="1G", policy=policy))


def test_resolve_needs_no_address_space(monkeypatch: pytest.MonkeyPatch) -> None:
    """compare() screens policies with resolve(): it must not build a machine
    for a policy it then skips."""
    created: list[Config] = []
    real_init = AddressSpace.__init__

    def counting_init(self: AddressSpace, config: Config | None = None, **kw: object) -> None:
        assert config is not None
        created.append(config)
        real_init(self, config)

    monkeypatch.setattr(AddressSpace, "__init__", counting_init)
    monkeypatch.setattr(experiments_compare, "_warmed", True)    # no warm-up machine
    skipped: list[tuple[str, str]] = []
    rows = compare(["seq-fill"], ["order-0", "upstream/thp_anon=16K:always"], page_size=16384,
                   scale=0.02, skip_invalid=True, skipped=skipped)
    assert [r.policy for r in rows] == ["order-0"]
    assert [label for label, _ in skipped] == ["upstream/thp_anon=16K:always"]
    assert [c.policy.label for c in created] == ["order-0"]      # the one run, nothing else


# ----------------------------------------------------- from_sysfs_values
def test_from_sysfs_values_is_pure_and_complete() -> None:
    values = {"enabled": "always", "defrag": "defer", "use_zero_page": "0", "anon_beside_full": "1",
              "hugepages-64kB/enabled": "always", "hugepages-2048kB/enabled": "inherit",
              "hugepages-16kB/enabled": "never", "khugepaged/defrag": "1", "shmem_enabled": "never"}
    p = Policy.from_sysfs_values(values)
    assert (p.kind, p.enabled, p.defrag, p.use_zero_page, p.anon_beside_full, p.name) == \
        ("upstream", "always", "defer", False, True, "kernel")
    assert dict(p.sizes) == {"64K": "always", "2M": "inherit", "16K": "never"}
    assert p.sizes_exclusive
    states = p.resolve(Geometry.for_machine(4096))
    assert (states[2], states[4], states[9], states[3]) == ("never", "always", "inherit", "never")
    # sysfs lists every size: one it does not list is off, the PMD size included
    only_64k = Policy.from_sysfs_values({"enabled": "always", "hugepages-64kB/enabled": "always"})
    assert only_64k.resolve(Geometry.for_machine(4096))[9] == "never"


@pytest.mark.parametrize(("values", "named"), [
    ({}, "enabled"),
    ({"enabled": "sometimes"}, "enabled"),
    ({"enabled": "never", "use_zero_page": "yes"}, "use_zero_page"),
    ({"enabled": "never", "hugepages-64kB/enabled": "maybe"}, "hugepages-64K"),
    ({"enabled": "never", "hugepages-xkB/enabled": "never"}, "hugepages-xkB"),
])
def test_from_sysfs_values_rejects_bad_values(values: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Policy.from_sysfs_values(values)


def test_kernel_spec_is_not_resolved_by_the_value_type() -> None:
    with pytest.raises(ValueError, match="live"):
        Policy.parse("kernel")


# ------------------------------------------------------------ error codes
@pytest.mark.parametrize(("code", "cls"), [
    (lib.LAF_EINVAL, LafValueError), (lib.LAF_ERANGE, LafValueError), (lib.LAF_EPERM, LafValueError),
    (lib.LAF_ENOENT, LafValueError), (lib.LAF_EEXIST, LafValueError),
    (lib.LAF_ENOMEM, LafMemoryError), (lib.LAF_ENOSPC, LafMemoryError),
    (lib.LAF_EBUSY, LafBusyError), (lib.LAF_EUCLEAN, InvariantError), (lib.LAF_EFAULT, LafError),
])
def test_one_error_map(code: int, cls: type[LafError]) -> None:
    exc = error_for(code, "what")
    assert type(exc) is cls and exc.errno == code
    assert str(exc).startswith("what: ") and ffi.string(lib.laf_strerror(code)).decode() in str(exc)
    assert not issubclass(cls, ClosedError)
