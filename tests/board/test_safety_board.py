"""Safety that holds under attack, on every QEMU board, in one boot per target.

Part 1: the seven criticisms of ktap's 2014 safety (the seed thread), each as a
hand-made KBC image written with rawkbc (never by the compiler). Each is
refused at load with its reason, or stopped at run time with a clear message.
Part 2: faults and misuse: bad pointers, full pools, kill -9 of ktaprun,
concurrent sessions, a non-root user, rmmod during a session.

After all of it the board must still be healthy: a normal session counts
exactly, the module unloads, and the console shows no oops, warning, lockup
or hung task. docs/safety.md has the table of mechanisms and tests.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import board_run_once
from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.boards.batch import run_commands
from ktap.boards.frames import CommandResult
from ktap.boards.sessions import GUEST_DIR, GUEST_MODULE, GUEST_RUNNER, board_bundle, kernel_trouble
from ktap.build.bundle import session_argv
from ktap.core.diagnostics import Source
from ktap.core.targets import get_target, target_names
from ktap.core.tools import MissingTool
from ktapdev.safety_cases import (c1_long_loop_body, c1_plain_loop, c2_jump_backward_out_of_bounds,
                                  c2_jump_into_instruction, c2_jump_out_of_bounds,
                                  c3_mutual_recursion, c4_newtable_in_callee,
                                  c4_newtable_loop_in_handler, c4_string_loop, c5_self_tail_call,
                                  c5_tail_call_loop, c6_constant_index, c6_constant_key_index,
                                  c7_upvalue_get, c7_upvalue_names_missing_global, c7_upvalue_set)


TARGETS = target_names()        # every targets/*/target.toml


COUNT = '''
var n = 0
trace probe:vfs_write /execname == "ktapw"/ { n += 1 }
trace_end { printf("writes=%d\\n", n) }
'''
BAD_POINTERS = '''
var r = {}
trace probe:vfs_write /execname == "ktapw"/ {
  r["k_null"] = kernel_string(0) == nil
  r["k_low"] = kernel_string(16) == nil
  r["u_null"] = user_string(0) == nil
  r["u_low"] = user_string(16) == nil
  r["u_kernel_ptr"] = user_string(arg1) == nil
  r["u_top"] = user_string(-4096) == nil
  r["u_unmapped"] = user_string(1879048192) == nil
  r["k_top_done"] = kernel_string(-4096) != 42
  r["k_all_ones_done"] = kernel_string(-1) != 42
  r["u_buffer_ok"] = user_string(arg2) != nil
  exit()
}
trace_end {
  printf("k_null=%s k_low=%s u_null=%s u_low=%s u_kernel_ptr=%s u_top=%s u_unmapped=%s\\n",
         r.k_null, r.k_low, r.u_null, r.u_low, r.u_kernel_ptr, r.u_top, r.u_unmapped)
  printf("k_top_done=%s k_all_ones_done=%s u_buffer_ok=%s\\n", r.k_top_done, r.k_all_ones_done, r.u_buffer_ok)
}
'''
TABLE_FULL = '''
limit table_entries = 8
var t = {}
var n = 0
trace syscalls:sys_enter_getpid /execname == "ktapw"/ {
  n += 1
  t[n] = 1
}
trace_end { printf("n=%d len=%d\\n", n, len(t)) }
'''
OUTBUF_FULL = '''
limit outbuf_size = 1024
trace probe:vfs_write /execname == "ktapw"/ {
  for (i = 1, 100) { printf("%d the quick brown fox jumps over the lazy dog\\n", i) }
}
'''
LONG_SESSION = '''
var n = 0
trace probe:vfs_write /execname == "ktapw"/ { n += 1 }
trace tick-10ms { n += 1 }
trace_end { printf("long=%d\\n", n) }
'''
CONCURRENT_A = '''
var n = 0
trace syscalls:sys_enter_getpid /execname == "ktapw"/ { n += 1 }
trace_end { printf("A getpid=%d\\n", n) }
'''
CONCURRENT_B = '''
var n = 0
trace probe:vfs_write /execname == "ktapw"/ { n += 1 }
trace_end { printf("B writes=%d\\n", n) }
'''


def _compiled(name: str, text: str):
    def build(t):
        return bc.dump(api.compile_source(Source(f"{name}.kp", text), t))
    return build


@dataclass
class Step:
    name: str
    image: object = None          # builder(target) -> bytes, or None for a plain command
    workload: list[str] = field(default_factory=list)
    wrap: list[str] = field(default_factory=list)     # argv prefix (ktapw killafter/runas ...)
    argv: list[str] | None = None  # a plain command (no image)


def _plan() -> list[Step]:
    w = ["ktapw", "write", "5"]
    return [
        # part 1: the seven criticisms
        Step("c1-long-loop-body", c1_long_loop_body, w),
        Step("c1-plain-loop", c1_plain_loop, w),
        Step("c2-jump-out-of-bounds", c2_jump_out_of_bounds, w),
        Step("c2-jump-backward-out-of-bounds", c2_jump_backward_out_of_bounds, w),
        Step("c2-jump-into-instruction", c2_jump_into_instruction, w),
        Step("c3-mutual-recursion", c3_mutual_recursion, w),
        Step("c4-newtable-loop-in-handler", c4_newtable_loop_in_handler, w),
        Step("c4-newtable-in-callee", c4_newtable_in_callee, w),
        Step("c4-string-loop", c4_string_loop, w),
        Step("c5-tail-call-loop", c5_tail_call_loop, w),
        Step("c5-self-tail-call", c5_self_tail_call, w),
        Step("c6-constant-index", c6_constant_index, w),
        Step("c6-constant-key-index", c6_constant_key_index, w),
        Step("c7-upvalue-get", c7_upvalue_get, w),
        Step("c7-upvalue-set", c7_upvalue_set, w),
        Step("c7-upvalue-names-missing-global", c7_upvalue_names_missing_global, w),
        Step("healthy-after-criticisms", _compiled("count", COUNT), ["ktapw", "write", "100"]),
        # part 2: faults and misuse
        Step("bad-pointers", _compiled("bad_pointers", BAD_POINTERS), ["ktapw", "write", "3"]),
        Step("table-full", _compiled("table_full", TABLE_FULL), ["ktapw", "getpid", "50"]),
        Step("outbuf-full", _compiled("outbuf_full", OUTBUF_FULL), ["ktapw", "write", "3"]),
        Step("kill9", _compiled("long", LONG_SESSION), ["ktapw", "spin", "4000"],
             wrap=["ktapw", "killafter", "1500"]),
        Step("after-kill9", _compiled("count", COUNT), ["ktapw", "write", "100"]),
        Step("concurrent", None, argv=None),      # filled in by _commands
        Step("non-root", _compiled("count", COUNT), ["ktapw", "write", "1"],
             wrap=["ktapw", "runas", "1000"]),
        Step("non-root-device", None, argv=["ktapw", "runas", "1000", "ktapw", "cat", "/dev/ktap"]),
        Step("rmmod-during-session", None, argv=None),   # filled in by _commands
        Step("final-session", _compiled("count", COUNT), ["ktapw", "write", "100"]),
        Step("rmmod", None, argv=["ktapw", "rmmod", "ktapvm"]),
        Step("rmmod-again", None, argv=["ktapw", "rmmod", "ktapvm"]),
    ]


def _session_argv(kbc: str, workload: list[str]) -> list[str]:
    return session_argv(GUEST_RUNNER, kbc, module=GUEST_MODULE, workload=workload)


@dataclass
class SafetyRun:
    target: str
    results: dict[str, CommandResult]
    trouble: list[str]
    console: str
    seconds: float

    def out(self, name: str) -> str:
        return self.results[name].stdout.decode("utf-8", "replace")

    def err(self, name: str) -> str:
        return self.results[name].stderr.decode("utf-8", "replace")

    def status(self, name: str):
        return self.results[name].status

    def describe(self, name: str) -> str:
        r = self.results[name]
        return f"{name}: status={r.status} stdout={self.out(name)!r} stderr={self.err(name)!r} errors={r.errors}"


def run_safety(target: str, timeout: float = 900.0) -> SafetyRun:
    bundle = board_bundle(get_target(target))
    module, runner_bin = bundle.module, bundle.runner
    steps = _plan()
    with tempfile.TemporaryDirectory(prefix="ktap-safety-") as tmp:
        files: dict[str, str | Path] = {GUEST_MODULE: module, GUEST_RUNNER: runner_bin}

        def put(name: str, data: bytes) -> str:
            host = Path(tmp) / f"{name}.kbc"
            host.write_bytes(data)
            files[f"{GUEST_DIR}/{name}.kbc"] = host
            return f"{GUEST_DIR}/{name}.kbc"

        commands, names = [], []
        for s in steps:
            if s.name == "concurrent":
                a = put("conc-a", _compiled("conc_a", CONCURRENT_A)(target))
                b = put("conc-b", _compiled("conc_b", CONCURRENT_B)(target))
                argv = (["ktapw", "both"] + _session_argv(a, ["ktapw", "getpid", "3000"]) + ["::"]
                        + _session_argv(b, ["ktapw", "write", "2000"]))
            elif s.name == "rmmod-during-session":
                k = put("rmmod-long", _compiled("long", LONG_SESSION)(target))
                argv = (["ktapw", "both"] + _session_argv(k, ["ktapw", "spin", "2500"]) + ["::"]
                        + ["ktapw", "after", "1000", "ktapw", "rmmod", "ktapvm"])
            elif s.image is not None:
                argv = s.wrap + _session_argv(put(s.name, s.image(target)), s.workload)
            else:
                argv = s.argv
            commands.append(argv)
            names.append(s.name)
        run = run_commands(target, commands, extra_files=files, timeout=timeout)
    return SafetyRun(target, dict(zip(names, run.results)), kernel_trouble(run.console),
                     run.console, run.total_seconds)
_RUNS: dict[str, object] = {}


def safety_run(target: str) -> SafetyRun:
    return board_run_once(_RUNS, target, run_safety, MissingTool)


def _refused(run: SafetyRun, name: str, reason: str):
    assert run.status(name) == 1, run.describe(name)
    assert re.search(rf"verifier: {reason}", run.err(name)), run.describe(name)


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_c1_long_loop_body_stopped_by_watchdog(target):
    run = safety_run(target)
    assert run.status("c1-long-loop-body") == 3, run.describe("c1-long-loop-body")
    assert re.search(r"runtime error: handler ran longer than 10 ms \(watchdog\)",
                     run.err("c1-long-loop-body")), run.describe("c1-long-loop-body")


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_c1_plain_loop_stopped_by_budget(target):
    run = safety_run(target)
    assert run.status("c1-plain-loop") == 3, run.describe("c1-plain-loop")
    assert re.search(r"runtime error: instruction budget of 2000 exhausted",
                     run.err("c1-plain-loop")), run.describe("c1-plain-loop")


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_c2_bad_jumps_refused(target):
    run = safety_run(target)
    for name in ("c2-jump-out-of-bounds", "c2-jump-backward-out-of-bounds", "c2-jump-into-instruction"):
        _refused(run, name, "bad-jump")


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_c3_recursion_refused(target):
    _refused(safety_run(target), "c3-mutual-recursion", "recursion")


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_c4_allocation_in_handler_refused(target):
    run = safety_run(target)
    _refused(run, "c4-newtable-loop-in-handler", "alloc-in-handler")
    _refused(run, "c4-newtable-in-callee", "alloc-in-handler")


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_c4_string_allocation_loop_is_a_counted_drop(target):
    run = safety_run(target)
    assert run.status("c4-string-loop") == 0, run.describe("c4-string-loop")
    assert re.search(r"ktap: \d+ events? dropped \(string pool full\)",
                     run.err("c4-string-loop")), run.describe("c4-string-loop")


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_c5_tail_call_loops_refused(target):
    run = safety_run(target)
    _refused(run, "c5-tail-call-loop", "recursion")
    _refused(run, "c5-self-tail-call", "recursion")


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_c6_constant_index_refused(target):
    run = safety_run(target)
    _refused(run, "c6-constant-index", "bad-constant")
    _refused(run, "c6-constant-key-index", "bad-constant")


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_c7_upvalue_get_and_set_refused(target):
    run = safety_run(target)
    for name in ("c7-upvalue-get", "c7-upvalue-set", "c7-upvalue-names-missing-global"):
        _refused(run, name, "bad-upvalue")


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_board_healthy_after_criticisms(target):
    run = safety_run(target)
    assert run.status("healthy-after-criticisms") == 0, run.describe("healthy-after-criticisms")
    assert run.out("healthy-after-criticisms") == "writes=100\n", run.describe("healthy-after-criticisms")


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_strings_from_bad_pointers_are_nil(target):
    run = safety_run(target)
    assert run.status("bad-pointers") == 0, run.describe("bad-pointers")
    out = run.out("bad-pointers")
    assert out.splitlines()[0] == ("k_null=true k_low=true u_null=true u_low=true "
                                   "u_kernel_ptr=true u_top=true u_unmapped=true"), out
    assert out.splitlines()[1] == "k_top_done=true k_all_ones_done=true u_buffer_ok=true", out


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_full_table_pool_drops_are_counted(target):
    run = safety_run(target)
    assert run.status("table-full") == 0, run.describe("table-full")
    assert run.out("table-full") == "n=50 len=8\n", run.describe("table-full")
    assert "ktap: 42 events dropped (table full)" in run.err("table-full"), run.describe("table-full")


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_full_output_buffer_drops_are_counted(target):
    run = safety_run(target)
    assert run.status("outbuf-full") == 0, run.describe("outbuf-full")
    assert run.out("outbuf-full").startswith("1 the quick brown fox"), run.describe("outbuf-full")
    assert re.search(r"ktap: \d+ events? dropped \(output buffer full\)",
                     run.err("outbuf-full")), run.describe("outbuf-full")


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_kill9_of_ktaprun_then_next_session_works(target):
    run = safety_run(target)
    assert run.status("kill9") == 0 and "killed=1 status=137" in run.out("kill9"), run.describe("kill9")
    assert run.status("after-kill9") == 0, run.describe("after-kill9")
    assert run.out("after-kill9") == "writes=100\n", run.describe("after-kill9")


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_concurrent_sessions_are_isolated(target):
    run = safety_run(target)
    out = run.out("concurrent")
    assert run.status("concurrent") == 0, run.describe("concurrent")
    assert out == "@@child 1 status=0\nA getpid=3000\n@@child 2 status=0\nB writes=2000\n", out


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_non_root_is_refused(target):
    run = safety_run(target)
    assert run.status("non-root") == 1, run.describe("non-root")
    assert "ktaprun: need root (CAP_SYS_ADMIN)" in run.err("non-root"), run.describe("non-root")
    assert run.status("non-root-device") == 1, run.describe("non-root-device")
    assert re.search(r"/dev/ktap: Permission denied", run.err("non-root-device")), run.describe("non-root-device")


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_rmmod_during_a_session_is_refused(target):
    run = safety_run(target)
    out = run.out("rmmod-during-session")
    m = re.fullmatch(r"@@child 1 status=0\nlong=(\d+)\n@@child 2 status=1\n"
                     r"ktapw: rmmod ktapvm: (Resource temporarily unavailable|Device or resource busy)\n", out)
    assert m, run.describe("rmmod-during-session")
    assert int(m.group(1)) > 50      # the tick kept firing through the refused rmmod


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_board_healthy_at_the_end(target):
    run = safety_run(target)
    assert run.out("final-session") == "writes=100\n", run.describe("final-session")
    assert run.status("rmmod") == 0, run.describe("rmmod")
    assert run.status("rmmod-again") == 1, run.describe("rmmod-again")      # really gone
    assert run.trouble == [], "\n".join(run.trouble)
