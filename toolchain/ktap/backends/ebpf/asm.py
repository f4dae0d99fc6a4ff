"""An eBPF assembler for the lowering: instructions with their script
positions, forward labels, relocations, and the byte-level stores that build
output records in the target's byte order (programs may not store unaligned
words into map values on arm, mips or powerpc, so records are written byte by
byte)."""
from __future__ import annotations

from ktap.backends.ebpf import image as im
from ktap.backends.ebpf.insn import (B, DW, LD, PSEUDO_MAP_FD, R1, R10, Insn, alu64, call,
                                     exit_insn, is_jump, ja, jmp, ld_imm64, ldx, mov, movi, st,
                                     stx)

EXIT = exit_insn().code
JA = ja().code
from ktap.core.diagnostics import Loc


class Label:
    __slots__ = ("pos",)

    def __init__(self) -> None:
        self.pos: int | None = None


class Asm:
    def __init__(self, byte_order: str):
        self.byte_order = byte_order
        self.insns: list[Insn] = []
        self.lines: list[tuple[int, int]] = []
        self.relocs: list[im.Reloc] = []
        self.fixups: list[tuple[int, Label]] = []
        self.loc = Loc(0, 0)

    def add(self, *insns: Insn) -> int:
        """Appends instructions at the current script position; returns the index of the first."""
        first = len(self.insns)
        for i in insns:
            self.insns.append(i)
            self.lines.append((self.loc.line, self.loc.col))
        return first

    def place(self, label: Label) -> None:
        label.pos = len(self.insns)

    def jump(self, op: str, dst: int, label: Label, src: int | None = None, imm: int = 0) -> None:
        self.fixups.append((len(self.insns), label))
        self.add(jmp(op, dst, src, imm) if op != "ja" else ja())

    def goto(self, label: Label) -> None:
        self.jump("ja", 0, label)

    def map_ref(self, dst: int, map_index: int) -> None:
        at = self.add(*ld_imm64(dst, 0, PSEUDO_MAP_FD))
        self.relocs.append(im.Reloc(at, im.RELOC_MAP_FD, map_index))

    def imm64(self, dst: int, value: int) -> None:
        if -(1 << 31) <= value < (1 << 31):
            self.add(movi(dst, value))
        else:
            self.add(*ld_imm64(dst, value))

    def call(self, helper: str) -> None:
        self.add(call(helper))

    def lookup(self, map_index: int, key_off: int, null: Label) -> None:
        """r0 := the value of map[key at r10+key_off]; jumps to `null` if absent."""
        self.map_ref(R1, map_index)
        self.add(mov(2, R10), alu64("add", 2, None, key_off))
        self.call("map_lookup_elem")
        self.jump("jeq", 0, null, imm=0)

    # -- byte-order stores ------------------------------------------------
    def store_bytes_imm(self, base: int, off: int, value: int, size: int) -> None:
        """Stores a constant `size`-byte integer at base+off, byte by byte."""
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, self.byte_order)
        for k, byte in enumerate(data):
            self.add(st(B, base, off + k, byte))

    def store_bytes_reg(self, base: int, off: int, reg: int, size: int, tmp: int) -> None:
        """Stores the low `size` bytes of `reg` at base+off in the target's byte
        order; `tmp` is clobbered."""
        for k in range(size):
            shift = 8 * k
            pos = off + (k if self.byte_order == "little" else size - 1 - k)
            if shift:
                self.add(mov(tmp, reg), alu64("rsh", tmp, None, shift), stx(B, base, pos, tmp))
            else:
                self.add(stx(B, base, pos, reg))

    def zero(self, base: int, off: int, size: int) -> None:
        """Zeroes size bytes (a multiple of 8, 8-aligned) at base+off."""
        for k in range(0, size, 8):
            self.add(st(DW, base, off + k, 0))

    def copy(self, dst: int, dst_off: int, src: int, src_off: int, size: int, tmp: int) -> None:
        """Copies size bytes (a multiple of 8) between 8-aligned buffers."""
        for k in range(0, size, 8):
            self.add(ldx(DW, tmp, src, src_off + k), stx(DW, dst, dst_off + k, tmp))

    # -- finishing --------------------------------------------------------
    def finish(self) -> None:
        """Resolves the labels, then drops unreachable instructions: the
        kernel's verifier refuses a program that has any."""
        targets = {}
        for at, label in self.fixups:
            if label.pos is None:
                raise AssertionError("eBPF label never placed")
            targets[at] = label.pos
        keep = self._reachable(targets)
        for at in sorted(targets):
            # a goto to the next instruction that stays is a no-op
            if at in keep and self.insns[at].code == JA and \
                    next((k for k in range(at + 1, len(self.insns)) if k in keep),
                         len(self.insns)) == targets[at]:
                keep.discard(at)
        new_index, pos = {}, 0
        for k in range(len(self.insns)):
            new_index[k] = pos
            pos += k in keep
        new_index[len(self.insns)] = pos
        for at, target in targets.items():
            if at in keep:
                self.insns[at].off = new_index[target] - (new_index[at] + 1)
        self.insns = [i for k, i in enumerate(self.insns) if k in keep]
        self.lines = [x for k, x in enumerate(self.lines) if k in keep]
        self.relocs = [im.Reloc(new_index[r.insn], r.kind, r.arg) for r in self.relocs
                       if r.insn in keep]
        for i in self.insns:
            if is_jump(i) and not -0x8000 <= i.off <= 0x7FFF:
                raise OverflowError("eBPF jump out of range")

    def _reachable(self, targets: dict[int, int]) -> set[int]:
        seen: set[int] = set()
        work = [0]
        while work:
            k = work.pop()
            if k in seen or k >= len(self.insns):
                continue
            seen.add(k)
            i = self.insns[k]
            if i.code == LD | DW:           # the 64-bit load's second slot
                seen.add(k + 1)
                work.append(k + 2)
            elif i.code == EXIT:
                continue
            elif is_jump(i):
                work.append(targets[k])
                if i.code != JA:
                    work.append(k + 1)
            else:
                work.append(k + 1)
        return seen
