"""Record & replay: perf script parsing, the trace format, malformed files,
replay of the bundled traces, perf failure messages."""
from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from pylaf import AddressSpace, Config, Policy
from pylaf.trace import bundled as B
from pylaf.trace import format as F
from pylaf.trace import perf as P
from pylaf.trace import record as R
from pylaf.trace import remap as RM
from pylaf.trace import replay as RP

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "traces" / "fixtures"
TRACES = B.traces_dir()         # pylaf/data/traces (package data)




# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def fixture_trace() -> F.Trace:
    """A real capture: `sh -c '/bin/true; echo x >/dev/null'` (perf script text
    + laf_tracee log, kept with `pylaf record --keep-perf-data`)."""
    lines = (FIXTURES / "sh-true.perf-script.txt").read_text().splitlines()
    log = P.read_tracee_log(FIXTURES / "sh-true.tracee.log")
    return P.build_trace(lines, log, {"command": ["sh", "-c", "/bin/true; echo x >/dev/null"],
                                      "name": "sh-true"})


def test_parse_perf_script_fixture():
    lines = (FIXTURES / "sh-true.perf-script.txt").read_text().splitlines()
    evs = list(P.parse_perf_script(lines))
    assert len(evs) == len([ln for ln in lines if ln.strip()])
    kinds = {e.event for e in evs}
    assert {"exceptions:page_fault_user", "sched:sched_process_exec", "sched:sched_process_fork",
            "syscalls:sys_enter_mmap", "syscalls:sys_exit_mmap"} <= kinds
    assert all(e.t > 0 for e in evs)
    assert [e.t for e in evs] == sorted(e.t for e in evs)


def test_parse_perf_script_fields():
    line = ("  Web Content  123/456 [001]  1222.139130756: exceptions:page_fault_user: "
            "address=0x7f41d3782b70 ip=0x7f41d3782b70 error_code=0x6")
    (ev,) = P.parse_perf_script([line, "", "# a header line"])
    assert (ev.comm, ev.pid, ev.tid, ev.t) == ("Web Content", 123, 456, 1222139130756)
    assert P.fault_fields(ev.fields) == (0x7f41d3782b70, 6)
    assert P.syscall_args("addr: 0x00000000, len: 0x00002000, prot: 0x00000003, flags: 0x00000022,"
                           " fd: 0xffffffff, off: 0x00000000") == \
        {"addr": 0, "len": 0x2000, "prot": 3, "flags": 0x22, "fd": 0xffffffff, "off": 0}
    assert P.syscall_ret("0xfffffffffffffff4") == -12


def test_parse_perf_script_lost_events():
    with pytest.raises(P.PerfError, match="lost"):
        list(P.parse_perf_script(["PERF_RECORD_LOST lost 12 events"]))


def test_fixture_processes(fixture_trace):
    tr = fixture_trace
    # sh, then the vfork()ed child exec()ing /bin/true: two mms
    assert [p["start"] for p in tr.processes] == ["exec", "exec"]
    assert tr.processes[0]["exe"] == "/usr/bin/sh"
    assert tr.processes[1]["exe"] == "/bin/true"
    fc = tr.fault_counts()
    assert fc["anon"] == 25 and fc["total"] == 106 and fc["file"] == 79
    assert fc["no-vma"] == 0
    # exec internals (elf_load, the auxv copy) are dropped, the tracer's own
    # faults are not part of the workload
    assert tr.header["skipped"]["exec_internal"] == 4
    assert tr.header["skipped"]["untracked"] > 0
    # the stack page exec populated comes as a POPULATE event, not a fault
    pop = tr.events[tr.events["op"] == F.OP_POPULATE]
    assert len(pop) >= 2 and set(pop["cls"]) == {F.C_STACK}
    # brk: the first heap VMA is created unmerged with .bss
    maps = tr.events[tr.events["op"] == F.OP_MAP]
    heap = maps[maps["cls"] == F.C_HEAP]
    assert len(heap) and heap[0]["flags"] & F.M_NOMERGE


# ------------------------------------------------- synthetic perf scenarios

PID = 1000


def _line(t_us: int, event: str, rest: str, pid: int = PID, tid: int = PID, comm: str = "prog") -> str:
    return f"{comm:>16} {pid}/{tid} [000] {t_us // 1000000}.{t_us % 1000000:06d}000: {event}: {rest}"


