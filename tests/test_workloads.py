"""Built-in workloads and the compare engine: determinism and the relations
that hold by construction (stride-64k bloats 16x under order-4, seq-fill
takes 1/16 of the faults, read-then-write maps zero pages then COWs)."""
from __future__ import annotations

import json

import pytest

from pylaf import AddressSpace, Config, Policy
from pylaf.experiments import workloads as wl
from pylaf.experiments.compare import CompareResult, compare
from pylaf.experiments.workloads import (
    BUILTIN,
    HeapChurn,
    OddSizes,
    available_workloads,
    default_workload_names,
    get_workload,
    register_workload,
    unregister_workload,
)

SCALE = 0.02
NAMES = [cls.name for cls in BUILTIN]


def run(name: str, policy: str, scale: float = SCALE, **cfg: object):
    with AddressSpace(Config(policy=Policy.parse(policy), **cfg)) as mm:  # type: ignore[arg-type]
        get_workload(name, scale).run(mm)
        mm.check_invariants()
        return mm.stats(), len(mm.vmas())


def test_registry_has_the_builtins_in_the_default_set():
    for required in ("seq-fill", "random-sparse", "stride-64k", "read-then-write", "heap-churn",
                     "odd-sizes", "madvise-hugepage"):
        assert required in available_workloads()
        assert required in default_workload_names()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("policy", ["order-0", "order-4"])
def test_workload_runs_clean_and_is_deterministic(name, policy):
    a, nv_a = run(name, policy)
    b, nv_b = run(name, policy)
    assert a.as_dict() == b.as_dict()
    assert nv_a == nv_b
    assert a.faults > 0 and a.pages_touched > 0
    assert a.faults_oom == a.faults_sigsegv == a.faults_sigbus == 0
    assert a.mm_anonpages >= a.pages_touched


@pytest.mark.parametrize("name", NAMES)
def test_scale_grows_the_workload(name):
    small, _ = run(name, "order-0", scale=0.02)
    big, _ = run(name, "order-0", scale=0.08)
    assert big.pages_touched > small.pages_touched


def test_seq_fill_order4_takes_a_sixteenth_of_the_faults():
    s0, _ = run("seq-fill", "order-0")
    s4, _ = run("seq-fill", "order-4")
    assert s0.faults == s0.pages_touched == s0.mm_anonpages
    assert s4.faults * 16 == s0.faults
    assert s4.folio_histogram() == {"64K": s4.faults}
    assert s4.bloat_pages == 0


def test_stride_64k_bloats_16x_under_order4_and_not_under_order0():
    s0, _ = run("stride-64k", "order-0")
    s4, _ = run("stride-64k", "order-4")
    assert s0.bloat_ratio == pytest.approx(1.0)
    assert s4.bloat_ratio == pytest.approx(16.0)
    assert s0.faults == s4.faults == s0.pages_touched


def test_read_then_write_maps_zero_pages_then_cows():
    for policy in ("order-0", "order-4"):
        s, _ = run("read-then-write", policy)
        n = s.pages_touched
        assert n > 0
        assert s.faults_read == n and s.zero_page_maps == n    # read: zero-page PTEs
        assert s.faults_wp == n                                # write: do_wp_page
        assert s.faults == 2 * n
        assert s.folio_histogram() == {"4K": n}                # COW is always order 0
        assert s.mm_anonpages == n


def test_read_then_write_with_pmd_thp_uses_the_huge_zero_page():
    s, _ = run("read-then-write", "upstream/enabled=always")
    assert s.huge_zero_pmd_maps > 0
    assert s.thp_fault_alloc == s.huge_zero_pmd_maps          # each huge zero PMD -> one THP


def test_random_sparse_bloats_under_order4_only():
    s0, _ = run("random-sparse", "order-0")
    s4, _ = run("random-sparse", "order-4")
    assert s0.bloat_pages == 0
    assert s4.pages_touched == s0.pages_touched
    assert 8 < s4.bloat_ratio <= 16


def test_heap_churn_purges_and_reuses():
    s0, _ = run("heap-churn", "order-0")
    s4, _ = run("heap-churn", "order-4")
    assert s0.ptes_cleared > 0 and s4.ptes_cleared > 0        # MADV_DONTNEED and munmap
    assert s0.hits > 0                                        # reused, still-resident slots
    assert s0.bloat_pages == 0
    assert sum(s4.split_deferred.values()) > 0                # partial unmaps of 64K folios
    assert s4.faults < s0.faults


def test_odd_sizes_clamps_at_vma_edges():
    w = get_workload("odd-sizes", SCALE)
    assert isinstance(w, OddSizes)
    assert all(size % (64 << 10) for size in w.sizes)
    s4, nvmas = run("odd-sizes", "order-4")
    assert nvmas == 2 * max(1, round(w.count * SCALE))        # every mapping has a guard VMA
    hist = s4.folio_histogram()
    assert hist.get("4K", 0) > 0 and hist.get("64K", 0) > 0   # edges fall back to order 0
    assert s4.bloat_pages == 0                                # written in full


