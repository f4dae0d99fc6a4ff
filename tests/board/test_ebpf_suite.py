"""The board suite on the eBPF backend: every case the backend can run, on
every board, with ktaprun loading the programs and no ktapvm.ko. A case's
`expect` is exact, so a case that passes on both backends prints the same
bytes on both."""

import pytest

from conftest import board_run_once
from ktap.core.targets import target_names
from ktap.core.tools import MissingTool
from ktapdev import boardtest

TARGETS = target_names()
CASES = boardtest.load_cases()
RUNNABLE = [c for c in CASES if boardtest.ebpf_reason(c) is None]
_RUNS: dict = {}


def ebpf_run(target):
    return board_run_once(_RUNS, target, lambda t: boardtest.run_target(t, CASES, backend="ebpf"),
                          MissingTool, "board suite cannot run")


@pytest.mark.board
@pytest.mark.ebpf_board
@pytest.mark.parametrize("target", TARGETS)
def test_board_stays_healthy_on_ebpf(target):
    outcomes, run = ebpf_run(target)
    print(boardtest.matrix({target: outcomes}))
    assert run is not None
    assert run.trouble == [], run.trouble
    # the bundle had no module, so no session could load one
    assert run.unload_status is None


@pytest.mark.board
@pytest.mark.ebpf_board
@pytest.mark.parametrize("case", RUNNABLE, ids=lambda c: c.name)
@pytest.mark.parametrize("target", TARGETS)
def test_case_on_ebpf(target, case):
    outcomes, _ = ebpf_run(target)
    outcome = next(o for o in outcomes if o.case == case.name)
    if outcome.state == "skipped":
        pytest.skip(f"{target}: {outcome.detail}")
    assert outcome.state == "passed", outcome.detail
