"""Op streams: laf_run_ops() through AddressSpace.run_ops, the compiled trace
replay and the compiled built-in workloads give exactly what the Python paths
(the calls one by one) give: every counter, the replay report, every VMA and
every PTE."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pylaf import AddressSpace, Config, Policy
from pylaf._ffi import lib
from pylaf.errors import LafMemoryError, LafValueError
from pylaf.experiments.workloads import Workload, get_workload
from pylaf.opstream import OP_DTYPE, op_array
from pylaf.trace import format as F
from pylaf.trace import remap as R
from pylaf.trace.bundled import traces_dir
from pylaf.trace.compile import compile_trace
from pylaf.trace.replay import ReplayReport, replay_into

TRACES = sorted(traces_dir().glob("*.laftrace"))
POLICIES = ["order-0", "order-4", "upstream", "laf-v3", "huang-a", "order-9"]


def snapshot(mm: AddressSpace) -> dict[str, Any]:
    """Every counter, every VMA, the raw PTEs and folio orders over every VMA."""
    vmas = mm.vmas()
    pages = []
    for v in vmas:
        ptes, orders = mm.read_ptes(v.start, (v.end - v.start) // mm.page_size)
        pages.append((ptes.tobytes(), orders.tobytes()))
    st = mm.stats()
    per_order = {k: a.tolist() for k, a in st.per_order.items()}
    return {"stats": st.as_dict(), "per_order": per_order, "vmas": vmas, "pages": pages}


def replay_both(trace: F.Trace, policy: str, **cfg: Any) -> dict[str, tuple[ReplayReport, dict[str, Any]]]:
    out = {}
    for engine in ("python", "compiled"):
        with AddressSpace(Config(policy=Policy.parse(policy), **cfg)) as mm:
            rep = replay_into(mm, trace, engine=engine)
            mm.check_invariants()
            out[engine] = (rep, snapshot(mm))
    return out


def test_every_bundled_trace_is_there() -> None:
    assert len(TRACES) >= 5


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("path", TRACES, ids=lambda p: p.stem)
def test_compiled_replay_is_the_python_replay(path: Path, policy: str) -> None:
    trace = F.load_trace(path)
    got = replay_both(trace, policy, ram="8G")
    (prep, pstate), (crep, cstate) = got["python"], got["compiled"]
    assert crep == prep
    assert cstate["stats"] == pstate["stats"]
    assert cstate["per_order"] == pstate["per_order"]
    assert cstate["vmas"] == pstate["vmas"]
    assert cstate["pages"] == pstate["pages"]
    assert prep.faults_replayed > 0 and pstate["stats"]["faults"] > 0


@pytest.mark.parametrize("path", TRACES[:2], ids=lambda p: p.stem)
def test_compiled_replay_is_the_python_replay_under_memory_pressure(path: Path) -> None:
    """A memcg limit below the trace's RSS: OOM accesses (SIGSEGV-free) in both engines alike."""
    trace = F.load_trace(path)
    got = replay_both(trace, "order-4", ram="8G", memcg_limit="1M")
    (prep, pstate), (crep, cstate) = got["python"], got["compiled"]
    assert pstate["stats"]["faults_oom"] > 0
    assert (crep, cstate) == (prep, pstate)


def _trace(rows: list[tuple[int, ...]], vmas: list[list[Any]]) -> F.Trace:
    ev = np.zeros(len(rows), dtype=F.EVENT_DTYPE)
    for i, r in enumerate(rows):
        ev[i] = r
    procs = [{"mm": 0, "pid": 1, "comm": "t", "start": "exec", "t": 0, "anon_faults": len(rows),
              "vmas": vmas}]
    return F.Trace(header={"name": "crafted"}, processes=procs, events=ev)


