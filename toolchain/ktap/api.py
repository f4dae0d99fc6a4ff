"""The toolchain's Python API: what the CLI and SCons call."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ktap.backends.kbc import bytecode as bc
from ktap.backends.ebpf import codegen as ebpf_codegen
from ktap.backends.kbc.codegen import generate
from ktap.ir.compiler import compile_program
from ktap.core.diagnostics import KtapError, SemanticError, Source
from ktap.frontend import ast as A
from ktap.frontend.parser import parse
from ktap.frontend.sema import analyze
from ktap.core.targets import get_target
from ktap.backends.kbc.verifier import verify
from ktap.symbols.resolve import resolve_events
from ktap.symbols.uresolve import UserProbeError, resolve_user_events
from ktap.backends.kbc import opcodes
from ktap.events.kinds import EV_TRACEPOINT, kind
from ktap.events.specs import known_subsystem
from ktap.frontend.program import Limits


def read_source(path: str) -> Source:
    try:
        with open(path, encoding="utf-8") as f:
            return Source(path, f.read())
    except OSError as e:
        raise KtapError(f"cannot read script: {e.strerror}", filename=path) from None
    except UnicodeDecodeError:
        raise KtapError("script is not valid UTF-8 text", filename=path) from None


@dataclass
class KernelInfo:
    """What is known offline about the target kernel: any of a vmlinux, a
    System.map or a profile directory (`ktap target sync`)."""
    vmlinux: str | None = None
    system_map: str | None = None
    profile: str | None = None

    def __bool__(self) -> bool:
        return bool(self.vmlinux or self.system_map or self.profile)


BACKENDS = ("ktapvm", "ebpf")
BACKEND_CHOICES = BACKENDS + ("auto",)


def choose_backend(requested: str, config: dict[str, str] | None,
                   where: str = "the target kernel") -> tuple[str, str]:
    """The backend to compile for, and why. "auto" reads the kernel's config
    (a target profile's, or a build tree's): ktapvm where the module can
    load, eBPF where it cannot and the kernel has what eBPF needs."""
    if requested != "auto":
        return requested, f"--backend {requested}"
    if not config:
        return "ktapvm", (f"auto: no kernel config for {where} (--profile DIR gives one): "
                          "ktapvm, the default")
    on = lambda option: config.get(option, "n") in ("y", "m")     # noqa: E731
    if not on("CONFIG_MODULES"):
        blocker = "CONFIG_MODULES is off"
    elif on("CONFIG_MODULE_SIG_FORCE"):
        blocker = "CONFIG_MODULE_SIG_FORCE refuses the unsigned ktapvm.ko"
    elif not on("CONFIG_KPROBES"):
        blocker = "CONFIG_KPROBES is off"
    else:
        return "ktapvm", f"auto: {where} loads modules (CONFIG_MODULES, CONFIG_KPROBES)"
    missing = [o for o in ("CONFIG_BPF_SYSCALL", "CONFIG_BPF_EVENTS") if not on(o)]
    if missing:
        raise KtapError(f"no backend can run on {where}: ktapvm cannot ({blocker}) and "
                        f"neither can eBPF ({' and '.join(missing)} off)")
    return "ebpf", f"auto: {blocker} on {where}; it has CONFIG_BPF_SYSCALL and CONFIG_BPF_EVENTS"


def compile_source(src: Source, target_name: str, limits: dict[str, int] | None = None,
                   kernel: KernelInfo | None = None, warn=None,
                   backend: str = "ktapvm", checked_later: bool = False,
                   sysroot: str | None = None, resolve_user: bool = True) -> bc.Image:
    """Parses, analyses, compiles and verifies. Raises KtapError on any problem.
    With `kernel`, probes are checked against that kernel and globs expanded;
    `warn(text)` receives its warnings and notices. backend "ebpf" adds the
    handlers as eBPF programs (docs/ebpf.md). checked_later: a board checks
    the probes as it attaches them (run commands), so without `kernel` no
    warning says they went unchecked. sysroot: the host copy of the board's
    files, where user-space probes are resolved (resolve_user=False leaves
    them as written: `ktap sim` feeds events by name)."""
    target = get_target(target_name)
    base = Limits(**(limits or {}))
    script = parse(src)
    program = analyze(script, src, base, set(limits or {}))
    ir_program = compile_program(script, program, src)
    image = generate(ir_program, target)
    if resolve_user:
        image.events = resolve_user_probes(image, script, src, sysroot)
    if kernel:
        image.events = resolve_probes(image, script, src, kernel, warn)
    else:
        # checked_later: the board checks the probes when it attaches them,
        # so no warning says they went unchecked
        check_probes_offline(script, src, None if checked_later else warn)
    if backend == "ebpf":
        ebpf_codegen.generate(ir_program, image, src, warn)
    verify(image, src)
    return image


def highest_arg(image: bc.Image) -> int:
    """The highest argN any function reads: what user probes fetch."""
    arg, top = opcodes.BY_NAME["ARG"], 0
    for proto in image.protos:
        pc = 0
        while pc < len(proto.code):
            op = opcodes.decode(proto.code, pc)
            if op.op is arg:
                top = max(top, op.b)
            pc += 3 if op.op.fmt == "AX64" else 1
    return top


def resolve_user_probes(image: bc.Image, script, src: Source, sysroot: str | None) -> list:
    """User-space probes resolved in the sysroot; errors point at the probe."""
    try:
        return resolve_user_events(image.events, image.target, sysroot, highest_arg(image))
    except UserProbeError as e:
        where = {n.spec: n.spec_loc or n.loc for n in script.body if isinstance(n, A.Probe)}
        raise SemanticError(f"probe '{e.spec}': {e.message}", src, where.get(e.spec)) from None


def check_probes_offline(script, src: Source, warn) -> None:
    """Without a kernel to check probes against: a tracepoint subsystem that
    mainline Linux does not have is an error (a typo, or another tool's
    provider such as hardware: or kfunc:). The rest get one warning naming
    what would check them."""
    unchecked = []
    for node in script.body:
        if not isinstance(node, A.Probe):
            continue
        spec = node.spec_parsed
        if not (kind(spec.kind).symbol or kind(spec.kind).fields):
            continue            # timers and perf events: nothing to look up
        subsys = spec.name.split(":", 1)[0]
        if spec.kind == EV_TRACEPOINT and not known_subsystem(subsys):
            raise SemanticError(
                f"unknown probe provider '{subsys}:' (not a tracepoint subsystem of Linux "
                "5.10 to 6.12); ktap traces probe:SYMBOL, probe:SYMBOL%return, SUBSYSTEM:EVENT "
                "tracepoints, perf:EVENT, tick-N and profile-N. A subsystem only your kernel "
                "has is checked against it with --profile DIR or --vmlinux FILE",
                src, node.spec_loc or node.loc)
        unchecked.append(node.spec)
    if unchecked and warn is not None:
        warn(f"{src.name}: warning: probes not checked against a kernel: "
             f"{', '.join(unchecked)} (--profile DIR or --vmlinux FILE would check them)")


def resolve_probes(image: bc.Image, script, src: Source, kernel: KernelInfo, warn) -> list:
    """Checks the image's probes against one kernel; errors point at the probe."""
    res = resolve_events(image.events, image.target, vmlinux=kernel.vmlinux,
                         system_map=kernel.system_map, profile=kernel.profile)
    for p in res.problems:
        if p.severity != "error" and warn is not None:
            warn(p.render(src.name))
    errors = [p for p in res.problems if p.severity == "error"]
    if errors:
        where = {n.spec: n.spec_loc or n.loc for n in script.body if isinstance(n, A.Probe)}
        first = errors[0]
        message = "\n".join((f"probe '{p.spec}': " if p.spec else "") + p.message for p in errors)
        raise SemanticError(message, src, where.get(first.spec))
    return res.events


def compile_file(path: str, target_name: str, out: str | None = None,
                 limits: dict[str, int] | None = None, kernel: KernelInfo | None = None,
                 warn=None, backend: str = "ktapvm") -> bc.Image:
    image = compile_source(read_source(path), target_name, limits, kernel, warn, backend)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(bc.dump(image))
    return image


def load_image(path: str) -> bc.Image:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KtapError(f"cannot read image: {e.strerror}", filename=path) from None
    return bc.load(data, name=path)
