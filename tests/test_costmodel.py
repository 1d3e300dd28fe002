"""pylaf.experiments.costmodel: the fitting math on synthetic data (no live kernel), plus
one live-kernel calibration test (PYLAF_KERNEL_TESTS=1 only)."""
from __future__ import annotations

import math
import os
import shutil

import pytest

from pylaf import AddressSpace, Config, Policy
from pylaf.experiments import costmodel as cm
from pylaf.live.sysfs import THP_DIR

PAGE = 4096


def synth(order: int, fault: float, page: float, pte: float = 0.0, size: int = 64 << 20,
          noise: float = 0.0) -> cm.KernelSample:
    """A sample whose per-fault time follows the model exactly (times 1+noise)."""
    nr = 1 << order
    faults = size // (PAGE * nr)
    pages = size // PAGE
    ptes = 0 if order >= cm.PMD_ORDER else pages
    per_fault = fault + page * nr + (pte * nr if order < cm.PMD_ORDER else 0.0)
    return cm.KernelSample(order, size, faults, pages, ptes, per_fault * faults * (1 + noise))


def test_two_orders_fit_fault_plus_page_exactly() -> None:
    s = [synth(0, 1500, 400), synth(9, 1500, 400)]
    coef = cm.fit(s)
    assert set(coef) == {"fault", "page"}     # pte not identifiable from 0 and PMD
    assert coef["fault"] == pytest.approx(1500)
    assert coef["page"] == pytest.approx(400)


def test_three_terms_recovered_with_mthp_orders() -> None:
    s = [synth(o, 1200, 350, 60) for o in (0, 2, 3, 4, 6, 9)]
    coef = cm.fit(s)
    assert coef == pytest.approx({"fault": 1200, "page": 350, "pte": 60})
    m = cm.fit_model(s)
    for r in m.residuals():
        assert abs(r["error"]) < 1e-9


def test_weighting_is_relative() -> None:
    """A 10% error on the small order-0 sample must not be swamped by the
    PMD sample, which is ~100x larger in absolute terms."""
    s = [synth(0, 1500, 400, noise=0.10), synth(4, 1500, 400), synth(9, 1500, 400)]
    coef = cm.fit(s, terms=("fault", "page"))
    m = cm.CostModel(coef=coef, samples=tuple(s))
    errs = {r["order"]: abs(r["error"]) for r in m.residuals()}
    assert errs[0] < 0.10          # order 0 pulled the fit towards itself
    assert max(errs.values()) < 0.10


def test_negative_coefficient_is_dropped() -> None:
    # per-fault time falls per page as order grows faster than the model allows:
    # an unconstrained fit would make pte negative
    s = [synth(0, 1000, 500), synth(2, 1000, 300), synth(4, 1000, 250), synth(9, 1000, 260)]
    free = cm.fit(s, nonneg=False)
    assert free["pte"] < 0                                  # the premise: unconstrained, pte < 0
    coef = cm.fit(s)
    assert set(coef) == {"fault", "page"}                   # pte dropped, not clamped
    assert coef == pytest.approx(cm.fit(s, terms=("fault", "page")))   # and the fit redone without it
    assert all(v > 0 for v in coef.values())


def test_identifiable_terms() -> None:
    rows = [cm.sample_features(0), cm.sample_features(9)]
    assert cm.identifiable_terms(rows) == ["fault", "page"]
    rows = [cm.sample_features(0)]
    assert cm.identifiable_terms(rows) == ["fault"]
    rows = [cm.sample_features(o) for o in (0, 4, 9)]
    assert cm.identifiable_terms(rows) == ["fault", "page", "pte"]


def test_fit_rejects_no_samples() -> None:
    with pytest.raises(ValueError):
        cm.fit([])
    with pytest.raises(ValueError):
        cm.fit([cm.KernelSample(0, 4096, 0, 1, 1, 0.0)])


def test_predict_order_and_stats_agree() -> None:
    m = cm.CostModel(coef={"fault": 1500.0, "page": 400.0, "pte": 50.0})
    assert m.predict_order(0) == pytest.approx(1950)
    assert m.predict_order(4) == pytest.approx(1500 + 16 * 450)
    assert m.predict_order(9) == pytest.approx(1500 + 512 * 400)   # PMD: no PTEs
    # the same numbers from an emulator run's counters
    for order in (0, 4, 9):
        with AddressSpace(Config(ram="64M", policy=Policy.fixed(order))) as mm:
            a = mm.mmap("8M")
            mm.touch_range(a, "8M", write=True)
            st = mm.stats()
        faults = (8 << 20) // (PAGE << order)
        assert st.pgfault == faults
        assert m.predict_stats(st) == pytest.approx(faults * m.predict_order(order))


