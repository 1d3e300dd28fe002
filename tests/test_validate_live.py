"""``pylaf replay --validate-live``: the verdict against several live runs
and the model check (each live run's own recording replayed), without the
live kernel: recording, rusage and the knobs are replaced by fakes, the
replays are real."""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli

import pylaf
from pylaf.policy import Policy
from pylaf.trace import format as F
from pylaf.trace import validate as V

BUNDLED = Path(pylaf.__file__).resolve().parent / "data" / "traces" / "git-log.laftrace"
AT_64K = "upstream/enabled=never/64K=always"


def _v(pred: int, lives: list[int], errors: list[int] | None = None) -> V.LiveValidation:
    errs = errors or [0] * len(lives)
    runs = [V.LiveRun(anon=a, total=a + 10, file=10, replayed_anon=a + e) for a, e in zip(lives, errs, strict=True)]
    return V.LiveValidation(setting="64K", policy="p", predicted_anon=pred, predicted_total=pred + 10,
                            recorded_file=10, runs=runs)


def test_live_figure_is_the_median_of_the_runs():
    v = _v(1000, [990, 1200, 1005])
    assert (v.live_anon, v.live_min, v.live_max) == (1005, 990, 1200)
    assert v.anon_error == -5 and v.total_error == -5
    assert v.live_spread_pct == pytest.approx(100 * 210 / 1005)


@pytest.mark.parametrize("pred, lives, verdict", [
    (1000, [1000], "agrees"),
    (1010, [1000], "agrees"),                 # exactly 1%
    (1011, [1000], "differs"),
    (989, [1000], "differs"),
    (1050, [1000, 1100, 960], "within live spread"),
    (1150, [1000, 1100, 960], "differs"),
])
def test_verdict(pred, lives, verdict):
    assert _v(pred, lives).verdict == verdict


def test_model_check_and_json():
    v = _v(1000, [1000, 1002], errors=[0, -3])
    assert not v.model_exact and [r.model_error for r in v.runs] == [0, -3]
    d = json.loads(json.dumps(v.as_dict()))
    assert d["verdict"] == "agrees" and d["live_anon"] == 1000 and d["model_exact"] is False
    assert [r["model_error"] for r in d["runs"]] == [0, -3]
    assert _v(1000, [1000, 1002]).model_exact


@pytest.mark.parametrize("bad", [0, -1, V.MAX_LIVE_RUNS + 1, True, 2.0, "3"])
def test_live_runs_checked(bad):
    tr = F.load_trace(BUNDLED)
    with pytest.raises(ValueError, match="live_runs"):
        V.validate_live(tr, ["64K"], live_runs=bad)


@pytest.mark.parametrize("bad", ["0", "-2", str(V.MAX_LIVE_RUNS + 1)])
def test_cli_live_runs_checked(capsys, bad):
    rc, out, err = run_cli(capsys, "replay", str(BUNDLED), "--validate-live", "64K", "--live-runs", bad)
    assert rc == 2 and out == ""
    assert f"invalid --live-runs {bad}" in err


@pytest.fixture
def fake_host(monkeypatch):
    """validate_live() without root: every 'live run' records the bundled
    4K trace again; the host's policy is the one the test sets."""
    state: dict[str, object] = {"policy": Policy.parse(AT_64K), "recorded": 0}

    @contextlib.contextmanager
    def settings(**_kw: object) -> Iterator[None]:
        yield

    def record_live(cmd: list[str], cwd: str | None, no_aslr: bool) -> F.Trace:
        state["recorded"] = int(state["recorded"]) + 1  # type: ignore[call-overload]
        return F.load_trace(BUNDLED)

    monkeypatch.setattr(V, "thp_settings", settings)
    monkeypatch.setattr(V, "host_policy", lambda: state["policy"])
    monkeypatch.setattr(V, "_record_live", record_live)
    monkeypatch.setattr(V, "_rusage_run", lambda *a: 123)
    return state


def test_model_check_replays_each_live_run(fake_host):
    tr = F.load_trace(BUNDLED)
    anon = tr.fault_counts()["anon"]
    # the 'live runs' are 4K recordings: at order-0 their replay gives them back
    fake_host["policy"] = Policy.parse("order-0")
    [v] = V.validate_live(tr, ["64K"], live_runs=2)
    assert fake_host["recorded"] == 2 and len(v.runs) == 2
    assert v.model_exact and v.live_anon == anon == v.predicted_anon and v.verdict == "agrees"
    # under 64K the same recordings replay to fewer faults than they hold:
    # the model check shows it, and the prediction is off the 'live' count
    fake_host["policy"] = Policy.parse(AT_64K)
    [v] = V.validate_live(tr, ["64K"], live_runs=1)
    assert v.runs[0].model_error < 0 and not v.model_exact
    assert v.predicted_anon == v.runs[0].replayed_anon < v.live_anon
    assert v.verdict == "differs"


def test_cli_validation_table(fake_host, capsys, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr("pylaf.cli.replay._validate_unavailable", lambda: None)
    monkeypatch.setattr("pylaf.cli.replay.read_thp_settings",
                        lambda: type("S", (), {"raw": lambda self: {}})())
    fake_host["policy"] = Policy.parse("order-0")
    rc, out, err = run_cli(capsys, "replay", str(BUNDLED), "--validate-live", "64K", "--live-runs", "2")
    assert rc == 0, err
    row = next(line for line in out.splitlines() if line.startswith("64K"))
    assert "agrees" in row and "exact" in row
    assert "median of 2 run(s)" in out
    rc, out, err = run_cli(capsys, "replay", str(BUNDLED), "--validate-live", "64K", "--live-runs", "1",
                           "--json")
    assert rc == 0, err
    [d] = json.loads(out[out.index("["):])
    assert d["verdict"] == "agrees" and len(d["runs"]) == 1
