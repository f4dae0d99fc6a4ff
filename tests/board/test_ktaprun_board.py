"""ktaprun, the on-target runner (kmod/ktaprun, toolchain/ktap/build/ktaprun.py).

(a) host: a native build of ktaprun's formatter turns record streams produced
    by kmod's C host harness into text, compared byte for byte with
    output.Formatter, on a little-endian (arm) and a big-endian (mips) target.
(b) board: static cross builds for every target run in their QEMU guest.
(c) board: end to end with ktapvm.ko, once kmod.build_module exists.
"""

from __future__ import annotations

import pytest

from conftest import compile_to, cross_build
from ktap.boards.kernels import ensure_kernel
from ktap.build import kmod
from ktap.core.targets import target_names
from ktap.core.tools import MissingTool
from ktap.refvm.records import decode_records
from ktapdev import harness


BOARD_TARGETS = target_names()        # every targets/*/target.toml


# -- boards -------------------------------------------------------------------


def _board(target: str, commands, extra, timeout=240):
    from ktap.boards.batch import run_commands
    try:
        return run_commands(target, commands, extra_files=extra, timeout=timeout)
    except MissingTool as e:
        pytest.skip(str(e))


@pytest.mark.board
@pytest.mark.parametrize("target", BOARD_TARGETS)
def test_ktaprun_runs_in_the_guest(target, tmp_path):
    exe = cross_build(target, tmp_path)
    run = _board(target, [["/ktap/ktaprun", "--version"], ["/ktap/ktaprun"],
                          ["/ktap/ktaprun", "/nonexistent.kbc"]],
                 {"/ktap/ktaprun": exe})
    version, usage, missing = run.results
    assert version.status == 0 and f"target {target}".encode() in version.stdout, run.console
    assert usage.status == 2 and b"usage:" in usage.stderr
    assert missing.status == 1 and b"/nonexistent.kbc" in missing.stderr
E2E_COUNT = """
var n = 0
trace probe:vfs_write /execname == "ktapw"/ { n += 1 }
trace_end { printf("writes=%d\\n", n) }
"""
E2E_GLOB = """
var n = 0
trace sched:sched_process_f* {
  if (probename == "sched:sched_process_fork" && args.child_pid > 0) { n += 1 }
}
trace_end { printf("forks=%d\\n", n) }
"""
E2E_EXIT = """
trace probe:vfs_write /execname == "ktapw"/ { exit(3) }
trace_end { print("ended") }
"""
E2E_ERROR = """
trace probe:vfs_write /execname == "ktapw"/ { print(10 / (arg3 - 1)) }
"""
E2E_SELF_END = """
var n = 0
var h = {}
tick-20ms {
  n += 1
  h["n"] <<< n
  if (n == 3) { exit(5) }
}
trace_end { hist(h) }
"""


@pytest.mark.board
@pytest.mark.parametrize("target", BOARD_TARGETS)
def test_end_to_end_with_the_module(target, tmp_path):
    if not hasattr(kmod, "build_module"):
        pytest.skip("kmod.build_module does not exist yet (the module is being written)")
    exe = cross_build(target, tmp_path)
    try:
        ko = kmod.build_module(target, ensure_kernel(target))
    except MissingTool as e:
        pytest.skip(str(e))
    files = {"/ktap/ktaprun": exe, "/ktap/ktapvm.ko": ko}
    images = {}
    for name, text in (("count", E2E_COUNT), ("glob", E2E_GLOB), ("exit", E2E_EXIT),
                       ("error", E2E_ERROR), ("self", E2E_SELF_END)):
        images[name], path = compile_to(tmp_path, name, text, target)
        files[f"/ktap/{name}.kbc"] = path
    run = _board(target, [
        ["/ktap/ktaprun", "-m", "/ktap/ktapvm.ko", "/ktap/count.kbc", "--", "ktapw", "write", "100"],
        ["/ktap/ktaprun", "/ktap/glob.kbc", "--", "ktapw", "fork", "3"],
        ["/ktap/ktaprun", "/ktap/exit.kbc", "--", "ktapw", "write", "10"],
        ["/ktap/ktaprun", "/ktap/error.kbc", "--", "ktapw", "write", "3"],
        ["/ktap/ktaprun", "/ktap/self.kbc", "--", "ktapw", "sleep", "20000"],
        ["/ktap/ktaprun", "--raw", "/ktap/self.kbc"],
    ], files)
    count, glob, ex, err, self_end, raw = run.results
    assert count.status == 0, count.output + run.console[-3000:]
    assert count.stdout == b"writes=100\n", count.output
    assert glob.status == 0, glob.output
    forks = int(glob.stdout.decode().strip().split("=")[1])
    assert forks >= 4, glob.output       # the workload itself and its 3 children
    assert ex.status == 3 and ex.stdout == b"ended\n", ex.output
    assert err.status == 3, err.output
    assert err.stderr == b"error.kp:2:56: runtime error: division by zero\n", err.output
    # exit() in a timer ends the session: the 20 s workload is killed, not waited for
    assert self_end.status == 5 and self_end.seconds < 10, self_end.output
    # --raw: the host formats the same records into the same text
    records, status = decode_records(raw.stdout, images["self"].target)
    assert raw.status == 5 and status.exit_code == 5
    assert harness.session_text(images["self"], records, status)[0].encode() == self_end.stdout
