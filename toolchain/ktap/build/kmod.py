"""ktapvm, the kernel module, and its C core (kmod/): builds and runs them.

The core (loader, verifier, interpreter) is plain C reading headers generated
from the Python tables (build/render.py). It builds here as a user-space
harness for unit, fuzz and differential tests, and, with the module's device
and probe providers, as ktapvm.ko with kbuild (build/kbuild.py).

This module also speaks the harness's two protocols: the events stream it
reads (from a `ktap sim` events file) and the binary output records it writes
(docs/kmod.md), decoded by build/records.py into output.py's record tuples.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from ktap.backends.kbc import bytecode as bc
from ktap.backends.kbc.records import STATE
from ktap.build import render as gen
from ktap.build.kbuild import DEFAULT_BUILD_DIR, KmodError, kbuild, module_warnings
from ktap.build.program import build_program
from ktap.build.records import RecordReader, Status, TableRef, decode_records
from ktap.build.render import CORE_SOURCES, render, template_context
from ktap.core.diagnostics import Loc, RuntimeErr
from ktap.core.paths import KMOD_DIR
from ktap.core.targets import Target
from ktap.core.tools import find_cc, require_cross_gcc
from ktap.events import specs as probes
from ktap.refvm.output import Formatter
from ktap.refvm.sim import Session
from ktap.events import kinds

__all__ = ["CORE_SOURCES", "DEFAULT_BUILD_DIR", "KmodError", "MODULE_NAME", "RecordReader",
           "Status", "TableRef", "VerifyResult", "build_harness", "build_module",
           "build_smoke_client", "c_run", "c_verify", "decode_records", "encode_events",
           "kbuild", "module_files", "module_warnings", "reference_text", "render",
           "session_text", "smoke_records", "template_context"]

HARNESS_SOURCE = KMOD_DIR / "host" / "ktap_harness.c"
SMOKE_SOURCE = KMOD_DIR / "tests" / "ktap_smoke.c"
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer")
HARNESS_FLAGS = ("-std=gnu11", "-O1", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter",
                 "-Werror=implicit-function-declaration")


# -- the host harness ---------------------------------------------------------
def sanitizers_work(cc: str, work: Path) -> bool:
    """Whether cc can link a -fsanitize=address,undefined program here."""
    work.mkdir(parents=True, exist_ok=True)
    src = work / "probe.c"
    src.write_text("int main(void) { return 0; }\n")
    r = subprocess.run([cc, *SANITIZE, str(src), "-o", str(work / "probe")],
                       capture_output=True)
    return r.returncode == 0


def build_harness(target: Target | str, build_dir: Path = DEFAULT_BUILD_DIR,
                  sanitize: bool = True, cc: str | None = None) -> Path:
    """kmod/host/ktap_harness.c and the core, built for `target` with the
    system cc: build_dir/<target>/ktap_harness-<hash>, rebuilt only when a
    source, a header, the compiler or the flags change."""
    target = gen.as_target(target)
    cc = cc or find_cc()
    if cc is None:
        raise KmodError("no C compiler (cc, gcc or clang) found")
    out = build_dir / target.name
    headers = gen.gen_dir(target, out)
    flags = [*HARNESS_FLAGS, *gen.include_flags(headers)]
    if sanitize and sanitizers_work(cc, out / "probe"):
        flags += SANITIZE
    return build_program(cc, flags, [*gen.core_sources(), HARNESS_SOURCE],
                         gen.all_headers(headers), out, "ktap_harness",
                         lambda err: KmodError(f"building the harness failed:\n{err}"))


# -- the events stream ------------------------------------------------------
def _hex(s: str) -> str:
    return "x" + s.encode("utf-8", "surrogateescape").hex()


def _fieldval(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return "s:" + _hex(v)
    return f"n:{int(v)}"


def encode_events(image: bc.Image, events) -> str:
    """Turns a sim.EventsFile into the harness's line protocol. The matching of
    fired probes to the image's events (globs included) is done here, as
    `ktap sim` does it."""
    lines = []
    for addr, s in events.memory.items():
        lines.append(f"mem k {addr & 0xFFFFFFFFFFFFFFFF} {_hex(s)}")
    for addr, s in events.user_memory.items():
        lines.append(f"mem u {addr & 0xFFFFFFFFFFFFFFFF} {_hex(s)}")
    specs = [None if e.kind == kinds.EV_END else probes.parse_spec(e.spec) for e in image.events]
    for ev in events.events:
        c = ev.ctx
        targets = [i for i, e in enumerate(image.events)
                   if e.kind != kinds.EV_END and probes.matches(specs[i], ev.spec)]
        tid = c.tid if c.tid is not None else c.pid
        lines.append(f"ctx {c.pid} {tid} {c.uid} {c.cpu} {_hex(c.execname)} "
                     f"{_hex(c.probename)} {int(c.is_tracepoint)}")
        if c.retval is not None:
            lines.append(f"retval {c.retval}")
        lines.append(" ".join(["args", str(len(c.args))] + [str(a) for a in c.args]))
        lines.append(" ".join(["stack", str(len(c.stack))]
                              + [str(a & 0xFFFFFFFFFFFFFFFF) for a in c.stack]))
        values = list(c.fields.values())
        lines.append(" ".join(["fields", str(len(values))] + [_fieldval(v) for v in values]))
        for i in targets:
            names = image.events[i].fields
            lines.append(" ".join(["named", str(i), str(len(names))]
                                  + [_fieldval(c.fields.get(n)) for n in names]))
        time = "-" if ev.time_ns is None else str(ev.time_ns)
        lines.append(" ".join(["fire", str(ev.repeat), time, str(len(targets))]
                              + [str(i) for i in targets]))
    return "\n".join(lines) + "\n"


# -- running ----------------------------------------------------------------
@dataclass
class VerifyResult:
    reason: str            # "ok", a verifier.REASONS code, or "bad-image"
    proto: int
    pc: int
    message: str


def c_verify(harness: Path, image_path: Path) -> VerifyResult:
    r = subprocess.run([str(harness), "verify", str(image_path)], capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0 or r.stderr.strip():
        raise KmodError(f"harness failed (status {r.returncode}): {r.stderr}")
    line = r.stdout.strip()
    if line == "ok":
        return VerifyResult("ok", -1, -1, "")
    reason, proto, pc, msg = (line.split(" ", 3) + [""])[:4]
    return VerifyResult(reason, int(proto), int(pc), msg)


def c_run(harness: Path, image_path: Path, events_text: str, work: Path,
          timeout: float = 120) -> tuple[list, Status]:
    """Runs a session on the C core; returns the decoded records and status."""
    work.mkdir(parents=True, exist_ok=True)
    ev = work / "events.stream"
    ev.write_text(events_text)
    r = subprocess.run([str(harness), "run", str(image_path), str(ev)], capture_output=True,
                       timeout=timeout)
    if r.returncode != 0 or r.stderr:
        raise KmodError(f"harness failed (status {r.returncode}): "
                        f"{r.stderr.decode(errors='replace')}{r.stdout[:200]!r}")
    target = bc.load(image_path.read_bytes()).target
    records, status = decode_records(r.stdout, target)
    if status is None:
        raise KmodError("the record stream has no status record")
    return records, status


def session_text(image: bc.Image, records: list, status: Status,
                 source=None) -> tuple[str, int, list[str]]:
    """What `ktap sim` would show for a C session: (stdout, exit status, stderr
    lines). A runtime error is rendered like the CLI renders RuntimeErr."""
    fmt = Formatter(image)
    out = "".join(fmt.render(r) for r in records)
    if status.state == STATE["error"]:
        err = RuntimeErr(status.message, source=source, loc=Loc(status.line, status.col),
                         filename=source.name if source else image.source_name)
        return out, err.exit_status, [err.render()]
    drops = [f"ktap: {n} events dropped ({reason})" for reason, n in sorted(status.drops.items())]
    return out, status.exit_code or 0, drops


def reference_text(image: bc.Image, events, source=None) -> tuple[str, int, list[str]]:
    """The same triple from the reference VM (sim.Session)."""
    parts: list[str] = []
    s = Session(image, parts.append, source, events)
    try:
        status = s.run()
    except RuntimeErr as e:
        return "".join(parts), e.exit_status, [e.render()]
    return "".join(parts), status, s.drop_report()


# -- the kernel module ----------------------------------------------------------
MODULE_NAME = "ktapvm"
MODULE_MAIN = ("ktapvm_main.c", "ktapvm_events.c")
# Objects that run in probe context get -O2: the board kernels (like most
# embedded ones) build with -Os, which leaves the interpreter's small helpers
# out of line and memset()s every value; handlers cost about a third less at
# -O2 (docs/performance.md). The loader and verifier keep the kernel's flags.
COLD_SOURCES = ("ktap_load.c", "ktap_verify.c")


def module_sources() -> list[str]:
    """The module's C files, relative to kmod/: the core, the device and attach
    code, and one file per event provider (kmod/events/)."""
    providers = sorted(p.relative_to(KMOD_DIR).as_posix() for p in (KMOD_DIR / "events").glob("*.c"))
    return [*MODULE_MAIN, *CORE_SOURCES, *providers]


def kbuild_file(target: Target, sources: list[str]) -> str:
    """The Kbuild of ktapvm.ko for these sources."""
    objs = [s[:-2] + ".o" for s in sources]
    hot = [o for o, s in zip(objs, sources) if s not in COLD_SOURCES]
    return "\n".join([
        f"# Kbuild - GENERATED for {target.name} by toolchain/ktap/build/kmod.py (build_module).",
        f"# make -C <kernel build dir> M=$PWD ARCH={target.kernel_arch} "
        f"CROSS_COMPILE={target.cross_compile} modules",
        f"obj-m := {MODULE_NAME}.o",
        f"{MODULE_NAME}-y := " + " ".join(objs),
        f"ccflags-y := -I$(src) -I$(src)/{gen.GEN_DIR_NAME} -Wno-declaration-after-statement",
        "# -O2 for what runs in probe context (the kernel's own -Os for the rest)",
        *[f"CFLAGS_{o} := -O2" for o in hot], ""])


def module_files(target: Target | str, build_dir: Path = DEFAULT_BUILD_DIR) -> dict[str, Path | str]:
    """Everything kbuild needs for ktapvm.ko, by path inside the module dir."""
    target = gen.as_target(target)
    headers = gen.gen_dir(target, build_dir / target.name)
    sources = module_sources()
    files: dict[str, Path | str] = {s: KMOD_DIR / s for s in sources}
    files.update({h.name: h for h in gen.headers()})
    files.update({f"{gen.GEN_DIR_NAME}/{h.name}": h for h in sorted(headers.iterdir())})
    files["Kbuild"] = kbuild_file(target, sources)
    return files


def build_module(target: Target | str, kdir: Path, build_dir: Path = DEFAULT_BUILD_DIR, *,
                 warnings_fatal: bool = False) -> Path:
    """ktapvm.ko for `target`, built with kbuild against the kernel build dir
    `kdir` (boards.kernels.ensure_kernel(target) gives the board kernel's):
    build_dir/<target>/module-<hash>/ktapvm.ko, cached by content. Raises
    KmodError with kbuild's output on failure (or, with warnings_fatal, when
    the compiler printed a warning)."""
    target = gen.as_target(target)
    return kbuild(target, module_files(target, build_dir), MODULE_NAME, kdir, build_dir,
                  prefix="module", warnings_fatal=warnings_fatal)


# -- the smoke client -------------------------------------------------------------
def smoke_records(stdout: str, target: Target) -> tuple[list, Status | None]:
    """The records a ktap_smoke run dumped ("R <hex>" lines), decoded."""
    data = bytes.fromhex("".join(l[2:] for l in stdout.splitlines() if l.startswith("R ")))
    return decode_records(data, target)


def build_smoke_client(target: Target | str, build_dir: Path = DEFAULT_BUILD_DIR) -> Path:
    """kmod/tests/ktap_smoke.c built static with the target's cross gcc: the
    module's own test client of /dev/ktap (not ktaprun)."""
    target = gen.as_target(target)
    gcc = require_cross_gcc(target)
    out = build_dir / target.name
    headers = gen.gen_dir(target, out)
    flags = ["-static", "-O2", "-s", "-Wall", *gen.include_flags(headers)]
    return build_program(gcc, flags, [SMOKE_SOURCE], gen.all_headers(headers),
                         out, "ktap_smoke", lambda err: KmodError(
                             f"building ktap_smoke for {target.name} failed:\n{err}"))