def _exec_log(pid: int = PID) -> list[dict]:
    return [
        {"ev": "start", "pid": pid, "no_aslr": 1, "page_size": 4096},
        {"ev": "exec", "pid": pid, "n": 0, "t": 1, "maps": [
            [0x400000, 0x401000, "r--p", 0, "/bin/prog"],
            [0x401000, 0x402000, "rw-p", 0x1000, "/bin/prog"],
            [0x402000, 0x404000, "rw-p", 0, ""],
            [0x7ffffffde000, 0x7ffffffff000, "rw-p", 0, "[stack]"]],
         "present": [[0x402000, 0x404000, "00"],
                     [0x7ffffffde000, 0x7ffffffff000, "00000000" + "01"]]},
        {"ev": "end", "status": 0, "t": 99},
    ]


def _mmap(t: int, addr: int, ln: int, prot: int, flags: int, ret: int, fd: int = 0xffffffff) -> list[str]:
    return [_line(t, "syscalls:sys_enter_mmap", f"addr: {addr:#x}, len: {ln:#x}, prot: {prot:#x}, "
                                                f"flags: {flags:#x}, fd: {fd:#x}, off: 0x0"),
            _line(t + 1, "syscalls:sys_exit_mmap", f"{ret:#x}")]


def _fault(t: int, addr: int, err: int = 6, kernel: bool = False, pid: int = PID,
           tid: int = PID) -> str:
    ev = "exceptions:page_fault_kernel" if kernel else "exceptions:page_fault_user"
    return _line(t, ev, f"address={addr:#x} ip=0x401000 error_code={err:#x}", pid=pid, tid=tid)


def _synthetic() -> list[str]:
    L: list[str] = []
    L.append(_line(10, "syscalls:sys_enter_execve", "filename: 0x1, argv: 0x2, envp: 0x3"))
    L.append(_fault(11, 0x402010, 2, kernel=True))            # exec internal: dropped
    L.append(_line(12, "sched:sched_process_exec", f"filename=/bin/prog pid={PID} old_pid={PID}"))
    L.append(_line(13, "syscalls:sys_exit_execve", "0x0"))
    L.append(_line(20, "syscalls:sys_enter_brk", "brk: 0x00000000"))
    L.append(_line(21, "syscalls:sys_exit_brk", "0x404000"))
    L.append(_line(22, "syscalls:sys_enter_brk", "brk: 0x425000"))
    L.append(_line(23, "syscalls:sys_exit_brk", "0x425000"))
    L.append(_fault(30, 0x404008))                            # heap write
    L.append(_fault(31, 0x402000, 4))                         # bss read
    L.append(_fault(32, 0x400100, 4))                         # file read
    L += _mmap(40, 0, 0x100000, 3, 0x22, 0x7ffff7e00000)       # anon mmap 1M
    L.append(_fault(50, 0x7ffff7e00000))
    L.append(_fault(51, 0x7ffff7e01000))
    L += _mmap(60, 0, 0x2000, 1, 0x2, 0x7ffff7dfe000, fd=3)    # file mapping
    L.append(_fault(61, 0x7ffff7dfe000, 4))
    L.append(_line(70, "syscalls:sys_enter_madvise", "start: 0x7ffff7e00000, len_in: 0x00010000, "
                                                     "behavior: 0x00000004"))
    L.append(_line(71, "syscalls:sys_exit_madvise", "0x0"))
    L.append(_line(80, "syscalls:sys_enter_mremap", "addr: 0x7ffff7e00000, old_len: 0x00100000, "
                                                    "new_len: 0x00200000, flags: 0x00000001, "
                                                    "new_addr: 0x00000000"))
    L.append(_line(81, "syscalls:sys_exit_mremap", "0x7ffff7a00000"))
    L.append(_fault(90, 0x7ffff7b00000))                      # grown part of the moved VMA
    L.append(_fault(91, 0x7ffffffdd100))                      # below the stack: expands it
    L.append(_fault(92, 0x10000))                             # no VMA
    L.append(_line(93, "syscalls:sys_enter_munmap", "addr: 0x7ffff7a00000, len: 0x00200000"))
    L.append(_line(94, "syscalls:sys_exit_munmap", "0x0"))
    # a failed execve: its faults belong to the old mm
    L.append(_line(95, "syscalls:sys_enter_execve", "filename: 0x1, argv: 0x2, envp: 0x3"))
    L.append(_fault(96, 0x405010, 2, kernel=True))
    L.append(_line(97, "syscalls:sys_exit_execve", "0xfffffffffffffffe"))
    # a process that is not ours
    L.append(_fault(98, 0x404010, pid=4242, tid=4242))
    return L


