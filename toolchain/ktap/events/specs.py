"""Probe specifications: `subsys:event`, `probe:SYM[+OFF]`, `probe:SYM%return`,
`kprobe:`/`kretprobe:` aliases, `tick-N<unit>`, `profile-N<unit>`,
`perf:NAME[:PERIOD|:Nhz]`, and in user space `probe:/PATH:SYM[+OFF]`,
`probe:/PATH:0xADDR`, `probe:/PATH:SYM%return` (`uprobe:`/`uretprobe:`
aliases) and `sdt:/PATH:PROVIDER:NAME` (`usdt:`)."""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ktap.events import perf
from ktap.events.kinds import (BY_ID, EV_KPROBE, EV_KRETPROBE, EV_PERF, EV_PROFILE, EV_TICK,
                               EV_TRACEPOINT, EV_UPROBE, EV_URETPROBE, EV_USDT, TIMER_KINDS,
                               USER_KINDS)

UNITS_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
MIN_PERIOD_NS = {k: BY_ID[k].min_period_ns for k in sorted(TIMER_KINDS)}

_SYMBOL = re.compile(r"[A-Za-z_.*?\[\]][A-Za-z0-9_.*?\[\]]*$")
_OFFSET = re.compile(r"(0[xX][0-9A-Fa-f]+|[0-9]+)$")
_TIMER = re.compile(r"(tick|profile)-([0-9]+)(ns|us|ms|s)?$")
_PERF_RATE = re.compile(r"([0-9]+)(hz|ns|us|ms|s)?$")
_USER_SYMBOL = re.compile(r"[A-Za-z_.$*?\[\]][A-Za-z0-9_.$*?\[\]]*$")
_USDT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


class SpecError(Exception):
    pass


@dataclass(frozen=True)
class Spec:
    kind: int
    name: str            # symbol, subsys:event, the timer spec, perf:NAME
    offset: int = 0      # kprobes: the offset; perf: the sample frequency (Hz)
    period_ns: int = 0   # timers: the period; perf: the sample period

    @property
    def is_glob(self) -> bool:
        return any(c in self.name for c in "*?[")

    @property
    def probename(self) -> str:
        if self.kind in (EV_KPROBE, EV_UPROBE) and self.offset:
            return f"{self.name}+{self.offset:#x}"
        return self.name

    @property
    def user_path(self) -> str:
        """The target file of a user-space probe."""
        return self.name.split(":", 1)[0] if self.kind in USER_KINDS else ""

    @property
    def user_where(self) -> str:
        """What a user-space probe names in its file: a symbol or glob, an
        0xADDRESS, or PROVIDER:NAME for USDT."""
        return self.name.split(":", 1)[1] if self.kind in USER_KINDS else ""


def parse_spec(text: str) -> Spec:
    m = _TIMER.match(text)
    if m:
        return _timer(m)
    if ":" not in text:
        raise SpecError(f"unknown probe '{text}': expected SUBSYS:EVENT, probe:SYMBOL, "
                        f"tick-N or profile-N")
    prefix, rest = text.split(":", 1)
    if prefix in ("probe", "uprobe", "uretprobe") and rest.startswith("/"):
        return _uprobe(prefix, rest)
    if prefix in ("sdt", "usdt"):
        return _usdt(rest)
    if prefix in ("uprobe", "uretprobe"):
        raise SpecError(f"'{prefix}:' needs a file path on the target: "
                        f"{prefix}:/PATH:SYMBOL")
    if prefix in ("probe", "kprobe", "kretprobe"):
        return _kprobe(prefix, rest)
    if prefix == "perf":
        return _perf(rest)
    return _tracepoint(prefix, rest)


def _timer(m: re.Match) -> Spec:
    kind = EV_TICK if m.group(1) == "tick" else EV_PROFILE
    if m.group(3) is None:
        raise SpecError(f"'{m.group(0)}' needs a unit: s, ms, us or ns "
                        f"(for example {m.group(1)}-{m.group(2)}ms)")
    period = int(m.group(2)) * UNITS_NS[m.group(3)]
    if period < MIN_PERIOD_NS[kind]:
        raise SpecError(f"'{m.group(0)}' is too fast: the shortest {m.group(1)} period "
                        f"is {MIN_PERIOD_NS[kind] // 1000}us")
    return Spec(kind, m.group(0), 0, period)


def _kprobe(prefix: str, rest: str) -> Spec:
    ret = prefix == "kretprobe"
    if "%return" in rest and not rest.endswith("%return"):
        raise SpecError("a return probe cannot have an offset")
    if rest.endswith("%return"):
        if prefix == "kretprobe":
            raise SpecError("'kretprobe:' already means the return; drop '%return'")
        rest, ret = rest[: -len("%return")], True
    offset = 0
    if "+" in rest:
        rest, off = rest.split("+", 1)
        if ret:
            raise SpecError("a return probe cannot have an offset")
        if not _OFFSET.match(off):
            raise SpecError(f"bad offset '{off}' (decimal or 0x hex)")
        offset = int(off, 0)
    if not _SYMBOL.match(rest):
        raise SpecError(f"bad symbol name '{rest}'")
    return Spec(EV_KRETPROBE if ret else EV_KPROBE, rest, offset)


