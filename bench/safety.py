#!/usr/bin/env python3
"""How long can one ktapvm handler run? The budget and the watchdog, measured.

    .venv/bin/python bench/safety.py [-t ARCH ...] [--no-icount] [--no-wall]

Each scenario is a raw KBC image (rawkbc, not the compiler) on a kprobe at
vfs_write, filtered on execname == "ktapw", whose handler loops until the
instruction budget or the 10 ms time watchdog stops it. The workload,
`ktapw writelat 20`, times each one-byte write(2) with CLOCK_MONOTONIC (as
SCHED_FIFO, so ktapvm's stop work cannot run before the second clock read).
Handlers that end normally run on every write; one that is stopped runs on
the first (the runtime error stops the session). handler time = max_ns - the
average bare write.

Two boots per target:
  icount  QEMU -icount shift=0,sleep=off: a guest nanosecond is one guest
          instruction, so the times are guest instruction counts (exact,
          repeatable); the watchdog reads the same virtual clock, so it fires
          after 10^7 guest instructions.
  wall    a normal boot: the board's own clock (QEMU emulation speed).

Scenarios (budget counts the words a backward jump jumps over; the watchdog
reads the clock every 64 charges, starting at the 64th):
  count-20k      a countdown loop that ends 24 words short of the default
                 budget (20,000): the longest normal handler, cheap body
  concat-20k     the same with r7 = r3 .. r3 on 4 KiB strings in the body
  jmp-max        JMP to itself, budget 10^7 (the maximum)
  concat-max     the 4 KiB concat loop, budget 10^7: only the watchdog can stop it

  concat-1k      the concat countdown for 1,000 budget words (ends normally):
                 gives the cost of one charge of the concat loop

The bound: the watchdog's clock starts at the 64th charge and is read every
64 charges (a charge is one backward jump or call, i.e. one loop iteration),
so a stopped handler ends within 10 ms + 128 iterations of its loop (their
cost comes from count-20k and concat-1k) + 1 ms of slack for interrupts. The
bound is judged on the icount clock only. Wall-clock runs share the host with other work: QEMU being
descheduled shows up as guest time.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "toolchain"))
from ktap.boards.batch import run_commands  # noqa: E402
from ktap.backends.kbc import bytecode as bc  # noqa: E402
from ktap.boards.sessions import GUEST_DIR, GUEST_MODULE, GUEST_RUNNER, board_bundle  # noqa: E402
from ktap.build.bundle import session_argv  # noqa: E402
from ktapdev.rawkbc import RET, handler_image, ins  # noqa: E402
from ktap.core.targets import get_target, target_names  # noqa: E402
from ktap.frontend import program  # noqa: E402
from ktap.frontend import builtins  # noqa: E402

WATCHDOG_NS = 10_000_000
MAX_BUDGET = program.Limits.MAXIMUM["budget"]
EXECNAME = builtins.VARIABLE_BY_NAME["execname"].id


def filtered(target: str, body: list[list[int]], consts: list, limits: program.Limits) -> bytes:
    """if execname == "ktapw" then BODY end; constants: 0 = "ktapw", then `consts`."""
    nbody = sum(len(i) for i in body)
    code = [ins("LOADVAR", 0, EXECNAME), ins("LOADK", 1, 0), ins("EQ", 2, 0, 1),
            ins("JMPF", 2, nbody)] + body + [RET]
    return bc.dump(handler_image(code, target=target, consts=["ktapw"] + consts, limits=limits,
                                 frame=8))


def countdown(n: int, concat: bool) -> list[list[int]]:
    """r4 = n; repeat [r7 = r3 .. r3;] r4 -= 1 until r4 == 0: ends normally."""
    loop = ([ins("CONCAT", 7, 3, 3)] if concat else []) + [
        ins("SUB", 4, 4, 5), ins("LT", 2, 6, 4)]
    return ([ins("LOADI", 4, n), ins("LOADI", 5, 1), ins("LOADI", 6, 0), ins("LOADK", 3, 1)]
            + loop + [ins("JMPT", 2, -(len(loop) + 1))])


def scenarios(target: str) -> dict[str, bytes]:
    big = "x" * 4096
    lim = program.Limits(string_size=4096)
    budget = lim.budget
    # the countdowns stop 24 words short of the budget: the longest handlers
    # that end normally under the default budget (3 or 4 words per iteration)
    jmp = [ins("JMP", 0, -1)]
    concat = [ins("LOADK", 3, 1), ins("CONCAT", 4, 3, 3), ins("JMP", 0, -2)]
    maxed = program.Limits(budget=MAX_BUDGET, string_size=4096)
    return {
        "count-20k": filtered(target, countdown((budget - 24) // 3, False), [big], lim),
        "concat-20k": filtered(target, countdown((budget - 24) // 4, True), [big], lim),
        "concat-1k": filtered(target, countdown(250, True), [big], lim),
        "jmp-max": filtered(target, jmp, [big], maxed),
        "concat-max": filtered(target, concat, [big], maxed),
    }


LAT = re.compile(r"calls=(\d+) ok=(\d+) max_ns=(\d+) total_ns=(\d+)")


def run_board(target: str, deterministic: bool) -> dict:
    bundle = board_bundle(get_target(target))
    module, runner_bin = bundle.module, bundle.runner
    imgs = scenarios(target)
    with tempfile.TemporaryDirectory(prefix="ktap-bench-safety-") as tmp:
        files = {GUEST_MODULE: module, GUEST_RUNNER: runner_bin}
        commands = [["ktapw", "writelat", "200"]]
        for name, data in imgs.items():
            host = Path(tmp) / f"{name}.kbc"
            host.write_bytes(data)
            files[f"{GUEST_DIR}/{name}.kbc"] = host
            commands.append(session_argv(GUEST_RUNNER, f"{GUEST_DIR}/{name}.kbc",
                                         module=GUEST_MODULE, workload=["ktapw", "writelat", "20"]))
        commands.append(["ktapw", "rmmod", "ktapvm"])
        run = run_commands(target, commands, extra_files=files, timeout=1200,
                           deterministic=deterministic)
    base = LAT.search(run.results[0].stdout.decode())
    bare_avg = int(base.group(4)) / int(base.group(1)) if base else 0
    out = {"bare_avg_ns": bare_avg, "bare_max_ns": int(base.group(3)) if base else None}
    for name, res in zip(imgs, run.results[1:]):
        text = res.stdout.decode(errors="replace")
        err = res.stderr.decode(errors="replace")
        m = LAT.search(text)
        reason = ("watchdog" if "watchdog" in err else "budget" if "budget" in err
                  else "ended normally" if res.status == 0
                  else f"? status {res.status}: {err.strip()[:80]}")
        handler = int(m.group(3)) - bare_avg if m else None
        out[name] = {"reason": reason, "handler_ns": handler, "status": res.status}
    out["rmmod"] = run.results[-1].status
    return out


def fmt_ns(ns, instructions: bool) -> str:
    if ns is None:
        return "-"
    return f"{ns:,.0f} insns" if instructions else f"{ns / 1e6:.3f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-t", "--target", action="append", choices=target_names())
    ap.add_argument("--no-icount", action="store_true")
    ap.add_argument("--no-wall", action="store_true")
    args = ap.parse_args()
    targets = args.target or target_names()
    modes = ([] if args.no_icount else [True]) + ([] if args.no_wall else [False])
    rows = []
    ok = True
    for target in targets:
        for det in modes:
            r = run_board(target, det)
            # cost of one charge (one budget word) of each loop, from runs that ended normally
            # (a charge is one backward jump: one loop iteration, whatever its words)
            per_charge = {"jmp": (r["count-20k"]["handler_ns"] or 0) / ((20000 - 24) // 3),
                          "concat": (r["concat-1k"]["handler_ns"] or 0) / 250}
            for name in ("count-20k", "concat-1k", "concat-20k", "jmp-max", "concat-max"):
                s = r[name]
                ns = s["handler_ns"]
                # The bound: the clock starts at the 64th charge and is read every
                # 64 charges, so a stopped handler ends within 10 ms + 128 charges
                # (+ 1 ms for interrupts and the bare write's spread).
                kind = "concat" if "concat" in name else "jmp"
                bound = WATCHDOG_NS + 128 * per_charge[kind] + 1_000_000
                # only the icount clock is exact; wall-clock runs are reported, not judged
                holds = ns is not None and (not det or s["reason"] == "ended normally" or ns <= bound)
                ok &= holds and r["rmmod"] == 0
                rows.append((target, "icount" if det else "wall", name, s["reason"],
                             fmt_ns(ns, det), fmt_ns(bound, det) if s["reason"] == "watchdog" and det else "",
                             ("yes" if holds else "NO") if det else ""))
            rows.append((target, "icount" if det else "wall", "bare write (avg)", "",
                         fmt_ns(r["bare_avg_ns"], det), "", ""))
    print("| target | clock | scenario | stopped by | handler time | bound | within |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
