"""Sweeps beyond one machine: a process pool and a Dask cluster give the same
rows as a serial run; trace files as workloads; memory over time (series);
``pylaf sweep`` on the example config."""
from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tomllib
from conftest import run_cli

from pylaf import AddressSpace, Config, Policy
from pylaf.experiments.compare import compare
from pylaf.experiments.sampling import SampledAddressSpace
from pylaf.experiments.sweep import load_sweep, parse_sweep, run_sweep
from pylaf.results import read_rows, rows_of

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "pylaf" / "data" / "traces"
TIMING = ("elapsed_ns", "emulator_ns_per_fault")
WORKLOADS = ["seq-fill", "heap-churn", "stride-64k", str(TRACES / "git-log.laftrace")]
POLICIES = ["order-0", "order-4", "upstream/enabled=never/64K=always"]


def _untimed(results: list) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows_of(results)]


@pytest.fixture(scope="module")
def serial() -> list:
    return compare(WORKLOADS, POLICIES, scale=0.02, sample_every=64)


def test_process_pool_gives_the_serial_rows(serial):
    pooled = compare(WORKLOADS, POLICIES, scale=0.02, sample_every=64, jobs=2)
    assert _untimed(pooled) == _untimed(serial)
    assert [r.series for r in pooled] == [r.series for r in serial]


def test_any_executor_gives_the_serial_rows(serial):
    with ThreadPoolExecutor(2) as ex:
        threaded = compare(WORKLOADS, POLICIES, scale=0.02, sample_every=64, executor=ex)
    assert _untimed(threaded) == _untimed(serial)


def test_dask_local_cluster_gives_the_serial_rows(serial):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        rows = compare(WORKLOADS, POLICIES, scale=0.02, sample_every=64,
                       executor=client.get_executor())
        pids = set(client.run(lambda: __import__("os").getpid()).values())
    assert len(pids) == 2
    assert _untimed(rows) == _untimed(serial)


def test_trace_file_is_a_workload(serial):
    trace_rows = [r for r in serial if r.workload == "git-log"]
    assert len(trace_rows) == 3 and trace_rows[0].faults > 0


def test_cli_jobs_and_trace_path(capsys):
    rc, out, err = run_cli(capsys, "compare", "--workload", str(TRACES / "git-log.laftrace"),
                           "--workload", "seq-fill", "--policy", "order-0", "--policy", "order-4",
                           "--scale", "0.02", "--jobs", "2", "--json")
    assert rc == 0, err
    import json
    assert [r["workload"] for r in json.loads(out)["rows"]] == ["git-log"] * 2 + ["seq-fill"] * 2
    rc, _, err = run_cli(capsys, "compare", "--workload", "missing.laftrace")
    assert rc == 2 and "not found" in err


def test_traces_are_skipped_on_16k_pages_with_a_note(capsys):
    rc, out, err = run_cli(capsys, "compare", "--page-size", "16K", "--arch", "arm64",
                           "--policy", "order-0", "--policy", "order-2", "--scale", "0.02")
    assert rc == 0, err
    assert "skipped workload 'trace-git-log'" in err and "4K pages only" in err
    assert "seq-fill" in out and "trace-" not in out


def test_sampling_does_not_change_the_run():
    cfg = Config(ram="256M", policy=Policy.parse("order-4"))
    rng = np.random.default_rng(1)
    addrs = rng.integers(0, 32 << 20, size=5000, dtype=np.uint64) & ~np.uint64(4095)
    writes = rng.integers(0, 2, size=5000).astype(bool)
    out = []
    for mm in (AddressSpace(cfg), SampledAddressSpace(cfg, 100)):
        with mm:
            a = mm.mmap(32 << 20)
            t = mm.touch(addrs + np.uint64(a), writes, results=True)
            r = mm.touch_range(a, 8 << 20, stride=12288, write=True)
            out.append((t, r, mm.stats().as_dict()))
    (t0, r0, s0), (t1, r1, s1) = out
    assert s0 == s1
    assert dataclasses.replace(t0, results=None) == dataclasses.replace(t1, results=None)
    assert np.array_equal(t0.results, t1.results) and r0 == r1