def test_compiled_replay_counts_the_same_errors() -> None:
    """Events the emulator refuses are counted under the same keys by both engines."""
    base, top = 0x10000000, F.USER_TOP
    trace = _trace([
        (1, 0, F.OP_MAP, F.C_ANON, 0, top - 0x1000, 0x1000, 3),           # above TASK_SIZE
        (2, 0, F.OP_FAULT, F.C_ANON, F.F_WRITE, top - 8, 0, 0),           # SIGSEGV
        (3, 0, F.OP_POPULATE, F.C_ANON, 0, 0x7000000, 0x1000, 0),          # over a hole
        (4, 0, F.OP_FAULT, F.C_ANON, F.F_WRITE, base + 0x3000, 0, 0),
        (5, 0, F.OP_POPULATE, F.C_ANON, 0, base, 0x8000, 0),               # one page present
        (6, 0, F.OP_MADVISE, F.C_ANON, 0, base, 0x100000, F.MADV["dontneed"]),  # past the VMA
        (7, 0, F.OP_UNMAP, F.C_ANON, 0, base + 1, 0x1000, 0),              # unaligned
        (8, 0, F.OP_FAULT, F.C_ANON, 0, base + 0x5000, 0, 0),
        (9, 0, F.OP_MOVE, F.C_ANON, 0, base, 0x10000, 0x20000000),
        (10, 0, F.OP_UNMAP, F.C_ANON, 0, base, 0x10000, 0),
        (11, 0, F.OP_MAP, F.C_ANON, F.M_MOVED, 0x20000000, 0x10000, 3),
        (12, 0, F.OP_PROTECT, F.C_ANON, 0, 0x20000000, 0x1000, 1),
        (13, 0, F.OP_FAULT, F.C_FILE, 0, 0x30000000, 0, 0),                 # not replayed
    ], vmas=[[base, base + 0x10000, 3, F.C_ANON, "[anon]"]])
    got = replay_both(trace, "order-0", ram="64M")
    (prep, pstate), (crep, cstate) = got["python"], got["compiled"]
    assert prep.errors == {"map: invalid argument (EINVAL)": 1,        # munmap at TASK_SIZE
                           "populate: range not mapped": 1, "populate: already present": 1,
                           "madvise: out of memory or address range not mapped (ENOMEM)": 1,
                           "unmap: invalid argument (EINVAL)": 1}
    assert prep.sigsegv == 1
    assert prep.ops["mremap move"] == 1 and prep.ops["unmap"] == 1
    assert crep == prep
    assert cstate == pstate
    # the zero page read at +0x5000 moved to 0x20005000: the second VMA (mprotect split the first page)
    assert [v.start for v in cstate["vmas"]] == [0x20000000, 0x20001000]
    orders = np.frombuffer(cstate["pages"][1][1], dtype=np.int8)
    assert orders[4] == lib.LAF_ORDER_ZERO and (orders[:4] == lib.LAF_ORDER_NONE).all()


def test_remap_events_replay_natively() -> None:
    """OP_REMAP (+ OP_REMAP_TO) go to the emulator's mremap(): a move keeps the
    folios' size at an address that is not aligned to it; both engines agree,
    failures are counted under "mremap: ..." by both."""
    base, to = 0x10000000, 0x20001000
    fixed = R.R_MAYMOVE | R.R_FIXED
    trace = _trace([
        (1, 0, F.OP_FAULT, F.C_ANON, F.F_WRITE, base, 0, 0),
        (2, 0, F.OP_FAULT, F.C_ANON, F.F_WRITE, base + 0x10000, 0, 0),
        (3, 0, R.OP_REMAP, F.C_ANON, 0, base, 0x20000, 0x40000),              # grow in place
        (4, 0, R.OP_REMAP, F.C_ANON, fixed, base, 0x40000, 0x40000),          # move, unaligned
        (4, 0, R.OP_REMAP_TO, F.C_ANON, 0, to, 0x40000, 0),
        (5, 0, F.OP_FAULT, F.C_ANON, F.F_WRITE, to + 0x20000, 0, 0),
        (6, 0, R.OP_REMAP, F.C_ANON, 0, base, 0x1000, 0x2000),                # nothing there: EFAULT
        (7, 0, R.OP_REMAP, F.C_ANON, fixed | R.R_DONTUNMAP, to, 0x10000, 0x10000),
        (7, 0, R.OP_REMAP_TO, F.C_ANON, 0, 0x30000000, 0x10000, 0),
    ], vmas=[[base, base + 0x20000, 3, F.C_ANON, "[anon]"]])
    got = replay_both(trace, "order-4", ram="64M")
    (prep, pstate), (crep, cstate) = got["python"], got["compiled"]
    assert prep.errors == {"mremap: bad address (EFAULT)": 1}
    assert prep.ops["mremap"] == 3
    assert (crep, cstate) == (prep, pstate)
    with AddressSpace(Config(policy=Policy.parse("order-4"), ram="64M")) as mm:
        replay_into(mm, trace)
        orders = [getattr(mm.folio(x), "order", None) for x in (to + 0x10000, 0x30000000, to + 0x20000)]
        # moved by 4K from alignment; DONTUNMAP took the first one; the block
        # [to + 0x1f000, + 64K) holds a moved page: the fault next to them is order 0
        assert orders == [4, 4, 0]
        assert mm.stats().mm_anonpages == 33
        mm.check_invariants()


def test_compile_is_cached_per_events_array() -> None:
    trace = F.load_trace(TRACES[0])
    c = compile_trace(trace)
    assert compile_trace(trace) is c
    trace.events = trace.events.copy()
    assert compile_trace(trace) is not c


