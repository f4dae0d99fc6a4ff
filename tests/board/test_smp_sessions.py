"""ktap sessions on the two-CPU boards (the "smp" kernel variant of x86_64,
arm and arm64, targets/smp.config): probes fire on both CPUs at once, `<<<` feeds each
CPU's own aggregate shard, and every read must see the shards merged, with
nothing lost to the concurrency. One boot per target runs every session.
"""

from __future__ import annotations

import re

import pytest

from conftest import board_run_once
from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.boards import sessions as boardrun
from ktap.core.diagnostics import Source


SMP_TARGETS = ["x86_64", "arm", "arm64"]
# Boots the smp kernel: outside --kernel-matrix, only on conftest.VARIANT_SMOKE["smp"].
pytestmark = pytest.mark.kernel_variant("smp")
WRITES = 20000          # per writer; two writers run at once

# Each writer makes WRITES one-byte writes; nothing else on the board writes
# exactly one byte from a task named ktapw.
ONE_BYTE_WRITES = "/execname == \"ktapw\" && arg3 == 1/"

SESSIONS = {
    # each CPU feeds its own value (CPU 0: 1, CPU 1: 11), so the merged min,
    # max and sum depend on both shards
    "aggregate": (f'''
var sizes = {{}}
var by_cpu = {{}}
var n = 0
trace probe:vfs_write {ONE_BYTE_WRITES} {{
  sizes["w"] <<< cpu * 10 + arg3
  by_cpu[cpu] += 1
  n += 1
}}
trace_end {{
  var w = sizes["w"]
  printf("count=%d sum=%d min=%d max=%d n=%d cpus=%d cpu0=%d cpu1=%d\\n",
         count(w), sum(w), min(w), max(w), n, len(by_cpu), by_cpu[0], by_cpu[1])
  hist(sizes)
}}
''', ["ktapw", "both", "ktapw", "write", str(WRITES), "::", "ktapw", "write", str(WRITES)]),
    "profile": ('''
var samples = {}
trace profile-1ms { samples[cpu] += 1 }
trace_end { printf("cpus=%d\\n", len(samples)) }
''', ["ktapw", "both", "ktapw", "spin", "300", "::", "ktapw", "spin", "300"]),
}

_RUNS: dict[str, boardrun.SuiteRun] = {}


def run_smp_sessions(target: str) -> boardrun.SuiteRun:
    sessions = [boardrun.Session(name, bc.dump(api.compile_source(Source(f"{name}.kp", text),
                                                                  target)), workload)
                for name, (text, workload) in SESSIONS.items()]
    return boardrun.run_sessions(target, sessions, timeout=600, kernel_variant="smp")


def smp_run(target: str) -> boardrun.SuiteRun:
    return board_run_once(_RUNS, target, run_smp_sessions)


def session(run: boardrun.SuiteRun, name: str) -> boardrun.SessionResult:
    return next(s for s in run.sessions if s.name == name)


@pytest.mark.board
@pytest.mark.parametrize("target", SMP_TARGETS)
def test_aggregate_fed_from_two_cpus_is_merged_exactly(target):
    run = smp_run(target)
    s = session(run, "aggregate")
    assert s.status == 0, s
    m = re.search(r"count=(\d+) sum=(\d+) min=(-?\d+) max=(-?\d+) n=(\d+) cpus=(\d+) "
                  r"cpu0=(\d+) cpu1=(\d+)", s.stdout)
    assert m, s
    count, total, lo, hi, n, cpus, cpu0, cpu1 = map(int, m.groups())
    # both CPUs ran handlers, and every one of the 2 * WRITES writes counted
    assert cpus == 2 and cpu0 > 0 and cpu1 > 0, s.stdout
    assert count == n == cpu0 + cpu1 == 2 * WRITES, s.stdout
    assert (total, lo, hi) == (cpu0 * 1 + cpu1 * 11, 1, 11), s.stdout
    # the merged log2 histogram: CPU 0's values in the bucket of 1, CPU 1's in 8
    assert re.search(rf"^\s*1 \|@+\s+{cpu0}$", s.stdout, re.M), s.stdout
    assert re.search(rf"^\s*8 \|@+\s+{cpu1}$", s.stdout, re.M), s.stdout
    assert "dropped" not in s.stdout + s.stderr, s


@pytest.mark.board
@pytest.mark.parametrize("target", SMP_TARGETS)
def test_profile_samples_every_cpu(target):
    run = smp_run(target)
    s = session(run, "profile")
    assert s.status == 0, s
    assert "cpus=2" in s.stdout, s


@pytest.mark.board
@pytest.mark.parametrize("target", SMP_TARGETS)
def test_smp_board_stays_healthy_and_module_unloads(target):
    run = smp_run(target)
    assert run.trouble == [], run.trouble
    assert run.unload_status == 0
