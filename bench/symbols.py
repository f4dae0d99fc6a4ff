#!/usr/bin/env python3
"""Symbol index benchmark on the board vmlinux files.

Cold: pyelftools identifies the ELF, the symtab is decoded and the index
built and pickled (into a fresh temporary cache; the file itself is in the
page cache). Cached: the pickled index is loaded again.
Goals: under 2 s cold and under 0.2 s cached for a vmlinux of >= 30,000 symbols.
"""
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "toolchain"))

from elftools.elf.elffile import ELFFile  # noqa: E402
from ktap.boards import kernels as kernel  # noqa: E402
from ktap.symbols import readers  # noqa: E402
from ktap.core.targets import get_target, target_names  # noqa: E402

COLD_GOAL, CACHED_GOAL, MIN_SYMBOLS = 2.0, 0.2, 30_000


def raw_symbol_count(path: Path) -> int:
    with open(path, "rb") as f:
        return ELFFile(f).get_section_by_name(".symtab").num_symbols()


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench(path: Path, repeat: int) -> tuple[float, float, int]:
    """Median cold (empty cache each time) and cached load times."""
    colds = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["KTAP_CACHE"] = cache
            colds += timed(lambda: readers.load_vmlinux(path), 1)
            cached = timed(lambda: readers.load_vmlinux(path), repeat)
            count = len(readers.load_vmlinux(path))
    return statistics.median(colds), statistics.median(cached), count


def main() -> int:
    repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    saved = os.environ.get("KTAP_CACHE")
    builds = {}
    for name in target_names():
        b = kernel.cached_kernel(get_target(name))
        if b is not None:
            builds[name] = b.directory / "vmlinux"
    if not builds:
        print("no cached board kernels: build one with `ktap board -t arm kernel`")
        return 1
    ok = True
    print(f"{'target':8} {'ELF symbols':>11} {'indexed':>8} {'functions':>9} "
          f"{'cold s':>7} {'cached s':>8}")
    for name, path in builds.items():
        cold, cached, count = bench(path, repeat)
        raw = raw_symbol_count(path)
        funcs = len(readers.load_vmlinux(path, use_cache=False).functions())
        big = raw >= MIN_SYMBOLS
        ok &= not big or (cold < COLD_GOAL and cached < CACHED_GOAL)
        print(f"{name:8} {raw:11,} {count:8,} {funcs:9,} {cold:7.3f} {cached:8.3f}"
              + ("" if big else "   (fewer than 30,000 symbols)"))
    if saved is None:
        os.environ.pop("KTAP_CACHE", None)
    print(f"goals: cold < {COLD_GOAL} s, cached < {CACHED_GOAL} s for >= {MIN_SYMBOLS:,} symbols: "
          + ("met" if ok else "MISSED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
