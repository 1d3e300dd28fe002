"""What a normal install and a hostile environment need from every command:
package data (bundled traces, live-helper sources), one version number,
quiet broken pipes, missing capabilities as exit 2 with one line, and THP
lock waits that name the holder."""
from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import run_cli

import pylaf
from pylaf import render
from pylaf.cli import EXIT_BROKEN_PIPE
from pylaf.live import kprog, sysfs
from pylaf.trace import bundled

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(pylaf.__file__).resolve().parent
BUNDLED = PACKAGE / "data" / "traces" / "git-log.laftrace"


def _pyproject_version() -> str:
    m = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert m, "no version in pyproject.toml"
    return m.group(1)


def _env() -> dict[str, str]:
    """This tree's pylaf first on the path of a child interpreter."""
    path = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))


# ------------------------------------------------------------ package data


def test_bundled_traces_are_package_data():
    assert bundled.traces_dir() == PACKAGE / "data" / "traces"
    names = {p.stem for p in bundled.traces_dir().glob("*.laftrace")}
    assert {"c-workload", "gcc-small", "git-log", "python-numeric", "sqlite-insert"} <= names


def test_pyproject_ships_the_package_data():
    """The wheel gets exactly what the commands read at run time."""
    m = re.search(r"^\[tool\.setuptools\.package-data\]\npylaf = \[(.*)\]$",
                  re.sub(r"(?m)^#.*\n", "", (ROOT / "pyproject.toml").read_text()), re.M)
    assert m, "no package-data for pylaf in pyproject.toml"
    assert '"data/traces/*.laftrace"' in m.group(1) and '"live/csrc/*.c"' in m.group(1)
    for name in ("laf_kprog", "laf_tracee", "laf_workload"):
        assert kprog.helper_source(name) == PACKAGE / "live" / "csrc" / f"{name}.c"


