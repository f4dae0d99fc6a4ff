"""The "smp" kernel variant: two-CPU x86_64, arm and arm64 boards (targets/smp.config).

Tests marked `board` boot QEMU once per target for this whole module (the
`smp_run` fixture runs every guest command the tests look at in that boot).
A missing QEMU, cross compiler or kernel source skips them with the reason;
a kernel not yet in the cache is built first (minutes).
"""

from __future__ import annotations

import re

import pytest

from conftest import require_board_tools
from ktap.boards import kernels as kernel
from ktap.boards.batch import BoardRun, run_commands
from ktap.boards.qemu import VARIANT_CPUS
from ktap.core.targets import get_target


SMP_TARGETS = ("x86_64", "arm", "arm64")
# Boots the smp kernel: outside --kernel-matrix, only on conftest.VARIANT_SMOKE["smp"].
pytestmark = pytest.mark.kernel_variant("smp")
SPIN_MS = 500
SMP_COMMANDS = [
    ["ktapw", "cat", "/sys/devices/system/cpu/online"],
    ["ktapw", "cat", "/proc/stat"],
    # two busy loops at once: with two CPUs each gets one
    ["ktapw", "both", "ktapw", "spin", str(SPIN_MS), "::", "ktapw", "spin", str(SPIN_MS)],
    ["ktapw", "cat", "/proc/stat"],
    ["ktapw", "dmesg"],
]
_RUNS: dict[str, tuple[kernel.KernelBuild, BoardRun]] = {}


@pytest.fixture(scope="module", params=SMP_TARGETS)
def smp_run(request):
    """One boot of the target's smp kernel running SMP_COMMANDS (built first on a miss)."""
    name = request.param
    if name not in _RUNS:
        target = get_target(name)
        require_board_tools(target)
        build = kernel.ensure_kernel_build(target, variant="smp")
        _RUNS[name] = build, run_commands(target, SMP_COMMANDS, kernel_variant="smp",
                                          timeout=180)
    return (name, *_RUNS[name])


def _out(run, i: int) -> str:
    r = run.results[i]
    assert r.ok, (r.argv, r.status, r.errors, r.output)
    return r.stdout.decode(errors="replace")


def _cpu_user_ticks(stat_text: str) -> dict[str, int]:
    """{'cpu0': user ticks, ...} from /proc/stat (field 1 of each cpuN line)."""
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^(cpu\d+) (\d+)", stat_text, re.M)}


@pytest.mark.board
def test_smp_kernel_is_cached_per_variant_with_the_wanted_config(smp_run):
    name, build, run = smp_run
    target = get_target(name)
    assert build.directory.name.startswith(f"{name}-smp-")
    assert build.directory != kernel.build_dir(target)
    assert kernel.config_mismatches(kernel.wanted_options(target, "smp"),
                                    (build.directory / ".config").read_text()) == []


@pytest.mark.board
def test_both_cpus_are_online(smp_run):
    name, build, run = smp_run
    assert run.boots == 1 and run.frame_errors == []
    assert _out(run, 0).strip() == f"0-{VARIANT_CPUS['smp'] - 1}"
    assert "smp: Brought up 1 node, 2 CPUs" in _out(run, 4)


@pytest.mark.board
def test_a_workload_runs_on_cpu1(smp_run):
    name, build, run = smp_run
    before, after = _cpu_user_ticks(_out(run, 1)), _cpu_user_ticks(_out(run, 3))
    assert set(before) == set(after) == {"cpu0", "cpu1"}, _out(run, 3)
    assert "@@child 1 status=0" in _out(run, 2) and "@@child 2 status=0" in _out(run, 2)
    # USER_HZ is 100: a CPU that ran one SPIN_MS busy loop gained about
    # SPIN_MS / 10 user ticks; ask for a tenth of that on each CPU.
    gained = {cpu: after[cpu] - before[cpu] for cpu in after}
    assert all(g >= SPIN_MS // 100 for g in gained.values()), gained
