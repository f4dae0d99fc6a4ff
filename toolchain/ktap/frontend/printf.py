"""printf format strings: parsed once here, checked by sema, applied by output."""
from __future__ import annotations

import re
from dataclasses import dataclass

CONVERSIONS = "diuxXoscp"
_SPEC = re.compile(r"%([-+ #0]*)([0-9]*)(?:\.([0-9]*))?(.?)")
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
                              + " ".join("%" + c for c in CONVERSIONS) + " %%", i)
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


def count_conversions(fmt: str) -> int:
    return sum(1 for p in parse_format(fmt) if isinstance(p, Conv))
