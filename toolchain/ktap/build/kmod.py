"""ktapvm's C core: renders kmod/*.j2 for a target and builds the host harness.

The loader, verifier and interpreter in kmod/ are Jinja templates. Their
opcode, builtin, variable and reason tables come from opcodes.c_context() and
the other Python modules, and the byte order and word size are baked in per
target, so nothing is synchronised by hand. The same rendered files build as
kernel code (through kmod/ktap_shim_kernel.h) and, here, as a user-space
harness for unit, fuzz and differential tests.

This module also speaks the harness's two protocols: the events stream it
reads (from a `ktap sim` events file) and the binary output records it
writes (docs/kmod.md), decoded back into output.py's record tuples.
"""
from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from ktap.backends.kbc import bytecode as bc
from ktap.backends.kbc import opcodes, verifier
from ktap.frontend import printf, sema
from ktap.events import specs as probes
from ktap.core.tools import find_cc
from ktap.core.targets import Target, all_targets, get_target
from ktap.refvm.values import Agg, Stack
from ktap.core.paths import BUILD_DIR, KMOD_DIR

DEFAULT_BUILD_DIR = BUILD_DIR / "kmod"
HARNESS_SOURCE = "host/ktap_harness.c"
CORE_SOURCES = ("ktap_load.c", "ktap_verify.c", "ktap_vm.c")
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer")


class KmodError(Exception):
    pass


# -- rendering -------------------------------------------------------------
def template_context(target: Target) -> dict:
    """opcodes.c_context() plus the image-format, verifier and target facts."""
    ctx = dict(opcodes.c_context())
    ctx.update(
        target=target,
        targets=sorted(all_targets().values(), key=lambda t: t.id),
        formats=opcodes.FORMATS,
        magic_c="".join(f"\\x{b:02x}" for b in bc.MAGIC),
        version=bc.VERSION, check_int=bc.CHECK_INT, check_word=bc.CHECK_WORD,
        insn_size=bc.INSN_SIZE, number_size=bc.NUMBER_SIZE,
        max_count=bc.Reader.MAX_COUNT, k_number=bc.K_NUMBER, k_string=bc.K_STRING,
        kinds=[("SETUP", bc.SETUP), ("FUNCTION", bc.FUNCTION), ("HANDLER", bc.HANDLER)]
        + [("EV_" + n.upper(), k) for k, n in sorted(bc.EVENT_KIND_NAMES.items())
           if n != "trace_end"] + [("EV_END", bc.EV_END)],
        num_event_kinds=len(bc.EVENT_KIND_NAMES),
        table_log2=bc.TABLE_LOG2, table_linear=bc.TABLE_LINEAR,
        limit_fields=bc.Limits.FIELDS, limit_max=bc.Limits.MAXIMUM,
        max_frame=verifier.MAX_FRAME, max_code_words=verifier.MAX_CODE_WORDS,
        max_fields=verifier.MAX_FIELDS, max_lhist_buckets=sema.MAX_LHIST_BUCKETS,
        min_period=probes.MIN_PERIOD_NS, max_width=printf.MAX_WIDTH,
        conversions=printf.CONVERSIONS, reasons=list(verifier.REASONS),
        stack_default_depth=opcodes.STACK_DEFAULT_DEPTH,
    )
    by_code = {op.code: op.name for op in opcodes.OPS}
    ctx["dispatch"] = [by_code.get(code, "BAD") for code in range(256)]
    return ctx


def render(target: Target | str, out_dir: Path) -> list[Path]:
    """Renders every kmod/*.j2 for `target` into out_dir and copies the plain
    headers next to them. Returns the files written."""
    if isinstance(target, str):
        target = get_target(target)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(KMOD_DIR)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    ctx = template_context(target)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for tpl in sorted(KMOD_DIR.glob("*.j2")):
        dest = out_dir / tpl.name[:-3]
        dest.write_text(env.get_template(tpl.name).render(ctx))
        written.append(dest)
    for plain in sorted(KMOD_DIR.glob("*.h")):
        shutil.copy(plain, out_dir / plain.name)
        written.append(out_dir / plain.name)
    return written


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
    """Renders for `target` and builds kmod/host/ktap_harness with the system
    cc. Rebuilds only when the rendered sources or flags change."""
    if isinstance(target, str):
        target = get_target(target)
    cc = cc or find_cc()
    if cc is None:
        raise KmodError("no C compiler (cc, gcc or clang) found")
    out = build_dir / target.name
    files = render(target, out / "src")
    shutil.copy(KMOD_DIR / HARNESS_SOURCE, out / "src" / "ktap_harness.c")
    flags = ["-std=gnu11", "-O1", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter",
             "-Werror=implicit-function-declaration"]
    if sanitize and sanitizers_work(cc, out / "probe"):
        flags += list(SANITIZE)
    sources = [out / "src" / s for s in (*CORE_SOURCES, "ktap_harness.c")]
    digest = hashlib.sha256((cc + " ".join(flags)).encode())
    for f in sorted(files) + sources:
        digest.update(f.read_bytes())
    exe = out / f"ktap_harness-{digest.hexdigest()[:16]}"
    if not exe.exists():
        r = subprocess.run([cc, *flags, "-I", str(out / "src"), *map(str, sources),
                            "-o", str(exe)], capture_output=True, text=True)
        if r.returncode != 0:
            raise KmodError(f"building the harness failed:\n{r.stderr}")
    return exe


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
    specs = [None if e.kind == bc.EV_END else probes.parse_spec(e.spec) for e in image.events]
    for ev in events.events:
        c = ev.ctx
        targets = [i for i, e in enumerate(image.events)
                   if e.kind != bc.EV_END and probes.matches(specs[i], ev.spec)]
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


