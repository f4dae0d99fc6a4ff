"""The board suite's cases (board-tests/*.toml) checked on the host: every case
compiles for every target, bad images are refused by the host verifier for the
reason the board must give, and the checks and trouble patterns the runner
applies. tests/board/test_board_suite.py runs the cases on the boards."""

import re

import pytest

from ktap.backends.kbc import bytecode as bc
from ktap.backends.kbc.verifier import verify
from ktap.boards.sessions import kernel_trouble
from ktap.core.diagnostics import KtapError
from ktap.core.targets import get_target, target_names
from ktapdev import boardtest


TARGETS = target_names()        # every targets/*/target.toml


CASES = boardtest.load_cases()
BUILDERS = boardtest.bad_image_builders()


def test_suite_has_at_least_60_cases():
    assert len(CASES) >= 60


@pytest.mark.parametrize("target", TARGETS)
def test_every_case_builds_for_every_target(target):
    """User-probe cases need the guest files the cross compilers build: the
    native tier compiles those (tests/native/test_user_resolve.py)."""
    for case in CASES:
        if not (case.skip_reason(target) or boardtest.uses_user_probes(case)):
            assert boardtest.build_image(case, target, BUILDERS)


@pytest.mark.parametrize("case", [c for c in CASES if c.bad_image], ids=lambda c: c.name)
def test_bad_images_are_refused_by_the_host_verifier_for_the_same_reason(case):
    for target in TARGETS:
        data = boardtest.build_image(case, target, BUILDERS)
        with pytest.raises(KtapError) as exc:
            verify(bc.load(data, expect=get_target(target)))
        assert re.search(case.stderr_regex, exc.value.message), exc.value.message


def test_check_compares_status_output_ranges_and_stderr():
    case = boardtest.Case("c", "f", script="x", expect="1\n", stderr_regex="drop")
    assert boardtest.check(case, 0, "1\n", "3 dropped") == []
    assert len(boardtest.check(case, 1, "2\n", "")) == 3
    ranged = boardtest.Case("r", "f", script="x", expect_range={"regex": r"n=(\d+)", "min": 5, "max": 9})
    assert boardtest.check(ranged, 0, "n=7\n", "") == []
    assert boardtest.check(ranged, 0, "n=10\n", "") != []


def test_kernel_trouble_finds_oopses_but_not_frames():
    console = "ok\n[  1.0] WARNING: CPU: 0 PID: 1 at x\n@@KTAP:1:OUT:WARNING:abc\nInternal error: Oops: 5\n"
    assert kernel_trouble(console) == ["[  1.0] WARNING: CPU: 0 PID: 1 at x", "Internal error: Oops: 5"]


def test_kernel_trouble_ignores_oops_inside_words():
    # a slow boot prints this (loops_per_jiffy holds "oops"); it is no oops
    assert kernel_trouble("calibrate_delay_direct() failed to get a good estimate for "
                          "loops_per_jiffy.\n") == []


def test_matrix_lists_skips_with_reasons():
    text = boardtest.matrix({"arm": [boardtest.Outcome("a", "passed"),
                                     boardtest.Outcome("b", "skipped", "no such tracepoint")]})
    assert "arm" in text and "skipped b: no such tracepoint" in text
