"""The target's user-space ELF files, read offline from a host copy (a
sysroot): symbols, the file offsets uprobes take, build-ids and USDT notes.

The board has no debuginfo and no compiler, and its binaries are often
stripped: the host holds the unstripped copies (`--sysroot DIR`, the board's
initramfs), and the build-id ties the two together at run time.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ktap.core.targets import Target
from ktap.symbols.readers import open_elf
from ktap.symbols.table import Symbol, SymbolError, SymbolTable

STT_FUNC, STT_GNU_IFUNC = 2, 10
NT_GNU_BUILD_ID, NT_STAPSDT = 3, 3
SYMLINK_HOPS = 40


class UserElfError(SymbolError):
    """A user-space file that cannot serve a probe: missing, not ELF, stripped."""


@dataclass(frozen=True)
class UsdtNote:
    provider: str
    name: str
    pc: int              # virtual address of the probe's nop
    semaphore: int       # virtual address of its enable counter, 0 if none
    args: str            # the operand string, "-4@%edi 8@16(%rsp)"


def in_sysroot(sysroot: Path, target_path: str) -> Path:
    """Where `target_path` (absolute, on the board) lies under `sysroot`,
    following symlinks as the board would: an absolute link target is
    re-rooted in the sysroot (a real sysroot's /lib/libc.so.6 -> /lib/...)."""
    parts = [p for p in target_path.split("/") if p]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            done = done[:-1]
            continue
        if part == ".":
            continue
        here = sysroot.joinpath(*done, part)
        if here.is_symlink():
            hops += 1
            if hops > SYMLINK_HOPS:
                raise UserElfError(f"{target_path}: too many symbolic links under {sysroot}")
            link = os.readlink(here)
            if link.startswith("/"):
                done = []
            parts = [p for p in link.split("/") if p] + parts
            continue
        done.append(part)
    return sysroot.joinpath(*done)


class UserElf:
    """One user-space ELF file of the target (its host copy)."""

    def __init__(self, target_path: str, host_path: Path, target: Target):
        self.target_path = target_path
        self.host_path = host_path
        self.target = target
        self._file, self.elf = open_elf(host_path)
        self.loads = [seg.header for seg in self.elf.iter_segments()
                      if seg["p_type"] == "PT_LOAD"]

    def close(self) -> None:
        self._file.close()

    # ------------------------------------------------------------ identity
    def check_machine(self) -> None:
        t = self.target
        order = "little" if self.elf.little_endian else "big"
        if (self.elf["e_machine"] != t.elf_machine or order != t.byte_order
                or self.elf.elfclass != 8 * t.word_size):
            raise UserElfError(
                f"{self.target_path} ({self.host_path}) is a {self.elf.elfclass}-bit {order}-"
                f"endian {self.elf['e_machine']} file, not one for {t.name}")

    @cached_property
    def build_id(self) -> str:
        """The GNU build-id as hex, "" if the file has none."""
        for sec in self.elf.iter_sections():
            if sec["sh_type"] != "SHT_NOTE":
                continue
            for owner, ntype, desc in self._notes(sec.data()):
                if owner == b"GNU" and ntype == NT_GNU_BUILD_ID:
                    return desc.hex()
        return ""

    def _notes(self, data: bytes):
        fmt = ("<" if self.elf.little_endian else ">") + "III"
        at = 0
        while at + 12 <= len(data):
            namesz, descsz, ntype = struct.unpack_from(fmt, data, at)
            at += 12
            name = data[at:at + namesz].rstrip(b"\0")
            at += (namesz + 3) & ~3
            desc = data[at:at + descsz]
            at += (descsz + 3) & ~3
            yield name, ntype, desc

    # ------------------------------------------------------------ addresses
    def file_offset(self, vaddr: int) -> int:
        """The file offset of a virtual address (what uprobe_events takes):
        the same for ET_EXEC and ET_DYN, through the PT_LOAD that maps it."""
        for ph in self.loads:
            if ph["p_vaddr"] <= vaddr < ph["p_vaddr"] + ph["p_filesz"]:
                return vaddr - ph["p_vaddr"] + ph["p_offset"]
        raise UserElfError(f"{vaddr:#x} is not in any loaded segment of {self.target_path}")

    def vaddr_of(self, offset: int) -> int | None:
        """The virtual address of a file offset (a frame ustack() printed)."""
        for ph in self.loads:
            if ph["p_offset"] <= offset < ph["p_offset"] + ph["p_filesz"]:
                return offset - ph["p_offset"] + ph["p_vaddr"]
        return None

    # ------------------------------------------------------------ symbols
    @cached_property
    def has_symtab(self) -> bool:
        return self.elf.get_section_by_name(".symtab") is not None

    @cached_property
    def symbols(self) -> SymbolTable:
        """.symtab where the file has one, else .dynsym (a shared library's
        exported functions survive stripping)."""
        arm = self.target.mapping_symbols
        rows = []
        for name in (".symtab", ".dynsym"):
            sec = self.elf.get_section_by_name(name)
            if sec is None:
                continue
            for s in sec.iter_symbols():
                row = _symbol(s, arm, self.elf)
                if row is not None:
                    rows.append(row)
            if rows:
                break
        return SymbolTable(rows, source="file", path=self.target_path)

    @cached_property
    def ifuncs(self) -> frozenset[str]:
        out = set()
        for name in (".symtab", ".dynsym"):
            sec = self.elf.get_section_by_name(name)
            for s in sec.iter_symbols() if sec is not None else ():
                if s["st_info"]["type"] == "STT_GNU_IFUNC":
                    out.add(s.name)
        return frozenset(out)

    def debuglink(self) -> str:
        """The separate debug file's name from .gnu_debuglink, "" if none."""
        sec = self.elf.get_section_by_name(".gnu_debuglink")
        if sec is None:
            return ""
        return sec.data().split(b"\0", 1)[0].decode(errors="replace")

    # ------------------------------------------------------------ USDT
    @cached_property
    def usdt_notes(self) -> list[UsdtNote]:
        sec = self.elf.get_section_by_name(".note.stapsdt")
        if sec is None:
            return []
        base_sec = self.elf.get_section_by_name(".stapsdt.base")
        w = self.elf.elfclass // 8
        word = ("<" if self.elf.little_endian else ">") + ("I" if w == 4 else "Q")
        out = []
        for owner, ntype, desc in self._notes(sec.data()):
            if owner != b"stapsdt" or ntype != NT_STAPSDT or len(desc) < 3 * w:
                continue
            pc, base, sem = (struct.unpack_from(word, desc, i * w)[0] for i in range(3))
            # prelink may move the file after the notes were written: the
            # notes carry .stapsdt.base's address of the time, to adjust by
            if base_sec is not None and base:
                shift = base_sec["sh_addr"] - base
                pc += shift
                sem = sem + shift if sem else 0
            texts = desc[3 * w:].split(b"\0")
            provider, name = texts[0].decode(), texts[1].decode()
            args = texts[2].decode() if len(texts) > 2 else ""
            out.append(UsdtNote(provider, name, pc, sem, args))
        return out


def _symbol(s, arm: bool, elf) -> Symbol | None:
    info = s["st_info"]
    if s["st_shndx"] == "SHN_UNDEF" or info["type"] in ("STT_SECTION", "STT_FILE") or not s.name:
        return None
    if arm and s.name[:1] == "$":
        return None
    func = info["type"] in ("STT_FUNC", "STT_GNU_IFUNC")
    value = s["st_value"]
    thumb = arm and func and bool(value & 1)
    section = ""
    if isinstance(s["st_shndx"], int) and s["st_shndx"] < elf.num_sections():
        section = elf.get_section(s["st_shndx"]).name
    kind = "T" if func else ("D" if info["type"] == "STT_OBJECT" else "?")
    return Symbol(s.name, value & ~1 if thumb else value, s["st_size"], kind, section, func,
                  thumb)


def open_user_elf(sysroot: Path, target_path: str, target: Target) -> UserElf:
    """The host copy of a board file, checked to be an ELF file for `target`."""
    host = in_sysroot(sysroot, target_path)
    if not host.is_file():
        raise UserElfError(f"{target_path} is not in the sysroot {sysroot} (no {host})")
    elf = UserElf(target_path, host, target)
    try:
        elf.check_machine()
    except UserElfError:
        elf.close()
        raise
    return elf


def debug_file(sysroot: Path, elf: UserElf) -> Path | None:
    """A separate debug file for `elf` where the sysroot has one: by
    build-id under /usr/lib/debug/.build-id, else by .gnu_debuglink beside
    the file, in its .debug/ or under /usr/lib/debug."""
    candidates = []
    bid = elf.build_id
    if bid:
        candidates.append(f"/usr/lib/debug/.build-id/{bid[:2]}/{bid[2:]}.debug")
    link = elf.debuglink()
    if link:
        d = os.path.dirname(elf.target_path)
        candidates += [f"{d}/{link}", f"{d}/.debug/{link}", f"/usr/lib/debug{d}/{link}"]
    for c in candidates:
        host = in_sysroot(sysroot, c)
        if host.is_file() and host != elf.host_path:
            return host
    return None


def symbol_table(sysroot: Path, elf: UserElf) -> tuple[SymbolTable, bool]:
    """The file's symbols, from a separate debug file where the file itself is
    stripped; and whether a full symbol table (.symtab) was found."""
    if elf.has_symtab:
        return elf.symbols, True
    dbg = debug_file(sysroot, elf)
    if dbg is None:
        return elf.symbols, False
    d = UserElf(elf.target_path, dbg, elf.target)
    try:
        return d.symbols, d.has_symtab
    finally:
        d.close()
