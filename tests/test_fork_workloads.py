"""The multi-process workloads (fork-server, zygote): they run clean, are
deterministic, are registered in the default set, and ``pylaf compare``
counts every process (the children's faults included), with the counts that
hold by construction (COW copies at order 0, so post-fork writes fault once
per page at every folio size)."""
from __future__ import annotations

import dataclasses

import pytest

from pylaf import AddressSpace, Config, Policy
from pylaf.experiments.fork_workloads import FORK_BUILTIN, ForkServer, Zygote
from pylaf.experiments.run import run_one
from pylaf.experiments.workloads import (
    available_workloads,
    default_workload_names,
    get_workload,
    scaled_size,
)

SCALE = 0.05
NAMES = [cls.name for cls in FORK_BUILTIN]


def run(name: str, policy: str, scale: float = SCALE):
    with AddressSpace(Config(policy=Policy.parse(policy))) as mm:
        get_workload(name, scale).run(mm)
        mm.machine.check_invariants()
        assert len(mm.machine.mms) == 1          # every child exited
        return mm.machine.stats(), mm.stats()


def test_registered_in_the_default_set():
    for name in NAMES:
        assert name in available_workloads()
        assert name in default_workload_names()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("policy", ["order-0", "order-4", "upstream/enabled=always"])
def test_runs_clean_and_is_deterministic(name, policy):
    a, pa = run(name, policy)
    b, pb = run(name, policy)
    assert a.as_dict() == b.as_dict() and pa.as_dict() == pb.as_dict()
    assert a.faults_wp > 0                      # COW faults after fork
    assert a.faults_oom == a.faults_sigsegv == a.faults_sigbus == 0


def test_seed_changes_the_writes():
    def layout(seed: int):
        with AddressSpace(Config(policy=Policy.parse("order-4"))) as mm:
            dataclasses.replace(ForkServer(scale=SCALE), seed=seed).run(mm)
            return mm.read_ptes(mm.vmas()[0].start, 256)[0].tolist()
    assert layout(1) == layout(1)
    assert layout(1) != layout(2)


def test_cow_copies_are_order_0_at_every_size():
    """Post-fork writes: one wp fault and one order-0 copy per written page
    (mm/memory.c wp_page_copy()), at order 0 as at order 4."""
    w = ForkServer(scale=SCALE)
    s0, _ = run(w.name, "order-0")
    s4, _ = run(w.name, "order-4")
    assert s0.faults_wp == s4.faults_wp == s0.faults_wp_copy == s4.faults_wp_copy > 0
    heap_pages = scaled_size(w.heap, SCALE, 2 << 20) // 4096
    assert s0.faults == heap_pages + s0.faults_wp
    assert s4.faults == heap_pages // 16 + s4.faults_wp


def test_zygote_children_fault_and_exit():
    w = Zygote(scale=SCALE)
    machine, parent = run(w.name, "order-0")
    preload = scaled_size(w.preload, SCALE, 2 << 20) // 4096
    assert parent.faults == preload              # the zygote only preloads
    assert machine.faults > parent.faults
    assert machine.mm_anonpages == parent.mm_anonpages == preload


@pytest.mark.parametrize("cls", FORK_BUILTIN)
def test_compare_counts_every_process(cls):
    """run_one() must count the children (whole_machine); the parent's own
    stats would miss the zygote children's faults entirely."""
    assert cls.whole_machine
    w = cls(scale=SCALE)
    res = run_one(w, Policy.parse("order-0"), Config())
    machine, parent = run(w.name, "order-0")
    assert res.error is None
    assert res.faults == machine.faults
    assert res.counters["faults_wp"] == machine.faults_wp
    if cls is Zygote:
        assert res.faults > parent.faults


@pytest.mark.parametrize("bad", [{"write_fraction": 1.5}, {"write_fraction": -0.1}])
def test_bad_parameters(bad):
    with pytest.raises(ValueError, match="write_fraction"):
        ForkServer(**bad)
    with pytest.raises(ValueError, match="write_fraction"):
        Zygote(**bad)
    with pytest.raises(ValueError, match="children"):
        Zygote(children=0)
