#!/usr/bin/env python3
"""Board benchmark: kernel build cost, cache lookup cost, initramfs size, boot-to-init.

    .venv/bin/python bench/boards.py [-t ARCH ...] [--boots N]

Cold build: the duration the kernel build recorded in its cache dir
(ktap-build.json), so it is known only for kernels this cache built.
Cached rebuild: wall time of ensure_kernel_build() on a cache hit.
Boot to init: host time from starting QEMU to init's first frame (HELLO),
median of N boots, each running one trivial command.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "toolchain"))
from ktap.boards import kernels as kernel  # noqa: E402
from ktap.boards.batch import run_commands  # noqa: E402
from ktap.boards.initramfs import base_initramfs  # noqa: E402
from ktap.core.targets import get_target, target_names  # noqa: E402


def measure(name: str, boots: int) -> dict:
    target = get_target(name)
    build = kernel.ensure_kernel_build(target)
    t0 = time.monotonic()
    kernel.ensure_kernel_build(target)
    cached = time.monotonic() - t0
    initramfs = base_initramfs(target)
    runs = [run_commands(target, [["ktapw", "getpid", "1"]]) for _ in range(boots)]
    return {
        "target": name,
        "cold": build.seconds,
        "cached": cached,
        "initramfs": initramfs.stat().st_size,
        "init": statistics.median(r.init_seconds for r in runs),
        "uptime": statistics.median(r.guest_uptime_at_init for r in runs),
        "total": statistics.median(r.total_seconds for r in runs),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-t", "--target", action="append", choices=target_names())
    ap.add_argument("--boots", type=int, default=3)
    args = ap.parse_args()
    print(f"{'target':8} {'cold kernel build':>17} {'cached rebuild':>14} {'initramfs':>10} "
          f"{'QEMU start->init':>16} {'guest uptime@init':>17} {'whole run':>9}")
    for name in args.target or target_names():
        m = measure(name, args.boots)
        cold = f"{m['cold']:.0f} s" if m["cold"] is not None else "unknown"
        print(f"{m['target']:8} {cold:>17} {m['cached'] * 1000:>11.0f} ms "
              f"{m['initramfs'] / 1024:>7.0f} KiB {m['init']:>14.2f} s {m['uptime']:>15.2f} s "
              f"{m['total']:>7.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
