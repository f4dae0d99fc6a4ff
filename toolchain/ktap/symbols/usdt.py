"""USDT operands (`-4@%edi`, `8@16(%rsp)`, `-4@$4`, `-4@[sp, 12]`) into the
fetch arguments of the kernel's uprobe_events (`%di:s32`, `+16(%sp):u64`).

sys/sdt.h writes each argument as SIZE@OPERAND, the operand in the target
assembler's own syntax (the target's `user.usdt_syntax`): a register, a
memory reference base+offset, or a constant. The kernel then reads the
values when the probe fires, from the user registers and user memory.
"""
from __future__ import annotations

import re

from ktap.core.targets import Target


class UsdtError(ValueError):
    pass


_X86_REGS = {}
for _full, _names in {
        "ax": ("rax", "eax", "ax", "al"), "bx": ("rbx", "ebx", "bx", "bl"),
        "cx": ("rcx", "ecx", "cx", "cl"), "dx": ("rdx", "edx", "dx", "dl"),
        "si": ("rsi", "esi", "si", "sil"), "di": ("rdi", "edi", "di", "dil"),
        "bp": ("rbp", "ebp", "bp", "bpl"), "sp": ("rsp", "esp", "sp", "spl")}.items():
    for _n in _names:
        _X86_REGS[_n] = _full
for _i in range(8, 16):
    for _suffix in ("", "d", "w", "b"):
        _X86_REGS[f"r{_i}{_suffix}"] = f"r{_i}"

_MIPS_NAMES = {"zero": 0, "at": 1, "gp": 28, "sp": 29, "fp": 30, "s8": 30, "ra": 31,
               **{f"v{i}": 2 + i for i in range(2)}, **{f"a{i}": 4 + i for i in range(4)},
               **{f"t{i}": 8 + i for i in range(8)}, **{f"s{i}": 16 + i for i in range(8)},
               "t8": 24, "t9": 25, "k0": 26, "k1": 27}


def _att(op: str) -> str:
    m = re.fullmatch(r"\$(-?(?:0x[0-9a-fA-F]+|\d+))", op)
    if m:
        return "\\" + str(int(m.group(1), 0))
    m = re.fullmatch(r"%(\w+)", op)
    if m and m.group(1) in _X86_REGS:
        return "%" + _X86_REGS[m.group(1)]
    m = re.fullmatch(r"(-?(?:0x[0-9a-fA-F]+|\d+))?\(%(\w+)\)", op)
    if m and m.group(2) in _X86_REGS:
        return _mem(m.group(1), "%" + _X86_REGS[m.group(2)])
    raise UsdtError(op)


def _arm_reg(name: str) -> str:
    if re.fullmatch(r"r(?:1[0-5]|[0-9])|fp|ip|sp|lr|pc", name):
        return "%" + name
    raise UsdtError(name)


_NUMBER = r"-?(?:0x[0-9a-fA-F]+|\d+)"
_BRACKETED = re.compile(rf"\[(\w+)(?:,\s*#?({_NUMBER}))?\]")


def _arm_like(op: str, immediate: str, reg) -> str:
    """ARM and AArch64 operands: an immediate, [reg] or [reg, #off], a register."""
    m = re.fullmatch(immediate + rf"({_NUMBER})", op)
    if m:
        return "\\" + str(int(m.group(1), 0))
    m = _BRACKETED.fullmatch(op)
    if m:
        return _mem(m.group(2), reg(m.group(1)))
    return reg(op)


def _arm(op: str) -> str:
    return _arm_like(op, "#", _arm_reg)


def _arm64_reg(name: str) -> str:
    m = re.fullmatch(r"[xw]([0-9]|[12][0-9]|30)", name)
    if m:
        return f"%x{m.group(1)}"
    if name == "sp":
        return "%sp"
    raise UsdtError(name)


def _arm64(op: str) -> str:
    return _arm_like(op, "#?", _arm64_reg)


def _mips_reg(name: str) -> str:
    m = re.fullmatch(r"\$(\d+)", name)
    if m and int(m.group(1)) < 32:
        return f"%r{m.group(1)}"
    if name[:1] == "$" and name[1:] in _MIPS_NAMES:
        return f"%r{_MIPS_NAMES[name[1:]]}"
    raise UsdtError(name)


def _mips(op: str) -> str:
    m = re.fullmatch(r"-?(?:0x[0-9a-fA-F]+|\d+)", op)
    if m:
        return "\\" + str(int(op, 0))
    m = re.fullmatch(r"(-?(?:0x[0-9a-fA-F]+|\d+))?\((\$\w+)\)", op)
    if m:
        return _mem(m.group(1), _mips_reg(m.group(2)))
    return _mips_reg(op)


def _ppc_reg(name: str) -> str:
    # sys/sdt.h prints a register as its bare number: "3" is r3
    m = re.fullmatch(r"%?r?(\d+)", name)
    if m and int(m.group(1)) < 32:
        return f"%r{m.group(1)}"
    raise UsdtError(name)


def _powerpc(op: str) -> str:
    m = re.fullmatch(r"i(-?\d+)", op)
    if m:
        return "\\" + m.group(1)
    m = re.fullmatch(r"(-?\d+)\((%?r?\d+)\)", op)
    if m:
        return _mem(m.group(1), _ppc_reg(m.group(2)))
    return _ppc_reg(op)


def _mem(offset: str | None, base: str) -> str:
    off = int(offset, 0) if offset else 0
    return f"{'+' if off >= 0 else '-'}{abs(off)}({base})"


_SYNTAX = {"att": _att, "arm": _arm, "arm64": _arm64, "mips": _mips, "powerpc": _powerpc}


def split_operands(operands: str) -> list[str]:
    """The note's arguments, split at blanks outside brackets: an arm64
    operand is `8@[sp, 16]`."""
    out, depth, cur = [], 0, ""
    for c in operands:
        depth += (c == "[") - (c == "]")
        if c.isspace() and depth == 0:
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += c
    return out + ([cur] if cur else [])


def fetch_args(operands: str, target: Target) -> list[str]:
    """uprobe_events fetch arguments for a note's operand string, each typed by
    its size and sign (`-4@...` is :s32). Raises UsdtError naming the operand
    this translation does not know."""
    out = []
    translate = _SYNTAX[target.user.usdt_syntax]
    for arg in split_operands(operands):
        size, at, op = arg.partition("@")
        if not at:                       # old notes: no size, a word
            size, op = str(target.word_size), arg
        try:
            n = int(size)
        except ValueError:
            raise UsdtError(arg) from None
        if abs(n) not in (1, 2, 4, 8):
            raise UsdtError(arg)
        try:
            fetch = translate(op)
        except UsdtError:
            raise UsdtError(arg) from None
        out.append(f"{fetch}:{'s' if n < 0 else 'u'}{abs(n) * 8}")
    return out