def test_synthetic_classification():
    tr = P.build_trace(_synthetic(), _exec_log())
    assert len(tr.processes) == 1
    ev = tr.events
    f = ev[ev["op"] == F.OP_FAULT]
    cls = {int(a): F.CLASS_NAMES[c] for a, c in zip(f["addr"], f["cls"], strict=True)}
    assert cls[0x404008] == "heap"
    assert cls[0x402000] == "bss"
    assert cls[0x400100] == "file"
    assert cls[0x7ffff7e00000] == "anon-mmap"
    assert cls[0x7ffff7dfe000] == "file"
    assert cls[0x7ffff7b00000] == "anon-mmap"          # the moved VMA keeps its class
    assert cls[0x7ffffffdd100] == "stack"
    assert cls[0x10000] == "no-vma"
    assert cls[0x405010] == "heap"                     # from the failed execve
    assert 0x402010 not in cls                         # exec internal
    assert tr.header["skipped"]["exec_internal"] == 1
    assert tr.header["skipped"]["untracked"] == 1
    ops = [F.OP_NAMES[int(o)] for o in ev["op"] if o != F.OP_FAULT]
    assert "remap" in ops and "remap-to" in ops and "madvise" in ops and "map-other" in ops
    assert "move" not in ops and "mremap_moved_pages" not in tr.header["skipped"]
    # the moving mremap: OP_REMAP (old, old_len, new_len; MAYMOVE|FIXED) then OP_REMAP_TO (target)
    i = int(np.flatnonzero(ev["op"] == RM.OP_REMAP)[0])
    assert tuple(int(ev[i][k]) for k in ("addr", "len", "arg", "flags")) == \
        (0x7ffff7e00000, 0x100000, 0x200000, RM.R_MAYMOVE | RM.R_FIXED)
    assert int(ev[i + 1]["op"]) == RM.OP_REMAP_TO and int(ev[i + 1]["addr"]) == 0x7ffff7a00000
    # stack growth is a MAP of the stack class right before the fault
    grow = ev[(ev["op"] == F.OP_MAP) & (ev["cls"] == F.C_STACK)]
    assert int(grow[0]["addr"]) == 0x7ffffffdd000
    assert int(grow[0]["len"]) == 0x7ffffffde000 - 0x7ffffffdd000
    # heap VMA starts unmerged at start_brk
    heap = ev[(ev["op"] == F.OP_MAP) & (ev["cls"] == F.C_HEAP)]
    assert int(heap[0]["addr"]) == 0x404000 and heap[0]["flags"] & F.M_NOMERGE


def test_synthetic_replay():
    tr = P.build_trace(_synthetic(), _exec_log())
    log: list = []
    with AddressSpace(Config(policy=Policy.parse("order-0"), ram="256M")) as mm:
        rep = RP.replay_into(mm, tr, log)
        st = mm.stats()
        # after munmap of the moved VMA: heap, bss, stack remain
        assert not any(v.start <= 0x7ffff7a00000 < v.end for v in mm.vmas())
        # heap and .bss stay separate VMAs (brk never merges with .bss)
        starts = {v.start for v in mm.vmas()}
        assert 0x404000 in starts
        mm.check_invariants()
    anon = tr.fault_counts()["anon"]
    assert rep.faults_replayed == anon
    assert st.pgfault == anon                   # every recorded anon fault faults again at 4K
    assert rep.sigsegv == 0 and not rep.errors