def _user_path(rest: str, usage: str) -> tuple[str, str]:
    path, sep, where = rest.partition(":")
    if not sep or not where:
        raise SpecError(f"a user-space probe names a file and what to probe in it: {usage}")
    if any(c in path for c in "*?[") or "//" in path or not path.startswith("/"):
        raise SpecError(f"bad file path '{path}': an absolute path on the target, no globs")
    return path, where


def _uprobe(prefix: str, rest: str) -> Spec:
    """probe:/PATH:SYM, /PATH:SYM+OFF, /PATH:0xADDR (a virtual address in the
    file), /PATH:SYM%return; uprobe:/uretprobe: say the same."""
    path, where = _user_path(rest, f"{prefix}:/PATH:SYMBOL")
    ret = prefix == "uretprobe"
    if "%return" in where and not where.endswith("%return"):
        raise SpecError("a return probe cannot have an offset")
    if where.endswith("%return"):
        if ret:
            raise SpecError("'uretprobe:' already means the return; drop '%return'")
        where, ret = where[: -len("%return")], True
    offset = 0
    if "+" in where:
        where, off = where.split("+", 1)
        if not _OFFSET.match(off):
            raise SpecError(f"bad offset '{off}' (decimal or 0x hex)")
        offset = int(off, 0)
    if ret and (offset or "%" in where):
        raise SpecError("a return probe cannot have an offset")
    if where.lower().startswith("0x"):
        if not _OFFSET.match(where) or offset:
            raise SpecError(f"bad address '{where}' (0x hex, a virtual address in {path})")
        where = f"{int(where, 16):#x}"
    elif not _USER_SYMBOL.match(where):
        raise SpecError(f"bad symbol name '{where}'")
    return Spec(EV_URETPROBE if ret else EV_UPROBE, f"{path}:{where}", offset)


def _usdt(rest: str) -> Spec:
    """sdt:/PATH:PROVIDER:NAME, a statically defined probe (.note.stapsdt)."""
    path, where = _user_path(rest, "sdt:/PATH:PROVIDER:NAME")
    provider, _, name = where.partition(":")
    if not name:
        raise SpecError(f"'{where}': a USDT probe is PROVIDER:NAME (sdt:{path}:PROVIDER:NAME)")
    for part in (provider, name):
        if not _USDT_NAME.match(part):
            raise SpecError(f"bad USDT name '{part}'")
    return Spec(EV_USDT, f"{path}:{provider}:{name}")


def _perf(rest: str) -> Spec:
    """perf:NAME, perf:NAME:PERIOD (events, or a time for the clocks: 1ms) or
    perf:NAME:FREQhz (samples per second)."""
    name, _, rate = rest.partition(":")
    ev = perf.BY_NAME.get(name)
    if ev is None:
        raise SpecError(f"unknown perf event '{name}'; ktap knows "
                        + ", ".join(e.name for e in perf.PERF_EVENTS))
    if not rate:
        return Spec(EV_PERF, f"perf:{name}", 0, ev.default_period)
    m = _PERF_RATE.match(rate)
    if not m:
        raise SpecError(f"bad perf sample rate '{rate}': a period (perf:{name}:1000) or a "
                        f"frequency (perf:{name}:99hz)")
    n, unit = int(m.group(1)), m.group(2)
    if unit == "hz":
        if not 1 <= n <= perf.MAX_FREQ_HZ:
            raise SpecError(f"perf sample frequency {n} Hz out of range 1..{perf.MAX_FREQ_HZ}")
        return Spec(EV_PERF, f"perf:{name}", n, 0)
    if unit is not None and not ev.clock:
        raise SpecError(f"perf:{name} counts events: its period is a number, not a time")
    period = n * UNITS_NS[unit] if unit else n
    if period < ev.min_period:
        what = "ns" if ev.clock else "events"
        raise SpecError(f"perf:{name} period {period} {what} is too short (at least "
                        f"{ev.min_period}): the handler would run too often")
    return Spec(EV_PERF, f"perf:{name}", 0, period)


def _tracepoint(subsys: str, event: str) -> Spec:
    for part, what in ((subsys, "subsystem"), (event, "event")):
        if not part or not _SYMBOL.match(part) or "." in part:
            raise SpecError(f"bad tracepoint {what} name '{part}'")
    return Spec(EV_TRACEPOINT, f"{subsys}:{event}")


SUBSYSTEMS_FILE = Path(__file__).with_name("tracepoint_subsystems.txt")


@cache
def tracepoint_subsystems() -> frozenset[str]:
    """Mainline Linux's tracepoint subsystems (scripts/gen_tracepoint_subsystems.py)."""
    lines = SUBSYSTEMS_FILE.read_text().splitlines()
    return frozenset(x for x in lines if x and not x.startswith("#"))


def known_subsystem(subsys: str) -> bool:
    """Whether mainline Linux has this tracepoint subsystem (a glob: any match)."""
    if any(c in subsys for c in "*?["):
        return any(fnmatch.fnmatchcase(s, subsys) for s in tracepoint_subsystems())
    return subsys in tracepoint_subsystems()


def matches(pattern: Spec, fired: Spec) -> bool:
    """Whether an event that fired (in `ktap sim`) belongs to a script's probe."""
    if pattern.kind != fired.kind:
        return False
    if pattern.kind == EV_PERF:         # a sample of the event, whatever its rate
        return pattern.name == fired.name
    if pattern.offset != fired.offset:
        return False
    if pattern.kind in TIMER_KINDS:
        return pattern.period_ns == fired.period_ns
    return fnmatch.fnmatchcase(fired.name, pattern.name)
