"""ktapvm.ko: kbuild for every target, and the module running scripts in the
four QEMU boards.

Board tests boot once per target (the `session` fixture runs every guest
command the tests look at in that boot): insmod, the smoke client
(kmod/tests/ktap_smoke.c) with several scripts, rmmod, dmesg. A missing QEMU
or cross compiler skips them with the reason; a kernel not yet cached is
built first (minutes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.boards.batch import BoardRun, run_commands
from ktap.boards.frames import CommandResult
from ktap.boards.kernels import ensure_kernel
from ktap.boards.qemu import require_qemu
from ktap.build import kmod
from ktap.core import tools
from ktap.core.diagnostics import Source
from ktap.core.targets import get_target, target_names
from ktap.refvm.output import Formatter
from ktapdev import harness


TARGETS = target_names()
WRITES = 100
COUNT = """var n = 0
trace probe:vfs_write /execname == "ktapw"/ { n += 1 }
trace_end { print(n) }
"""
RETPROBE = """var n = 0
var bad = 0
trace probe:vfs_write%return /execname == "ktapw"/ {
  if (retval == 1) { n += 1 } else { bad += 1 }
}
trace_end { print(n, bad) }
"""
TRACEPOINT = """var n = 0
trace syscalls:sys_enter_write /execname == "ktapw"/ {
  if (args.count == 1) { n += 1 }
}
trace_end { print(n) }
"""
TICK = """var n = 0
tick-10ms {
  n += 1
  if (n == 5) { exit(0) }
}
trace_end { print(n) }
"""
PROFILE = """var n = 0
profile-1ms {
  n += 1
  if (n == 20) { exit(0) }
}
trace_end { print(n) }
"""
DIVZERO = """var z = 0
trace probe:vfs_write /execname == "ktapw"/ {
  print(10 / z)
}
"""
ARGS = """var n = 0
var ok = 0
var name = ""
trace probe:vfs_write /execname == "ktapw" && arg3 == 1/ {
  n += 1
  if (pid > 0 && tid == pid && cpu >= 0 && uid == 0) { ok += 1 }
  name = probename
}
trace_end { print(n, ok, name) }
"""
PRINTS = """var n = 0
trace probe:vfs_write /execname == "ktapw"/ {
  n += 1
  printf("%s %d\\n", execname, n)
}
"""
KTAPW = "/bin/ktapw"
SMOKE = "/bin/ktap_smoke"


def _other_layout(name: str) -> str:
    t = get_target(name)
    for o in TARGETS:
        u = get_target(o)
        if (u.byte_order, u.word_size) != (t.byte_order, t.word_size):
            return o
    raise AssertionError("no target with another layout")


@dataclass
class Case:
    image: bc.Image
    argv: list[str]


def _cases(target: str, work: Path) -> dict[str, Case]:
    def image(name, text, tgt=target, edit=None):
        img = api.compile_source(Source(f"{name}.kp", text), tgt)
        if edit:
            edit(img)
        (work / f"{name}.kbc").write_bytes(bc.dump(img))
        return img

    write = [KTAPW, "write", str(WRITES)]
    c = {
        "count": Case(image("count", COUNT), [SMOKE, "/count.kbc", "kp:0:vfs_write", "--", *write]),
        "retprobe": Case(image("retprobe", RETPROBE),
                         [SMOKE, "/retprobe.kbc", "kr:0:vfs_write", "--", *write]),
        "tracepoint": Case(image("tracepoint", TRACEPOINT),
                           [SMOKE, "/tracepoint.kbc", "tp:0:syscalls:sys_enter_write:count",
                            "--", *write]),
        "tick": Case(image("tick", TICK), [SMOKE, "-n", "/tick.kbc"]),
        "profile": Case(image("profile", PROFILE), [SMOKE, "-n", "/profile.kbc"]),
        "divzero": Case(image("divzero", DIVZERO),
                        [SMOKE, "-n", "/divzero.kbc", "kp:0:vfs_write", "--", KTAPW, "write", "10"]),
        "args": Case(image("args", ARGS), [SMOKE, "/args.kbc", "kp:0:vfs_write", "--", *write]),
        "prints": Case(image("prints", PRINTS),
                       [SMOKE, "/prints.kbc", "kp:0:vfs_write", "--", KTAPW, "write", "3"]),
        "typo": Case(image("typo", COUNT), [SMOKE, "/typo.kbc", "kp:0:vfs_wrte", "--", *write]),
        "verifier": Case(image("verifier", COUNT, edit=lambda i: setattr(i.limits, "budget", 0)),
                         [SMOKE, "/verifier.kbc"]),
        "layout": Case(image("layout", COUNT, tgt=_other_layout(target)), [SMOKE, "/layout.kbc"]),
    }
    return c


@dataclass
class Session:
    target: str
    run: BoardRun
    cases: dict[str, Case]
    results: dict[str, CommandResult]

    def stdout(self, name: str) -> str:
        out = self.results[name].stdout
        return out.decode(errors="replace") if isinstance(out, bytes) else out

    def records(self, name: str):
        return harness.smoke_records(self.stdout(name), get_target(self.target))

    def output(self, name: str) -> str:
        recs, _ = self.records(name)
        fmt = Formatter(self.cases[name].image)
        return "".join(fmt.render(r) for r in recs)


def _tools(target: str):
    t = get_target(target)
    try:
        require_qemu(t)
        tools.require_cross_gcc(t)
    except Exception as e:  # a missing tool names its Debian package
        pytest.skip(str(e))
_SESSIONS: dict[str, Session] = {}


@pytest.fixture(scope="module", params=TARGETS)
def session(request, tmp_path_factory):
    target = request.param
    _tools(target)
    if target in _SESSIONS:
        return _SESSIONS[target]
    work = tmp_path_factory.mktemp(f"module-{target}")
    ko = kmod.build_module(target, ensure_kernel(target))
    smoke = harness.build_smoke_client(target)
    cases = _cases(target, work)
    commands = [[KTAPW, "insmod", "/ktapvm.ko"]] + [c.argv for c in cases.values()] \
        + [[KTAPW, "rmmod", kmod.MODULE_NAME], [KTAPW, "dmesg"]]
    files = {"/ktapvm.ko": ko, SMOKE: smoke}
    files.update({f"/{n}.kbc": work / f"{n}.kbc" for n in cases})
    run = run_commands(target, commands, extra_files=files, timeout=300)
    names = ["insmod", *cases, "rmmod", "dmesg"]
    s = Session(target, run, cases, dict(zip(names, run.results)))
    _SESSIONS[target] = s
    return s


@pytest.mark.board
def test_insmod_and_rmmod(session):
    assert session.results["insmod"].status == 0, session.results["insmod"].output
    assert session.results["rmmod"].status == 0, session.results["rmmod"].output
    assert "ktapvm: /dev/ktap ready" in session.stdout("dmesg")


@pytest.mark.board
def test_console_is_clean(session):
    bad = [l for l in session.run.console.splitlines()
           if re.search(r"\bOops\b|WARNING:|BUG:|Unable to handle|Call Trace", l)]
    assert bad == []


@pytest.mark.board
def test_info(session):
    m = re.search(r"info abi=(\d+) target=(\d+) release=(\S+)", session.stdout("count"))
    assert m and int(m.group(1)) == 1 and int(m.group(2)) == get_target(session.target).id


@pytest.mark.board
def test_kprobe_counts_exactly(session):
    assert session.output("count") == f"{WRITES}\n", session.stdout("count")
    _, st = session.records("count")
    assert st.state == 0 and st.drops == {}


@pytest.mark.board
def test_kprobe_args_and_context(session):
    assert session.output("args") == f"{WRITES} {WRITES} vfs_write\n", session.stdout("args")


@pytest.mark.board
def test_printf_records(session):
    assert session.output("prints") == "ktapw 1\nktapw 2\nktapw 3\n"


@pytest.mark.board
def test_kretprobe_retval(session):
    assert session.output("retprobe") == f"{WRITES} 0\n", session.stdout("retprobe")


@pytest.mark.board
def test_tracepoint_field_by_name(session):
    assert session.output("tracepoint") == f"{WRITES}\n", session.stdout("tracepoint")


@pytest.mark.board
def test_tick_timer_and_exit(session):
    text = session.stdout("tick")
    assert "stop:" not in text
    assert session.output("tick") == "5\n", text
    _, st = session.records("tick")
    # the session ended by itself (no STOP); trace_end ran after exit(0)
    assert st.state in (0, 1) and st.exit_code == 0 and st.message == ""


@pytest.mark.board
def test_profile_timers(session):
    assert session.output("profile") == "20\n", session.stdout("profile")


@pytest.mark.board
def test_runtime_error_stops_the_session(session):
    text = session.stdout("divzero")
    _, st = session.records("divzero")
    assert st.state == 2, text
    assert "division by zero" in st.message
    assert st.line == 3
    assert session.output("divzero") == ""


@pytest.mark.board
def test_attach_failure_is_named(session):
    r = session.results["typo"]
    assert r.status == 1
    assert "start: error errno=2 kprobe vfs_wrte: not found (-ENOENT)" in session.stdout("typo")


@pytest.mark.board
def test_verifier_refusal_at_load(session):
    r = session.results["verifier"]
    assert r.status == 1
    assert re.search(r"load: error errno=22 verifier: bad-limits", session.stdout("verifier"))


@pytest.mark.board
def test_header_mismatch_names_both_sides(session):
    r = session.results["layout"]
    t = get_target(session.target)
    o = get_target(_other_layout(session.target))
    text = session.stdout("layout")
    assert r.status == 1
    assert "load: error errno=22" in text
    assert f"({o.name})" in text and f"({t.name})" in text
