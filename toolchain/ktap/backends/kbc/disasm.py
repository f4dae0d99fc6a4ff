"""Disassembly listings of KBC images, driven by the opcode table."""
from __future__ import annotations

from ktap.backends.ebpf.disasm import section_text
from ktap.backends.kbc import bytecode as bc
from ktap.backends.kbc import opcodes
from ktap.events.kinds import EV_END, EVENT_KIND_NAMES
from ktap.frontend import program
from ktap.frontend import builtins


def _operand(img: bc.Image, p: bc.Proto, kind: str, value: int, pc: int, words: int) -> str:
    if kind == "R":
        return f"r{value}"
    if kind == "J":
        return f"->{pc + words + value}"
    if kind == "K":
        return f"k{value}" + (f"({p.consts[value]!r})" if value < len(p.consts) else "")
    if kind == "U":
        g = p.upvals[value] if value < len(p.upvals) else None
        name = img.globals[g] if g is not None and g < len(img.globals) else "?"
        return f"u{value}({name})"
    if kind == "P":
        return f"f{value}" + (f"({img.protos[value].name})" if value < len(img.protos) else "")
    if kind == "B":
        return builtins.BUILTINS[value].name if value < len(builtins.BUILTINS) else f"b{value}?"
    if kind == "V":
        return builtins.VARIABLES[value].name if value < len(builtins.VARIABLES) else f"v{value}?"
    if kind == "F":
        return f"fmt{value}" + (f"({img.formats[value]!r})" if value < len(img.formats) else "")
    if kind == "T":
        return f"t{value}"
    if kind == "N":
        return f"arg{value}"
    if kind == "D":
        return f"field{value}"
    return str(value)


def disassemble(img: bc.Image) -> str:
    t = img.target
    out = [f"; KBC image for {t.name} ({t.byte_order}-endian, {t.word_size * 8}-bit), "
           f"source {img.source_name!r}"]
    lim = img.limits
    out.append("; limits: " + ", ".join(f"{n}={getattr(lim, n)}" for n in program.Limits.FIELDS))
    if img.globals:
        out.append("; globals: " + ", ".join(f"g{i}={n}" for i, n in enumerate(img.globals)))
    for i, d in enumerate(img.tables):
        out.append(f"; table t{i}: flags={d.flags}" +
                   (f" lhist({d.lmin}, {d.lmax}, {d.lstep})" if d.flags & program.TABLE_LINEAR else ""))
    for i, f in enumerate(img.formats):
        out.append(f"; format fmt{i}: {f!r}")
    for i, e in enumerate(img.events):
        extra = []
        if e.offset:
            extra.append(f"offset={e.offset:#x}")
        if e.period_ns:
            extra.append(f"period={e.period_ns}ns")
        if e.fields:
            extra.append("fields=" + ",".join(e.fields))
        if e.name not in e.spec and e.kind != EV_END:
            extra.insert(0, f"name={e.name}")      # a glob expanded on the host
        out.append(f"; event {i}: {EVENT_KIND_NAMES.get(e.kind, e.kind)} {e.spec!r} -> "
                   f"f{e.handler} " + " ".join(extra))
    for i, p in enumerate(img.protos):
        out.append("")
        out.append(f"function f{i} {p.name!r} ({program.KIND_NAMES.get(p.kind, p.kind)}, "
                   f"{p.nparams} params, frame {p.frame_size}, {len(p.code)} words)")
        pc = 0
        while pc < len(p.code):
            opcode = p.code[pc] & 0xFF
            line = p.lines[pc] if pc < len(p.lines) else 0
            if opcode >= opcodes.NUM_OPS or pc + opcodes.OPS[opcode].words > len(p.code):
                out.append(f"  {pc:4d}  [{line:3d}]  .word 0x{p.code[pc]:08x}")
                pc += 1
                continue
            d = opcodes.decode(p.code, pc)
            op = d.op
            kinds = [op.a, op.b] + ([op.c] if op.fmt == "ABC" else [])
            vals = [d.a, d.b] + ([d.c] if op.fmt == "ABC" else [])
            if op.name == "TADDI":
                vals[2] = opcodes.sign8(d.c)
            if op.fmt == "AX64":
                kinds, vals = [op.a, "I"], [d.a, d.b]
            ops = [_operand(img, p, k, v, pc, op.words) for k, v in zip(kinds, vals) if k not in "-"]
            out.append(f"  {pc:4d}  [{line:3d}]  {op.name:<10} {' '.join(ops)}".rstrip())
            pc += op.words
    if img.ebpf is not None:
        out += section_text(img.ebpf, [e.spec for e in img.events])
    return "\n".join(out) + "\n"