def test_madvise_hugepage_gets_pmd_thps_under_madvise_policies():
    s, _ = run("madvise-hugepage", "upstream/enabled=madvise")
    assert s.thp_fault_alloc > 0 and s.faults == s.thp_fault_alloc
    s0, _ = run("madvise-hugepage", "order-0")
    assert s0.thp_fault_alloc == 0


@pytest.mark.parametrize("page_size", ["16K", "64K"])
def test_workloads_run_with_large_base_pages(page_size):
    for name in NAMES:
        s, _ = run(name, "order-2", scale=0.01, page_size=page_size, ram="2G")
        assert s.faults > 0 and s.faults_oom == 0


def test_bad_scale_and_unknown_name():
    with pytest.raises(ValueError, match="scale"):
        get_workload("seq-fill", 0)
    with pytest.raises(ValueError, match="scale"):
        HeapChurn(scale=-1.0)
    with pytest.raises(ValueError, match="unknown workload 'nope'"):
        get_workload("nope")


class _Custom:
    name = "test-custom"
    description = "a plug-in workload"

    def __init__(self) -> None:
        self.runs = 0

    def run(self, mm: AddressSpace) -> None:
        self.runs += 1
        a = mm.mmap("2M")                  # a PMD multiple: PMD-aligned
        mm.touch_range(a, "2M", write=True)


def test_register_workload_plugin():
    custom = _Custom()
    register_workload(custom)
    try:
        assert "test-custom" in available_workloads()
        assert "test-custom" in default_workload_names()
        with pytest.raises(ValueError, match="already registered"):
            register_workload(custom)
        rows = compare(["test-custom"], ["order-0", "order-4"])
        assert [r.faults for r in rows] == [512, 32]
        assert custom.runs == 2
    finally:
        unregister_workload("test-custom")
    assert "test-custom" not in available_workloads()
    with pytest.raises(TypeError):
        register_workload(object())  # type: ignore[arg-type]


def test_bundled_trace_workloads_join_the_default_set(monkeypatch):
    custom = _Custom()
    custom.name = "test-trace"
    monkeypatch.setattr(wl, "bundled_workloads", lambda: [custom])
    monkeypatch.setattr(wl, "_REGISTRY", dict(wl._REGISTRY))
    monkeypatch.setattr(wl, "_DEFAULTS", list(wl._DEFAULTS))
    monkeypatch.setattr(wl, "_plugins_loaded", False)
    assert "test-trace" in default_workload_names()
    assert get_workload("test-trace") is custom


def test_compare_results_and_baseline():
    rows = compare(["stride-64k", "seq-fill"], ["order-4"], scale=SCALE)
    assert [(r.workload, r.policy) for r in rows] == [("stride-64k", "order-4"),
                                                       ("seq-fill", "order-4")]
    stride, seq = rows
    assert stride.faults_saved == 0 and stride.bloat_ratio == pytest.approx(16.0)
    assert seq.faults_saved_pct == pytest.approx(100 * 15 / 16)
    assert {k: v for k, v in seq.folio_histogram.items() if v} == {"64K": seq.faults}
    assert seq.anon_fault_alloc["64K"] == seq.faults
    assert seq.anon_fault_alloc["16K"] == 0                 # zero per-size counts are kept
    assert seq.rss_bytes == seq.rss_pages * 4096
    assert seq.ns_per_fault and seq.ns_per_fault > 0
    doc = json.loads(json.dumps([r.to_dict() for r in rows]))
    assert set(doc[0]) == {f for f in CompareResult.__dataclass_fields__}


def test_compare_upstream_per_size_counters():
    (r,) = compare(["seq-fill"], ["upstream/enabled=never/64K=always"], scale=SCALE)
    assert r.anon_fault_alloc == {"16K": 0, "32K": 0, "64K": r.faults, "128K": 0, "256K": 0,
                                  "512K": 0, "1M": 0, "2M": 0}
    assert r.faults_saved_pct == pytest.approx(100 * 15 / 16)


def test_compare_rejects_policies_that_do_not_fit_the_page_size():
    with pytest.raises(ValueError, match="cannot run with 64K pages"):
        compare(["seq-fill"], ["upstream/enabled=never/64K=always"], page_size="64K", ram="2G",
                scale=SCALE)
    skipped: list[tuple[str, str]] = []
    rows = compare(["seq-fill"], ["order-0", "upstream/enabled=never/64K=always"],
                   page_size="64K", ram="2G", scale=SCALE, skip_invalid=True, skipped=skipped)
    assert [r.policy for r in rows] == ["order-0"]
    assert skipped and skipped[0][0] == "upstream/enabled=never/64K=always"


def test_compare_memcg_limit_counts_ooms():
    (r,) = compare(["seq-fill"], ["order-4"], memcg_limit="4M", scale=SCALE * 5)
    assert r.faults_oom > 0
    assert r.rss_bytes <= 4 << 20
    assert r.faults_saved is None and r.faults_saved_pct is None     # OOM rows save nothing
    assert r.anon_fault_fallback_charge.get("64K", 0) > 0
