"""The board test suite: cases in board-tests/*.toml, run on QEMU boards, one
boot per target. See board-tests/README.md for the case format."""
from __future__ import annotations

import importlib.util
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ktap import api
from ktap.backends.ebpf.codegen import jit_gaps
from ktap.backends.kbc import bytecode as bc
from ktap.boards.initramfs import guest_sysroot
from ktap.boards.sessions import Session, SuiteRun, run_sessions
from ktap.core.diagnostics import KtapError, Source
from ktap.core.targets import get_target
from ktap.core.paths import BOARD_TESTS_DIR
from ktap.symbols.usymbolize import UserSymbolizer

SUITE_DIR = BOARD_TESTS_DIR
JIT_SYSCTL = "/proc/sys/net/core/bpf_jit_enable"
SAMPLES_DIR = SUITE_DIR.parent / "samples"
CASE_KEYS = {"name", "script", "sample", "bad_image", "workload", "expect", "expect_regex",
             "expect_range", "status", "stderr_regex", "limits", "skip", "ebpf_error"}


class CaseError(Exception):
    pass


@dataclass
class Case:
    name: str
    file: str
    script: str | None = None
    bad_image: str | None = None
    workload: list[str] = field(default_factory=list)
    expect: str | None = None
    expect_regex: str | None = None
    expect_range: dict | None = None
    status: int = 0
    stderr_regex: str | None = None
    limits: dict = field(default_factory=dict)
    skip: dict = field(default_factory=dict)          # target -> one-line reason
    # the compile error (a regex) the ebpf backend gives a case it cannot run
    ebpf_error: str | None = None

    def skip_reason(self, target: str) -> str | None:
        return self.skip.get(target)


def load_cases(directory: Path = SUITE_DIR) -> list[Case]:
    cases: list[Case] = []
    seen: set[str] = set()
    for path in sorted(directory.glob("*.toml")):
        with open(path, "rb") as f:
            data = tomllib.load(f)
        for raw in data.get("case", []):
            unknown = set(raw) - CASE_KEYS
            if unknown:
                raise CaseError(f"{path.name}: case {raw.get('name')}: unknown keys {sorted(unknown)}")
            if raw.get("name") in seen:
                raise CaseError(f"{path.name}: duplicate case name {raw.get('name')}")
            if "sample" in raw:
                raw = dict(raw, script=(SAMPLES_DIR / f"{raw.pop('sample')}.kp").read_text())
            if (raw.get("script") is None) == (raw.get("bad_image") is None):
                raise CaseError(f"{path.name}: case {raw.get('name')}: needs one of script, "
                                "sample or bad_image")
            seen.add(raw["name"])
            workload = raw.get("workload", "")
            cases.append(Case(
                name=raw["name"], file=path.name, script=raw.get("script"),
                bad_image=raw.get("bad_image"),
                workload=shlex.split(workload) if isinstance(workload, str) else list(workload),
                expect=raw.get("expect"), expect_regex=raw.get("expect_regex"),
                expect_range=raw.get("expect_range"), status=int(raw.get("status", 0)),
                stderr_regex=raw.get("stderr_regex"), limits=dict(raw.get("limits", {})),
                skip=dict(raw.get("skip", {})), ebpf_error=raw.get("ebpf_error")))
    return cases


