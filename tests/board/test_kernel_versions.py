"""Board kernels of other versions than the default 6.1: 5.10 (bullseye) and
6.12 (bookworm-security), built from Debian's linux-source-* with the same
fragments (plus targets/kernels/<version>.config), and ktapvm built against
each one through its generated feature header (build/features.py).

By default the (target, kernel, variant) triples are conftest.KERNEL_SMOKE:
each boots once and runs a kprobe count, a kretprobe and two tracepoint
scripts with exact counts, then unloads the module. With --kernel-matrix
every target boots every plain version and the whole board suite
(board-tests/*.toml) runs too.
"""
from __future__ import annotations

import shutil

import pytest

from conftest import require_board_tools
from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.boards import sessions as boardrun
from ktap.boards.choice import boot_kernel
from ktap.build import features, kmod
from ktap.core.diagnostics import Source
from ktap.core.targets import get_target
from ktapdev import boardtest

# name -> (script, workload, exact stdout)
SMOKE = {
    "kprobe-count": ('''
var n = 0
trace probe:vfs_write /execname == "ktapw"/ { n += 1 }
trace_end { print(n) }
''', ["ktapw", "write", "100"], "100\n"),
    "kretprobe-retval": ('''
var r = {}
trace probe:vfs_write%return /execname == "ktapw"/ { r[retval] += 1 }
trace_end { print(r[1], len(r)) }
''', ["ktapw", "write", "40"], "40 1\n"),
    "tracepoint-count": ('''
var n = 0
trace syscalls:sys_enter_getpid /execname == "ktapw"/ { n += 1 }
trace_end { print(n) }
''', ["ktapw", "getpid", "25"], "25\n"),
    "tracepoint-field": ('''
var n = 0
trace syscalls:sys_enter_write /execname == "ktapw" && args.count == 1/ { n += 1 }
trace_end { print(n) }
''', ["ktapw", "write", "30"], "30\n"),
}

# What build/features.py must find in each version's headers: the APIs that
# differ between them (a wrong answer is a module that does not build or,
# worse, reads the wrong field).
EXPECTED_FEATURES = {
    "5.10": {"KTAP_HAVE__PRINTK": False, "KTAP_HAVE_GET_KRETPROBE": False,
             "KTAP_HAVE_NO_LLSEEK": True, "KTAP_HAVE_LINUX_UNALIGNED_H": False},
    "6.12": {"KTAP_HAVE__PRINTK": True, "KTAP_HAVE_GET_KRETPROBE": True,
             "KTAP_HAVE_NO_LLSEEK": False, "KTAP_HAVE_LINUX_UNALIGNED_H": True,
             "KTAP_HAVE_PERF_SAMPLE_FLAGS": True},
}
EXPECTED_STD = {"5.10": "gnu89", "6.12": "gnu11"}

_SMOKE_RUNS: dict[tuple[str, str, str | None], boardrun.SuiteRun] = {}
_SUITE_RUNS: dict[tuple[str, str], tuple] = {}


def _require(target: str) -> None:
    require_board_tools(get_target(target))
    if shutil.which(get_target(target).qemu["binary"]) is None:
        pytest.skip(f"{get_target(target).qemu['binary']} is not installed (scripts/setup.sh)")


def smoke_run(target: str, kernel: str, variant: str | None) -> boardrun.SuiteRun:
    """One boot of `target` with `kernel` (its `variant`) running every SMOKE script."""
    _require(target)
    if (target, kernel, variant) not in _SMOKE_RUNS:
        sessions = [boardrun.Session(name, bc.dump(api.compile_source(
                        Source(f"{name}.kp", text), target)), workload)
                    for name, (text, workload, _) in SMOKE.items()]
        _SMOKE_RUNS[target, kernel, variant] = boardrun.run_sessions(
            target, sessions, timeout=600, kernel=kernel, kernel_variant=variant)
    return _SMOKE_RUNS[target, kernel, variant]


@pytest.mark.board
def test_kernel_build_is_that_version(target_kernel):
    target, kernel, variant = target_kernel
    _require(target)
    build = boot_kernel(target, kernel, variant, progress=False)
    assert build.kernel == kernel
    assert build.image.exists() and build.system_map.exists() and build.config.exists()
    assert f"-{kernel}-" in build.directory.name      # its own cache entry, never 6.1's
    found = features.detect(build.directory)
    assert found.release.startswith(kernel + "."), found.release
    assert found.version[:2] == tuple(map(int, kernel.split("."))), found.version
    assert found.c_std == EXPECTED_STD[kernel]
    for macro, have in EXPECTED_FEATURES[kernel].items():
        assert found.have[macro] == have, (macro, found.have)
    # the module adapts to the kernel without a single compiler warning
    ko = kmod.build_module(target, build.directory, warnings_fatal=True)
    assert f'#define KTAP_KERNEL_RELEASE "{found.release}"' in (
        ko.parent / "gen" / features.HEADER_NAME).read_text()


@pytest.mark.board
@pytest.mark.parametrize("name", list(SMOKE))
def test_smoke_session_counts_exactly(target_kernel, name):
    target, kernel, variant = target_kernel
    run = smoke_run(target, kernel, variant)
    result = next(s for s in run.sessions if s.name == name)
    assert (result.status, result.stdout) == (0, SMOKE[name][2]), result


@pytest.mark.board
def test_smoke_board_is_the_kernel_asked_for_and_healthy(target_kernel):
    target, kernel, variant = target_kernel
    run = smoke_run(target, kernel, variant)
    # The kernel's banner names its release; a wrong image would boot 6.1.
    assert f"Linux version {kernel}." in run.console, run.console[-2000:]
    assert run.trouble == [], run.trouble
    assert run.unload_status == 0, "rmmod ktapvm failed"


@pytest.mark.board
@pytest.mark.kernel_matrix
def test_board_suite_on_kernel(target_kernel):
    """--kernel-matrix only: every board-tests case on this (target, kernel)."""
    target, kernel, _ = target_kernel     # the matrix's kernels are plain (no variant)
    _require(target)
    if (target, kernel) not in _SUITE_RUNS:
        _SUITE_RUNS[target, kernel] = run_suite(target, kernel)
    outcomes, run = _SUITE_RUNS[target, kernel]
    failed = [f"{o.case}: {o.detail}" for o in outcomes if o.state == "failed"]
    assert failed == [], "\n".join(failed)
    assert any(o.state == "passed" for o in outcomes)
    assert run.trouble == [], run.trouble
    assert run.unload_status == 0


def run_suite(target: str, kernel: str):
    """boardtest.run_target() with the board booting `kernel`."""
    cases = boardtest.load_cases()
    builders = boardtest.bad_image_builders()
    runnable = [c for c in cases if not c.skip_reason(target)]
    sessions = [boardrun.Session(c.name, boardtest.build_image(c, target, builders), c.workload)
                for c in runnable]
    run = boardrun.run_sessions(target, sessions, timeout=1200, kernel=kernel)
    outcomes = [boardtest.Outcome(c.name, "failed" if problems else "passed", "; ".join(problems))
                for c, r in zip(runnable, run.sessions)
                for problems in [boardtest.check(c, r.status, r.stdout, r.stderr)]]
    return outcomes, run