def test_features_from_mapping() -> None:
    f = cm.features_from_stats({"pgfault": 3, "bytes_zeroed": 3 * 16 * PAGE, "ptes_written": 48})
    assert f == {"fault": 3.0, "page": 48.0, "pte": 48.0}


def test_leave_one_out_on_exact_data() -> None:
    s = [synth(o, 1000, 300, 40) for o in (0, 2, 4, 6, 9)]
    loo = {r["order"]: r["error"] for r in cm.leave_one_out(s)}
    assert set(loo) == {0, 2, 4, 6, 9}
    for order in (0, 2, 4, 6):
        assert loo[order] == pytest.approx(0, abs=1e-9)
    # without the PMD sample every row has ptes == pages: pte is not
    # identifiable, so predicting the PMD fault (no PTEs) misses by pte's share
    assert loo[9] != pytest.approx(0, abs=1e-3)


def test_json_roundtrip() -> None:
    s = (synth(0, 1500, 400), synth(9, 1500, 400))
    m = cm.fit_model(s)
    m2 = cm.CostModel.from_json(m.to_json())
    assert m2.coef == pytest.approx(dict(m.coef))
    assert m2.samples[0].ns == pytest.approx(s[0].ns)
    assert m2.predict_order(4) == pytest.approx(m.predict_order(4))


def test_kernel_program_shape() -> None:
    p = cm.kernel_program(0, 1 << 20)
    assert "write a 0 1048576 4K" in p and "hugepage" not in p and "munmap" in p
    assert "madvise a 0 1048576 hugepage" in cm.kernel_program(9, 1 << 20)
    assert "write" not in cm.kernel_program(4, 1 << 20, write=False)


def test_measure_order_differential_with_fake_kernel() -> None:
    """measure_order() subtracts the no-write program and checks minflt."""
    now = [0.0]

    def clock() -> float:
        return now[0]

    def runner(program: str) -> dict:
        write = "write" in program
        now[0] += 0.010 + (0.002 if write else 0.0)     # 2 ms of faults
        ops = [{"op": "mmap"}, {"op": "munmap"}]
        if write:
            ops.insert(1, {"op": "write", "minflt": 256})
        return {"ops": ops}

    s = cm.measure_order(0, "1M", runs=3, runner=runner, clock=clock)
    assert s.faults == 256 and s.pages == 256 and s.ptes == 256
    assert s.method == "differential"
    assert s.ns == pytest.approx(2e6)
    assert s.ns_per_fault == pytest.approx(2e6 / 256)

    def wrong(program: str) -> dict:
        return {"ops": [{"op": "write", "minflt": 16}]} if "write" in program else {"ops": []}

    with pytest.raises(RuntimeError, match="expected 256"):
        cm.measure_order(0, "1M", runs=1, runner=wrong, clock=clock)


def test_measure_order_prefers_op_ns() -> None:
    def runner(program: str) -> dict:
        return {"ops": [{"op": "write", "minflt": 16, "ns": 32000}] if "write" in program else []}

    s = cm.measure_order(4, "1M", runs=2, runner=runner)
    assert s.method == "op-ns" and s.ns_per_fault == pytest.approx(2000)


def test_settings_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cm.SETTINGS_ENV, raising=False)
    assert not cm.settings_opted_in()
    monkeypatch.setenv(cm.SETTINGS_ENV, "1")
    assert cm.settings_opted_in()
    assert not cm.settings_opted_in(False)
    monkeypatch.setenv(cm.SETTINGS_ENV, "0")
    assert not cm.settings_opted_in()


@pytest.mark.kernel
@pytest.mark.skipif(os.environ.get("PYLAF_KERNEL_TESTS") != "1",
                    reason="live-kernel test: set PYLAF_KERNEL_TESTS=1")
@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None,
                    reason="needs a C compiler to build laf_kprog")
@pytest.mark.skipif(not THP_DIR.is_dir(), reason=f"{THP_DIR} missing (kernel without THP)")
def test_calibrate_live_kernel() -> None:
    """Default settings only (no sysfs writes): order 0 and the PMD order."""
    m = cm.calibrate(size="64M", runs=3, settings=False, pmd_size="256M")
    assert {s.order for s in m.samples} == {0, cm.PMD_ORDER}
    per_fault = {s.order: s.ns_per_fault for s in m.samples}
    # a fault costs more than 100 ns and a PMD fault more than an order-0 one
    assert per_fault[0] > 100
    assert per_fault[cm.PMD_ORDER] > per_fault[0]
    assert all(math.isfinite(v) for v in m.coef.values())
