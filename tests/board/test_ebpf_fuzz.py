"""Differential fuzzing of the eBPF lowering on every board: generated handlers
(toolchain/ktapdev/ebpffuzz.py) compiled to eBPF and run by ktaprun, against
the reference VM fed the same events. Output, exit status and runtime error
must match byte for byte. A fixed seed per target keeps failures
reproducible: `ebpffuzz.cases(SEED, N)` regenerates the scripts."""

import os

import pytest

from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.boards.sessions import Session, run_sessions
from ktap.core.diagnostics import KtapError, Source
from ktap.core.targets import get_target, target_names
from ktap.core.tools import MissingTool
from ktapdev import ebpffuzz

SCRIPTS = int(os.environ.get("KTAP_EBPF_FUZZ", "40"))


@pytest.mark.board
@pytest.mark.ebpf_board
@pytest.mark.parametrize("target", target_names())
def test_ebpf_matches_the_reference_vm_on_generated_handlers(target):
    seed = 1000 + get_target(target).id
    runnable, refused = [], []
    for case in ebpffuzz.cases(seed, SCRIPTS):
        try:
            image = api.compile_source(Source(f"{case.name}.kp", case.script), target,
                                       backend="ebpf")
        except KtapError as e:
            refused.append(e.render().splitlines()[0])
            continue
        runnable.append((case, bc.dump(image)))
    assert len(runnable) >= SCRIPTS * 3 // 4, refused
    try:
        run = run_sessions(target, [Session(c.name, image, ebpffuzz.WORKLOAD)
                                    for c, image in runnable], timeout=600)
    except MissingTool as e:
        pytest.skip(str(e))
    assert run.trouble == [], run.trouble
    mismatches = []
    for (case, _), result in zip(runnable, run.sessions):
        want = ebpffuzz.reference(case, target)
        got = (result.stdout, result.status, ebpffuzz.board_error(result.stderr))
        if got != want:
            mismatches.append(f"{case.name}: board {got!r}, reference {want!r}\n{case.script}")
    assert mismatches == [], "\n\n".join(mismatches[:3])
