"""The symbol table of one kernel (or module) and the rules that say which of its
functions may be probed.

The board has no debuginfo and often no network, so everything a script's
probe names depend on is decided on the host, from the files of the kernel the
board runs. The readers (readers.py) fill this model; everything else reads it.
"""
from __future__ import annotations

import bisect
import difflib
from dataclasses import dataclass
from typing import Iterable, NamedTuple

from ktap.core.diagnostics import KtapError

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


def did_you_mean(close: list[str]) -> str:
    """The tail of a not-found message: "; did you mean 'a' or 'b'?", or ""."""
    if not close:
        return ""
    return "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?"


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

    def missing_message(self, name: str) -> str:
        return f"no function '{name}' in {self.describe()}" + did_you_mean(self.suggest(name))

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
