"""The eBPF backend's entry: given the IR and the KBC image the KBC backend
made from it (setup code and trace_end run from that, in ktaprun), add one
eBPF program per probe event and the maps they share."""
from __future__ import annotations

import dataclasses

from ktap.backends.ebpf import image as im
from ktap.backends.ebpf.frame import session_maps
from ktap.backends.ebpf.lower import PROG_TYPE, Lowering
from ktap.backends.ebpf.types import Inference, setup_facts
from ktap.backends.ebpf.inline import inline_calls
from ktap.backends.ebpf.unroll import unroll_loops
from ktap.backends.kbc import bytecode as bc
from ktap.core.diagnostics import Source
from ktap.ir import nodes as ir

SCRATCH_SLACK = 64


def fuse_global_adds(fn: ir.IRFunction) -> ir.IRFunction:
    """`g += x` compiles to GETUPV r, g ... ADD r, r, x; SETUPV r, g. On several
    CPUs that read-modify-write loses counts, so it becomes one atomic GADD g, x."""
    body = list(fn.body)
    out: list = []
    i = 0
    while i < len(body):
        item = body[i]
        fused = _fusable(body, i)
        if fused is not None:
            j, value = fused
            out.extend(body[i + 1:j])
            out.append(ir.Instr("GADD", (item.args[1], value), body[j].loc))
            i = j + 2
            continue
        out.append(item)
        i += 1
    return dataclasses.replace(fn, body=out)


def _fusable(body: list, i: int) -> tuple[int, ir.Reg] | None:
    item = body[i]
    if not isinstance(item, ir.Instr) or item.op != "GETUPV":
        return None
    r, g = item.args
    for j in range(i + 1, len(body) - 1):
        x = body[j]
        if isinstance(x, ir.LabelDef):
            return None
        if x.op == "ADD" and x.args[0] == r and x.args[1] == r:
            after = body[j + 1]
            if (isinstance(after, ir.Instr) and after.op == "SETUPV"
                    and after.args == (r, g) and x.args[2] != r):
                return j, x.args[2]
            return None
        if r in x.args or g in x.args:
            return None
    return None


def generate(prog: ir.IRProgram, image: bc.Image, src: Source, warn=None) -> None:
    """Adds the eBPF section to `image` (its events may have been expanded by
    symbol resolution; each keeps its handler's function index). `warn(text)`
    hears of instructions the target's JIT cannot compile."""
    facts = setup_facts(prog)
    handlers = sorted({ev.handler for ev in image.events if ev.kind in PROG_TYPE})
    functions = {fn.name: fn for fn in prog.functions}
    bodies = {i: fuse_global_adds(unroll_loops(inline_calls(prog.functions[i], functions, src),
                                               src))
              for i in handlers}
    # Until nothing changes: which tables hold what, what globals may hold.
    for _ in range(4):
        before = {k: set(v) for k, v in facts.global_stored.items()}
        for fn_index in handlers:
            Inference(bodies[fn_index], facts, src).run()
        if facts.global_stored == before:
            break
    inferred = {i: Inference(bodies[i], facts, src).run() for i in handlers}
    uses_probenames = any(item.args[1].name == "probename"
                          for fn in bodies.values() for item in fn.body
                          if isinstance(item, ir.Instr) and item.op == "LOADVAR")
    globals_index = {g: i for i, g in enumerate(image.globals)}
    maps = session_maps(facts, globals_index, image.tables, image.limits.table_entries,
                        uses_probenames)
    def lower_all(check_stopped: bool) -> list[Lowering]:
        done = []
        for ev_index, ev in enumerate(image.events):
            if ev.kind in PROG_TYPE:
                low = Lowering(bodies[ev.handler], ev.handler, ev.kind, ev.fields,
                               inferred[ev.handler], facts, maps, image.formats, image.target,
                               src)
                low.globals, low.tables, low.check_stopped = image.globals, image.tables, \
                    check_stopped
                low.prog = low.program(ev_index)
                done.append(low)
        return done

    # A session no handler can stop needs no "stopped?" test per event.
    lowered = lower_all(True)
    if not any(low.stops for low in lowered):
        lowered = lower_all(False)
    programs = [low.prog for low in lowered]
    record_max = max([low.record_max for low in lowered] + [0])
    maps.get("scratch").value_size = record_max + SCRATCH_SLACK
    image.ebpf = im.Section(maps.maps, programs)
    if warn is not None:
        for text in jit_gap_warnings(image, src):
            warn(text)


# What each gap of Target.bpf_jit_lacks looks like, by opcode
JIT_GAP_OPCODES = {"atomic64": {0xDB},                          # BPF_STX|BPF_ATOMIC|BPF_DW
                   "div64": {0x37, 0x3F, 0x97, 0x9F}}           # BPF_ALU64 DIV/MOD, K or X


def jit_gaps(image: bc.Image) -> dict[str, tuple[int, int]]:
    """{gap: (line, col) of the first instruction needing it} of the gaps in
    the target's JIT (Target.bpf_jit_lacks) the image's programs run into."""
    found = {}
    for gap in image.target.bpf_jit_lacks if image.ebpf is not None else ():
        at = next((p.lines[i] for p in image.ebpf.programs for i, insn in enumerate(p.insns)
                   if insn.code in JIT_GAP_OPCODES[gap]), None)
        if at is not None:
            found[gap] = at
    return found


def jit_gap_warnings(image: bc.Image, src: Source) -> list[str]:
    """One warning per instruction kind the target's JIT lacks, at the first
    script position that needs it: with the JIT on, the kernel refuses the
    program (it runs with net.core.bpf_jit_enable=0, in the interpreter)."""
    target, out = image.target, []
    for gap, (line, col) in jit_gaps(image).items():
        what = {"atomic64": "this update takes a 64-bit atomic add (handlers also read the "
                            "value, so it cannot be a per-CPU counter)",
                "div64": "this takes a 64-bit division or modulo"}[gap]
        out.append(f"{src.name}:{line}:{col}: warning: {what}, which {target.name}'s eBPF JIT "
                   "lacks: with net.core.bpf_jit_enable=1 the kernel refuses the program "
                   "(at 0 the kernel's interpreter runs it)")
    return out

