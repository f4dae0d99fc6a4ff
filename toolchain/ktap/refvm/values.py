"""Runtime values shared by the reference VM and the output formatter.

Tables iterate in slot order: a new key takes the most recently freed slot,
else the next unused one. The kernel's pool-backed tables follow the same rule,
so `pairs` order is identical on the host and on a board.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ktap.frontend import program

INT64_MIN = -(1 << 63)


def wrap(v: int) -> int:
    return ((v + (1 << 63)) & 0xFFFFFFFFFFFFFFFF) - (1 << 63)


def cdiv(a: int, b: int) -> int:
    """C's 64-bit division: truncates toward zero; INT64_MIN / -1 wraps."""
    q = abs(a) // abs(b)
    return wrap(q if (a < 0) == (b < 0) else -q)


def cmod(a: int, b: int) -> int:
    """C's remainder: takes the sign of the dividend."""
    return wrap(a - cdiv(a, b) * b) if not (a == INT64_MIN and b == -1) else 0


class Stack(tuple):
    """A kernel stack: a tuple of return addresses, usable as a table key."""


class Time(tuple):
    """strftime(fmt, ns): (nanoseconds, format), formatted where it is printed."""

    def text(self) -> str:
        ns, fmt = self
        return format_time(ns, fmt)


def format_time(ns: int, fmt: str) -> str:
    """strftime(3) of ns nanoseconds since the epoch, in local time (TZ), as
    ktaprun formats it on the board; whole seconds, rounded down."""
    return time.strftime(fmt, time.localtime(ns // 1_000_000_000)) if fmt else ""


def log2_bucket(v: int) -> int:
    """DTrace quantize bucket: 0, or the signed power of two at or below |v|."""
    if v == 0:
        return 0
    mag = 1 << (abs(v).bit_length() - 1)
    return mag if v > 0 else -mag


def linear_bucket(v: int, d: program.TableDesc) -> int:
    """Index: -1 below lmin, len-1.. for >= lmax, else (v - lmin) // step."""
    if v < d.lmin:
        return -1
    if v >= d.lmax:
        return linear_count(d)
    return (v - d.lmin) // d.lstep


def linear_count(d: program.TableDesc) -> int:
    return (d.lmax - d.lmin + d.lstep - 1) // d.lstep


@dataclass
class Agg:
    count: int = 0
    sum: int = 0
    min: int = 0
    max: int = 0
    log2: dict[int, int] = field(default_factory=dict)
    linear: dict[int, int] = field(default_factory=dict)

    def feed(self, v: int, desc: program.TableDesc) -> None:
        if self.count == 0 or v < self.min:
            self.min = v
        if self.count == 0 or v > self.max:
            self.max = v
        self.count += 1
        self.sum = wrap(self.sum + v)
        if desc.flags & program.TABLE_LOG2:
            b = log2_bucket(v)
            self.log2[b] = self.log2.get(b, 0) + 1
        if desc.flags & program.TABLE_LINEAR:
            b = linear_bucket(v, desc)
            self.linear[b] = self.linear.get(b, 0) + 1

    @property
    def avg(self) -> int:
        return cdiv(self.sum, self.count) if self.count else 0     # zero() leaves none

    def copy(self) -> "Agg":
        return Agg(self.count, self.sum, self.min, self.max, dict(self.log2), dict(self.linear))


class TableFull(Exception):
    pass


class Table:
    def __init__(self, desc_index: int, desc: program.TableDesc, limit: int):
        self.desc_index = desc_index
        self.desc = desc
        self.limit = limit
        self.slots: list[tuple | None] = []
        self.index: dict[object, int] = {}
        self.free: list[int] = []

    def __len__(self) -> int:
        return len(self.index)

    def get(self, key):
        i = self.index.get(key)
        return None if i is None else self.slots[i][1]

    def _slot_for(self, key) -> int:
        i = self.index.get(key)
        if i is not None:
            return i
        if len(self.index) >= self.limit:
            raise TableFull()
        if self.free:
            i = self.free.pop()
        else:
            i = len(self.slots)
            self.slots.append(None)
        self.index[key] = i
        self.slots[i] = (key, None)
        return i

    def set(self, key, value) -> None:
        if value is None:
            self.delete(key)
            return
        i = self._slot_for(key)
        self.slots[i] = (key, value)

    def delete(self, key) -> None:
        i = self.index.pop(key, None)
        if i is not None:
            self.slots[i] = None
            self.free.append(i)

    def clear(self) -> None:
        for key in list(self.index):
            self.delete(key)

    def zero(self) -> None:
        """Numbers become 0 and aggregates empty; every key stays where it is."""
        for key, i in self.index.items():
            self.slots[i] = (key, Agg() if isinstance(self.slots[i][1], Agg) else 0)

    def next(self, cursor: int):
        for i in range(max(cursor, 0), len(self.slots)):
            if self.slots[i] is not None:
                return i + 1, self.slots[i]
        return None, None

    def items(self) -> list[tuple]:
        return [s for s in self.slots if s is not None]

    def snapshot(self) -> list[tuple]:
        return [(k, v.copy() if isinstance(v, Agg) else v) for k, v in self.items()]


def type_name(v) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, Table):
        return "table"
    if isinstance(v, Agg):
        return "aggregate"
    if isinstance(v, Stack):
        return "stack"
    if isinstance(v, Time):
        return "time"
    return "value"