def _fork_trace(child_exits: bool):
    """A parent writes one page of a 64K mapping, forks; the child writes it
    (a COW copy) and, if *child_exits*, exits before the parent writes the
    next page."""
    L = [_line(12, "sched:sched_process_exec", f"filename=/bin/prog pid={PID} old_pid={PID}")]
    L += _mmap(20, 0, 0x10000, 3, 0x22, 0x7ffff7e00000)
    L.append(_fault(21, 0x7ffff7e00000))
    L.append(_line(22, "sched:sched_process_fork", f"comm=prog pid={PID} child_comm=prog child_pid=1001"))
    L.append(_fault(23, 0x7ffff7e00000, 7, pid=1001, tid=1001))
    if child_exits:
        L.append(_line(24, "sched:sched_process_exit", "comm=prog pid=1001 prio=120 group_dead=true",
                       pid=1001, tid=1001))
    L.append(_fault(25, 0x7ffff7e01000, 7))
    log = _exec_log()
    log.insert(2, {"ev": "fork", "kind": "fork", "thread": 0, "parent": PID, "child": 1001, "t": 2})
    return P.build_trace(L, log)


@pytest.mark.parametrize("engine", ["compiled", "python"])
def test_fork_is_replayed_as_a_real_fork(engine):
    tr = _fork_trace(child_exits=True)
    assert [p["start"] for p in tr.processes] == ["exec", "fork"]
    assert tr.processes[1]["forked"] and tr.processes[1]["parent"] == 0
    assert tr.processes[1]["exit"] == 24_000          # ns
    assert "fork_cow_pages" not in tr.header["skipped"]
    assert not (tr.events["op"] == F.OP_POPULATE)[tr.events["mm"] == 1].any()
    assert RP.has_forks(tr)
    with AddressSpace(Config(policy=Policy.parse("upstream/enabled=never/64K=always"), ram="256M")) as mm:
        rep = RP.replay_into(mm, tr, engine=engine)
        st = mm.machine.stats()
        mm.machine.check_invariants()
        assert len(mm.machine.mms) == 1        # the child exited
    assert rep.processes == 2
    # parent: one 64K fault; child: a COW copy of the written page; parent,
    # after the child exited: the folio is its own again, reused in place
    assert (st.pgfault, st.faults_wp_copy, st.pgreuse) == (3, 1, 1)


def test_fork_child_alive_makes_parent_copy():
    tr = _fork_trace(child_exits=False)
    assert "exit" not in tr.processes[1]
    st = RP.replay(tr, "upstream/enabled=never/64K=always", ram="256M")
    # the child still maps the folio: the parent's write copies too
    assert (st.pgfault, st.faults_wp_copy) == (3, 2)


def test_trace_workload_counts_the_machine_only_with_forks(fixture_trace):
    assert RP.TraceWorkload(_fork_trace(child_exits=True)).whole_machine
    assert not RP.TraceWorkload(fixture_trace).whole_machine


# ---------------------------------------------------------------- file format


def test_round_trip(tmp_path, fixture_trace):
    p = F.save_trace(fixture_trace, tmp_path / "x.laftrace")
    assert not [q for q in tmp_path.iterdir() if q.name != "x.laftrace"]   # no temp left
    mode = stat.S_IMODE(p.stat().st_mode)
    assert mode & 0o044                                                    # not 0600
    tr = F.load_trace(p)
    assert np.array_equal(tr.events, fixture_trace.events)
    assert tr.processes == fixture_trace.processes
    assert tr.header["command"] == fixture_trace.header["command"]
    assert tr.fault_counts() == fixture_trace.fault_counts()
    data = p.read_bytes()
    assert data[:8] == F.MAGIC
    assert struct.unpack_from("<H", data, 8)[0] == F.VERSION


def test_round_trip_empty(tmp_path):
    tr = F.Trace(header={"command": ["x"]}, processes=[], events=np.zeros(0, F.EVENT_DTYPE))
    F.save_trace(tr, tmp_path / "e.laftrace")
    back = F.load_trace(tmp_path / "e.laftrace")
    assert len(back.events) == 0 and back.processes == []


@pytest.fixture()
def good_file(tmp_path, fixture_trace) -> Path:
    return F.save_trace(fixture_trace, tmp_path / "good.laftrace")


def _expect_error(path: Path, pos: int | None, *words: str) -> F.TraceFormatError:
    with pytest.raises(F.TraceFormatError) as ei:
        F.load_trace(path)
    e = ei.value
    msg = str(e)
    assert str(path) in msg
    assert e.path == str(path)
    if pos is not None:
        assert e.pos == pos, msg
    assert f"byte {e.pos}" in msg
    for w in words:
        assert w in msg, msg
    return e


