"""`ktap disasm` for the eBPF section: maps, then each program's instructions
in the kernel verifier's notation, with map names and script lines."""
from __future__ import annotations

from ktap.backends.ebpf import image as im
from ktap.backends.ebpf.insn import (ALU, ALU64, ALU_NAMES, HELPER_NAMES, JMP,
                                     JMP32, JMP_NAMES, LD, LDX, MAP_TYPE_NAMES,
                                     PROG_TYPE_NAMES, SIZE_BYTES, ST, STX, X, Insn)

SIZE_C = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}
ALU_SYMBOLS = {"add": "+=", "sub": "-=", "mul": "*=", "div": "/=", "or": "|=", "and": "&=",
               "lsh": "<<=", "rsh": ">>=", "mod": "%=", "xor": "^=", "mov": "=",
               "arsh": "s>>="}
JMP_SYMBOLS = {"jeq": "==", "jgt": ">", "jge": ">=", "jset": "&", "jne": "!=", "jsgt": "s>",
               "jsge": "s>=", "jlt": "<", "jle": "<=", "jslt": "s<", "jsle": "s<="}


def insn_text(i: Insn, maps: dict[int, str], nxt: Insn | None) -> str:
    cls, src_x = i.cls, i.code & X
    operand = f"r{i.src}" if src_x else str(i.imm)
    if cls in (ALU, ALU64):
        op = ALU_NAMES.get(i.code & 0xF0, "?")
        w = "" if cls == ALU64 else "w"
        if op == "neg":
            return f"{w or 'r'}{i.dst} = -{w or 'r'}{i.dst}"
        return f"{w or 'r'}{i.dst} {ALU_SYMBOLS.get(op, op)} {operand}"
    if cls in (JMP, JMP32):
        op = JMP_NAMES.get(i.code & 0xF0, "?")
        if op == "call":
            return f"call {HELPER_NAMES.get(i.imm, i.imm)}"
        if op == "exit":
            return "exit"
        if op == "ja":
            return f"goto {i.off:+d}"
        return f"if r{i.dst} {JMP_SYMBOLS.get(op, op)} {operand} goto {i.off:+d}"
    size = SIZE_C.get(SIZE_BYTES.get(i.code & 0x18, 0), "?")
    if cls == LD and nxt is not None:
        value = (i.imm & 0xFFFFFFFF) | (nxt.imm & 0xFFFFFFFF) << 32
        if i.src == 1:
            return f"r{i.dst} = map[{maps.get(value, '?')}]"
        return f"r{i.dst} = {value:#x} ll"
    if cls == LDX:
        return f"r{i.dst} = *({size} *)(r{i.src} {i.off:+d})"
    if cls == ST:
        return f"*({size} *)(r{i.dst} {i.off:+d}) = {i.imm}"
    if cls == STX:
        verb = "+=" if i.code & 0xE0 == 0xC0 else "="
        return f"*({size} *)(r{i.dst} {i.off:+d}) {verb} r{i.src}"
    return f"? code {i.code:#04x}"


def section_text(sec: im.Section, event_names: list[str]) -> list[str]:
    out = ["", "; eBPF maps"]
    for n, m in enumerate(sec.maps):
        entries = m.max_entries or "ncpus"
        out.append(f";   {n}: {m.name:12} {im.ROLE_NAMES[m.role]:10} "
                   f"{MAP_TYPE_NAMES.get(m.type, m.type)} key {m.key_size} value "
                   f"{m.value_size} entries {entries}")
    for p in sec.programs:
        relocs = {r.insn: r for r in p.relocs}
        # map references show the map's name: the relocation names the map index
        names = {r.arg: sec.maps[r.arg].name for r in p.relocs
                 if r.kind == im.RELOC_MAP_FD and r.arg < len(sec.maps)}
        out += ["", f"; eBPF program for {event_names[p.event] if p.event < len(event_names) else p.event}"
                    f" ({PROG_TYPE_NAMES.get(p.prog_type, p.prog_type)}, {len(p.insns)} insns)"]
        skip = False
        for pc, i in enumerate(p.insns):
            if skip:
                skip = False
                continue
            nxt = p.insns[pc + 1] if pc + 1 < len(p.insns) else None
            r = relocs.get(pc)
            if i.cls == LD:
                skip = True
                if r is not None and r.kind == im.RELOC_MAP_FD:
                    nxt = Insn(0, imm=0)
                    i = Insn(i.code, i.dst, i.src, 0, r.arg)
            text = insn_text(i, names, nxt)
            if r is not None and r.kind != im.RELOC_MAP_FD:
                text += f"    ; {im.RELOC_NAMES[r.kind]} {r.arg}"
            line, col = p.lines[pc] if pc < len(p.lines) else (0, 0)
            out.append(f"  {pc:5d}  {text:44} ; {line}:{col}")
    return out

