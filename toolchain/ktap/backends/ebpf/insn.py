"""eBPF instructions as data: classes, operations, sizes, helper ids, map and
program types, and the encoding of `struct bpf_insn` in a target's byte order.
The kernel's uapi linux/bpf.h and linux/bpf_common.h define these numbers;
they are ABI and never change."""
from __future__ import annotations

import struct
from dataclasses import dataclass

# Instruction classes (low 3 bits of the code byte)
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)
# Sizes and modes (loads and stores)
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
SIZE_BYTES = {W: 4, H: 2, B: 1, DW: 8}
IMM, MEM, ATOMIC = 0x00, 0x60, 0xC0
# Operand source
K, X = 0x00, 0x08

ALU_OPS = {"add": 0x00, "sub": 0x10, "mul": 0x20, "div": 0x30, "or": 0x40, "and": 0x50,
           "lsh": 0x60, "rsh": 0x70, "neg": 0x80, "mod": 0x90, "xor": 0xA0, "mov": 0xB0,
           "arsh": 0xC0}
JMP_OPS = {"ja": 0x00, "jeq": 0x10, "jgt": 0x20, "jge": 0x30, "jset": 0x40, "jne": 0x50,
           "jsgt": 0x60, "jsge": 0x70, "call": 0x80, "exit": 0x90, "jlt": 0xA0, "jle": 0xB0,
           "jslt": 0xC0, "jsle": 0xD0}
ALU_NAMES = {v: k for k, v in ALU_OPS.items()}
JMP_NAMES = {v: k for k, v in JMP_OPS.items()}
# The condition that is true exactly when the given one is false.
NEGATED = {"jeq": "jne", "jne": "jeq", "jgt": "jle", "jle": "jgt", "jge": "jlt",
           "jlt": "jge", "jsgt": "jsle", "jsle": "jsgt", "jsge": "jslt", "jslt": "jsge"}

# Registers: r0 return value, r1-r5 helper arguments (clobbered by calls),
# r6-r9 kept across calls, r10 the read-only frame pointer.
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)
STACK_SIZE = 512
PSEUDO_MAP_FD = 1

HELPERS = {"map_lookup_elem": 1, "map_update_elem": 2, "map_delete_elem": 3,
           "probe_read": 4, "ktime_get_ns": 5, "get_smp_processor_id": 8,
           "get_current_pid_tgid": 14, "get_current_uid_gid": 15, "get_current_comm": 16,
           "perf_event_output": 25, "get_stackid": 27, "probe_read_str": 45,
           "get_stack": 67, "probe_read_user": 112, "probe_read_kernel": 113,
           "probe_read_user_str": 114, "probe_read_kernel_str": 115, "ktime_get_boot_ns": 125}
HELPER_NAMES = {v: k for k, v in HELPERS.items()}

MAP_TYPES = {"hash": 1, "array": 2, "perf_event_array": 4, "percpu_hash": 5,
             "percpu_array": 6}
MAP_TYPE_NAMES = {v: k for k, v in MAP_TYPES.items()}
PROG_TYPES = {"kprobe": 2, "tracepoint": 5, "perf_event": 7}
PROG_TYPE_NAMES = {v: k for k, v in PROG_TYPES.items()}

BPF_ANY, BPF_NOEXIST = 0, 1
BPF_F_CURRENT_CPU = 0xFFFFFFFF
MAX_INSNS = 1_000_000


@dataclass
class Insn:
    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    @property
    def cls(self) -> int:
        return self.code & 0x07

    def encode(self, byte_order: str) -> bytes:
        """struct bpf_insn: the register nibbles follow the bitfield layout of
        the target's compiler (dst first in memory order: low nibble on
        little-endian, high nibble on big-endian)."""
        if byte_order == "little":
            regs = (self.src << 4) | self.dst
            return struct.pack("<BBhi", self.code, regs, self.off, self.imm)
        regs = (self.dst << 4) | self.src
        return struct.pack(">BBhi", self.code, regs, self.off, self.imm)

    @classmethod
    def decode(cls, data: bytes, byte_order: str) -> "Insn":
        if byte_order == "little":
            code, regs, off, imm = struct.unpack("<BBhi", data)
            return cls(code, regs & 0xF, regs >> 4, off, imm)
        code, regs, off, imm = struct.unpack(">BBhi", data)
        return cls(code, regs >> 4, regs & 0xF, off, imm)


def _imm32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


# -- constructors -----------------------------------------------------------
def alu64(op: str, dst: int, src: int | None = None, imm: int = 0) -> Insn:
    """dst op= src (register) or dst op= imm (sign-extended 32-bit)."""
    if src is None:
        return Insn(ALU64 | ALU_OPS[op] | K, dst, 0, 0, _imm32(imm))
    return Insn(ALU64 | ALU_OPS[op] | X, dst, src)


def mov(dst: int, src: int) -> Insn:
    return alu64("mov", dst, src)


def mov32(dst: int, src: int) -> Insn:
    """32-bit move: the upper half of dst becomes zero."""
    return Insn(ALU | ALU_OPS["mov"] | X, dst, src)


def movi(dst: int, imm: int) -> Insn:
    return alu64("mov", dst, None, imm)


def ld_imm64(dst: int, value: int, src: int = 0) -> list[Insn]:
    """The two-slot 64-bit load; src = PSEUDO_MAP_FD makes it a map reference."""
    value &= 0xFFFFFFFFFFFFFFFF
    return [Insn(LD | DW | IMM, dst, src, 0, _imm32(value)),
            Insn(0, 0, 0, 0, _imm32(value >> 32))]


def ldx(size: int, dst: int, src: int, off: int) -> Insn:
    return Insn(LDX | MEM | size, dst, src, off)


def stx(size: int, dst: int, off: int, src: int) -> Insn:
    return Insn(STX | MEM | size, dst, src, off)


def st(size: int, dst: int, off: int, imm: int) -> Insn:
    return Insn(ST | MEM | size, dst, 0, off, _imm32(imm))


def xadd(size: int, dst: int, off: int, src: int) -> Insn:
    """*(dst + off) += src, atomically (imm 0 is BPF_ADD; older kernels call it XADD)."""
    return Insn(STX | ATOMIC | size, dst, src, off, 0)


def jmp(op: str, dst: int, src: int | None = None, imm: int = 0, off: int = 0) -> Insn:
    if src is None:
        return Insn(JMP | JMP_OPS[op] | K, dst, 0, off, _imm32(imm))
    return Insn(JMP | JMP_OPS[op] | X, dst, src, off)


def ja(off: int = 0) -> Insn:
    return Insn(JMP | JMP_OPS["ja"], 0, 0, off)


def call(helper: str) -> Insn:
    return Insn(JMP | JMP_OPS["call"], 0, 0, 0, HELPERS[helper])


def exit_insn() -> Insn:
    return Insn(JMP | JMP_OPS["exit"])


def is_jump(i: Insn) -> bool:
    op = i.code & 0xF0
    return i.cls in (JMP, JMP32) and op not in (JMP_OPS["call"], JMP_OPS["exit"])
