"""Every sample runs in `ktap sim` against its events file with the expected result."""

import io

import pytest

from conftest import ROOT
from ktap import api
from ktap.core.targets import target_names
from ktap.refvm.sim import EventsFile, parse_events, run_sim


TARGETS = target_names()        # every targets/*/target.toml


S = ROOT / "samples"


def run(name: str, target: str = "x86_64") -> tuple[str, int]:
    path = S / f"{name}.kp"
    src = api.read_source(str(path))
    img = api.compile_source(src, target)
    ev_path = S / f"{name}.events"
    events = parse_events(ev_path.read_text(), str(ev_path)) if ev_path.exists() else EventsFile()
    out = io.StringIO()
    status, drops = run_sim(img, out.write, src, events)
    assert drops == []
    return out.getvalue(), status


@pytest.mark.parametrize("target", TARGETS)
def test_hello(target):
    assert run("hello", target) == ("hello from ktap\n", 0)


def test_count_writes():
    out, _ = run("count_writes")
    rows = {ln.split("|")[0].strip(): int(ln.rsplit(" ", 1)[1]) for ln in out.splitlines()[1:]}
    assert rows == {"ktapw": 100, "sh": 25}


def test_write_sizes():
    out, _ = run("write_sizes")
    assert out.splitlines()[-1] == "writes=15 total=510 min=1 max=100 avg=34"


def test_write_returns():
    out, _ = run("write_returns")
    assert "              -8 |@@" in out and "               1 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@" in out
    assert "             < 0 |@@" in out


def test_syscalls_by_name():
    out, _ = run("syscalls_by_name")
    assert [ln.split("|")[0].strip() for ln in out.splitlines()[1:]] == ["64", "172"]


def test_top_exits_after_three_ticks():
    out, status = run("top")
    assert status == 0
    assert out.count("--- tick") == 3 and "never" not in out


def test_profile_stacks():
    out, _ = run("profile_stacks", "arm")
    lines = out.splitlines()
    assert lines[1:3] == ["0xc0000210", "0xc00005f8"]
    assert lines[3].endswith(" 6")
