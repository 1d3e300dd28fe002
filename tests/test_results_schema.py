"""The flat, versioned row schema (pylaf.results) and the output options of
compare / replay / bench: --format, --output, DataFrame, Parquet, the table's
width, short policy names, OOM rows and emulator time."""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest
from conftest import run_cli

import pylaf
from pylaf.experiments.compare import compare
from pylaf.results import SCHEMA_VERSION, read_rows, result_row, rows_of, write_rows
from pylaf.stats import PER_ORDER_FIELDS, SCALAR_FIELDS

TRACES = Path(__file__).resolve().parents[1] / "pylaf" / "data" / "traces"
SIZES_4K = ("16K", "32K", "64K", "128K", "256K", "512K", "1M", "2M")
QUICK = ["compare", "--workload", "seq-fill", "--policy", "order-0", "--policy", "order-4",
         "--scale", "0.05"]


@pytest.fixture(scope="module")
def rows() -> list:
    return compare(["seq-fill", "stride-64k"], ["order-0", "order-4"], scale=0.02,
                   tags={"run": "t1"})


def test_row_has_every_counter_zero_filled_sizes_params_and_tags(rows):
    row = result_row(rows[1])
    assert row["schema_version"] == SCHEMA_VERSION == 1 and row["kind"] == "compare"
    for name in SCALAR_FIELDS:
        assert name in row, name
    for name in PER_ORDER_FIELDS:
        for size in SIZES_4K:
            assert f"{name}_{size}" in row, (name, size)
    assert row["folios_mapped_4K"] == 0 and "folios_mapped_64K" in row
    assert row["anon_fault_alloc_64K"] == row["faults"]
    assert row["anon_fault_alloc_16K"] == 0 and row["anon_fault_alloc_2M"] == 0
    assert row["param_size"] == rows[1].params["size"] and row["param_scale"] == 0.02
    assert row["tag_run"] == "t1"
    assert row["emulator_ns_per_fault"] > 0 and "ns_per_fault" not in row
    assert row["peak_rss_bytes"] >= row["rss_bytes"] > 0
    assert row["pgtables_bytes"] > 0
    assert row["memcg_limit"] is None
    assert all(not isinstance(v, (dict, list)) for v in row.values())


def test_results_to_frame_and_parquet_round_trip(rows, tmp_path):
    df = pylaf.results_to_frame(rows)
    assert len(df) == 4 and df["anon_fault_alloc_32K"].tolist() == [0, 0, 0, 0]
    assert list(df["policy"]) == ["order-0", "order-4"] * 2
    out = tmp_path / "r.parquet"
    write_rows(rows_of(rows), out)
    back = read_rows(out)
    assert [r["faults"] for r in back] == [r.faults for r in rows]
    assert back[0]["anon_fault_alloc_16K"] == 0


def test_frame_zero_fills_sizes_across_page_sizes():
    a = compare(["seq-fill"], ["order-4"], scale=0.02)
    b = compare(["seq-fill"], ["order-4"], page_size="16K", scale=0.02)
    df = pylaf.results_to_frame(a + b)
    assert df.loc[0, "anon_fault_alloc_32M"] == 0      # a 16K-page size, absent at 4K: 0
    assert df.loc[1, "anon_fault_alloc_16K"] == 0


def test_results_to_frame_without_pandas(monkeypatch, rows):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"needs pandas: pip install 'pylaf\[data\]'"):
        pylaf.results_to_frame(rows)


def test_parquet_without_pyarrow(monkeypatch, rows, tmp_path):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError, match="needs pyarrow"):
        write_rows(rows_of(rows), tmp_path / "x.parquet")


def test_compare_format_csv_and_json_alias(capsys):
    rc, out, err = run_cli(capsys, *QUICK, "--format", "csv")
    assert rc == 0, err
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["policy"] for r in table] == ["order-0", "order-4"]
    assert table[1]["anon_fault_alloc_16K"] == "0" and table[0]["schema_version"] == "1"
    rc, out, _ = run_cli(capsys, *QUICK, "--json")
    assert json.loads(out)["rows"][1]["faults_saved_pct"] == pytest.approx(93.75)