# -- output records ---------------------------------------------------------
REC_PRINTF, REC_PRINT, REC_DUMP, REC_PRINT_HIST, REC_HIST, REC_LHIST, REC_STATUS = range(1, 8)
VAL_NIL, VAL_FALSE, VAL_TRUE, VAL_NUM, VAL_STR, VAL_TABLE, VAL_AGG, VAL_STACK = range(8)


@dataclass
class Status:
    exit_code: int = 0
    state: int = 0                 # 0 ran to the end, 1 exit(), 2 runtime error
    line: int = 0
    col: int = 0
    proto: int = 0
    message: str = ""
    drops: dict[str, int] = field(default_factory=dict)


class TableRef:
    """A table value inside a record: only its kind is printable."""

    def __init__(self, desc: int):
        self.desc = desc


class RecordReader:
    """Decodes the binary records of docs/kmod.md, in the target's byte order."""

    def __init__(self, data: bytes, target: Target):
        self.data = data
        self.pos = 0
        self.p = target.struct_prefix

    def _get(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise KmodError(f"truncated record stream at byte {self.pos}")
        v = struct.unpack_from(self.p + fmt, self.data, self.pos)[0]
        self.pos += size
        return v

    def u8(self) -> int: return self._get("B")
    def u32(self) -> int: return self._get("I")
    def i64(self) -> int: return self._get("q")

    def text(self) -> str:
        n = self.u32()
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        return raw.decode("utf-8", "surrogateescape")

    def agg(self) -> Agg:
        a = Agg(self.i64(), self.i64(), self.i64(), self.i64())
        for _ in range(self.u32()):
            b = self.i64()
            a.log2[b] = self.i64()
        for _ in range(self.u32()):
            i = self.i64()
            a.linear[i] = self.i64()
        return a

    def value(self):
        tag = self.u8()
        if tag == VAL_NIL:
            return None
        if tag in (VAL_FALSE, VAL_TRUE):
            return tag == VAL_TRUE
        if tag == VAL_NUM:
            return self.i64()
        if tag == VAL_STR:
            return self.text()
        if tag == VAL_TABLE:
            return TableRef(self.u32())
        if tag == VAL_AGG:
            return self.agg()
        if tag == VAL_STACK:
            return Stack(self.i64() & 0xFFFFFFFFFFFFFFFF for _ in range(self.u32()))
        raise KmodError(f"unknown value tag {tag}")

    def values(self) -> list:
        return [self.value() for _ in range(self.u32())]

    def entries(self) -> list[tuple]:
        return [(self.value(), self.value()) for _ in range(self.u32())]

    def record(self):
        start = self.pos
        size, kind = self.u32(), self.u8()
        if kind == REC_PRINTF:
            rec = ("printf", self.u32(), self.values())
        elif kind == REC_PRINT:
            rec = ("print", self.values())
        elif kind == REC_DUMP:
            rec = ("dump", self.entries())
        elif kind == REC_PRINT_HIST:
            n = self.i64()
            rec = ("print_hist", self.entries(), n)
        elif kind in (REC_HIST, REC_LHIST):
            desc = self.u32()
            rec = ("hist" if kind == REC_HIST else "lhist", self.entries(), desc)
        elif kind == REC_STATUS:
            st = Status(self.i64(), self.u8(), self.u32(), self.u32(), self.u32(), self.text())
            for _ in range(self.u32()):
                reason = self.text()
                st.drops[reason] = self.i64()
            rec = st
        else:
            raise KmodError(f"unknown record kind {kind}")
        if self.pos - start != size:
            raise KmodError(f"record at byte {start} is {self.pos - start} bytes, says {size}")
        return rec

    def records(self) -> list:
        out = []
        while self.pos < len(self.data):
            out.append(self.record())
        return out


def decode_records(data: bytes, target: Target) -> tuple[list, Status | None]:
    recs = RecordReader(data, target).records()
    status = next((r for r in recs if isinstance(r, Status)), None)
    return [r for r in recs if not isinstance(r, Status)], status


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
    from ktap.core.diagnostics import Loc, RuntimeErr
    from ktap.refvm.output import Formatter

    fmt = Formatter(image)
    out = "".join(fmt.render(r) for r in records)
    if status.state == 2:
        err = RuntimeErr(status.message, source=source, loc=Loc(status.line, status.col),
                         filename=source.name if source else image.source_name)
        return out, err.exit_status, [err.render()]
    drops = [f"ktap: {n} events dropped ({reason})" for reason, n in sorted(status.drops.items())]
    return out, status.exit_code or 0, drops


def reference_text(image: bc.Image, events, source=None) -> tuple[str, int, list[str]]:
    """The same triple from the reference VM (sim.Session)."""
    from ktap.core.diagnostics import RuntimeErr
    from ktap.refvm.sim import Session

    parts: list[str] = []
    s = Session(image, parts.append, source, events)
    try:
        status = s.run()
    except RuntimeErr as e:
        return "".join(parts), e.exit_status, [e.render()]
    return "".join(parts), status, s.drop_report()


# -- the kernel module ----------------------------------------------------------
MODULE_NAME = "ktapvm"


def build_module(target: Target | str, kdir: Path | None = None,
                 build_dir: Path = DEFAULT_BUILD_DIR, *, warnings_fatal: bool = False) -> Path:
    """Renders kmod/*.j2 for `target` and builds ktapvm.ko with kbuild against
    the kernel build dir `kdir` (default: kernel.ensure_kernel(target)).

    The result is cached by the hash of the rendered sources, the kernel dir
    and its Module.symvers/.config: build/kmod/<target>/module-<hash>/ktapvm.ko.
    Raises KmodError with kbuild's output on failure (or, with
    warnings_fatal, when the compiler printed a warning)."""
    if isinstance(target, str):
        target = get_target(target)
    src = build_dir / target.name / "module-src"
    if src.exists():
        shutil.rmtree(src)
    return kbuild(target, render(target, src), MODULE_NAME, kdir, build_dir,
                  warnings_fatal=warnings_fatal)


def kbuild(target: Target, files: list[Path], name: str, kdir: Path | None = None,
           build_dir: Path = DEFAULT_BUILD_DIR, *, warnings_fatal: bool = False) -> Path:
    """Builds NAME.ko from `files` (sources and their Kbuild) with the
    target's cross compiler against `kdir`, cached by the hash of the files,
    the kernel dir and its .config/Module.symvers."""
    if kdir is None:
        from ktap.boards.kernels import ensure_kernel
        kdir = ensure_kernel(target)
    kdir = Path(kdir).resolve()
    for needed in (".config", "Module.symvers", "Makefile"):
        if not (kdir / needed).exists():
            raise KmodError(f"{kdir} is not a kernel build dir for modules (no {needed})")
    digest = hashlib.sha256(str(kdir).encode())
    for f in sorted(files):
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    for k in (".config", "Module.symvers"):
        digest.update((kdir / k).read_bytes())
    prefix = "module" if name == MODULE_NAME else name
    mdir = build_dir / target.name / f"{prefix}-{digest.hexdigest()[:16]}"
    ko = mdir / f"{name}.ko"
    if ko.exists():
        return ko
    if mdir.exists():
        shutil.rmtree(mdir)
    mdir.mkdir(parents=True)
    for f in files:
        shutil.copy2(f, mdir / f.name)
    cmd = ["make", "-C", str(kdir), f"M={mdir}", f"ARCH={target.kernel_arch}",
           f"CROSS_COMPILE={target.cross_compile}", "modules"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    log = r.stdout + r.stderr
    (mdir / "build.log").write_text(" ".join(cmd) + "\n" + log)
    if r.returncode != 0 or not ko.exists():
        raise KmodError(f"building {name}.ko for {target.name} failed:\n{log[-4000:]}")
    if warnings_fatal and "warning:" in log:
        ko.unlink()
        raise KmodError(f"{name}.ko for {target.name} built with warnings:\n{log[-4000:]}")
    return ko


def module_warnings(ko: Path) -> list[str]:
    """The compiler warnings printed when `ko` was built."""
    log = ko.parent / "build.log"
    return [l for l in log.read_text().splitlines() if "warning:" in l] if log.exists() else []


SMOKE_SOURCE = "tests/ktap_smoke.c"


def smoke_records(stdout: str, target: Target) -> tuple[list, Status | None]:
    """The records a ktap_smoke run dumped ("R <hex>" lines), decoded."""
    data = bytes.fromhex("".join(l[2:] for l in stdout.splitlines() if l.startswith("R ")))
    return decode_records(data, target)


def build_smoke_client(target: Target | str, build_dir: Path = DEFAULT_BUILD_DIR) -> Path:
    """kmod/tests/ktap_smoke.c built static with the target's cross gcc: the
    module's own test client of /dev/ktap (not ktaprun)."""
    if isinstance(target, str):
        target = get_target(target)
    gcc = f"{target.cross_compile}gcc"
    if not shutil.which(gcc):
        raise KmodError(f"{gcc} not found")
    src = KMOD_DIR / SMOKE_SOURCE
    digest = hashlib.sha256(gcc.encode() + src.read_bytes()
                            + (KMOD_DIR / "ktap_abi.h").read_bytes()).hexdigest()[:16]
    exe = build_dir / target.name / f"ktap_smoke-{digest}"
    if not exe.exists():
        exe.parent.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([gcc, "-static", "-O2", "-s", "-Wall", "-o", str(exe), str(src)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise KmodError(f"building ktap_smoke for {target.name} failed:\n{r.stderr}")
    return exe
