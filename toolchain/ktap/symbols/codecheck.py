"""Probe-point checks with capstone: is SYM+OFF an instruction boundary, and is
it a site where a kprobe is known to misbehave on the target ISA (MIPS delay
slots, ARM ldrex/strex sequences, Thumb-2 kernels).

A bad offset is found here on the host, rather than as an EINVAL, an oops or a
hung CPU on the board.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from ktap.core.targets import Target
from ktap.symbols.readers import open_elf
from ktap.symbols.table import Symbol, SymbolError, SymbolTable

if TYPE_CHECKING:
    import capstone

# AArch64 exclusive loads and stores (ldxr, ldaxp, stlxrb, ...): the bounds of an
# atomic sequence, which arm64 kprobes refuse to probe inside.
_A64_LOAD_EX = re.compile(r"^lda?x[rp][bh]?$")
_A64_STORE_EX = re.compile(r"^stl?x[rp][bh]?$")


@dataclass
class ProbeCheck:
    symbol: str
    offset: int
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    instruction: str = ""          # the instruction at the probe point

    @property
    def ok(self) -> bool:
        return not self.errors


@cache
def _capstone_module():
    """capstone, imported on first use: it costs about 0.12 s of CPU to import, and
    only a probe check against a vmlinux needs it, never a plain `ktap compile`."""
    import capstone
    return capstone


def _capstone(target: Target, thumb: bool = False) -> capstone.Cs:
    capstone = _capstone_module()
    arch = getattr(capstone, target.capstone["arch"])
    mode = 0
    for part in target.capstone["mode"].split("|"):
        mode |= getattr(capstone, part.strip())
    if thumb:
        mode = (mode & ~capstone.CS_MODE_ARM) | capstone.CS_MODE_THUMB
    md = capstone.Cs(arch, mode)
    # Only MIPS needs instruction groups (to spot branches before a delay slot).
    md.detail = target.capstone["arch"] == "CS_ARCH_MIPS"
    return md


class CodeReader:
    """Function bytes out of a vmlinux or .ko, for the probe-point checks."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file, self.elf = open_elf(self.path)
        self.relocatable = self.elf["e_type"] == "ET_REL"
        self._data: dict[str, tuple[int, bytes]] = {}

    def close(self) -> None:
        self._file.close()

    def _section(self, name: str) -> tuple[int, bytes] | None:
        if name not in self._data:
            sec = self.elf.get_section_by_name(name)
            if sec is None or sec["sh_type"] == "SHT_NOBITS":
                return None
            base = 0 if self.relocatable else sec["sh_addr"]
            self._data[name] = (base, sec.data())
        return self._data[name]

    def function_bytes(self, sym: Symbol) -> bytes:
        found = self._section(sym.section or ".text")
        if found is None:
            raise SymbolError(f"{self.path}: no code for {sym.name} (section {sym.section!r})")
        base, data = found
        start = sym.addr - base
        return data[start:start + (sym.size or 64)]


def decode(target: Target, code: bytes, addr: int, thumb: bool = False) -> list:
    """Linear decode from the function start; stops at the first undecodable bytes."""
    return list(_capstone(target, thumb).disasm(code, addr))


def check_probe_point(symbols: SymbolTable, reader: CodeReader, target: Target, name: str,
                      offset: int, thumb_kernel: bool | None = None) -> ProbeCheck:
    """SYM+OFF must be an instruction boundary inside SYM; warns about sites
    where a kprobe is known to misbehave on the target ISA."""
    check = ProbeCheck(name, offset)
    sym = symbols.function(name)
    if sym is None:
        check.errors.append(symbols.missing_message(name))
        return check
    thumb = sym.thumb if thumb_kernel is None else thumb_kernel or sym.thumb
    if sym.size and offset >= sym.size:
        check.errors.append(f"{name}+{offset:#x} is past the end of {name} (size {sym.size:#x})")
        return check
    insns = decode(target, reader.function_bytes(sym), sym.addr, thumb)
    index = _boundary(check, insns, sym, offset)
    if index is not None:
        _isa_warnings(check, target, insns, index, thumb)
    return check


