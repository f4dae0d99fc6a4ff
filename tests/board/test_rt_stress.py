"""PREEMPT_RT with its checkers on: the "rt" variant of the 6.12 x86_64 and
arm64 board kernels (targets/smp.config + targets/rt.config), two CPUs, with
lockdep and DEBUG_ATOMIC_SLEEP watching.

On PREEMPT_RT a spinlock_t is a sleeping lock, so ktapvm taking one (or
calling anything that sleeps) in a probe handler is a bug that a non-RT kernel
hides. Each test_stress.py session, plus a `<<<` aggregate, runs on hot events
under fork and write load on both CPUs; every session must stop cleanly, the
module must unload, the console and dmesg must hold no "sleeping function
called from invalid context", lockdep report or warning, and lockdep must
still be on at the end (it switches itself off after its first report).

Debian's rt-armmp kernel (tests/board/test_stock_kernels.py) runs the same
sessions, but with lockdep and DEBUG_ATOMIC_SLEEP off.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

from conftest import DEBUG_TROUBLE, board_run_once
from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.boards import kernels as kernel
from ktap.boards.batch import run_commands
from ktap.boards.sessions import GUEST_DIR, GUEST_MODULE, GUEST_RUNNER
from ktap.build import kmod
from ktap.build import ktaprun as runner
from ktap.build.bundle import session_argv
from ktap.core.diagnostics import Source
from test_stress import SCRIPTS as STRESS_SCRIPTS
from test_stress import SUMMARY as STRESS_SUMMARY
from test_stress import load

RT_TARGETS = kernel.VARIANT_TARGETS["rt"]
RT_KERNEL = kernel.VARIANT_KERNELS["rt"][0]
# Boots the rt kernel: outside --kernel-matrix, only on conftest.VARIANT_SMOKE["rt"].
pytestmark = pytest.mark.kernel_variant("rt")
STRESS_SECONDS = 5

SCRIPTS = dict(STRESS_SCRIPTS, **{"aggregate-hot": '''
var sizes = {}
var n = 0
trace syscalls:sys_enter_write {
  n += 1
  sizes[execname] <<< args.count
}
trace_end { printf("sys_enter_write events=%d comms=%d\\n", n, len(sizes)) }
'''})
SUMMARY = dict(STRESS_SUMMARY, **{"aggregate-hot": r"sys_enter_write events=(\d+) comms=(\d+)\n"})


def for_kernel(text: str, system_map: str) -> str:
    """A stress script with its kprobe on the symbol this kernel has: 6.10
    renamed kmem_cache_alloc to kmem_cache_alloc_noprof (allocation profiling)."""
    if re.search(r" T kmem_cache_alloc_noprof$", system_map, re.MULTILINE):
        return text.replace("probe:kmem_cache_alloc ", "probe:kmem_cache_alloc_noprof ")
    return text


def run_rt_stress(target: str):
    kb = kernel.ensure_kernel_build(target, variant="rt", kernel=RT_KERNEL)
    system_map = kb.system_map.read_text()
    names, commands = [], []
    with tempfile.TemporaryDirectory(prefix="ktap-rt-") as tmp:
        files = {GUEST_MODULE: kmod.build_module(target, kdir=kb.directory),
                 GUEST_RUNNER: runner.build_ktaprun(target)}
        names.append("cpus")
        commands.append(["ktapw", "cat", "/sys/devices/system/cpu/online"])
        for name, text in SCRIPTS.items():
            host = Path(tmp) / f"{name}.kbc"
            source = Source(f"{name}.kp", for_kernel(text, system_map))
            host.write_bytes(bc.dump(api.compile_source(source, target)))
            files[f"{GUEST_DIR}/{name}.kbc"] = host
            names.append(name)
            commands.append(session_argv(GUEST_RUNNER, f"{GUEST_DIR}/{name}.kbc",
                                         module=GUEST_MODULE, workload=load(STRESS_SECONDS)))
        names += ["rmmod", "lockdep", "dmesg"]
        commands += [["ktapw", "rmmod", "ktapvm"], ["ktapw", "cat", "/proc/lockdep_stats"],
                     ["ktapw", "dmesg"]]
        board = run_commands(target, commands, extra_files=files, timeout=900,
                             kernel_variant="rt", kernel=RT_KERNEL)
    return kb, dict(zip(names, board.results)), board.console


_RUNS: dict = {}


def rt_run(target: str):
    return board_run_once(_RUNS, target, run_rt_stress)


def out(result) -> str:
    return result.stdout.decode("utf-8", "replace")


@pytest.mark.board
@pytest.mark.parametrize("target", RT_TARGETS)
def test_rt_kernel_has_its_checkers_and_two_cpus(target):
    kb, results, console = rt_run(target)
    config = kernel.parse_fragment(kb.config.read_text())
    for option in ("PREEMPT_RT", "PROVE_LOCKING", "DEBUG_ATOMIC_SLEEP", "DEBUG_RT_MUTEXES"):
        assert config.get(f"CONFIG_{option}") == "y", option
    assert out(results["cpus"]).strip() == "0-1"
    # the console, not dmesg: the kernel's small log buffer may have dropped the banner
    assert re.search(r"Linux version .* PREEMPT_RT", console), console[:300]


@pytest.mark.board
@pytest.mark.parametrize("target", RT_TARGETS)
@pytest.mark.parametrize("session", list(SCRIPTS))
def test_rt_session_on_hot_event_stops_cleanly(target, session):
    _, results, _ = rt_run(target)
    r = results[session]
    assert r.status == 0, (out(r), r.stderr)
    m = re.search(SUMMARY[session], out(r))
    assert m and int(m.group(1)) > 0, out(r)


@pytest.mark.board
@pytest.mark.parametrize("target", RT_TARGETS)
def test_rt_kernel_reports_no_sleep_in_atomic_and_no_lockdep_splat(target):
    _, results, console = rt_run(target)
    assert results["rmmod"].status == 0, results["rmmod"].stderr
    dmesg = out(results["dmesg"])
    bad = [line for line in console.splitlines() + dmesg.splitlines()
           if DEBUG_TROUBLE.search(line) and "@@KTAP:" not in line]
    assert bad == [], "\n".join(bad)
    # lockdep turns itself off after its first report: still on means none.
    stats = out(results["lockdep"])
    assert re.search(r"debug_locks:\s+1\b", stats), stats
    assert int(re.search(r"lock-classes:\s+(\d+)", stats).group(1)) > 0, stats
