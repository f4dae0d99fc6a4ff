#!/usr/bin/env python3
"""User-space probes: added guest instructions per probed call, both backends.

    .venv/bin/python bench/uprobes.py [-t ARCH ...] [-n CALLS]

One deterministic boot per target (QEMU -icount shift=0,sleep=off: a guest
nanosecond is one guest instruction). kmod/tests/ktap_smoke.c -b times
`ktapw calls N` (N calls of ktapw_tick, fork and exec included) with
CLOCK_MONOTONIC:
  bare          no probe (twice: the spread shows the noise)
  ktapvm empty  `trace probe:/bin/ktapw:ktapw_tick { }` through ktaprun
  ktapvm count  `var s = {} trace probe:/bin/ktapw:ktapw_tick { s[execname] += 1 }`
  usdt count    the same on `sdt:/bin/ktapw:ktapw:iteration`, adding arg1
  ebpf ...      the same scripts on the eBPF backend, the kernel's JIT on where
                it compiles them
Added cost per call = (probed - bare) / N. Most of it is the kernel's uprobe
itself (a trap, single-stepping the displaced instruction out of line, the
return to user space), which both backends pay; the rest is the handler. Each
count run must print exactly N.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "toolchain"))

from ktap import api  # noqa: E402
from ktap.backends.ebpf.codegen import jit_gaps  # noqa: E402
from ktap.backends.kbc import bytecode as bc  # noqa: E402
from ktap.boards.batch import run_commands  # noqa: E402
from ktap.boards.choice import DEFAULT_KERNEL, boot_kernel  # noqa: E402
from ktap.boards.initramfs import guest_sysroot  # noqa: E402
from ktap.build import kmod, ktaprun as runner  # noqa: E402
from ktap.core.diagnostics import Source  # noqa: E402
from ktap.core.targets import target_names  # noqa: E402
from ktapdev import harness  # noqa: E402

SMOKE = "/bin/ktap_smoke"
JIT_SYSCTL = "/proc/sys/net/core/bpf_jit_enable"
SCRIPTS = {
    "empty": "trace probe:/bin/ktapw:ktapw_tick { }\n",
    "count": "var s = {}\ntrace probe:/bin/ktapw:ktapw_tick { s[execname] += 1 }\n"
             "trace_end { printf(\"ktapw=%d\\n\", s[\"ktapw\"]) }\n",
    "usdt count": "var s = {}\ntrace sdt:/bin/ktapw:ktapw:iteration { s[execname] += arg1 }\n"
                  "trace_end { printf(\"ktapw=%d\\n\", s[\"ktapw\"]) }\n",
}


def ns_of(result) -> int | None:
    out = result.stdout.decode(errors="replace")
    m = re.search(r"cmd: 0 ns (\d+)", out)
    return int(m.group(1)) if m else None


def expected(name: str, n: int) -> str | None:
    if name.endswith("empty"):
        return None
    return f"ktapw={n * (n + 1) // 2 if 'usdt' in name else n}\n"


def measure(target: str, n: int) -> dict:
    kdir = boot_kernel(target, DEFAULT_KERNEL).directory
    sysroot = str(guest_sysroot(target))
    timed = [SMOKE, "-b", "-w", "300", "--", "/bin/ktapw", "calls", str(n)]
    files = {"/ktapvm.ko": kmod.build_module(target, kdir),
             SMOKE: harness.build_smoke_client(target), "/ktaprun": runner.build_ktaprun(target)}
    commands = {"bare1": [timed], "bare2": [timed],
                "insmod": [["/bin/ktapw", "insmod", "/ktapvm.ko"]]}
    refused = ""
    with tempfile.TemporaryDirectory(prefix="ktap-bench-") as tmp:
        for backend in ("ktapvm", "ebpf"):
            for name, text in SCRIPTS.items():
                image = api.compile_source(Source("u.kp", text), target, backend=backend,
                                           sysroot=sysroot)
                path = Path(tmp) / f"{backend}-{name.replace(' ', '-')}.kbc"
                path.write_bytes(bc.dump(image))
                files[f"/{path.name}"] = path
                run = ["/ktaprun", f"/{path.name}", "--", *timed]
                if backend == "ebpf":
                    gaps = jit_gaps(image)
                    refused = f"{target}'s JIT lacks {', '.join(gaps)}" if gaps else refused
                    run = [["/bin/ktapw", "write-file", JIT_SYSCTL, "0" if gaps else "1"], run]
                else:
                    run = [run]
                commands[(backend, name)] = run
        flat = [c for cs in commands.values() for c in cs]
        result = run_commands(target, flat, extra_files=files, timeout=900, deterministic=True,
                              kernel=DEFAULT_KERNEL, cpus=1)
    results = iter(result.results)
    ns = {}
    for key, cs in commands.items():
        for c, r in zip(cs, results):
            if c[0] != "/ktaprun" and c[0] != SMOKE:
                if r.status != 0:
                    raise SystemExit(f"{target}: {' '.join(c)} failed: {r.output}")
                continue
            ns[key] = ns_of(r)
            want = expected(key[1], n) if isinstance(key, tuple) else None
            out = r.stdout.decode(errors="replace")
            if want is not None and (want not in out or r.status != 0):
                raise SystemExit(f"{target}: {key} printed {out!r} (status {r.status}), "
                                 f"not {want!r}")
    if None in ns.values():
        raise SystemExit(f"{target}: a run failed:\n" +
                         "\n".join(str(r.output) for r in result.results))
    bare = min(ns["bare1"], ns["bare2"])
    added = {k: (v - bare) / n for k, v in ns.items() if isinstance(k, tuple)}
    return {"noise": abs(ns["bare1"] - ns["bare2"]) / n, "refused": refused, **added}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-t", "--target", action="append", choices=target_names())
    ap.add_argument("-n", "--calls", type=int, default=5000)
    args = ap.parse_args()
    print(f"added guest instructions per probed call of ktapw_tick, kernel {DEFAULT_KERNEL}")
    print(f"{'target':8} {'backend':7} {'empty':>7} {'count':>7} {'usdt':>7} {'noise':>6} JIT")
    for name in args.target or target_names():
        m = measure(name, args.calls)
        for backend in ("ktapvm", "ebpf"):
            jit = "" if backend == "ktapvm" else ("off: " + m["refused"] if m["refused"] else "on")
            print(f"{name:8} {backend:7} {m[(backend, 'empty')]:>7.0f} "
                  f"{m[(backend, 'count')]:>7.0f} {m[(backend, 'usdt count')]:>7.0f} "
                  f"{m['noise']:>6.1f} {jit}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
