"""libFuzzer on ktapvm's C core (kmod/fuzz/ktap_fuzz.c, built by ktapdev.fuzz).

A short run per rendering: little-endian 32-bit (arm), big-endian 32-bit
(mips) and x86_64. Any crash, sanitizer report, leak or input running past the
per-input timeout fails the test. Inputs the fuzzer once broke the core with
live in tests/native/fuzz_regressions/<target>/ and are replayed on every run.
bench/fuzz.py is the long-run version."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ktap.backends.kbc import bytecode as bc
from ktap.core.targets import all_targets
from ktapdev import fuzz


TARGETS = ["arm", "mips", "x86_64"]
SECONDS = int(os.environ.get("KTAP_FUZZ_SECONDS", "20"))
MIN_EXECS = 10_000       # a healthy run does 150k+ in 20 s; far fewer means inputs stall
MIN_COV = 600            # the seeds alone reach loader, verifier and interpreter
REGRESSIONS = Path(__file__).parent / "fuzz_regressions"
# Regression inputs are <target>/<bug>.kbc (compiled from fuzz_regressions/<bug>.kp)
# and <target>/<bug>-fuzzer.kbc (the fuzzer's own finding). A bug listed here
# is in the C core and not fixed yet: its inputs are xfail(strict=True), so the
# fix makes the test fail until the entry is removed.
KNOWN_BUGS: dict[str, str] = {}
# How each known bug shows in the fuzzer's report. While a bug is open, a short
# run that happens to hit it is an expected failure, not a new one.
KNOWN_SIGNATURES: dict[str, str] = {}


def _fuzzer_builds() -> str | None:
    try:
        fuzz.build_fuzzer("x86_64")
    except fuzz.FuzzError as e:
        return str(e).splitlines()[0]
    return None


_why_not = _fuzzer_builds()
pytestmark = pytest.mark.skipif(_why_not is not None,
                                reason=f"libFuzzer build unavailable: {_why_not}")


def _tail(log: str, n: int = 4000) -> str:
    return log[-n:]


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_run(target, tmp_path):
    res = fuzz.run_fuzzer(target, SECONDS, tmp_path)
    known = [bug for bug, sig in KNOWN_SIGNATURES.items() if re.search(sig, res.log)]
    if not res.ok and len(res.artifacts) == 1 and known:
        pytest.xfail(f"hit known bug {known[0]}: {KNOWN_BUGS[known[0]]}")
    assert res.ok, f"{res.summary()}\nartifacts: {res.artifacts}\n{_tail(res.log)}"
    assert not res.artifacts, res.artifacts
    assert res.execs >= MIN_EXECS, res.summary()
    assert res.cov >= MIN_COV, res.summary()


@pytest.mark.parametrize("target", TARGETS)
def test_seeds_run_clean(target, tmp_path):
    """Every seed (samples, board cases, bad images) goes through once cleanly."""
    assert fuzz.write_seeds(target, tmp_path) > 50
    ok, log = fuzz.replay(target, sorted(tmp_path.iterdir()))
    assert ok, _tail(log)


def _regressions():
    for path in sorted(REGRESSIONS.glob("*/*.kbc")):
        if path.parent.name in all_targets():
            bug = path.stem.split("-")[0]
            marks = ()
            if bug in KNOWN_BUGS:
                marks = pytest.mark.xfail(strict=True, raises=AssertionError,
                                          reason=KNOWN_BUGS[bug])
            yield pytest.param(path, id=f"{path.parent.name}/{path.name}", marks=marks)


@pytest.mark.parametrize("path", list(_regressions()))
def test_regression(path):
    if (REGRESSIONS / f"{path.stem}.kp").exists():
        bc.load(path.read_bytes())     # still a valid image, or the replay proves nothing
    ok, log = fuzz.replay(path.parent.name, [path])
    bug = path.stem.split("-")[0]
    if not ok and bug in KNOWN_SIGNATURES and not re.search(KNOWN_SIGNATURES[bug], log):
        pytest.fail(f"{path.name} fails, but not with bug {bug}:\n{_tail(log)}")   # not xfail
    assert ok, _tail(log)


def test_parse_output(tmp_path):
    log = ("#2\tINITED cov: 812 ft: 2001 corp: 80/90Kb exec/s: 0 rss: 60Mb\n"
           "#5000\tNEW    cov: 901 ft: 2500 corp: 99/99Kb lim: 100 exec/s: 2500 rss: 70Mb\n"
           "#9000\tDONE   cov: 905 ft: 2510 corp: 101/99Kb lim: 100 exec/s: 4500 rss: 70Mb\n"
           "stat::number_of_executed_units: 9000\nstat::average_exec_per_sec:     4500\n"
           "stat::new_units_added:          21\nstat::peak_rss_mb:              70\n")
    res = fuzz.parse_output("arm", log, 0, tmp_path)
    assert (res.ok, res.execs, res.exec_per_sec, res.cov, res.ft, res.corpus) == \
        (True, 9000, 4500, 905, 2510, 101)
    (tmp_path / "crash-abc").write_bytes(b"x")
    bad = fuzz.parse_output("arm", log + "==1==ERROR: AddressSanitizer: heap-buffer-overflow",
                            1, tmp_path)
    assert not bad.ok and [p.name for p in bad.artifacts] == ["crash-abc"]