def test_replay_engine_arguments() -> None:
    trace = F.load_trace(TRACES[0])
    with AddressSpace(Config(ram="1G")) as mm:
        with pytest.raises(ValueError, match="unknown replay engine"):
            replay_into(mm, trace, engine="fast")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="fault_log"):
            replay_into(mm, trace, fault_log=[], engine="compiled")
        log: list[tuple[int, int, int]] = []
        replay_into(mm, trace, fault_log=log)       # a fault log picks the Python engine
        assert log


# ------------------------------------------------------------ run_ops API
def test_run_ops_checks_its_array() -> None:
    ops = op_array(4)
    with AddressSpace(Config(ram="64M")) as mm:
        with pytest.raises(TypeError, match="numpy array"):
            mm.run_ops(ops.tolist())
        with pytest.raises(TypeError, match="dtype"):
            mm.run_ops(np.zeros(4, dtype=np.uint64))
        with pytest.raises(TypeError, match="dtype"):
            mm.run_ops(ops.astype(OP_DTYPE.newbyteorder(">")))
        with pytest.raises(LafValueError, match="C-contiguous"):
            mm.run_ops(ops[::2])
        with pytest.raises(LafValueError, match="1-D"):
            mm.run_ops(op_array(4).reshape(2, 2))
        raw = np.zeros(OP_DTYPE.itemsize * 2 + 4, dtype=np.uint8)
        misaligned = raw[4:4 + OP_DTYPE.itemsize * 2].view(OP_DTYPE)
        with pytest.raises(LafValueError, match="aligned"):
            mm.run_ops(misaligned)
        assert mm.run_ops(op_array(0)).done == 0
        assert mm.run_ops(ops).done == 4


def test_run_ops_reports_bad_records_without_raising() -> None:
    ops = op_array(5)
    ops[0] = (999, 0, 0, 0, 0, 0, 0)
    ops[1] = (lib.LAF_OP_TOUCH, 0, 7, 0x10000, 1, 1, 0)
    ops[2] = (lib.LAF_OP_TOUCH, 0, 0, 2**64 - 8, 4096, 4096, 0)
    ops[3] = (lib.LAF_OP_FORK, 0, 0, 0, 0, 0, 0)
    ops[4] = (lib.LAF_OP_TOUCH, lib.LAF_OPF_WRITE, 0, 0x10000, 1, 1, 0)
    with AddressSpace(Config(ram="64M")) as mm:
        r = mm.run_ops(ops)
    assert (r.done, r.failed, r.first_error, r.first_errno) == (5, 4, 0, lib.LAF_EINVAL)
    assert r.errors == {(lib.LAF_OPS_STEP_RECORD, lib.LAF_EINVAL): 2,
                        (lib.LAF_OP_TOUCH, lib.LAF_EINVAL): 1,
                        (lib.LAF_OPS_STEP_RECORD, lib.LAF_ENOSYS): 1}
    assert (r.touch.accesses, r.touch.sigsegv, r.touch.first_error) == (1, 1, 4)


# ------------------------------------------------------------- workloads
COMPILED = ["seq-fill", "random-sparse", "stride-64k", "read-then-write", "madvise-hugepage"]


@pytest.mark.parametrize("page_size,arch", [("4K", "generic"), ("16K", "arm64"), ("64K", "arm64")])
@pytest.mark.parametrize("policy", ["order-0", "order-4", "upstream", "laf-v3"])
@pytest.mark.parametrize("name", COMPILED)
def test_compiled_workload_is_the_python_workload(name: str, policy: str, page_size: str,
                                                  arch: str) -> None:
    w = get_workload(name, 0.05)
    assert isinstance(w, Workload)
    assert w.op_stream(4096, 2 << 20) is not None
    got = []
    for run in (w.run, w.run_python):
        with AddressSpace(Config(policy=Policy.parse(policy), ram="1G", page_size=page_size,
                                 arch=arch)) as mm:
            run(mm)
            got.append(snapshot(mm))
    assert got[0] == got[1]
    assert got[0]["stats"]["faults"] > 0


@pytest.mark.parametrize("name", ["heap-churn", "odd-sizes"])
def test_workloads_that_need_returned_addresses_stay_python(name: str) -> None:
    w = get_workload(name, 0.05)
    assert isinstance(w, Workload)
    assert w.op_stream(4096, 2 << 20) is None


def test_compiled_workload_raises_where_the_python_one_does() -> None:
    """A mapping larger than the address space: ENOMEM from both paths, nothing mapped."""
    w = get_workload("seq-fill", float(1 << 20))
    assert isinstance(w, Workload)
    for run in (w.run, w.run_python):
        with AddressSpace(Config(ram="64M")) as mm:
            with pytest.raises(LafMemoryError, match="memory"):
                run(mm)
            assert mm.vmas() == []
