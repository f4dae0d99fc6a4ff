#!/usr/bin/env python3
"""Long libFuzzer runs on ktapvm's C core: per target, executions per second,
total executions and coverage (libFuzzer's cov = edges, ft = features).

    .venv/bin/python bench/fuzz.py                      # 300 s on arm, mips, x86_64
    .venv/bin/python bench/fuzz.py -t 3600 mips powerpc

The corpus of each target is kept in build/fuzz/<target>/run/corpus, so runs
add up. Findings are copied to build/fuzz/<target>/run/artifacts; turn each
into a regression input in tests/native/fuzz_regressions/<target>/. Exits 1 if any
target found something."""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "toolchain"))
from ktapdev import fuzz  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="*", default=["arm", "mips", "x86_64"])
    ap.add_argument("-t", "--seconds", type=int, default=300, help="per target")
    args = ap.parse_args()
    failed = False
    print(f"{'target':8} {'result':7} {'execs':>10} {'exec/s':>7} {'cov':>5} {'ft':>6} "
          f"{'corpus':>6} {'rss MB':>6}")
    for target in args.targets:
        res = fuzz.run_fuzzer(target, args.seconds)
        print(f"{target:8} {'ok' if res.ok else 'FAILED':7} {res.execs:>10} "
              f"{res.exec_per_sec:>7} {res.cov:>5} {res.ft:>6} {res.corpus:>6} "
              f"{res.peak_rss_mb:>6}", flush=True)
        if not res.ok:
            failed = True
            for a in res.artifacts:
                print(f"  finding: {a}")
            print("\n".join("  | " + line for line in res.log.splitlines()[-40:]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
