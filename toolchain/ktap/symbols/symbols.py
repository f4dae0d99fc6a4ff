"""Offline kernel symbols: tables from vmlinux, System.map, kallsyms and .ko files,
probe-point refusal rules, glob expansion, capstone probe-point checks, and
stack symbolization.

The board has no debuginfo and often no network, so everything a script's
probe names depend on is decided here on the host, from the files of the
kernel the board runs.
"""
from __future__ import annotations

import bisect
import difflib
import fnmatch
import gzip
import hashlib
import os
import pickle
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ktap.core.diagnostics import KtapError
from ktap.core.targets import Target
from ktap.core.cache import cache_root

# Bump when the cached index layout or the symbol rules change.
INDEX_VERSION = 2

ELF_MACHINES = {"EM_X86_64": "x86_64", "EM_ARM": "arm", "EM_MIPS": "mips", "EM_PPC": "powerpc"}

# NOKPROBE_SYMBOL(fn) emits a pointer named _kbl_addr_<fn> into the
# _kprobe_blacklist section; the kernel refuses probes on those functions.
NOKPROBE_PREFIX = "_kbl_addr_"

# Sections whose code may not be probed, by ELF section name (vmlinux, .ko).
SECTION_REASONS = {
    ".init.text": "init-section",
    ".exit.text": "exit-section",
    ".kprobes.text": "kprobes-text",
    ".noinstr.text": "noinstr",
    ".entry.text": "entry-text",
}
# The same areas by linker-script marker symbols: in vmlinux most of them are
# merged into .text, and a System.map or kallsyms has no sections at all.
MARKER_RANGES = (
    ("kprobes-text", "__kprobes_text_start", "__kprobes_text_end"),
    ("noinstr", "__noinstr_text_start", "__noinstr_text_end"),
    ("entry-text", "__entry_text_start", "__entry_text_end"),
    ("init-section", "_sinittext", "_einittext"),
    # x86 and others place .exit.text inside the init area, freed after boot.
    ("init-section", "__init_begin", "__init_end"),
)
MARKER_NAMES = frozenset(n for _, a, b in MARKER_RANGES for n in (a, b))

REASONS = {
    "not-function": "is not a function",
    "init-section": "is in .init.text, freed after boot",
    "exit-section": "is in .exit.text, never run in a built-in kernel",
    "kprobes-text": "is in .kprobes.text (kprobes' own code)",
    "noinstr": "is in .noinstr.text (code that must not be instrumented)",
    "entry-text": "is in .entry.text (low-level entry code)",
    "nokprobe": "is marked NOKPROBE_SYMBOL",
}

TEXT_KINDS = frozenset("tTwW")
# System.map/kallsyms have no symbol types beyond the nm letter; a text-area
# label such as _stext looks like a function there, so marker-like names are
# kept out of the function set.
_MARKER_LIKE = re.compile(r"^(_s|_e)[a-z]*text$|^__.*_(start|end)$|^_?_?(s|e)?text$")


class SymbolError(KtapError):
    """A symbol source that cannot be read, or a probe name that cannot be used."""


class Symbol(NamedTuple):
    name: str
    addr: int
    size: int            # 0 when unknown (asm labels)
    kind: str            # nm letter: T t W w D d R r B b A ...
    section: str = ""    # ELF section name; "" for System.map/kallsyms
    func: bool = False   # a function entry (STT_FUNC, or a text symbol in a map)
    thumb: bool = False  # arm Thumb function (bit 0 of an ELF STT_FUNC value)
    module: str = ""     # kallsyms "[mod]" column, or the .ko name


def _addr_name(s: Symbol) -> tuple[int, str]:
    return s.addr, s.name


@dataclass(frozen=True)
class Refusal:
    symbol: Symbol
    code: str            # a key of REASONS

    @property
    def message(self) -> str:
        return f"{self.symbol.name} {REASONS[self.code]}"


# ---------------------------------------------------------------- the table