def _boundary(check: ProbeCheck, insns: list, sym: Symbol, offset: int) -> int | None:
    for i, insn in enumerate(insns):
        rel = insn.address - sym.addr
        if rel == offset:
            check.instruction = f"{insn.mnemonic} {insn.op_str}".strip()
            return i
        if rel < offset < rel + insn.size:
            check.errors.append(
                f"{sym.name}+{offset:#x} is not an instruction boundary: it falls inside "
                f"'{insn.mnemonic} {insn.op_str}'".rstrip() +
                f" at {sym.name}+{rel:#x} ({insn.size} bytes); "
                f"the next boundary is {sym.name}+{rel + insn.size:#x}")
            return None
    decoded = (insns[-1].address + insns[-1].size - sym.addr) if insns else 0
    check.warnings.append(f"could not decode {sym.name} past +{decoded:#x}; "
                          f"the boundary of +{offset:#x} is unchecked")
    return None


def _isa_warnings(check: ProbeCheck, target: Target, insns: list, index: int,
                  thumb: bool) -> None:
    arch = target.capstone["arch"]
    if arch == "CS_ARCH_MIPS" and index > 0 and _mips_branch(insns[index - 1]):
        prev = insns[index - 1]
        check.warnings.append(
            f"{check.symbol}+{check.offset:#x} is in the branch delay slot of "
            f"'{prev.mnemonic} {prev.op_str}': MIPS kprobes refuse delay slots "
            f"(register_kprobe fails with EINVAL); probe the branch instead")
    if arch == "CS_ARCH_ARM":
        _arm_warnings(check, insns, index, thumb)
    if arch == "CS_ARCH_ARM64":
        _arm64_warnings(check, insns, index)


@cache
def _branch_groups() -> frozenset[int]:
    cs = _capstone_module()
    return frozenset({cs.CS_GRP_JUMP, cs.CS_GRP_CALL, cs.CS_GRP_RET, cs.CS_GRP_BRANCH_RELATIVE})


def _mips_branch(insn: capstone.CsInsn) -> bool:
    if set(insn.groups) & _branch_groups():
        return True
    # capstone gives `jal` no group; MIPS branch mnemonics all start b or j.
    m = insn.mnemonic
    return m.startswith("j") or (m.startswith("b") and m not in ("break", "bitswap"))


def _arm_warnings(check: ProbeCheck, insns: list, index: int, thumb: bool) -> None:
    if thumb:
        check.warnings.append(
            "Thumb-2 code (CONFIG_THUMB2_KERNEL=y): arm kprobes emulate Thumb "
            "instructions, and a probe on ksys_write was seen to oops in "
            "t16_emulate_push; build the board kernel in ARM mode")
    last_ldrex = None
    for i in range(index - 1, -1, -1):
        m = insns[i].mnemonic
        if m.startswith("strex"):
            break
        if m.startswith("ldrex"):
            last_ldrex = insns[i]
            break
    if last_ldrex is not None:
        check.warnings.append(
            f"{check.symbol}+{check.offset:#x} is inside an ldrex/strex sequence (ldrex at "
            f"{last_ldrex.address:#x}): the probe's exception clears the exclusive monitor, "
            f"so the strex can fail forever")


def _arm64_warnings(check: ProbeCheck, insns: list, index: int) -> None:
    # The kernel's own test (arch/arm64/kernel/probes/decode-insn.c): an
    # exclusive access cannot be single-stepped out of line, and a probe after
    # an exclusive load and before its store would clear the monitor.
    insn = insns[index]
    if _A64_LOAD_EX.match(insn.mnemonic) or _A64_STORE_EX.match(insn.mnemonic):
        check.warnings.append(
            f"{check.symbol}+{check.offset:#x} is an exclusive access '{insn.mnemonic}': "
            f"arm64 kprobes cannot single-step it (register_kprobe fails with EINVAL)")
        return
    for prev in reversed(insns[:index]):
        if _A64_STORE_EX.match(prev.mnemonic):
            return
        if _A64_LOAD_EX.match(prev.mnemonic):
            check.warnings.append(
                f"{check.symbol}+{check.offset:#x} is inside an exclusive load/store "
                f"sequence ({prev.mnemonic} at {prev.address:#x}): arm64 kprobes refuse "
                f"it (register_kprobe fails with EINVAL)")
            return
