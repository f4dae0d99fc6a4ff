"""Decodes ktapvm's binary output records (docs/kmod.md) back into output.py's
record tuples, so output.Formatter renders what the C core printed exactly as
`ktap sim` renders the reference VM's. The record and value codes come from
backends/kbc/records.py, the table the C header is rendered from."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ktap.backends.kbc.records import REC, STATE, VAL
from ktap.core.targets import Target
from ktap.refvm.values import Agg, Stack, Time


class RecordError(Exception):
    pass


@dataclass
class Status:
    exit_code: int = 0
    state: int = STATE["ran"]      # STATE: ran to the end, exit(), runtime error
    line: int = 0
    col: int = 0
    proto: int = 0
    message: str = ""
    drops: dict[str, int] = field(default_factory=dict)


class TableRef:
    """A table value inside a record: only its kind is printable."""

    def __init__(self, desc: int):
        self.desc = desc


class RecordReader:
    """Reads records in the target's byte order."""

    def __init__(self, data: bytes, target: Target):
        self.data = data
        self.pos = 0
        self.p = target.struct_prefix

    def _get(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise RecordError(f"truncated record stream at byte {self.pos}")
        v = struct.unpack_from(self.p + fmt, self.data, self.pos)[0]
        self.pos += size
        return v

    def u8(self) -> int: return self._get("B")
    def u32(self) -> int: return self._get("I")
    def i64(self) -> int: return self._get("q")

    def text(self) -> str:
        n = self.u32()
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        return raw.decode("utf-8", "surrogateescape")

    def agg(self) -> Agg:
        a = Agg(self.i64(), self.i64(), self.i64(), self.i64())
        for _ in range(self.u32()):
            b = self.i64()
            a.log2[b] = self.i64()
        for _ in range(self.u32()):
            i = self.i64()
            a.linear[i] = self.i64()
        return a

    def value(self):
        tag = self.u8()
        if tag == VAL["nil"]:
            return None
        if tag in (VAL["false"], VAL["true"]):
            return tag == VAL["true"]
        if tag == VAL["num"]:
            return self.i64()
        if tag == VAL["str"]:
            return self.text()
        if tag == VAL["table"]:
            return TableRef(self.u32())
        if tag == VAL["agg"]:
            return self.agg()
        if tag == VAL["stack"]:
            return Stack(self.i64() & 0xFFFFFFFFFFFFFFFF for _ in range(self.u32()))
        if tag == VAL["time"]:
            ns = self.i64()
            return Time((ns, self.text()))
        raise RecordError(f"unknown value tag {tag}")

    def values(self) -> list:
        return [self.value() for _ in range(self.u32())]

    def entries(self) -> list[tuple]:
        return [(self.value(), self.value()) for _ in range(self.u32())]

    def record(self):
        start = self.pos
        size, kind = self.u32(), self.u8()
        if kind == REC["printf"]:
            rec = ("printf", self.u32(), self.values())
        elif kind == REC["print"]:
            rec = ("print", self.values())
        elif kind == REC["dump"]:
            rec = ("dump", self.entries())
        elif kind == REC["print_hist"]:
            n = self.i64()
            rec = ("print_hist", self.entries(), n)
        elif kind in (REC["hist"], REC["lhist"]):
            desc = self.u32()
            rec = ("hist" if kind == REC["hist"] else "lhist", self.entries(), desc)
        elif kind == REC["status"]:
            st = Status(self.i64(), self.u8(), self.u32(), self.u32(), self.u32(), self.text())
            for _ in range(self.u32()):
                reason = self.text()
                st.drops[reason] = self.i64()
            rec = st
        else:
            raise RecordError(f"unknown record kind {kind}")
        if self.pos - start != size:
            raise RecordError(f"record at byte {start} is {self.pos - start} bytes, says {size}")
        return rec

    def records(self) -> list:
        out = []
        while self.pos < len(self.data):
            out.append(self.record())
        return out


def decode_records(data: bytes, target: Target) -> tuple[list, Status | None]:
    """(the records as output.py tuples, the STATUS record or None)."""
    recs = RecordReader(data, target).records()
    status = next((r for r in recs if isinstance(r, Status)), None)
    return [r for r in recs if not isinstance(r, Status)], status
