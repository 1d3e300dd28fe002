"""The fuzz harness with several processes (fuzz/diffops.py): seeded runs of
fork, exit and random operations in any live process, C core against the
reference, and the harness's own ability to see a divergence."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from pylaf import Policy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))
import diffops

SPEC_64K = diffops.MachineSpec(4096, "x86_64", 8, 0, Policy.upstream(sizes={"64K": "always"}))


def test_random_seeds_with_fork_and_exit() -> None:
    """The seeded several-process driver (run_random.py --procs) on a few
    seeds: no divergence, and forks and exits did happen."""
    forks = exits = 0
    for seed in range(4):
        procs = diffops.run_random_procs(seed, 100)
        assert procs.cm.closed
        forks, exits = forks + procs.forks, exits + procs.exits
    assert forks >= 4 and exits >= 2


def test_process_ops_never_exit_the_last_or_pass_max_procs() -> None:
    rnd = random.Random(7)
    procs = diffops.Processes.start(SPEC_64K)
    try:
        for _ in range(300):
            op = diffops.random_proc_op(rnd, procs)
            assert op[0] != "exit" or len(procs.cs) > 1
            assert op[0] != "fork" or len(procs.cs) < diffops.MAX_PROCS
            if op[0] == "on":
                assert op[2][0] not in ("inject_race", "inject_pte_map")
            procs.step(op)
            assert 1 <= len(procs.cs) <= diffops.MAX_PROCS
        procs.check("end")
    finally:
        procs.close()


def test_a_child_diverging_is_seen() -> None:
    """A write done in the C child only must be reported (the check compares
    every process and the machine counters, not just the first process)."""
    procs = diffops.Processes.start(SPEC_64K)
    try:
        procs.step(("on", 0, ("mmap", 1 << 20, None, "rw", False)))
        a = procs.cs[0].vmas()[0].start
        procs.step(("on", 0, ("touch_range", a, 1 << 20, 4096, True)))
        procs.step(("fork", 0))
        procs.check("after fork")
        procs.cs[1].fault(a, True)           # COW in the C child only
        with pytest.raises(diffops.Mismatch, match="differ"):
            procs.check("diverged")
    finally:
        procs.close()


def test_exit_divergence_is_seen_in_machine_counters() -> None:
    procs = diffops.Processes.start(SPEC_64K)
    try:
        procs.step(("on", 0, ("mmap", 1 << 20, None, "rw", False)))
        a = procs.cs[0].vmas()[0].start
        procs.step(("on", 0, ("touch_range", a, 1 << 20, 4096, True)))
        procs.step(("fork", 0))
        procs.cs[1].fault(a, True)           # C child only, then both exit it
        procs.rs[1].fault(a, False)
        procs.step(("exit", 1))
        with pytest.raises(diffops.Mismatch, match="machine counters"):
            procs.check("after exit")
    finally:
        procs.close()


def test_replay_procs_rebuilds_the_same_run() -> None:
    procs, ops, nxt = diffops.replay_procs(2, 40)
    try:
        assert len(ops) == 40
        procs.check("replayed")
        procs.step(nxt)
        procs.check("next")
    finally:
        procs.close()


def test_unknown_op_is_a_harness_error() -> None:
    procs = diffops.Processes.start(SPEC_64K)
    try:
        with pytest.raises(ValueError, match="unknown op"):
            diffops.apply(procs.cs[0], ("no_such_op",))
    finally:
        procs.close()