@pytest.mark.parametrize("cut", [0, 3, 8, 20, 30, 200, -1, -100])
def test_truncated(tmp_path, good_file, cut):
    data = good_file.read_bytes()
    n = cut if cut >= 0 else len(data) + cut
    bad = tmp_path / "cut.laftrace"
    bad.write_bytes(data[:n])
    if n == 0:
        _expect_error(bad, 0, "not a pylaf trace")
    else:
        _expect_error(bad, n, "truncated")


def test_corrupted_header(tmp_path, good_file):
    data = bytearray(good_file.read_bytes())
    data[40] ^= 0x55
    bad = tmp_path / "h.laftrace"
    bad.write_bytes(bytes(data))
    _expect_error(bad, F.PREFIX.size, "header checksum mismatch")


def test_corrupted_payload(tmp_path, good_file):
    data = bytearray(good_file.read_bytes())
    data[-10] ^= 0xFF
    bad = tmp_path / "p.laftrace"
    bad.write_bytes(bytes(data))
    e = _expect_error(bad, None, "checksum mismatch", "'events'")
    assert F.PREFIX.size < e.pos < len(data)


def test_trailing_garbage(tmp_path, good_file):
    data = good_file.read_bytes()
    bad = tmp_path / "g.laftrace"
    bad.write_bytes(data + b"junk")
    _expect_error(bad, len(data), "unexpected bytes")


@pytest.mark.parametrize("content", [
    b"\x7fELF\x02\x01\x01" + b"\0" * 60,
    b"\x89PNG\r\n\x1a\n" + b"\0" * 40,
    b"just some text, not a trace\n",
    b"PERFILE2" + b"\0" * 100,
])
def test_foreign_file(tmp_path, content):
    bad = tmp_path / "foreign.bin"
    bad.write_bytes(content)
    _expect_error(bad, None, "not a pylaf trace")


def test_wrong_version(tmp_path, good_file):
    data = bytearray(good_file.read_bytes())
    struct.pack_into("<H", data, 8, 99)
    bad = tmp_path / "v.laftrace"
    bad.write_bytes(bytes(data))
    _expect_error(bad, 8, "unsupported trace version 99")


def test_missing_file(tmp_path):
    with pytest.raises(F.TraceError, match="cannot read"):
        F.load_trace(tmp_path / "nope.laftrace")


def test_cli_replay_malformed(tmp_path, capsys, good_file):
    bad = tmp_path / "bad.laftrace"
    bad.write_bytes(good_file.read_bytes()[:100])
    rc, _out, err = run_cli(capsys, "replay", str(bad))
    assert rc == 1
    assert str(bad) in err and "byte 100" in err and "truncated" in err


# ------------------------------------------------------------- bundled traces


def _bundled() -> list[Path]:
    return sorted(TRACES.glob("*.laftrace"))


def test_bundled_traces_present():
    names = [p.stem for p in _bundled()]
    assert {"python-numeric", "gcc-small", "sqlite-insert", "git-log"} <= set(names)
    assert sum(p.stat().st_size for p in _bundled()) < 4 << 20
    readme = (ROOT / "traces" / "README.md").read_text()
    for n in names:
        assert f"{n}.laftrace" in readme


@pytest.mark.parametrize("path", _bundled(), ids=lambda p: p.stem)
def test_replay_bundled(path):
    tr = F.load_trace(path)
    rec = tr.fault_counts()
    reports: list = []
    st0 = RP.replay(tr, "order-0", ram="2G", report=reports)
    # at 4K every recorded anonymous fault is a fault again
    assert st0.faults == rec["anon"]
    assert reports[0].sigsegv == 0
    st64 = RP.replay(tr, "upstream/enabled=never/64K=always", ram="2G")
    assert 0 < st64.faults <= st0.faults
    assert st64.anon_fault_alloc["64K"] > 0


def test_bundled_workloads_in_compare():
    from pylaf.experiments.compare import compare
    from pylaf.experiments.workloads import default_workload_names

    wls = B.bundled_workloads()
    assert {w.name for w in wls} >= {"trace-gcc-small", "trace-git-log"}
    assert all(w.description for w in wls)
    assert "trace-git-log" in default_workload_names()
    git = next(w for w in wls if w.name == "trace-git-log")
    rows = compare([git], ["order-0", "order-4"], ram="1G")
    assert rows[0].faults == git.trace.fault_counts()["anon"]
    assert rows[1].faults < rows[0].faults


