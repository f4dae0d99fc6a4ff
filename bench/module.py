#!/usr/bin/env python3
"""ktapvm.ko and eBPF benchmark: added guest instructions per write(2); ktapvm.ko and ktaprun sizes.

    .venv/bin/python bench/module.py [-t ARCH ...] [--kernel KERNEL] [-n WRITES]

--kernel boots another kernel (docs/kernels.md); Debian's SMP stock kernels
boot on one CPU here, since QEMU 7.2's -icount hangs with two.

One deterministic boot per target (QEMU -icount shift=0,sleep=off: a guest
nanosecond is one guest instruction). Inside it, kmod/tests/ktap_smoke.c times
`ktapw write N` (N one-byte writes to /dev/null, fork and exec included) with
CLOCK_MONOTONIC, on two probes that fire once per write: the kprobe
probe:vfs_write and the tracepoint syscalls:sys_enter_write. For each:
  bare      no module loaded (twice: the spread shows the noise)
  empty     ktapvm.ko, `trace PROBE { }`
  count     ktapvm.ko, `var s = {} trace PROBE { s[execname] += 1 }`
  native    bench/native/ktap_native.c, a hand-written module doing the same
            (mode=empty: the bare probe; mode=count: a comm-keyed hash table)
  ebpf      the same scripts compiled with --backend ebpf, run by ktaprun with
            ktap_smoke -b as its workload (no module), with the kernel's eBPF
            JIT off and on (net.core.bpf_jit_enable), and the count program's
            size in eBPF instructions (a 64-bit load counted once)
  ply       with --ply TARGET=PATH (bench/build_ply.sh builds one), the same
            count in ply's language (`@[comm] = count()`), JIT on, attached 2 s
            before the timed writes and stopped by SIGINT; its program size
            from `ply -S -e`
Each probed run starts 300 ms (guest time) after the probe is registered,
after arm's kprobe jump optimisation. Added cost per call = (probed - bare) / N;
the ratio is ktapvm count / native count, both from the same boot. The
native module prints its counts at unload, ktapvm's count script at
trace_end, and the run fails unless each counted exactly N writes by ktapw
(and ktapvm dropped nothing).
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "toolchain"))

from elftools.elf.elffile import ELFFile  # noqa: E402
from ktap import api  # noqa: E402
from ktap.boards.batch import run_commands  # noqa: E402
from ktap.build import kmod, ktaprun as runner  # noqa: E402
from ktap.backends.ebpf.codegen import jit_gaps  # noqa: E402
from ktap.backends.kbc import bytecode as bc  # noqa: E402
from ktap.core.diagnostics import Source  # noqa: E402
from ktap.core.targets import get_target, target_names  # noqa: E402
from ktap.boards.choice import DEFAULT_KERNEL, KERNEL_CHOICES, boot_kernel  # noqa: E402
from ktap.build.kbuild import kbuild  # noqa: E402
from ktapdev import harness  # noqa: E402

NATIVE_DIR = Path(__file__).resolve().parent / "native"
# probe kind: (ktap event, ktap_smoke attach spec, ktap_native's on=)
PROBES = {
    "kprobe": ("probe:vfs_write", "kp:0:vfs_write", "kprobe"),
    "tracepoint": ("syscalls:sys_enter_write", "tp:0:syscalls:sys_enter_write", "tracepoint"),
}
HANDLERS = {"empty": "trace {event} {{ }}\n",
            "count": "var s = {{}}\ntrace {event} {{ s[execname] += 1 }}\n"
                     "trace_end {{ printf(\"ktapw=%d\\n\", s[\"ktapw\"]) }}\n"}
SMOKE = "/bin/ktap_smoke"
PLY_SCRIPTS = {"kprobe": "kprobe:vfs_write { @[comm] = count(); }",
               "tracepoint": "tracepoint:syscalls/sys_enter_write { @[comm] = count(); }"}
JIT_SYSCTL = "/proc/sys/net/core/bpf_jit_enable"


def module_size(ko: Path) -> tuple[int, int]:
    """(file size, bytes of allocated sections: what loading costs)."""
    with ko.open("rb") as f:
        elf = ELFFile(f)
        alloc = sum(s["sh_size"] for s in elf.iter_sections() if s["sh_flags"] & 2)
    return ko.stat().st_size, alloc


def build_native(target: str, kdir: Path) -> Path:
    return kbuild(get_target(target), sorted(f for f in NATIVE_DIR.iterdir() if f.is_file()),
                  "ktap_native", kdir)


def session_output(result, image: bc.Image, target: str) -> str:
    """What the session printed, and its drop lines, from ktap_smoke's hex dump."""
    out = result.stdout.decode() if isinstance(result.stdout, bytes) else result.stdout
    records, status = harness.smoke_records(out, get_target(target))
    text, _, drops = harness.session_text(image, records, status)
    return text + "".join(d + "\n" for d in drops)


def ns_of(result) -> int | None:
    out = result.stdout.decode() if isinstance(result.stdout, bytes) else result.stdout
    m = re.search(r"cmd: 0 ns (\d+)", out)
    return int(m.group(1)) if m else None


