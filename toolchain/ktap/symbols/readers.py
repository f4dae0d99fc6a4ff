"""Symbol sources: vmlinux and .ko files (ELF, through pyelftools), System.map
and /proc/kallsyms text. Each becomes a SymbolTable; the load_* functions keep
the result in the index cache.
"""
from __future__ import annotations

import bisect
import gzip
import re
import struct
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from ktap.core.targets import target_by_elf_machine
from ktap.symbols.cache import cached_table
from ktap.symbols.table import NOKPROBE_PREFIX, TEXT_KINDS, Symbol, SymbolError, SymbolTable

if TYPE_CHECKING:
    from elftools.elf.elffile import ELFFile

# System.map/kallsyms have no symbol types beyond the nm letter; a text-area
# label such as _stext looks like a function there, so marker-like names are
# kept out of the function set.
_MARKER_LIKE = re.compile(r"^(_s|_e)[a-z]*text$|^__.*_(start|end)$|^_?_?(s|e)?text$")


# ---------------------------------------------------------------- ELF files

@cache
def _pyelftools():
    """(ELFFile, ELFError), imported on first use: pyelftools costs about 0.07 s of
    CPU to import, which a compile without a vmlinux should not pay."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    return ELFFile, ELFError


def _symtab_struct(elf: ELFFile) -> struct.Struct:
    """One decoder per (byte order, ELF class), chosen from what pyelftools
    identified: bulk decoding the symtab is ~10x faster than iter_symbols()."""
    order = "<" if elf.little_endian else ">"
    layout = "IIIBBH" if elf.elfclass == 32 else "IBBHQQ"
    st = struct.Struct(order + layout)
    if st.size != elf.structs.Elf_Sym.sizeof():
        raise SymbolError(f"unexpected ELF symbol size {elf.structs.Elf_Sym.sizeof()}")
    return st


def _nm_letter(bind: int, shndx: int, sec: tuple | None) -> str:
    """The letter GNU nm prints, for the defined symbols we keep."""
    if shndx == 0xFFF1:                                  # SHN_ABS
        letter = "a"
    elif sec is None:
        letter = "?"
    else:
        _, flags, nobits = sec
        if flags & 0x4:                                  # SHF_EXECINSTR
            letter = "t"
        elif nobits:
            letter = "b"
        elif flags & 0x1:                                # SHF_WRITE
            letter = "d"
        elif flags & 0x2:                                # SHF_ALLOC
            letter = "r"
        else:
            letter = "n"
    if bind == 2:                                        # STB_WEAK
        return "W" if letter == "t" else "V"
    return letter.upper() if bind == 1 else letter


def _elf_rows(elf: ELFFile, module: str) -> tuple[list[Symbol], set[str]]:
    symtab = elf.get_section_by_name(".symtab")
    if symtab is None:
        raise SymbolError("no .symtab (a stripped file?): use an unstripped vmlinux or System.map")
    strtab = elf.get_section(symtab["sh_link"]).data()
    sections = [(s.name, s["sh_flags"], s["sh_type"] == "SHT_NOBITS") for s in elf.iter_sections()]
    target = target_by_elf_machine(elf["e_machine"])
    mapping = target is not None and target.mapping_symbols
    arm = elf["e_machine"] == "EM_ARM"                  # the Thumb bit is ARM's ELF ABI alone
    out, nokprobe = [], set()
    for st_name, value, size, info, shndx in _iter_raw_symbols(elf, symtab):
        sym = _elf_symbol(strtab, sections, st_name, value, size, info, shndx, arm, mapping,
                          module)
        if sym is None:
            continue
        if sym.name.startswith(NOKPROBE_PREFIX):
            nokprobe.add(sym.name[len(NOKPROBE_PREFIX):])
        out.append(sym)
    return out, nokprobe


def _iter_raw_symbols(elf: ELFFile, symtab):
    st = _symtab_struct(elf)
    data = symtab.data()
    if elf.elfclass == 32:
        for name, value, size, info, _other, shndx in st.iter_unpack(data):
            yield name, value, size, info, shndx
    else:
        for name, info, _other, shndx, value, size in st.iter_unpack(data):
            yield name, value, size, info, shndx


def _elf_symbol(strtab: bytes, sections: list, st_name: int, value: int, size: int,
                info: int, shndx: int, arm: bool, mapping: bool, module: str) -> Symbol | None:
    stype, bind = info & 0xF, info >> 4
    # Undefined, section and file symbols name nothing we can probe or print.
    if shndx == 0 or stype in (3, 4) or st_name == 0:
        return None
    name = strtab[st_name:strtab.index(b"\0", st_name)].decode(errors="replace")
    if mapping and name[:1] == "$":                      # mapping symbols: $a $t $x $d
        return None
    sec = sections[shndx] if shndx < len(sections) else None
    func = stype == 2                                    # STT_FUNC
    thumb = arm and func and bool(value & 1)
    return Symbol(name, value & ~1 if thumb else value, size, _nm_letter(bind, shndx, sec),
                  sec[0] if sec else "", func, thumb, module)


def open_elf(path: Path):
    """(open file, ELFFile); every pyelftools failure becomes a SymbolError."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise SymbolError(f"{path}: {e.strerror}") from None
    elf_file, elf_error = _pyelftools()
    try:
        return f, elf_file(f)
    except (elf_error, struct.error, ValueError) as e:
        f.close()
        raise SymbolError(f"{path}: not a readable ELF file: {e}") from None