def test_cli_replay_table(capsys):
    rc, out, err = run_cli(capsys, "replay", str(TRACES / "git-log.laftrace"),
                           "--policy", "order-0", "--policy", "upstream/enabled=never/64K=always")
    assert rc == 0, err
    assert "predicted total" in out and "order-0" in out


def test_cli_replay_json(capsys):
    import json
    rc, out, err = run_cli(capsys, "replay", str(TRACES / "git-log.laftrace"), "--json",
                           "--policy", "order-0")
    assert rc == 0, err
    d = json.loads(out)
    assert d["schema_version"] == 1 and d["rows"][0]["kind"] == "replay"
    assert d["rows"][0]["faults"] == d["traces"][0]["recorded_faults"]["anon"]
    assert d["rows"][0]["recorded_anon_faults"] == d["traces"][0]["recorded_faults"]["anon"]


# ------------------------------------------------------------- perf problems


def test_perf_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PYLAF_PERF", str(tmp_path / "no-such-perf"))
    out = tmp_path / "t.laftrace"
    with pytest.raises(R.PerfUnavailable, match=r"perf not found.*install"):
        R.record(["true"], out)
    assert not out.exists()


def test_perf_missing_cli_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYLAF_PERF", str(tmp_path / "no-such-perf"))
    rc, out, err = run_cli(capsys, "record", "-o", str(tmp_path / "t.laftrace"), "--", "true")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "cannot run here: perf not found" in err
    assert not (tmp_path / "t.laftrace").exists()


