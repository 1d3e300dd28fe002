"""`pylaf compare` from the command line: JSON, table, --list, --help, errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from pylaf.experiments.workloads import BUILTIN
from pylaf.policy import DEFAULT_COMPARE

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["compare", "--workload", "seq-fill", "--policy", "order-0", "--policy", "order-4",
         "--scale", "0.05"]

RESULT_KEYS = {
    "schema_version", "kind", "workload", "policy", "page_size", "arch", "faults", "pgfault",
    "faults_saved", "faults_saved_pct", "mm_anonpages", "rss_bytes", "peak_rss_bytes",
    "pgtables_bytes", "pages_touched", "bloat_bytes", "bloat_ratio", "per_page_ops",
    "per_folio_ops", "ptes_written", "set_ptes_calls", "folios_mapped_4K", "folios_mapped_64K",
    "anon_fault_alloc_64K", "anon_fault_alloc_2M", "anon_fault_fallback_64K",
    "anon_fault_fallback_charge_64K", "faults_oom", "faults_sigsegv", "elapsed_ns",
    "emulator_ns_per_fault", "error", "param_size", "param_scale",
}




def test_json_output(capsys):
    rc, out, err = run_cli(capsys, *QUICK, "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert set(doc) >= {"schema_version", "config", "rows"}
    assert doc["config"] == {"page_size": 4096, "arch": "x86_64", "ram": 4 << 30,
                             "memcg_limit": None, "scale": 0.05, "baseline": "order-0"}
    o0, o4 = doc["rows"]
    for r in (o0, o4):
        assert set(r) >= RESULT_KEYS
        assert r["workload"] == "seq-fill"
        assert r["bloat_ratio"] == 1.0
    assert (o0["policy"], o4["policy"]) == ("order-0", "order-4")
    assert o0["faults_saved"] == 0 and o0["is_baseline"]
    assert o4["faults"] * 16 == o0["faults"]
    assert o4["faults_saved"] == o0["faults"] - o4["faults"]
    assert o4["faults_saved_pct"] == pytest.approx(93.75)
    assert o4["folios_mapped_64K"] == o4["faults"]
    assert o4["folios_mapped_16K"] == 0 and o4["anon_fault_alloc_16K"] == 0   # zeros kept
    assert o4["rss_bytes"] == o0["rss_bytes"] == o0["pages_touched"] * 4096
    assert "\x1b[" not in out and "[bold" not in out         # no rich markup in JSON


def test_table_output(capsys):
    rc, out, err = run_cli(capsys, *QUICK)
    assert rc == 0, err
    header = " ".join(line.strip("┃ ") for line in out.splitlines()[1:4])
    header = " ".join(header.replace("┃", " ").split())
    for col in ("workload", "policy", "faults", "saved vs", "order-0", "RSS", "bloat",
                "(RSS/touched)", "per-page", "per-folio", "ops", "PTEs", "written", "emulator", "ns/fault"):
        assert col in header
    assert "baseline" in out and "(93.8%)" in out
    assert "order-4" in out and "seq-fill" in out
    assert "\x1b[" not in out                                # no colour codes into a pipe


def test_table_reports_ooms_under_a_memcg_limit(capsys):
    rc, out, err = run_cli(capsys, "compare", "--workload", "seq-fill", "--policy", "order-0",
                           "--memcg-limit", "4M", "--scale", "0.05")
    assert rc == 0, err
    assert "errors" in out and "OOM x" in out


def test_list(capsys):
    rc, out, _ = run_cli(capsys, "compare", "--list")
    assert rc == 0
    for cls in BUILTIN:
        assert cls.name in out
    for spec in DEFAULT_COMPARE:
        assert spec in out
    rc, out, _ = run_cli(capsys, "compare", "--list", "--json")
    doc = json.loads(out)
    assert [w["name"] for w in doc["workloads"]][:len(BUILTIN)] == [c.name for c in BUILTIN]
    assert doc["default_policies"] == list(DEFAULT_COMPARE)


def test_help_documents_every_option(capsys):
    rc, out, _ = run_cli(capsys, "compare", "--help")
    assert rc == 0
    for opt in ("--workload", "--policy", "--page-size", "--arch", "--ram", "--memcg-limit",
                "--scale", "--json", "--list"):
        assert opt in out
    assert "examples:" in out and "pylaf compare --workload" in out
    assert "thp_anon=" in out


def test_default_policies_that_do_not_fit_64k_pages_are_skipped(capsys):
    rc, out, err = run_cli(capsys, "compare", "--workload", "seq-fill", "--page-size", "64K",
                           "--ram", "2G", "--scale", "0.05", "--json")
    assert rc == 0, err
    assert "skipped policy" in err
    doc = json.loads(out)
    assert doc["skipped_policies"]
    policies = [r["policy"] for r in doc["rows"]]
    assert "order-0" in policies and "order-4" in policies


@pytest.mark.parametrize("argv, message", [
    (["--policy", "bogus"], "unknown policy 'bogus'"),
    (["--policy", "order-1"], "order 1"),
    (["--policy", "upstream/enabled=sometimes"], "enabled='sometimes'"),
    (["--policy", "upstream/thp_anon=16K:always", "--page-size", "16K"], "cannot run with 16K"),
    (["--workload", "nope"], "unknown workload 'nope'"),
    (["--page-size", "8K"], "--page-size"),
    (["--arch", "mips"], "--arch"),
    (["--ram", "12X"], "--ram"),
    (["--ram", "1M"], "invalid ram"),
    (["--memcg-limit", "10000"], "memcg_limit"),
    (["--scale", "0"], "--scale"),
    (["--scale", "many"], "--scale"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, message):
    rc, out, err = run_cli(capsys, "compare", "--workload", "seq-fill", "--scale", "0.01", *argv)
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pylaf compare: error:")
    assert message in lines[0]


def test_no_traceback_from_the_real_command():
    path = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
    p = subprocess.run([sys.executable, "-m", "pylaf", "compare", "--policy", "order-1"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert p.stderr.startswith("pylaf compare: error:")
