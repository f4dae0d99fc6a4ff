"""Hardware perf events on the boards: `trace perf:cycles` either samples
(the emulated CPU has a PMU that counts cycles) or fails with an error that
names the event, on both backends, which must agree. The software events are
board-suite cases (board-tests/probes.toml)."""

import re

import pytest

from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.boards.sessions import Session, run_sessions
from ktap.core.diagnostics import Source
from ktap.core.targets import target_names
from ktap.core.tools import MissingTool

SCRIPT = """var n = 0
trace perf:cycles:99hz /execname == "ktapw"/ { n += 1 }
trace_end { printf("samples=%d\\n", n) }
"""
NO_PMU = "perf:cycles: this CPU's PMU does not count cycles"


def outcome(result) -> str:
    """"samples" or "no PMU"; anything else fails the test."""
    m = re.fullmatch(r"samples=(\d+)\n", result.stdout)
    if result.status == 0 and m and int(m.group(1)) > 0:
        return "samples"
    assert result.status == 1 and NO_PMU in result.stderr, \
        (result.status, result.stdout, result.stderr)
    return "no PMU"


# The default run keeps one board that samples (arm64), one without a PMU
# (x86_64) and QEMU's e500, which ktaprun guards; --kernel-matrix runs all.
DEFAULT_TARGETS = ("arm64", "powerpc", "x86_64")
TARGETS = [t if t in DEFAULT_TARGETS else pytest.param(t, marks=pytest.mark.kernel_matrix)
           for t in target_names()]


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_hardware_event_samples_or_names_the_missing_counter(target):
    sessions = [Session(backend, bc.dump(api.compile_source(Source("c.kp", SCRIPT), target,
                                                            backend=backend)),
                        ["ktapw", "spin", "300"])
                for backend in ("ktapvm", "ebpf")]
    try:
        run = run_sessions(target, sessions, timeout=300)
    except MissingTool as e:
        pytest.skip(str(e))
    assert run.trouble == [], run.trouble
    assert len(run.sessions) == 2, run.console[-2000:]
    ktapvm, ebpf = (outcome(r) for r in run.sessions)
    print(f"{target}: perf:cycles {ktapvm}")
    assert ktapvm == ebpf