@pytest.mark.parametrize("paranoid, thp_off, word", [
    ("2", False, "perf_event_paranoid=-1 (it is 2"),
    ("-1", True, "--thp-off needs root"),
])
def test_record_not_root_exits_2(tmp_path, monkeypatch, capsys, paranoid, thp_off, word):
    """Without root, recording tracepoints needs perf_event_paranoid=-1, and
    --thp-off (sysfs writes) needs root: said in one line before anything runs."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    knob = tmp_path / "perf_event_paranoid"
    knob.write_text(paranoid + "\n")
    monkeypatch.setattr(R, "PERF_PARANOID", knob)
    monkeypatch.setenv("PYLAF_PERF", str(_fake_perf(tmp_path, "must not run", 99)))
    rc, out, err = run_cli(capsys, "record", "-o", str(tmp_path / "t.laftrace"),
                           *(["--thp-off"] if thp_off else []), "--", "true")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "pylaf record: cannot run here: " in err and word in err
    assert not (tmp_path / "t.laftrace").exists()


def _fake_perf(tmp_path: Path, stderr: str, rc: int = 255) -> Path:
    p = tmp_path / "perf"
    p.write_text("#!/bin/sh\ncat >&2 <<'EOF'\n" + stderr + f"\nEOF\nexit {rc}\n")
    p.chmod(0o755)
    return p


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (laf_tracee)")
def test_perf_refused(tmp_path, monkeypatch):
    perf = _fake_perf(tmp_path, "Error:\nNo permission to enable exceptions:page_fault_user event.\n"
                                "Consider tweaking /proc/sys/kernel/perf_event_paranoid")
    monkeypatch.setenv("PYLAF_PERF", str(perf))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    out = tmp_path / "t.laftrace"
    with pytest.raises(R.PerfUnavailable) as ei:
        R.record(["true"], out)
    msg = str(ei.value)
    assert "perf_event_paranoid" in msg and "sysctl" in msg
    assert not out.exists()
    assert not list(tmp_path.glob(".t.laftrace*"))


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (laf_tracee)")
def test_perf_no_tracefs(tmp_path, monkeypatch, capsys):
    perf = _fake_perf(tmp_path, "event syntax error: 'exceptions:page_fault_user'\n"
                                "can't access trace events: No such file or directory (tracefs)")
    monkeypatch.setenv("PYLAF_PERF", str(perf))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    rc, _out, err = run_cli(capsys, "record", "-o", str(tmp_path / "t.laftrace"), "--", "true")
    assert rc == 2                       # a missing capability, not a failed recording
    assert err.count("\n") == 1 and "cannot run here" in err
    assert "tracefs" in err and "mount -t tracefs" in err
    assert not (tmp_path / "t.laftrace").exists()


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (laf_tracee)")
def test_perf_other_failure_is_exit_1(tmp_path, monkeypatch, capsys):
    perf = _fake_perf(tmp_path, "something odd happened", 3)
    monkeypatch.setenv("PYLAF_PERF", str(perf))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    rc, _out, err = run_cli(capsys, "record", "-o", str(tmp_path / "t.laftrace"), "--", "true")
    assert rc == 1 and "perf record failed (exit 3)" in err and "something odd" in err


def test_explain_perf_failure_keeps_perf_text():
    msg = R.explain_perf_failure("something odd happened", 3)
    assert "exit 3" in msg and "something odd happened" in msg


# ------------------------------------------------------------ live recording


def _can_record() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("perf") is None:
        return "perf not installed"
    if shutil.which("cc") is None:
        return "no C compiler"
    return None


@pytest.mark.kernel
@pytest.mark.skipif(_can_record() is not None, reason=str(_can_record()))
def test_record_live(tmp_path):
    out = tmp_path / "true.laftrace"
    tr = R.record(["/bin/true"], out, stdout=subprocess.DEVNULL)
    assert out.exists()
    back = F.load_trace(out)
    assert back.processes[0]["exe"] == "/bin/true"
    assert back.header["no_aslr"] is True
    fc = back.fault_counts()
    assert fc["anon"] > 0 and fc["file"] > 0 and fc["no-vma"] == 0
    # deterministic with ASLR off: the same command gives the same anon faults
    again = R.record(["/bin/true"], tmp_path / "again.laftrace", stdout=subprocess.DEVNULL)
    a, b = back.faults(F.ANON_CLASSES), again.faults(F.ANON_CLASSES)
    assert np.array_equal(a["addr"], b["addr"])
    assert tr.header["exit_status"] == 0


@pytest.mark.kernel
@pytest.mark.skipif(_can_record() is not None, reason=str(_can_record()))
def test_record_cli_exit_status(tmp_path, capsys):
    rc, _out, err = run_cli(capsys, "record", "-o", str(tmp_path / "f.laftrace"), "--",
                           "sh", "-c", "exit 3")
    assert rc == 3                       # the command's status; the trace is kept
    assert "status 3" in err
    assert F.load_trace(tmp_path / "f.laftrace").header["exit_status"] == 3


@pytest.mark.kernel
@pytest.mark.skipif(_can_record() is not None, reason=str(_can_record()))
def test_record_false_exits_1_and_keeps_trace(tmp_path, capsys):
    rc, out, _err = run_cli(capsys, "record", "-o", str(tmp_path / "f.laftrace"), "--", "false")
    assert rc == 1 and "faults" in out
    assert F.load_trace(tmp_path / "f.laftrace").header["exit_status"] == 1


@pytest.mark.kernel
@pytest.mark.skipif(_can_record() is not None, reason=str(_can_record()))
@pytest.mark.parametrize("how", ["missing", "not-executable"])
def test_record_command_that_cannot_start(tmp_path, capsys, how):
    """execvp fails: no trace file, 127 (not found) or 126 (not executable)."""
    if how == "missing":
        cmd, status, word = str(tmp_path / "no_such_cmd"), 127, "No such file"
    else:
        plain = tmp_path / "plain.txt"
        plain.write_text("not a program\n")
        cmd, status, word = str(plain), 126, "Permission denied"
    out_file = tmp_path / "x.laftrace"
    rc, out, err = run_cli(capsys, "record", "-o", str(out_file), "--", cmd)
    assert rc == status and out == ""
    assert err.count("\n") == 1 and f"cannot run {cmd}: {word}" in err, err
    assert not out_file.exists() and not list(tmp_path.glob("*.laftrace*"))


def test_record_help_names_every_recorded_event(capsys, monkeypatch):
    """`pylaf record --help` lists what perf is told to record (sched_process_exit
    included, which ends a process's address space) from the same lists."""
    monkeypatch.setenv("COLUMNS", "1000")
    rc, out, _err = run_cli(capsys, "record", "--help")
    assert rc == 0
    text = " ".join(out.split())
    for tp in R.TRACEPOINTS:
        assert tp in text
    assert "sched:sched_process_exit" in text and "group_dead" in text
    assert "syscalls:sys_enter/exit_{" + ",".join(R.SYSCALLS) + "}" in text