def test_compare_output_files(capsys, tmp_path):
    for suffix in (".csv", ".json", ".parquet"):
        path = tmp_path / f"out{suffix}"
        rc, _, err = run_cli(capsys, *QUICK, "--output", str(path))
        assert rc == 0, err
        assert [r["policy"] for r in read_rows(path)] == ["order-0", "order-4"]
    rc, _, err = run_cli(capsys, *QUICK, "--output", str(tmp_path / "x.txt"))
    assert rc == 2 and "invalid output file" in err


def test_default_table_fits_100_columns_with_a_legend(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    rc, out, err = run_cli(capsys, "compare", "--workload", "heap-churn", "--scale", "0.02")
    assert rc == 0, err
    table_lines = [ln for ln in out.splitlines() if ln.startswith(("┃", "│", "┏", "└"))]
    assert table_lines and max(len(ln) for ln in table_lines) <= 100
    assert "P1" in out and "policies:" in out and "P1 = order-0" in out
    assert "emulator" in out                       # ns/fault says whose time it is
    monkeypatch.setenv("COLUMNS", "250")
    rc, wide, _ = run_cli(capsys, "compare", "--workload", "heap-churn", "--scale", "0.02")
    assert max(len(ln) for ln in wide.splitlines()) > 100 and "PTEs" in wide


def test_oom_rows_show_no_savings(capsys):
    rc, out, err = run_cli(capsys, "compare", "--workload", "seq-fill", "--policy", "order-0",
                           "--policy", "order-4", "--memcg-limit", "4M", "--scale", "0.25")
    assert rc == 0, err
    o4 = next(ln for ln in out.splitlines() if "order-4" in ln)
    cells = [c.strip() for c in o4.split("│") if c.strip()]
    assert cells[2] == "-" and "OOM x" in o4
    rows = compare(["seq-fill"], ["order-0", "order-4"], memcg_limit="4M", scale=0.25)
    assert all(r.faults_oom and r.faults_saved is None for r in rows if not r.is_baseline)


def test_replay_several_traces_csv(capsys):
    rc, out, err = run_cli(capsys, "replay", str(TRACES / "git-log.laftrace"),
                           str(TRACES / "gcc-small.laftrace"), "-p", "order-0", "-p", "order-4",
                           "--format", "csv")
    assert rc == 0, err
    table = list(csv.DictReader(io.StringIO(out)))
    assert [(r["workload"], r["policy"]) for r in table] == [
        ("git-log", "order-0"), ("git-log", "order-4"),
        ("gcc-small", "order-0"), ("gcc-small", "order-4")]
    assert all(r["kind"] == "replay" and int(r["predicted_total_faults"]) >= int(r["faults"])
               for r in table)


def test_bench_table_without_matplotlib_and_no_plot_by_default(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rc, out, err = run_cli(capsys, "bench", "--size", "4M", "--orders", "0,4", "--runs", "1")
    assert rc == 0, err
    assert "emulator" in out and list(tmp_path.iterdir()) == []
    rc, out, err = run_cli(capsys, "bench", "--size", "4M", "--orders", "0", "--runs", "1",
                           "--plot", "b.png")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "needs matplotlib" in err


def test_bench_rows_and_one_panel_plot(capsys, monkeypatch, tmp_path):
    rc, out, err = run_cli(capsys, "bench", "--size", "4M", "--orders", "0,4", "--runs", "1",
                           "--format", "json")
    assert rc == 0, err
    doc = json.loads(out)
    assert [r["order"] for r in doc["rows"]] == [0, 4]
    assert doc["rows"][0]["kind"] == "bench" and "emulator_ns_per_fault" in doc["rows"][0]
    import matplotlib.pyplot as plt
    figs = []
    monkeypatch.setattr(plt, "close", figs.append)
    rc, _, err = run_cli(capsys, "bench", "--size", "4M", "--orders", "0,4", "--runs", "1",
                         "--output", str(tmp_path / "b.png"))
    assert rc == 0, err
    assert (tmp_path / "b.png").stat().st_size > 0
    assert len(figs) == 1 and len(figs[0].axes) == 1       # no "faults per GiB" panel
