"""Stress on debug kernels: ktap on hot events under load, with lockdep,
DEBUG_ATOMIC_SLEEP, kmemleak, the soft/hard-lockup and hung-task detectors and
KASAN (where 6.1 has it) watching. One boot of the debug kernel
(kernel.ensure_kernel(target, variant="debug"), targets/debug.config) per target.

Each session runs for a fixed time (STRESS_SECONDS) under `ktapw fork` and
`ktapw write` load, must stop cleanly (exit 0, its summary printed), and after
rmmod the console and dmesg must hold no warning, lockdep splat or KASAN
report, and a kmemleak scan must find nothing.

A cold debug kernel takes minutes per target to build (docs/safety.md has the
figures); later runs take it from the cache.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import DEBUG_TROUBLE, board_run_once, leak_reports
from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.boards import kernels as kernel
from ktap.boards.batch import run_commands
from ktap.boards.frames import CommandResult
from ktap.boards.sessions import GUEST_DIR, GUEST_MODULE, GUEST_RUNNER
from ktap.build import kmod
from ktap.build import ktaprun as runner
from ktap.build.bundle import session_argv
from ktap.core.diagnostics import Source
from ktap.core.targets import target_names


TARGETS = target_names()        # every targets/*/target.toml
# Boots the debug kernel: outside --kernel-matrix, only on conftest.VARIANT_SMOKE["debug"].
pytestmark = pytest.mark.kernel_variant("debug")


STRESS_SECONDS = 5
KMEMLEAK = "/sys/kernel/debug/kmemleak"


# What the debug checkers print when they find something (any log level).
SCRIPTS = {
    "sched-switch": '''
var by_next = {}
var n = 0
trace sched:sched_switch {
  n += 1
  by_next[args.next_comm] += 1
}
trace_end { printf("sched_switch events=%d comms=%d\\n", n, len(by_next)) }
''',
    "kprobe-hot": '''
var calls = {}
var n = 0
var r = 0
trace probe:kmem_cache_alloc {
  n += 1
  calls[execname] += 1
}
trace probe:vfs_write%return { r += 1 }
trace_end { printf("kmem_cache_alloc events=%d comms=%d vfs_write returns=%d\\n", n, len(calls), r) }
''',
    "profile-1ms": '''
var stacks = {}
var n = 0
trace profile-1ms {
  n += 1
  stacks[stack()] += 1
}
trace_end { printf("profile samples=%d stacks=%d\\n", n, len(stacks)) }
''',
}
SUMMARY = {
    "sched-switch": r"sched_switch events=(\d+) comms=(\d+)\n",
    "kprobe-hot": r"kmem_cache_alloc events=(\d+) comms=(\d+) vfs_write returns=(\d+)\n",
    "profile-1ms": r"profile samples=(\d+) stacks=(\d+)\n",
}


def load(seconds: int) -> list[str]:
    """fork and write load for a fixed time, both stopped by SIGKILL."""
    ms = str(seconds * 1000)
    return ["ktapw", "both", "ktapw", "killafter", ms, "ktapw", "fork", "100000000", "::",
            "ktapw", "killafter", ms, "ktapw", "write", "1000000000"]


@dataclass
class StressRun:
    target: str
    results: dict[str, CommandResult]
    console: str
    seconds: float
    kernel_seconds: float | None      # cold build time of the debug kernel (from its cache stamp)
    kernel_cached: bool

    def out(self, name: str) -> str:
        return self.results[name].stdout.decode("utf-8", "replace")

    def describe(self, name: str) -> str:
        r = self.results[name]
        return (f"{name}: status={r.status} stdout={self.out(name)!r} "
                f"stderr={r.stderr.decode('utf-8', 'replace')!r} errors={r.errors}")


def run_stress(target: str, seconds: int = STRESS_SECONDS, timeout: float = 900.0) -> StressRun:
    kb = kernel.ensure_kernel_build(target, variant="debug")
    module = kmod.build_module(target, kdir=kb.directory)
    ktaprun = runner.build_ktaprun(target)
    names, commands = [], []

    def add(name, argv):
        names.append(name)
        commands.append(argv)

    with tempfile.TemporaryDirectory(prefix="ktap-stress-") as tmp:
        files: dict[str, str | Path] = {GUEST_MODULE: module, GUEST_RUNNER: ktaprun}
        # Forget what kmemleak already suspects from boot: only what happens
        # from here on counts.
        # kmemleak only reports objects older than 5 s: let boot's own age first.
        add("settle", ["ktapw", "sleep", "6000"])
        add("kmemleak-scan-before", ["ktapw", "write-file", KMEMLEAK, "scan"])
        add("kmemleak-clear", ["ktapw", "write-file", KMEMLEAK, "clear"])
        for name, text in SCRIPTS.items():
            host = Path(tmp) / f"{name}.kbc"
            host.write_bytes(bc.dump(api.compile_source(Source(f"{name}.kp", text), target)))
            files[f"{GUEST_DIR}/{name}.kbc"] = host
            add(name, session_argv(GUEST_RUNNER, f"{GUEST_DIR}/{name}.kbc", module=GUEST_MODULE,
                                   workload=load(seconds)))
        add("rmmod", ["ktapw", "rmmod", "ktapvm"])
        # kmemleak reports only objects older than 5 s.
        add("age", ["ktapw", "sleep", "6000"])
        add("kmemleak-scan-1", ["ktapw", "write-file", KMEMLEAK, "scan"])
        add("kmemleak-scan-2", ["ktapw", "write-file", KMEMLEAK, "scan"])
        add("kmemleak", ["ktapw", "cat", KMEMLEAK])
        add("dmesg", ["ktapw", "dmesg"])
        run = run_commands(target, commands, extra_files=files, timeout=timeout,
                           kernel_variant="debug")
    return StressRun(target, dict(zip(names, run.results)), run.console, run.total_seconds,
                     kb.seconds, kb.cached)
_RUNS: dict[str, StressRun] = {}


def stress_run(target: str) -> StressRun:
    return board_run_once(_RUNS, target, run_stress)


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("session", list(SCRIPTS))
def test_session_on_hot_event_stops_cleanly(target, session):
    run = stress_run(target)
    r = run.results[session]
    assert r.status == 0, run.describe(session)
    m = re.search(SUMMARY[session], run.out(session))
    assert m, run.describe(session)
    assert int(m.group(1)) > 0, run.describe(session)


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_module_unloads(target):
    run = stress_run(target)
    assert run.results["rmmod"].status == 0, run.describe("rmmod")


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_no_warning_lockdep_or_kasan_report(target):
    run = stress_run(target)
    # kmemleak's own "N new suspected memory leaks" is judged by the kmemleak test
    console = [line for line in run.console.splitlines()
               if DEBUG_TROUBLE.search(line) and "@@KTAP:" not in line
               and "new suspected memory leaks" not in line]
    assert console == [], "\n".join(console)
    dmesg = run.out("dmesg")
    assert "Lock dependency validator" in dmesg or "lockdep" in dmesg.lower(), "lockdep is not on"
    assert [line for line in dmesg.splitlines() if DEBUG_TROUBLE.search(line)
            and "new suspected memory leaks" not in line] == []


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_kmemleak_clean_after_unload(target):
    run = stress_run(target)
    for step in ("kmemleak-scan-before", "kmemleak-clear", "kmemleak-scan-1", "kmemleak-scan-2"):
        assert run.results[step].status == 0, run.describe(step)
    assert run.results["kmemleak"].status == 0, run.describe("kmemleak")
    ours, boot = leak_reports(run.out("kmemleak"))
    assert ours == [], "\n".join(ours)