def bad_image_builders(directory: Path = SUITE_DIR):
    spec = importlib.util.spec_from_file_location("ktap_bad_images", directory / "bad_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.BUILDERS


USER_PROBE = re.compile(r"\b(?:probe|uprobe|uretprobe|sdt|usdt):/")


def uses_user_probes(case: Case) -> bool:
    return bool(case.script and USER_PROBE.search(case.script))


def build_image(case: Case, target: str, builders, backend: str = "ktapvm") -> bytes:
    if case.bad_image is not None:
        return builders[case.bad_image](get_target(target))
    src = Source(f"{case.name}.kp", case.script)
    try:
        # only user probes need the guest files, which the cross compilers build
        sysroot = str(guest_sysroot(target)) if uses_user_probes(case) else None
        return bc.dump(api.compile_source(src, target, case.limits or None, backend=backend,
                                          sysroot=sysroot))
    except KtapError as e:
        raise CaseError(f"case {case.name} does not compile for {target}:\n{e.render()}") from None


def jit_switch(image: bytes, target: str) -> list[str]:
    """The eBPF suite runs with the kernel's JIT on (off by default on arm, mips
    and powerpc): the JITs are where 32-bit and big-endian bugs would hide. A
    program with an instruction the target's JIT lacks (Target.bpf_jit_lacks;
    the compiler warns) runs with it off. tests/board/test_ebpf_fuzz.py keeps
    each kernel's default."""
    try:
        gaps = jit_gaps(bc.load(image, get_target(target)))
    except KtapError:       # a bad image: refused before any program loads
        gaps = {}
    return ["ktapw", "write-file", JIT_SYSCTL, "0" if gaps else "1"]


def check(case: Case, status: int | None, stdout: str, stderr: str) -> list[str]:
    """Returns what differs from the case's expectations (empty: passed)."""
    problems = []
    if status != case.status:
        problems.append(f"exit status {status}, expected {case.status}")
    if case.expect is not None and stdout != case.expect:
        problems.append(f"output {stdout!r}, expected {case.expect!r}")
    if case.expect_regex is not None and not re.fullmatch(case.expect_regex, stdout, re.S):
        problems.append(f"output {stdout!r} does not match /{case.expect_regex}/")
    if case.expect_range is not None:
        m = re.search(case.expect_range["regex"], stdout)
        lo, hi = case.expect_range["min"], case.expect_range["max"]
        if not m:
            problems.append(f"output {stdout!r} has no /{case.expect_range['regex']}/")
        elif not lo <= int(m.group(1)) <= hi:
            problems.append(f"value {m.group(1)} outside {lo}..{hi}")
    if case.stderr_regex is not None and not re.search(case.stderr_regex, stderr, re.S):
        problems.append(f"stderr {stderr!r} does not match /{case.stderr_regex}/")
    return problems


@dataclass
class Outcome:
    case: str
    state: str                   # "passed", "failed", "skipped"
    detail: str = ""
    stdout: str = ""


def ebpf_reason(case: Case) -> str | None:
    """Why the case does not run on the ebpf backend, or None."""
    if case.bad_image is not None:
        return "a hand-made KBC image for ktapvm's verifier"
    if case.ebpf_error is not None:
        return f"compile error on the ebpf backend: /{case.ebpf_error}/"
    return None


def run_target(target: str, cases: list[Case], timeout: float = 900.0,
               backend: str = "ktapvm") -> tuple[list[Outcome], SuiteRun | None]:
    builders = bad_image_builders()
    outcomes: dict[str, Outcome] = {}
    sessions, order = [], []
    for case in cases:
        reason = case.skip_reason(target) or (ebpf_reason(case) if backend == "ebpf" else None)
        if reason:
            outcomes[case.name] = Outcome(case.name, "skipped", reason)
            continue
        image = build_image(case, target, builders, backend)
        before = [jit_switch(image, target)] if backend == "ebpf" else []
        sessions.append(Session(case.name, image, case.workload, before))
        order.append(case)
    run = run_sessions(target, sessions, timeout=timeout) if sessions else None
    if run is not None:
        for case, result in zip(order, run.sessions):
            stdout = result.stdout
            if uses_user_probes(case):      # ustack() frames, as ktap board run shows them
                stdout = UserSymbolizer(guest_sysroot(target), target).rewrite(stdout)
            problems = check(case, result.status, stdout, result.stderr)
            outcomes[case.name] = Outcome(case.name, "failed" if problems else "passed",
                                          "; ".join(problems), stdout)
    return [outcomes[c.name] for c in cases], run


def matrix(results: dict[str, list[Outcome]]) -> str:
    """A summary table: passed/failed/skipped per target, then each skip's reason."""
    lines = [f"{'target':10} {'passed':>7} {'failed':>7} {'skipped':>8}"]
    notes = []
    for target, outs in results.items():
        count = {s: sum(1 for o in outs if o.state == s) for s in ("passed", "failed", "skipped")}
        lines.append(f"{target:10} {count['passed']:7} {count['failed']:7} {count['skipped']:8}")
        notes += [f"  {target}: skipped {o.case}: {o.detail}" for o in outs if o.state == "skipped"]
        notes += [f"  {target}: FAILED {o.case}: {o.detail}" for o in outs if o.state == "failed"]
    return "\n".join(lines + notes) + "\n"
