"""Run bench/fork_live with hugepages-64kB=always (issue 9's fork benchmark).

The knobs are set through :func:`pylaf.live.sysfs.thp_settings`, which
restores every one of them afterwards.  Needs root (sysfs writes).

    make -C bench fork && PYTHONPATH=. python3 bench/fork_live.py [--iters N]
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pylaf.live.sysfs import thp_settings

BIN = Path(__file__).resolve().parent / "fork_live"


def main(argv: list[str]) -> int:
    with thp_settings(enabled="madvise", all_sizes="never", sizes={"64kB": "always", "2048kB": "inherit"}):
        return subprocess.run([str(BIN), *argv], check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