class SymbolTable:
    """Symbols of one kernel (or module), sorted by address, with the probe rules."""

    def __init__(self, symbols: Iterable[Symbol], *, source: str, path: str = "",
                 machine: str = "", byte_order: str = "", word_size: int = 0,
                 nokprobe: Iterable[str] = (), presorted: bool = False):
        self.symbols = list(symbols) if presorted else sorted(symbols, key=_addr_name)
        self.source = source          # "vmlinux", "system.map", "kallsyms", "module"
        self.path = path
        self.machine = machine        # ktap target name when known from the ELF header
        self.byte_order = byte_order
        self.word_size = word_size
        self.nokprobe = set(nokprobe)
        self.by_name: dict[str, list[Symbol]] = {}
        for s in self.symbols:
            self.by_name.setdefault(s.name, []).append(s)
        self.ranges = self._marker_ranges()
        self._funcs = [s for s in self.symbols if s.func]
        self._func_addrs = [s.addr for s in self._funcs]

    def __len__(self) -> int:
        return len(self.symbols)

    def _marker_ranges(self) -> list[tuple[str, int, int]]:
        out = []
        for code, start, end in MARKER_RANGES:
            a, b = self.by_name.get(start), self.by_name.get(end)
            if a and b:
                out.append((code, a[0].addr, b[0].addr))
        return out

    @property
    def thumb_functions(self) -> bool:
        return any(s.thumb for s in self._funcs[:2000])

    def functions(self) -> list[Symbol]:
        return self._funcs

    def function_names(self) -> list[str]:
        return sorted({s.name for s in self._funcs})

    def lookup(self, name: str) -> list[Symbol]:
        return self.by_name.get(name, [])

    def function(self, name: str) -> Symbol | None:
        """The function the kernel would probe for `name`: kallsyms lookup
        takes the first match in address order."""
        for s in self.by_name.get(name, []):
            if s.func:
                return s
        return None

    def address_of(self, name: str) -> int:
        syms = self.lookup(name)
        if not syms:
            raise SymbolError(f"{name}: not in {self.describe()}")
        return syms[0].addr

    def describe(self) -> str:
        return f"{self.source} {self.path}".strip()

    def refusal(self, sym: Symbol) -> Refusal | None:
        """Why a probe on `sym` would be refused, or None if it is probeable."""
        if not sym.func:
            return Refusal(sym, "not-function")
        code = SECTION_REASONS.get(sym.section)
        if code is None:
            code = next((c for c, lo, hi in self.ranges if lo <= sym.addr < hi), None)
        if code is None and sym.name in self.nokprobe:
            code = "nokprobe"
        return Refusal(sym, code) if code else None

    def suggest(self, name: str, n: int = 3) -> list[str]:
        return difflib.get_close_matches(name, self.function_names(), n=n, cutoff=0.75)

    def containing(self, addr: int) -> Symbol | None:
        """The function whose range holds addr (static address)."""
        i = bisect.bisect_right(self._func_addrs, addr) - 1
        if i < 0:
            return None
        s = self._funcs[i]
        return s if s.size == 0 or addr < s.addr + s.size else None

    # -------------------------------------------------------- cache columns

    def to_columns(self) -> dict:
        # Plain tuples in address order: pickle shares the repeated section
        # strings, and loading skips both the sort and namedtuple pickling.
        return {
            "meta": dict(source=self.source, path=self.path, machine=self.machine,
                         byte_order=self.byte_order, word_size=self.word_size),
            "nokprobe": sorted(self.nokprobe),
            "rows": [tuple(s) for s in self.symbols],
        }

    @classmethod
    def from_columns(cls, cols: dict) -> "SymbolTable":
        syms = list(map(Symbol._make, cols["rows"]))
        return cls(syms, nokprobe=cols["nokprobe"], presorted=True, **cols["meta"])