def ebpf_commands(kind: str, name: str, write: list[str], jit: bool) -> dict:
    """The eBPF runs of one script, JIT off then on, each timed by ktap_smoke -b."""
    run = ["/ktaprun", f"/{kind}-{name}-ebpf.kbc", "--", SMOKE, "-b", "-w", "300", "--", *write]
    runs = {(kind, f"ebpf {name}"): [["/bin/ktapw", "write-file", JIT_SYSCTL, "0"], run]}
    if jit:
        runs[(kind, f"ebpf jit {name}")] = [["/bin/ktapw", "write-file", JIT_SYSCTL, "1"], run]
    return runs


def ply_commands(kind: str, write: list[str]) -> dict:
    """ply attached, the timed writes 2 s later, then SIGINT: ply prints its map."""
    timed = ["/bin/ktapw", "after", "2000", SMOKE, "-b", "-w", "0", "--", *write]
    return {(kind, "ply size"): [["/ply", "-S", "-e", PLY_SCRIPTS[kind]]],
            (kind, "ply count"): [["/bin/ktapw", "both", "/bin/ktapw", "intafter", "6000", "/ply",
                                   PLY_SCRIPTS[kind], "::", *timed]]}


def dumped_insns(out: str) -> int:
    """Instructions in `ply -S`'s listing (numbered lines; a map load is one)."""
    return len(re.findall(r"^\s*\d+\t", out, re.M))


def measure(target: str, n: int, kernel: str = DEFAULT_KERNEL, ply: Path | None = None) -> dict:
    """{(probe kind, "empty"|"count"|"native empty"|"native count"): added
    instructions per write, "noise": ..., "size"/"alloc": of ktapvm.ko}"""
    kdir = boot_kernel(target, kernel).directory
    ko = kmod.build_module(target, kdir)
    native = build_native(target, kdir)
    smoke = harness.build_smoke_client(target)
    write = ["/bin/ktapw", "write", str(n)]
    timed = [SMOKE, "-b", "-w", "300", "--", *write]
    images, refused = {}, ""
    with tempfile.TemporaryDirectory(prefix="ktap-bench-") as tmp:
        files = {"/ktapvm.ko": ko, "/ktap_native.ko": native, SMOKE: smoke}
        commands = {"bare1": [timed], "bare2": [timed]}
        for kind, (_, _, on) in PROBES.items():
            for mode in HANDLERS:
                commands[(kind, f"native {mode}")] = [
                    ["/bin/ktapw", "insmod", "/ktap_native.ko", f"mode={mode} on={on}"], timed,
                    ["/bin/ktapw", "rmmod", "ktap_native"]]
        files["/ktaprun"] = runner.build_ktaprun(target)
        for kind, (event, _, _) in PROBES.items():
            for name, text in HANDLERS.items():
                img = images[(kind, f"ebpf {name}")] = api.compile_source(
                    Source(f"{name}.kp", text.format(event=event)), target, backend="ebpf")
                path = Path(tmp) / f"{kind}-{name}-ebpf.kbc"
                path.write_bytes(bc.dump(img))
                files[f"/{kind}-{name}-ebpf.kbc"] = path
                gaps = jit_gaps(img)
                if gaps:
                    refused = f"{target}'s JIT lacks {', '.join(gaps)}"
                commands.update(ebpf_commands(kind, name, write, not gaps))
            if ply is not None:
                files["/ply"] = ply
                commands.update(ply_commands(kind, write))
        commands["ktapvm"] = [["/bin/ktapw", "insmod", "/ktapvm.ko"]]
        for kind, (event, spec, _) in PROBES.items():
            for name, text in HANDLERS.items():
                img = images[(kind, name)] = api.compile_source(
                    Source(f"{name}.kp", text.format(event=event)), target)
                path = Path(tmp) / f"{kind}-{name}.kbc"
                path.write_bytes(bc.dump(img))
                files[f"/{kind}-{name}.kbc"] = path
                commands[(kind, name)] = [[SMOKE, "-w", "300", f"/{kind}-{name}.kbc", spec,
                                           "--", *write]]
        commands["rmmod"] = [["/bin/ktapw", "rmmod", kmod.MODULE_NAME]]
        flat = [c for cs in commands.values() for c in cs]
        run = run_commands(target, flat, extra_files=files, timeout=900,
                           deterministic=True, console_loglevel=7, kernel=kernel, cpus=1)
    results = iter(run.results)
    ns = {}
    ply_insns = {}
    for name, cs in commands.items():
        for c, r in zip(cs, results):
            if c[:2] in (["/bin/ktapw", "insmod"], ["/bin/ktapw", "rmmod"],
                         ["/bin/ktapw", "write-file"]):
                if r.status != 0:
                    raise SystemExit(f"{target}: {' '.join(c)} failed: {r.output}")
                continue
            out = r.stdout.decode(errors="replace")
            if name[1:] == ("ply size",):
                ply_insns[name[0]] = dumped_insns(out)
                continue
            ns[name] = ns_of(r)
            if name[1] == "ply count" and not re.search(rf"ktapw\b.*\b{n}\b", out):
                raise SystemExit(f"{target}: ply {name[0]} did not count {n} writes: {out!r}")
            if name[1] in ("ebpf count", "ebpf jit count"):
                if f"ktapw={n}\n" not in out or r.status != 0:
                    raise SystemExit(f"{target}: eBPF {name[0]} count printed {out!r}, status "
                                     f"{r.status}, not 'ktapw={n}'")
                continue
            # ktapvm's count handler must have counted every write, dropping none
            if name in images and name[1] == "count":
                printed = session_output(r, images[name], target)
                if printed != f"ktapw={n}\n":
                    raise SystemExit(f"{target}: ktapvm {name[0]} count printed {printed!r}, "
                                     f"not 'ktapw={n}'")
    if None in ns.values():
        raise SystemExit(f"{target}: a run failed:\n" + "\n".join(str(r.output) for r in run.results))
    counted = re.findall(r"ktap_native: ktapw (\d+)", run.console)
    if counted != [str(n)] * len(PROBES):
        raise SystemExit(f"{target}: the native module counted {counted} ktapw writes, "
                         f"not {[str(n)] * len(PROBES)}")
    bare = min(ns["bare1"], ns["bare2"])
    size, alloc = module_size(ko)
    added = {k: (v - bare) / n for k, v in ns.items() if not str(k).startswith("bare")}
    ktaprun = runner.stripped_size(runner.build_ktaprun(target))
    insns = {kind: program_insns(images[(kind, "ebpf count")]) for kind in PROBES}
    return {"noise": abs(ns["bare1"] - ns["bare2"]) / n, **added, "size": size, "alloc": alloc,
            "ktaprun": ktaprun, "insns": insns, "ply insns": ply_insns, "jit refused": refused}