def test_helpers_build_into_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("PYLAF_BUILD_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert kprog.build_dir() == tmp_path / "xdg" / "pylaf"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert kprog.build_dir() == tmp_path / "home" / ".cache" / "pylaf"


def test_unwritable_cache_is_a_missing_capability(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("PYLAF_BUILD_DIR", str(blocker / "sub"))    # a file where a dir should be
    with pytest.raises(kprog.HelperUnavailable, match=r"cannot write to .*PYLAF_BUILD_DIR"):
        kprog.build_helper("laf_workload")


# ------------------------------------------------------------ one version


def test_version_comes_from_the_package_metadata(capsys):
    assert pylaf.__version__ == importlib.metadata.version("pylaf")
    assert pylaf.__version__ == _pyproject_version()
    rc, out, _err = run_cli(capsys, "--version")
    assert rc == 0 and out.strip() == f"pylaf {pylaf.__version__}"


def test_the_version_number_has_one_home():
    number = _pyproject_version()
    restated = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
                if re.search(rf"['\"]{re.escape(number)}['\"]", p.read_text())]
    assert restated == []


# ------------------------------------------------------------ broken pipes


@pytest.mark.parametrize("argv", [
    ["replay", str(BUNDLED), "--policy", "order-0"],
    ["kernel", "show", "--json"],
    ["kernel", "check", "--list"],
], ids=["replay", "kernel-show-json", "kernel-check-list"])
def test_broken_pipe_ends_quietly(argv):
    """`pylaf ... | head`: the reader is gone before the first write."""
    if argv[0] == "kernel" and argv[1] == "show" and not sysfs.THP_DIR.is_dir():
        pytest.skip(f"{sysfs.THP_DIR} missing")
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([sys.executable, "-m", "pylaf", *argv], stdout=w,
                           stderr=subprocess.PIPE, text=True, timeout=120, env=_env())
    finally:
        os.close(w)
    assert p.returncode == EXIT_BROKEN_PIPE
    assert p.stderr == ""


def test_rich_console_lets_a_broken_pipe_through():
    """rich's own handler would exit 1 (``SystemExit``); the table console
    raises BrokenPipeError so that main() ends it with 141 like the rest."""
    r, w = os.pipe()
    os.close(r)
    with os.fdopen(w, "w") as f:
        out = render.console(file=f)
        with pytest.raises(BrokenPipeError):
            out.print("x" * 100_000)
        with contextlib.suppress(BrokenPipeError):
            f.close()


# ------------------------------------------------------------ missing capabilities


def test_validate_live_without_root_exits_2(capsys, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    rc, out, err = run_cli(capsys, "replay", str(BUNDLED), "--validate-live", "64K")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "cannot run here" in err and "root" in err


def test_validate_live_without_perf_exits_2(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("PYLAF_PERF", str(tmp_path / "no-such-perf"))
    rc, out, err = run_cli(capsys, "replay", str(BUNDLED), "--validate-live", "64K")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "cannot run here: perf not found" in err


def test_validate_live_without_compiler_exits_2(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    perf = tmp_path / "perf"
    perf.write_text("#!/bin/sh\nexit 99\n")
    perf.chmod(0o755)
    monkeypatch.setenv("PYLAF_PERF", str(perf))
    monkeypatch.setenv("PYLAF_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    rc, out, err = run_cli(capsys, "replay", str(BUNDLED), "--validate-live", "64K")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "C compiler" in err


# ------------------------------------------------------------ the THP-settings lock

HOLDER = textwrap.dedent("""
    import sys, time
    from pylaf.live.sysfs import thp_lock
    with thp_lock():
        print("held", flush=True)
        time.sleep(float(sys.argv[1]))
""")


@pytest.fixture
def held_lock(monkeypatch, tmp_path):
    """Another process holding the lock (a private lock file) for up to 30 s."""
    path = tmp_path / "thp.lock"
    monkeypatch.setattr(sysfs, "THP_LOCK_PATH", path)
    env = dict(_env(), PYLAF_THP_LOCK=str(path))
    p = subprocess.Popen([sys.executable, "-c", HOLDER, "30"], stdout=subprocess.PIPE, text=True,
                         env=env)
    try:
        assert p.stdout is not None and p.stdout.readline() == "held\n"
        yield p
    finally:
        p.kill()
        p.wait()


def test_lock_wait_names_the_holder_then_times_out(held_lock):
    said: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(sysfs.ThpLockTimeout) as ei, sysfs.thp_lock(timeout=0.5, notify=said.append):
        pytest.fail("got a lock another process holds")
    assert time.monotonic() - t0 >= 0.5
    assert len(said) == 1                                  # told once, then kept waiting
    assert f"held by pid {held_lock.pid}: " in said[0] and "thp_lock" in said[0]
    assert f"pid {held_lock.pid}" in str(ei.value)


def test_lock_is_taken_once_the_holder_leaves(monkeypatch, tmp_path):
    path = tmp_path / "thp.lock"
    monkeypatch.setattr(sysfs, "THP_LOCK_PATH", path)
    env = dict(_env(), PYLAF_THP_LOCK=str(path))
    p = subprocess.Popen([sys.executable, "-c", HOLDER, "0.5"], stdout=subprocess.PIPE,
                         text=True, env=env)
    assert p.stdout is not None and p.stdout.readline() == "held\n"
    said: list[str] = []
    with sysfs.thp_lock(timeout=30, notify=said.append):
        assert path.read_text().startswith(f"pid {os.getpid()}: ")
    p.wait()
    assert len(said) == 1 and f"pid {p.pid}" in said[0]
    assert path.read_text() == ""                          # released: no stale holder


def test_lock_timeout_option_exits_2(held_lock, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv(sysfs.LOCK_TIMEOUT_ENV, "")      # main() sets it; restored after the test
    program = tmp_path / "prog.txt"
    program.write_text("mmap a 64K\n")
    rc, out, err = run_cli(capsys, "--lock-timeout", "0.3", "kernel", "run", str(program),
                           "--set", "enabled=never")
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert lines[0].startswith("pylaf: waiting (at most 0.3 s) for the THP-settings lock")
    assert lines[1].startswith("pylaf kernel: cannot run here: timed out after 0.3 s")
    assert f"pid {held_lock.pid}" in lines[0] and f"pid {held_lock.pid}" in lines[1]
    assert len(lines) == 2
