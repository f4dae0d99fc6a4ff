#!/usr/bin/env python3
"""ktapvm.ko benchmark: added guest instructions per vfs_write call, and module size.

    .venv/bin/python bench/module.py [-t ARCH ...] [-n WRITES]

One deterministic boot per target (QEMU -icount shift=0,sleep=off: a guest
nanosecond is one guest instruction). Inside it, kmod/tests/ktap_smoke.c times
`ktapw write N` (N one-byte writes to /dev/null, fork and exec included) with
CLOCK_MONOTONIC:
  bare      no module loaded (twice: the spread shows the noise)
  empty     ktapvm.ko, `trace probe:vfs_write { }`
  count     ktapvm.ko, `var s = {} trace probe:vfs_write { s[execname] += 1 }`
Each probed run starts 300 ms (guest time) after START, after arm's kprobe
jump optimisation. Added cost per call = (probed - bare) / N. The native C
column is ARCHITECTURE.md's figure for the same statement in a hand-written
module; the ratio is count / native.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "toolchain"))

from elftools.elf.elffile import ELFFile  # noqa: E402

from ktap import api, board, kmod  # noqa: E402
from ktap import bytecode as bc  # noqa: E402
from ktap.diagnostics import Source  # noqa: E402
from ktap.targets import target_names  # noqa: E402

# ARCHITECTURE.md, "Added cost per vfs_write call, in guest instructions"
NATIVE = {"arm": (103, 405), "mips": (815, 1115), "powerpc": (325, 681), "x86_64": (167, 429)}
SCRIPTS = {
    "empty": "trace probe:vfs_write { }\n",
    "count": "var s = {}\ntrace probe:vfs_write { s[execname] += 1 }\n",
}
SMOKE = "/bin/ktap_smoke"


def module_size(ko: Path) -> tuple[int, int]:
    """(file size, bytes of allocated sections: what loading costs)."""
    with ko.open("rb") as f:
        elf = ELFFile(f)
        alloc = sum(s["sh_size"] for s in elf.iter_sections() if s["sh_flags"] & 2)
    return ko.stat().st_size, alloc


def measure(target: str, n: int) -> dict:
    ko = kmod.build_module(target)
    smoke = kmod.build_smoke_client(target)
    write = ["/bin/ktapw", "write", str(n)]
    with tempfile.TemporaryDirectory(prefix="ktap-bench-") as tmp:
        files = {"/ktapvm.ko": ko, SMOKE: smoke}
        for name, text in SCRIPTS.items():
            img = api.compile_source(Source(f"{name}.kp", text), target)
            path = Path(tmp) / f"{name}.kbc"
            path.write_bytes(bc.dump(img))
            files[f"/{name}.kbc"] = path
        commands = [[SMOKE, "-b", "--", *write], [SMOKE, "-b", "--", *write],
                    ["/bin/ktapw", "insmod", "/ktapvm.ko"]]
        for name in SCRIPTS:
            commands.append([SMOKE, "-w", "300", f"/{name}.kbc", "kp:0:vfs_write", "--", *write])
        commands.append(["/bin/ktapw", "rmmod", kmod.MODULE_NAME])
        run = board.run_commands(target, commands, extra_files=files, timeout=900,
                                 deterministic=True)
    ns = []
    for r in run.results:
        out = r.stdout.decode() if isinstance(r.stdout, bytes) else r.stdout
        m = re.search(r"cmd: 0 ns (\d+)", out)
        ns.append(int(m.group(1)) if m else None)
    if None in (ns[0], ns[1], ns[3], ns[4]) or run.results[-1].status != 0:
        raise SystemExit(f"{target}: a run failed:\n" + "\n".join(str(r.output) for r in run.results))
    bare = min(ns[0], ns[1])
    size, alloc = module_size(ko)
    return {"target": target, "bare": bare, "noise": abs(ns[0] - ns[1]) / n,
            "empty": (ns[3] - bare) / n, "count": (ns[4] - bare) / n,
            "size": size, "alloc": alloc}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-t", "--target", action="append", choices=target_names())
    ap.add_argument("-n", "--writes", type=int, default=20000)
    args = ap.parse_args()
    print("added guest instructions per vfs_write call")
    print(f"{'target':8} {'ktapvm empty':>12} {'ktapvm count':>12} {'native empty':>12} "
          f"{'native count':>12} {'count ratio':>11} {'noise':>6} {'ktapvm.ko':>10} {'loaded':>9}")
    for name in args.target or target_names():
        m = measure(name, args.writes)
        ne, nc = NATIVE[name]
        print(f"{name:8} {m['empty']:>12.0f} {m['count']:>12.0f} {ne:>12} {nc:>12} "
              f"{m['count'] / nc:>10.2f}x {m['noise']:>6.1f} {m['size'] / 1024:>6.0f} KiB "
              f"{m['alloc'] / 1024:>5.0f} KiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
