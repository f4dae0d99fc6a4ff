"""printf format strings: parsed once here, checked by sema, applied by output."""
from __future__ import annotations

import re
from dataclasses import dataclass

CONVERSIONS = "diuxXoscp"
# C's length modifiers: accepted, so C-style formats port as they are, and
# dropped, since every ktap number is 64-bit (%lu is %u)
LENGTHS = "(?:hh|h|ll|l|L|q|j|z|t)"
_SPEC = re.compile(r"%([-+ #0]*)([0-9]*)(?:\.([0-9]*))?" + LENGTHS + r"?(.?)")
_LENGTH = re.compile(r"%%|(%[-+ #0]*[0-9]*(?:\.[0-9]*)?)" + LENGTHS)
MAX_WIDTH = 256


class FormatError(Exception):
    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class Conv:
    flags: str
    width: int | None
    precision: int | None
    conv: str


def parse_format(fmt: str) -> list[str | Conv]:
    parts: list[str | Conv] = []
    lit = []
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c != "%":
            lit.append(c)
            i += 1
            continue
        if fmt.startswith("%%", i):
            lit.append("%")
            i += 2
            continue
        m = _SPEC.match(fmt, i)
        flags, width, prec, conv = m.groups()
        if conv == "" or conv not in CONVERSIONS:
            shown = conv if conv else "end of string"
            raise FormatError(f"unknown printf conversion '%{flags}{width}{conv}' "
                              f"(at {shown!r}); supported: "
                              + " ".join("%" + c for c in CONVERSIONS) + " %%, with C's "
                              "length modifiers (l, ll, h, z, ...) allowed", i)
        w = int(width) if width else None
        p = int(prec) if prec else (0 if prec == "" else None)
        if (w or 0) > MAX_WIDTH or (p or 0) > MAX_WIDTH:
            raise FormatError(f"printf width or precision above {MAX_WIDTH}", i)
        if lit:
            parts.append("".join(lit))
            lit = []
        parts.append(Conv(flags, w, p, conv))
        i = m.end()
    if lit:
        parts.append("".join(lit))
    return parts


def without_lengths(fmt: str) -> str:
    """The format with its length modifiers dropped ("%lu" -> "%u"): what the
    image carries, so every formatter sees only the conversions it knows."""
    return _LENGTH.sub(lambda m: m.group(1) or m.group(0), fmt)


def count_conversions(fmt: str) -> int:
    return sum(1 for p in parse_format(fmt) if isinstance(p, Conv))