def test_series_peak_and_end(serial):
    churn = next(r for r in serial if r.workload == "heap-churn" and r.policy == "order-4")
    faults = [s["faults"] for s in churn.series]
    assert faults[0] == 0 and faults[-1] == churn.faults and faults == sorted(faults)
    assert len(faults) > 5
    assert max(s["rss_bytes"] for s in churn.series) <= churn.peak_rss_bytes
    assert churn.peak_rss_bytes > churn.rss_bytes            # the heap shrank at the end
    assert churn.peak_bloat_bytes is not None and churn.peak_bloat_ratio >= 1.0
    assert "nr_anon_64K" in churn.series[-1] and "nr_anon_partially_mapped_2M" in churn.series[-1]


def test_replay_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "s.png"
    rc, _, err = run_cli(capsys, "replay", str(TRACES / "git-log.laftrace"), "-p", "order-0",
                         "-p", "order-4", "--plot", str(png), "--sample-every", "16")
    assert rc == 0, err
    assert png.stat().st_size > 0


def test_replay_plot_without_matplotlib(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    rc, out, err = run_cli(capsys, "replay", str(TRACES / "git-log.laftrace"), "--plot",
                           str(tmp_path / "s.png"))
    assert rc == 2 and out == "" and "needs matplotlib" in err


def test_example_sweep_config(tmp_path, capsys):
    example = ROOT / "examples" / "sweep.toml"
    cfg = load_sweep(example)
    assert len(cfg.machines) == 8 and cfg.memcg_limits == (None, 64 << 20)
    doc = tomllib.loads(example.read_text())
    doc["sweep"].update(scale=0.01, output="out.csv", plot="out.png", jobs=2)
    small = tmp_path / "sweep.toml"
    small.write_text("\n".join(
        ["[sweep]"] + [f"{k} = {_toml(v)}" for k, v in doc["sweep"].items()] +
        ["[tags]", 'experiment = "test"']))
    rc, out, err = run_cli(capsys, "sweep", str(small))
    assert rc == 0, err
    rows = read_rows(tmp_path / "out.csv")
    # 3 workloads x (4 policies on 4K, 3 on 16K) x 2 arches x 2 memcg limits
    assert len(rows) == 3 * (4 + 3) * 2 * 2
    assert {r["tag_experiment"] for r in rows} == {"test"}
    assert {r["page_size"] for r in rows} == {"4096", "16384"}
    assert (tmp_path / "out.png").stat().st_size > 0
    assert "median saved" in out and "skipped" in err


def _toml(v: object) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return str(v)


def test_sweep_rejects_unknown_keys_and_runs_from_a_dict():
    with pytest.raises(ValueError, match=r"unknown key.*polcies"):
        parse_sweep({"sweep": {"polcies": ["order-0"]}})
    with pytest.raises(ValueError, match=r"no \[sweep\] table"):
        parse_sweep({})
    cfg = parse_sweep({"sweep": {"workloads": ["seq-fill"], "policies": ["order-0", "order-4"],
                                 "memcg_limits": ["none", "8M"], "scale": 0.05}})
    res = run_sweep(cfg)
    assert [(r.memcg_limit, r.policy) for r in res.results] == [
        (None, "order-0"), (None, "order-4"), (8 << 20, "order-0"), (8 << 20, "order-4")]
    assert res.results[3].faults_oom > 0 and res.results[3].faults_saved is None


def test_cli_executor_dask(capsys, serial):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        rc, out, err = run_cli(capsys, "compare", "--workload", "seq-fill", "--policy", "order-0",
                               "--policy", "order-4", "--scale", "0.02", "--executor", "dask",
                               "--scheduler", cluster.scheduler_address, "--format", "csv")
    assert rc == 0, err
    assert out.count("\n") == 3 and ",order-4," in out
    rc, _, err = run_cli(capsys, "compare", "--executor", "dask")
    assert rc == 2 and "needs --scheduler" in err
