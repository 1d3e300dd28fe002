"""bench/RESULTS.md: its generated tables match the raw outputs in bench/results/."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_results_md_is_generated_from_the_raw_files() -> None:
    p = subprocess.run([sys.executable, str(BENCH / "make_results.py"), "--check"],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr


def test_raw_files_are_small_and_hold_no_machine_paths() -> None:
    files = sorted((BENCH / "results").iterdir())
    assert files
    for f in files:
        assert f.stat().st_size < 1 << 20, f.name
        text = f.read_text()
        assert str(BENCH.parent) not in text and "/home/" not in text, f.name