def program_insns(image: bc.Image) -> int:
    """The program's instructions, a 64-bit load (two slots) counted once, as ply counts."""
    insns = image.ebpf.programs[0].insns
    return len(insns) - sum(1 for i in insns if i.code == 0x18)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-t", "--target", action="append", choices=target_names())
    ap.add_argument("--kernel", default=DEFAULT_KERNEL, choices=KERNEL_CHOICES)
    ap.add_argument("-n", "--writes", type=int, default=20000)
    ap.add_argument("--ply", action="append", default=[], metavar="TARGET=PATH",
                    help="a static ply for TARGET (bench/build_ply.sh), run beside the eBPF backend")
    args = ap.parse_args()
    plys = dict(p.split("=", 1) for p in args.ply)
    print(f"added guest instructions per write(2), kernel {args.kernel}")
    print(f"{'target':8} {'probe':10} {'ktapvm empty':>12} {'ktapvm count':>12} {'native empty':>12} "
          f"{'native count':>12} {'count ratio':>11} {'noise':>6} {'ktapvm.ko':>10} {'loaded':>9} "
          f"{'ktaprun':>9}")
    rows = []
    for name in args.target or target_names():
        m = measure(name, args.writes, args.kernel,
                    Path(plys[name]) if name in plys else None)
        rows.append((name, m))
        for kind in PROBES:
            count, native = m[(kind, "count")], m[(kind, "native count")]
            print(f"{name:8} {kind:10} {m[(kind, 'empty')]:>12.0f} {count:>12.0f} "
                  f"{m[(kind, 'native empty')]:>12.0f} {native:>12.0f} {count / native:>10.2f}x "
                  f"{m['noise']:>6.1f} {m['size'] / 1024:>6.0f} KiB {m['alloc'] / 1024:>5.0f} KiB "
                  f"{m['ktaprun'] / 1024:>5.0f} KiB", flush=True)
    print("\neBPF backend, same boots (ratios of the count script's added cost)")
    print(f"{'target':8} {'probe':10} {'JIT':4} {'empty':>6} {'count':>6} {'/ native':>9} "
          f"{'/ ktapvm':>9} {'ply':>6} {'/ ply':>7} {'insns':>6} {'ply':>4}")
    for name, m in rows:
        for kind in PROBES:
            ply = m.get((kind, "ply count"))
            for jit in ("off", "on"):
                tag = "ebpf jit " if jit == "on" else "ebpf "
                if (kind, tag + "count") not in m:
                    print(f"{name:8} {kind:10} {jit:4} (n/a: {m['jit refused']})")
                    continue
                count = m[(kind, tag + "count")]
                vs_ply = f"{count / ply:>6.2f}x" if ply and jit == "on" else f"{'-':>7}"
                print(f"{name:8} {kind:10} {jit:4} {m[(kind, tag + 'empty')]:>6.0f} {count:>6.0f} "
                      f"{count / m[(kind, 'native count')]:>8.2f}x "
                      f"{count / m[(kind, 'count')]:>8.2f}x "
                      f"{ply if ply else 0:>6.0f} {vs_ply} {m['insns'][kind]:>6} "
                      f"{m['ply insns'].get(kind, '-'):>4}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