# ---------------------------------------------------------------- ELF files

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
    arm = elf["e_machine"] == "EM_ARM"
    out, nokprobe = [], set()
    for st_name, value, size, info, shndx in _iter_raw_symbols(elf, symtab):
        sym = _elf_symbol(strtab, sections, st_name, value, size, info, shndx, arm, module)
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
                info: int, shndx: int, arm: bool, module: str) -> Symbol | None:
    stype, bind = info & 0xF, info >> 4
    # Undefined, section and file symbols name nothing we can probe or print.
    if shndx == 0 or stype in (3, 4) or st_name == 0:
        return None
    name = strtab[st_name:strtab.index(b"\0", st_name)].decode(errors="replace")
    if arm and name[:1] == "$":                          # ARM mapping symbols $a $t $d
        return None
    sec = sections[shndx] if shndx < len(sections) else None
    func = stype == 2                                    # STT_FUNC
    thumb = arm and func and bool(value & 1)
    return Symbol(name, value & ~1 if thumb else value, size, _nm_letter(bind, shndx, sec),
                  sec[0] if sec else "", func, thumb, module)


def _open_elf(path: Path):
    try:
        f = open(path, "rb")
    except OSError as e:
        raise SymbolError(f"{path}: {e.strerror}") from None
    try:
        return f, ELFFile(f)
    except (ELFError, struct.error, ValueError) as e:
        f.close()
        raise SymbolError(f"{path}: not a readable ELF file: {e}") from None


def _elf_table(path: Path) -> SymbolTable:
    f, elf = _open_elf(path)
    with f:
        module = path.name[:-3] if elf["e_type"] == "ET_REL" else ""
        try:
            rows, nokprobe = _elf_rows(elf, module)
        except (ELFError, struct.error) as e:
            raise SymbolError(f"{path}: damaged ELF symbol table: {e}") from None
        except SymbolError as e:
            raise SymbolError(f"{path}: {e.message}") from None
        return SymbolTable(rows, source="module" if module else "vmlinux", path=str(path),
                           machine=ELF_MACHINES.get(elf["e_machine"], elf["e_machine"]),
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


# ---------------------------------------------------------------- loading, cache

def index_cache_dir() -> Path:
    return cache_root() / "symbols"


def _cache_key(path: Path, kind: str) -> str:
    st = path.stat()
    ident = f"v{INDEX_VERSION};{kind};{path.resolve()};{st.st_size};{st.st_mtime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def _cached(path: Path, kind: str, build, use_cache: bool) -> SymbolTable:
    """Indexes are pickled by (path, size, mtime): a rebuilt kernel gets a new one."""
    if not use_cache:
        return build(path)
    try:
        cache_file = index_cache_dir() / f"{_cache_key(path, kind)}.pickle"
    except OSError as e:
        raise SymbolError(f"{path}: {e.strerror}") from None
    try:
        with open(cache_file, "rb") as f:
            return SymbolTable.from_columns(pickle.load(f))
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError):
        pass
    table = build(path)
    _write_cache(cache_file, table)
    return table


