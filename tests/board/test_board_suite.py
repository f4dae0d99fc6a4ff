"""The board suite (board-tests/*.toml): unit checks of the cases on the host,
then every case on every QEMU board, one boot per target."""

import shutil

import pytest

from conftest import board_run_once
from ktap.core.targets import target_names
from ktap.core.tools import MissingTool
from ktapdev import boardtest


TARGETS = target_names()        # every targets/*/target.toml


CASES = boardtest.load_cases()
_RUNS = {}


def suite_run(target):
    return board_run_once(_RUNS, target, lambda t: boardtest.run_target(t, CASES), MissingTool,
                          "board suite cannot run")


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_board_stays_healthy(target):
    outcomes, run = suite_run(target)
    print(boardtest.matrix({target: outcomes}))
    assert run is not None
    assert run.trouble == [], run.trouble
    assert run.unload_status == 0, "rmmod ktapvm failed after the suite"


@pytest.mark.board
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("target", TARGETS)
def test_case(target, case):
    outcomes, _ = suite_run(target)
    outcome = next(o for o in outcomes if o.case == case.name)
    if outcome.state == "skipped":
        pytest.skip(f"{target}: {outcome.detail}")
    assert outcome.state == "passed", outcome.detail


@pytest.mark.board
def test_ktap_board_run_command_end_to_end(tmp_path):
    """`ktap board run` as a user types it: exit status and output are the script's."""
    import subprocess
    import sys
    if shutil.which("qemu-system-arm") is None:
        pytest.skip("qemu-system-arm is not installed (scripts/setup.sh)")
    script = tmp_path / "w.kp"
    script.write_text('var n = 0\ntrace probe:vfs_write /execname == "ktapw"/ { n += 1 }\n'
                      'trace_end { printf("writes=%d\\n", n)\n  exit(n) }\n')
    r = subprocess.run([sys.executable, "-m", "ktap.cli", "board", "-t", "arm", "run", str(script),
                        "--", "ktapw", "write", "7"], capture_output=True, text=True, timeout=600)
    assert (r.returncode, r.stdout) == (7, "writes=7\n"), r.stderr
    r = subprocess.run([sys.executable, "-m", "ktap.cli", "board", "-t", "arm", "run", "-e",
                        "trace probe:no_such_function_xyz { }"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 1 and "no_such_function_xyz" in r.stderr
