"""libFuzzer fuzzing of ktapvm's C core (loader, verifier, interpreter) in user space.

kmod/fuzz/ktap_fuzz.c is the fuzz target: one input is one KBC image for the
target it is built for, taken through ktap_load, ktap_verify and a whole session.
This module builds it with the core and the target's generated headers, using
Debian's clang (`-fsanitize=fuzzer,address,undefined`; libFuzzer comes in
libclang-rt-14-dev), seeds a corpus from the images we already know (compiled
samples, board-suite cases, the suite's bad images), runs libFuzzer and reads
its final statistics.

    exe = fuzz.build_fuzzer("mips")
    res = fuzz.run_fuzzer("mips", seconds=20)
    res.ok, res.execs, res.exec_per_sec, res.cov, res.ft
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ktap import api

from ktapdev import boardtest
from ktap.backends.kbc import bytecode as bc
from ktap.build import render as gen
from ktap.build.program import build_program
from ktap.core.diagnostics import KtapError
from ktap.core.targets import get_target
from ktap.core.paths import KMOD_DIR, REPO_ROOT

ROOT = REPO_ROOT
FUZZ_SOURCE = KMOD_DIR / "fuzz" / "ktap_fuzz.c"
DEFAULT_BUILD_DIR = ROOT / "build" / "fuzz"
FLAGS = ("-std=gnu11", "-O1", "-g", "-fsanitize=fuzzer,address,undefined",
         "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer",
         "-Wall", "-Wno-unused-parameter")
# Per-input bounds: a hang is an input that runs past TIMEOUT_S (the budget and
# watchdog should stop every handler long before), memory past RSS_LIMIT_MB.
TIMEOUT_S = 2
RSS_LIMIT_MB = 2048
MAX_LEN = 16384          # compiled samples are a few KiB
# What in libFuzzer's output means the run found something, beyond its exit code.
FAILURE_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "ERROR: libFuzzer", "ALARM: working on the last Unit", "==ERROR",
                   "SUMMARY: UndefinedBehaviorSanitizer")


# UBSan reports carry a stack, so a finding names the function that broke.
ENV = {**os.environ, "UBSAN_OPTIONS": "print_stacktrace=1"}


class FuzzError(Exception):
    pass


def find_clang() -> str:
    for cc in ("clang", "clang-14"):
        if shutil.which(cc):
            return shutil.which(cc)
    raise FuzzError("clang not found (scripts/setup.sh installs clang and libclang-rt-14-dev)")


def _build_error(target: str, stderr: str) -> FuzzError:
    hint = ""
    if "libclang_rt" in stderr:
        hint = "\n(the sanitizer/libFuzzer runtimes are in libclang-rt-14-dev)"
    return FuzzError(f"building the fuzzer for {target} failed:\n{stderr}{hint}")


def build_fuzzer(target: str, build_dir: Path = DEFAULT_BUILD_DIR) -> Path:
    """Links the core for `target` with the fuzz target. Rebuilds only when a
    source, a header, the compiler or the flags change."""
    cc = find_clang()
    out = build_dir / target
    headers = gen.gen_dir(get_target(target), out)
    return build_program(cc, [*FLAGS, *gen.include_flags(headers)],
                         [*gen.core_sources(), FUZZ_SOURCE], gen.all_headers(headers),
                         out, "ktap_fuzz", lambda err: _build_error(target, err))


def seed_images(target: str) -> dict[str, bytes]:
    """name -> image: the samples, the board suite's script cases and its bad
    images, all for `target`. Cases that do not compile for it are skipped."""
    seeds: dict[str, bytes] = {}
    for kp in sorted((ROOT / "samples").glob("*.kp")):
        try:
            seeds[f"sample-{kp.stem}"] = bc.dump(api.compile_file(str(kp), target))
        except KtapError:
            pass
    builders = boardtest.bad_image_builders()
    for case in boardtest.load_cases():
        try:
            seeds[f"case-{case.name}"] = boardtest.build_image(case, target, builders)
        except (boardtest.CaseError, KtapError, KeyError):
            pass
    return seeds


def write_seeds(target: str, directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    seeds = seed_images(target)
    for name, data in seeds.items():
        (directory / name).write_bytes(data)
    return len(seeds)


@dataclass
class FuzzResult:
    target: str
    ok: bool                 # no crash, sanitizer report, leak or timeout
    execs: int = 0
    exec_per_sec: int = 0
    cov: int = 0             # covered edges (libFuzzer's "cov:")
    ft: int = 0              # features ("ft:")
    corpus: int = 0          # inputs in the corpus at the end
    new_units: int = 0
    peak_rss_mb: int = 0
    seconds: float = 0
    artifacts: list[Path] = field(default_factory=list)
    log: str = ""

    def summary(self) -> str:
        return (f"{self.target}: {'ok' if self.ok else 'FAILED'}  {self.execs} execs  "
                f"{self.exec_per_sec} exec/s  cov {self.cov}  ft {self.ft}  "
                f"corpus {self.corpus}  rss {self.peak_rss_mb} MB")


_STAT = re.compile(r"^stat::(\w+):\s*(\d+)", re.M)
_PROGRESS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)", re.M)


def parse_output(target: str, log: str, returncode: int, artifact_dir: Path) -> FuzzResult:
    stats = {k: int(v) for k, v in _STAT.findall(log)}
    res = FuzzResult(target, ok=returncode == 0 and not any(m in log for m in FAILURE_MARKERS),
                     log=log)
    res.execs = stats.get("number_of_executed_units", 0)
    res.exec_per_sec = stats.get("average_exec_per_sec", 0)
    res.new_units = stats.get("new_units_added", 0)
    res.peak_rss_mb = stats.get("peak_rss_mb", 0)
    progress = _PROGRESS.findall(log)
    if progress:
        _, cov, ft, corp = progress[-1]
        res.cov, res.ft, res.corpus = int(cov), int(ft), int(corp)
    res.artifacts = sorted(p for p in artifact_dir.glob("*")
                           if p.name.split("-")[0] in ("crash", "leak", "timeout", "oom",
                                                       "slow"))
    return res


def run_fuzzer(target: str, seconds: int, work: Path | None = None,
               extra_args: tuple[str, ...] = ()) -> FuzzResult:
    """Fuzzes `target` for `seconds`. The corpus lives in work/corpus (kept
    between runs, so a long run continues where the last stopped), the seeds
    are rewritten into work/seeds, and findings go to work/artifacts."""
    exe = build_fuzzer(target)
    work = work or DEFAULT_BUILD_DIR / target / "run"
    corpus, seeds, artifacts = work / "corpus", work / "seeds", work / "artifacts"
    for d in (corpus, seeds, artifacts):
        d.mkdir(parents=True, exist_ok=True)
    write_seeds(target, seeds)
    args = [str(exe), f"-max_total_time={seconds}", f"-timeout={TIMEOUT_S}",
            f"-rss_limit_mb={RSS_LIMIT_MB}", f"-max_len={MAX_LEN}", "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/", *extra_args, str(corpus), str(seeds)]
    r = subprocess.run(args, capture_output=True, text=True, errors="replace",
                       timeout=seconds + 120, env=ENV)
    res = parse_output(target, r.stdout + r.stderr, r.returncode, artifacts)
    res.seconds = seconds
    return res


def replay(target: str, inputs: list[Path]) -> tuple[bool, str]:
    """Runs the fuzz target once on each input (no mutation): (clean, log)."""
    exe = build_fuzzer(target)
    r = subprocess.run([str(exe), f"-timeout={TIMEOUT_S}", f"-rss_limit_mb={RSS_LIMIT_MB}",
                        *map(str, inputs)], capture_output=True, text=True, errors="replace",
                       timeout=60 + 10 * len(inputs), env=ENV)
    log = r.stdout + r.stderr
    return r.returncode == 0 and not any(m in log for m in FAILURE_MARKERS), log
