#!/usr/bin/env python3
"""Compile-time benchmark: wall time per sample in-process, a generated 1,000-line
script in-process, and whole processes as a user runs them: `ktap --help` (goal
<= 0.1 s) and `ktap compile` of the 1,000 lines (goal <= 0.3 s), against a bare
`python -c pass` measured in the same run."""
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "toolchain"))
from ktap import api  # noqa: E402
from ktap.core.diagnostics import Source  # noqa: E402


def generated_script(lines: int) -> str:
    out = ["var counts = {}", "var sizes = {}", "var total = 0"]
    fn = 0
    while len(out) < lines - 8:
        out += [f"function helper{fn}(a, b) {{",
                f"  var x = a * {fn + 3} + b",
                "  if (x > 100) { x = x % 97 } elseif (x < 0) { x = -x } else { x += 1 }",
                f"  for (i = 1, {fn % 5 + 1}) {{ x = x + i }}",
                "  return x",
                "}",
                f"trace probe:vfs_write{fn} /arg1 != {fn}/ {{",
                f"  counts[execname .. \"{fn}\"] += helper{fn}(arg1, arg2)",
                f"  sizes[{fn}] <<< arg3",
                "}"]
        fn += 1
    out += ["trace_end {", "  for (k, v in pairs(counts)) { total += v }",
            "  printf(\"%d\\n\", total)", "  print_hist(counts, 10)", "}"]
    return "\n".join(out[:lines]) + "\n" if len(out) > lines else "\n".join(out) + "\n"


def best_of(fn, n=7) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main() -> None:
    print("ktap compile benchmark (in-process, best and median of 7)")
    for sample in sorted((ROOT / "samples").glob("*.kp")):
        src = Source(str(sample), sample.read_text())
        best, med = best_of(lambda: api.compile_source(src, "arm"))
        print(f"  {sample.name:24} best {best * 1000:7.2f} ms   median {med * 1000:7.2f} ms")
    text = generated_script(1000)
    src = Source("gen1000.kp", text)
    best, med = best_of(lambda: api.compile_source(src, "mips"))
    lines = text.count("\n")
    print(f"  generated {lines}-line script: best {best:.3f} s, median {med:.3f} s "
          f"({lines / best:,.0f} lines/s)  goal < 0.300 s: {'met' if best < 0.3 else 'MISSED'}")
    processes(text)


def process_time(argv: list[str], n: int = 7) -> float:
    env = {"PYTHONPATH": str(ROOT / "toolchain"), "PATH": "/usr/bin:/bin"}
    best, _ = best_of(lambda: subprocess.run(argv, check=True, env=env, capture_output=True), n)
    return best


def processes(text: str) -> None:
    """Whole processes, best of 7: what a user waits for at the prompt."""
    print("whole processes (best of 7)")
    bare = process_time([sys.executable, "-c", "pass"])
    print(f"  python -c pass (the floor):  {bare:.3f} s")
    ktap = [sys.executable, "-m", "ktap.cli"]
    helped = process_time(ktap + ["--help"])
    print(f"  ktap --help:                 {helped:.3f} s  ({helped / bare:.1f}x the floor)  "
          f"goal <= 0.100 s: {'met' if helped <= 0.1 else 'MISSED'}")
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "gen1000.kp"
        script.write_text(text)
        compiled = process_time(ktap + ["compile", "-t", "mips", str(script),
                                        "-o", str(Path(d) / "gen.kbc")])
    print(f"  ktap compile (1,000 lines):  {compiled:.3f} s  ({compiled / bare:.1f}x the floor)  "
          f"goal <= 0.300 s: {'met' if compiled <= 0.3 else 'MISSED'}")

if __name__ == "__main__":
    main()
