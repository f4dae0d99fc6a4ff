"""The C core of ktapvm run in user space, for unit, fuzz and differential tests:
the host harness (kmod/host/ktap_harness.c) built with the system cc, the events
stream it reads (from a `ktap sim` events file), its verdicts and records, the
reference VM's output beside them, and the module's own smoke client
(kmod/tests/ktap_smoke.c). Tests and benchmarks use this; the product does not."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from ktap.backends.kbc import bytecode as bc
from ktap.backends.kbc.records import STATE
from ktap.build import render as gen
from ktap.build.kbuild import DEFAULT_BUILD_DIR, KmodError
from ktap.build.program import build_program
from ktap.core.diagnostics import Loc, RuntimeErr
from ktap.core.paths import KMOD_DIR
from ktap.core.targets import Target, get_target
from ktap.core.tools import find_cc, require_cross_gcc
from ktap.events import kinds
from ktap.events import specs as probes
from ktap.refvm.output import Formatter
from ktap.refvm.records import Status, decode_records
from ktap.refvm.sim import Session

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
    target = get_target(target)
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


# -- the smoke client -------------------------------------------------------------
def smoke_records(stdout: str, target: Target) -> tuple[list, Status | None]:
    """The records a ktap_smoke run dumped ("R <hex>" lines), decoded."""
    data = bytes.fromhex("".join(l[2:] for l in stdout.splitlines() if l.startswith("R ")))
    return decode_records(data, target)


def build_smoke_client(target: Target | str, build_dir: Path = DEFAULT_BUILD_DIR) -> Path:
    """kmod/tests/ktap_smoke.c built static with the target's cross gcc: the
    module's own test client of /dev/ktap (not ktaprun)."""
    target = get_target(target)
    gcc = require_cross_gcc(target)
    out = build_dir / target.name
    headers = gen.gen_dir(target, out)
    flags = ["-static", "-O2", "-s", "-Wall", *gen.include_flags(headers)]
    return build_program(gcc, flags, [SMOKE_SOURCE], gen.all_headers(headers),
                         out, "ktap_smoke", lambda err: KmodError(
                             f"building ktap_smoke for {target.name} failed:\n{err}"))