def _machine_name(e_machine: str) -> str:
    """The ktap target whose kernels carry this e_machine, else pyelftools' name."""
    target = target_by_elf_machine(e_machine)
    return target.name if target else e_machine


def _elf_table(path: Path) -> SymbolTable:
    f, elf = open_elf(path)
    with f:
        module = path.name[:-3] if elf["e_type"] == "ET_REL" else ""
        try:
            rows, nokprobe = _elf_rows(elf, module)
        except (_pyelftools()[1], struct.error) as e:
            raise SymbolError(f"{path}: damaged ELF symbol table: {e}") from None
        except SymbolError as e:
            raise SymbolError(f"{path}: {e.message}") from None
        return SymbolTable(rows, source="module" if module else "vmlinux", path=str(path),
                           machine=_machine_name(elf["e_machine"]),
                           byte_order="little" if elf.little_endian else "big",
                           word_size=elf.elfclass // 8, nokprobe=nokprobe)


# ---------------------------------------------------------------- text maps

def parse_map_text(text: str, source: str, path: str = "", word_size: int = 0) -> SymbolTable:
    """System.map or /proc/kallsyms lines: `ADDR TYPE NAME [\\t[module]]`.

    nm prints a 32-bit MIPS kernel's addresses sign-extended to 64 bits
    (ffffffff80100000) while kallsyms prints 80100000; a map cannot tell a
    32-bit kernel from x86_64 by itself, so the caller passes word_size."""
    mask = (1 << (8 * word_size)) - 1 if word_size else -1
    rows, nokprobe = [], set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        try:
            addr = int(parts[0], 16) & mask
        except ValueError:
            continue
        kind, name = parts[1], parts[2]
        module = parts[3].strip("[]") if len(parts) > 3 else ""
        if name.startswith(NOKPROBE_PREFIX):
            nokprobe.add(name[len(NOKPROBE_PREFIX):])
        func = kind in TEXT_KINDS and not _MARKER_LIKE.match(name) and name[:1] != "$"
        rows.append(Symbol(name, addr, 0, kind, "", func, False, module))
    return SymbolTable(_with_map_sizes(rows), source=source, path=path, nokprobe=nokprobe,
                       word_size=word_size)


def _with_map_sizes(rows: list[Symbol]) -> list[Symbol]:
    """Maps carry no sizes: a function ends where the next text address starts,
    as the kernel's own kallsyms lookup assumes."""
    rows.sort(key=lambda s: s.addr)
    text_addrs = sorted({s.addr for s in rows if s.kind in TEXT_KINDS})
    out = []
    for s in rows:
        if s.func:
            i = bisect.bisect_right(text_addrs, s.addr)
            if i < len(text_addrs):
                s = s._replace(size=text_addrs[i] - s.addr)
        out.append(s)
    return out


def _map_table(path: Path, source: str, word_size: int = 0) -> SymbolTable:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SymbolError(f"{path}: {e.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return parse_map_text(raw.decode(errors="replace"), source, str(path), word_size)


# ---------------------------------------------------------------- loading

def load_vmlinux(path: str | Path, use_cache: bool = True) -> SymbolTable:
    return cached_table(Path(path), "elf", _elf_table, use_cache)


def load_module(path: str | Path, use_cache: bool = True) -> SymbolTable:
    return cached_table(Path(path), "elf", _elf_table, use_cache)


def load_system_map(path: str | Path, use_cache: bool = True, word_size: int = 0) -> SymbolTable:
    return cached_table(Path(path), f"map{word_size}",
                        lambda p: _map_table(p, "system.map", word_size), use_cache)


def load_kallsyms(path: str | Path, use_cache: bool = True, word_size: int = 0) -> SymbolTable:
    return cached_table(Path(path), f"kallsyms{word_size}",
                        lambda p: _map_table(p, "kallsyms", word_size), use_cache)


def load(path: str | Path, use_cache: bool = True, word_size: int = 0) -> SymbolTable:
    """Any symbol source, told apart by its first bytes (ELF magic or text)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise SymbolError(f"{path}: {e.strerror}") from None
    if magic == b"\x7fELF":
        return load_vmlinux(path, use_cache)
    return load_system_map(path, use_cache, word_size)