def _write_cache(cache_file: Path, table: SymbolTable) -> None:
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            pickle.dump(table.to_columns(), f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(cache_file)
    except OSError:
        pass                       # a read-only cache only costs speed


def load_vmlinux(path: str | Path, use_cache: bool = True) -> SymbolTable:
    return _cached(Path(path), "elf", _elf_table, use_cache)


def load_module(path: str | Path, use_cache: bool = True) -> SymbolTable:
    return _cached(Path(path), "elf", _elf_table, use_cache)


def load_system_map(path: str | Path, use_cache: bool = True, word_size: int = 0) -> SymbolTable:
    return _cached(Path(path), f"map{word_size}",
                   lambda p: _map_table(p, "system.map", word_size), use_cache)


def load_kallsyms(path: str | Path, use_cache: bool = True, word_size: int = 0) -> SymbolTable:
    return _cached(Path(path), f"kallsyms{word_size}",
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


# ---------------------------------------------------------------- globs

@dataclass
class Expansion:
    pattern: str
    names: list[str] = field(default_factory=list)          # probeable, sorted
    refused: list[Refusal] = field(default_factory=list)
    ambiguous: dict[str, int] = field(default_factory=dict)  # name -> how many functions


def is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")


def expand_symbols(pattern: str, symbols: SymbolTable) -> Expansion:
    """Functions matching a symbol name or glob, split into probeable and refused."""
    exp = Expansion(pattern)
    if is_glob(pattern):
        # Data symbols are matched too, so listings can say why they are out.
        names = sorted(n for n in symbols.by_name if fnmatch.fnmatchcase(n, pattern))
    else:
        names = [pattern]
    for name in names:
        _classify(name, symbols, exp)
    return exp


def _classify(name: str, symbols: SymbolTable, exp: Expansion) -> None:
    sym = symbols.function(name)
    if sym is None:
        others = symbols.lookup(name)
        if others:
            exp.refused.append(Refusal(others[0], "not-function"))
        return
    why = symbols.refusal(sym)
    if why:
        exp.refused.append(why)
        return
    exp.names.append(name)
    count = sum(1 for s in symbols.lookup(name) if s.func)
    if count > 1:
        exp.ambiguous[name] = count


def missing_message(name: str, symbols: SymbolTable) -> str:
    msg = f"no function '{name}' in {symbols.describe()}"
    close = symbols.suggest(name)
    if close:
        msg += "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return msg


def expand_probe(spec_name: str, symbols: SymbolTable) -> list[str]:
    """Expands a kprobe symbol or glob (`vfs_*`), or a whole spec
    (`probe:*_write%return`, `probe:vfs_read+0x4`), into the concrete names or
    specs, in the form given. Globs skip refused symbols quietly; a single
    name that is missing or refused raises SymbolError with the reason."""
    prefix, sym, suffix = split_spec(spec_name)
    exp = expand_symbols(sym, symbols)
    if not is_glob(sym):
        if exp.refused:
            raise SymbolError(f"cannot probe {exp.refused[0].message}")
        if not exp.names:
            raise SymbolError(missing_message(sym, symbols))
    elif not exp.names:
        raise SymbolError(_empty_glob_message(exp, symbols))
    return [f"{prefix}{n}{suffix}" for n in exp.names]


def split_spec(spec_name: str) -> tuple[str, str, str]:
    prefix = ""
    if ":" in spec_name:
        head, rest = spec_name.split(":", 1)
        prefix, spec_name = head + ":", rest
    for tail in ("%return",):
        if spec_name.endswith(tail):
            return prefix, spec_name[: -len(tail)], tail
    if "+" in spec_name:
        sym, off = spec_name.split("+", 1)
        return prefix, sym, "+" + off
    return prefix, spec_name, ""


def _empty_glob_message(exp: Expansion, symbols: SymbolTable) -> str:
    if not exp.refused:
        return f"'{exp.pattern}' matches no function in {symbols.describe()}"
    counts: dict[str, int] = {}
    for r in exp.refused:
        counts[r.code] = counts.get(r.code, 0) + 1
    why = ", ".join(f"{n} {code}" for code, n in sorted(counts.items()))
    return f"'{exp.pattern}' matches only functions that cannot be probed ({why})"


# ---------------------------------------------------------------- capstone checks

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


def _capstone(target: Target, thumb: bool = False):
    import capstone
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
        self._file, self.elf = _open_elf(self.path)
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
        check.errors.append(missing_message(name, symbols))
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


def _mips_branch(insn) -> bool:
    import capstone
    groups = set(insn.groups)
    if groups & {capstone.CS_GRP_JUMP, capstone.CS_GRP_CALL, capstone.CS_GRP_RET,
                 capstone.CS_GRP_BRANCH_RELATIVE}:
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


# ---------------------------------------------------------------- symbolization

class Symbolizer:
    """Runtime addresses to `symbol+0xoff`. KASLR moves the whole kernel by one
    slide, so one runtime address of a known symbol (reported by the module,
    e.g. printk) corrects every lookup."""

    def __init__(self, symbols: SymbolTable, anchor_name: str | None = None,
                 anchor_runtime: int | None = None):
        self.symbols = symbols
        self.slide = 0
        if anchor_name is not None and anchor_runtime is not None:
            self.slide = anchor_runtime - symbols.address_of(anchor_name)

    def symbolize(self, addr: int) -> str:
        sym = self.symbols.containing(addr - self.slide)
        if sym is None:
            return f"{addr:#x}"
        off = addr - self.slide - sym.addr
        return f"{sym.name}+{off:#x}"

    def __call__(self, addr: int) -> str:
        return self.symbolize(addr)


def folded(stacks: Iterable[tuple[tuple, int]], symbolizer: Symbolizer | None = None,
           leaf_first: bool = True) -> list[str]:
    """Folded stacks (`root;...;leaf count`), the input of flame graph tools.
    Kernel stack traces list the innermost frame first, hence leaf_first.
    Frames are names, or addresses when a symbolizer is given; offsets are
    dropped so one function is one flame."""
    totals: dict[str, int] = {}
    for stack, count in stacks:
        frames = [_frame_name(f, symbolizer) for f in stack]
        if leaf_first:
            frames.reverse()
        key = ";".join(frames)
        totals[key] = totals.get(key, 0) + count
    return [f"{k} {v}" for k, v in sorted(totals.items())]


def _frame_name(frame, symbolizer: Symbolizer | None) -> str:
    if isinstance(frame, int):
        text = symbolizer.symbolize(frame) if symbolizer else f"{frame:#x}"
    else:
        text = str(frame)
    name = text.split("+", 1)[0]
    return name.replace(";", ":").replace(" ", "_")


# ---------------------------------------------------------------- compile-time resolution

@dataclass(frozen=True)
class Problem:
    severity: str        # "error", "warning" or "notice"
    message: str
    spec: str = ""       # the probe as written in the script, when one is concerned

    def render(self, filename: str = "ktap") -> str:
        where = f" probe '{self.spec}':" if self.spec else ""
        return f"{filename}: {self.severity}:{where} {self.message}"


@dataclass
class Resolution:
    """resolve_events() output: the events to put in the image (globs
    expanded to one event per function or tracepoint), the problems found,
    and the record layouts of the tracepoint fields scripts read."""
    events: list = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    layouts: dict[str, dict] = field(default_factory=dict)   # "subsys:event" -> {name: Field}

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_errors(self, filename: str | None = None) -> None:
        lines = [(f"probe '{p.spec}': " if p.spec else "") + p.message for p in self.errors]
        if lines:
            raise SymbolError("\n".join(lines), filename=filename)


@dataclass
class _Context:
    target: Target
    symbols: SymbolTable | None
    reader: CodeReader | None
    profile: object | None
    out: Resolution


def resolve_events(image_events: list, target, vmlinux=None, system_map=None,
                   profile=None) -> Resolution:
    """Checks an image's events against one kernel, offline.

    image_events: bytecode.Event list (image.events). target: Target or name.
    vmlinux / system_map: paths; profile: a directory or a profiles.Profile.
    Symbols come from vmlinux, else System.map, else the profile's kallsyms.
    Nothing given means nothing can be checked, and notices say so.
    """
    from ktap.symbols import profiles as prof
    from ktap.core.targets import get_target
    if isinstance(target, str):
        target = get_target(target)
    if profile is not None and not isinstance(profile, prof.Profile):
        profile = prof.load(profile)
    ctx = _Context(target, _pick_symbols(target, vmlinux, system_map, profile),
                   CodeReader(vmlinux) if vmlinux else None, profile, Resolution())
    try:
        _check_machine(ctx)
        _check_same_kernel(ctx)
        _check_features(ctx, image_events)
        for ev in image_events:
            _resolve_one(ctx, ev)
    finally:
        if ctx.reader:
            ctx.reader.close()
    return ctx.out


def _pick_symbols(target: Target, vmlinux, system_map, profile) -> SymbolTable | None:
    if vmlinux:
        return load_vmlinux(vmlinux)
    if system_map:
        return load_system_map(system_map, word_size=target.word_size)
    if profile is not None and (profile.path / "kallsyms.gz").exists():
        return profile.symbols
    return None


def _problem(ctx: _Context, severity: str, message: str, spec: str = "") -> None:
    p = Problem(severity, message, spec)
    if p not in ctx.out.problems:
        ctx.out.problems.append(p)


def _check_machine(ctx: _Context) -> None:
    s = ctx.symbols
    if s is not None and s.machine and s.machine != ctx.target.name:
        _problem(ctx, "error", f"{s.path} is a {s.machine} kernel, not {ctx.target.name}")
    if ctx.profile is not None and ctx.profile.target and ctx.profile.target != ctx.target.name:
        _problem(ctx, "error", f"{ctx.profile.describe()} is for {ctx.profile.target}, "
                               f"not {ctx.target.name}")


def _check_same_kernel(ctx: _Context) -> None:
    """A vmlinux or System.map from another build than the profiled kernel
    would make every later check wrong; compare their function names."""
    if ctx.symbols is None or ctx.profile is None or ctx.symbols.source == "kallsyms":
        return
    if not (ctx.profile.path / "kallsyms.gz").exists():
        return
    theirs = {s.name for s in ctx.profile.symbols.functions() if not s.module}
    ours = {s.name for s in ctx.symbols.functions()}
    missing = len(theirs - ours)
    if theirs and missing > len(theirs) // 100:
        _problem(ctx, "warning", f"{ctx.symbols.describe()} does not look like the kernel of "
                                 f"{ctx.profile.describe()}: {missing} of its {len(theirs)} "
                                 f"functions are missing")


# What each probe kind needs from the kernel: (feature, config option, symbol).
_NEEDS = {"kprobes": ("CONFIG_KPROBES", "register_kprobe"),
          "kretprobes": ("CONFIG_KRETPROBES", "register_kretprobe")}


def _check_features(ctx: _Context, events: list) -> None:
    from ktap.backends.kbc import bytecode as bc
    kinds = {ev.kind for ev in events}
    needed = [f for f, k in (("kprobes", bc.EV_KPROBE), ("kprobes", bc.EV_KRETPROBE),
                             ("kretprobes", bc.EV_KRETPROBE)) if k in kinds]
    for feature in dict.fromkeys(needed):
        present, evidence = _feature_present(ctx, feature)
        if present is False:
            _problem(ctx, "error", f"this script needs {feature}, but the kernel lacks them "
                                   f"({evidence}); enable {_NEEDS[feature][0]}=y")


def _feature_present(ctx: _Context, feature: str) -> tuple[bool | None, str]:
    option, symbol = _NEEDS[feature]
    if ctx.profile is not None and ctx.profile.features.get(feature) is not None:
        return ctx.profile.features[feature], f"{option} in {ctx.profile.describe()}"
    if ctx.symbols is not None and ctx.symbols.source != "module":
        return bool(ctx.symbols.lookup(symbol)), f"no {symbol} in {ctx.symbols.describe()}"
    return None, ""


def _resolve_one(ctx: _Context, ev) -> None:
    from ktap.backends.kbc import bytecode as bc
    if ev.kind in (bc.EV_KPROBE, bc.EV_KRETPROBE):
        _resolve_kprobe(ctx, ev)
    elif ev.kind == bc.EV_TRACEPOINT:
        _resolve_tracepoint(ctx, ev)
    else:
        ctx.out.events.append(ev)


def _resolve_kprobe(ctx: _Context, ev) -> None:
    import dataclasses
    if ctx.symbols is None:
        _problem(ctx, "notice", "probed functions are unchecked: give --vmlinux, "
                                "--system-map or --profile")
        ctx.out.events.append(ev)
        return
    exp = expand_symbols(ev.name, ctx.symbols)
    if not _expansion_ok(ctx, ev, exp):
        return
    for name, count in exp.ambiguous.items():
        _problem(ctx, "warning", f"{count} functions are named {name}; the kernel probes the "
                                 f"first one, at {ctx.symbols.function(name).addr:#x}", ev.spec)
    for name in exp.names:
        ctx.out.events.append(dataclasses.replace(ev, name=name, fields=list(ev.fields)))
        _probe_point(ctx, ev, name)


def _expansion_ok(ctx: _Context, ev, exp: Expansion) -> bool:
    if exp.names:
        return True
    if not is_glob(ev.name) and exp.refused:
        msg = f"cannot probe {exp.refused[0].message}"
    elif is_glob(ev.name):
        msg = _empty_glob_message(exp, ctx.symbols)
    else:
        msg = missing_message(ev.name, ctx.symbols)
    _problem(ctx, "error", msg, ev.spec)
    return False


def _probe_point(ctx: _Context, ev, name: str) -> None:
    """Capstone checks need code bytes: only a vmlinux has them."""
    thumb = _thumb_kernel(ctx)
    if ctx.reader is None:
        _problem(ctx, "notice", "probe-point checks (instruction boundary, delay slots, "
                                "ldrex/strex, Thumb-2) skipped: give --vmlinux")
        if thumb:
            _problem(ctx, "warning", "Thumb-2 kernel (CONFIG_THUMB2_KERNEL=y): arm kprobes "
                                     "were seen to oops in t16_emulate_push", ev.spec)
        return
    if ev.offset == 0 and not thumb:
        return                    # a function entry is always a boundary
    check = check_probe_point(ctx.symbols, ctx.reader, ctx.target, name, ev.offset, thumb)
    for sev, msgs in (("error", check.errors), ("warning", check.warnings),
                      ("notice", check.notices)):
        for m in msgs:
            _problem(ctx, sev, m, ev.spec)


def _thumb_kernel(ctx: _Context) -> bool:
    if ctx.target.capstone.get("arch") != "CS_ARCH_ARM":
        return False
    if ctx.profile is not None and ctx.profile.features.get("thumb2_kernel"):
        return True
    return bool(ctx.symbols is not None and ctx.symbols.thumb_functions)


def _resolve_tracepoint(ctx: _Context, ev) -> None:
    import dataclasses
    if ctx.profile is None:
        _problem(ctx, "notice", "tracepoints and their fields are unchecked: give --profile")
        ctx.out.events.append(ev)
        return
    names = [t for t in ctx.profile.tracepoints() if fnmatch.fnmatchcase(t, ev.name)]
    if not names:
        _problem(ctx, "error", _missing_tracepoint(ctx.profile, ev.name), ev.spec)
        return
    for name in names:
        if _tracepoint_fields(ctx, ev, name):
            ctx.out.events.append(dataclasses.replace(ev, name=name, fields=list(ev.fields)))


def _missing_tracepoint(profile, name: str) -> str:
    msg = f"no tracepoint {name} in {profile.describe()}"
    close = difflib.get_close_matches(name, profile.tracepoints(), n=3, cutoff=0.75)
    if close:
        msg += "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return msg


def _tracepoint_fields(ctx: _Context, ev, name: str) -> bool:
    subsys, event = name.split(":", 1)
    fields = {f.name: f for f in ctx.profile.tracepoint_fields(subsys, event)}
    missing = [n for n in ev.fields if n not in fields]
    for n in missing:
        known = ", ".join(f for f in fields if not fields[f].common)
        _problem(ctx, "error", f"tracepoint {name} has no field '{n}' (its fields: {known})",
                 ev.spec)
    ctx.out.layouts[name] = {n: fields[n] for n in ev.fields if n in fields}
    return not missing
