"""`ktap sim`: runs an image on the reference VM against an events file.

Events file: one JSON object per line; blank lines and lines starting with `#`
are skipped. Keys (all optional but `probe`):
    probe      the probe that fired, written as in scripts: "probe:vfs_write",
               "probe:vfs_write%return", "sched:sched_switch", "tick-1s"
    pid tid uid cpu execname      task context (defaults: 1, pid, 0, 0, "sim")
    args       [numbers]: arg1.. for kprobes
    fields     {"name": value}: tracepoint fields in format order (args.NAME, argN)
    retval     return value for return probes
    stack      [addresses]: the kernel stack, innermost first
    time_ns    the event's clock (default: previous + 1000)
    repeat     fire the same event N times (default 1)
A line {"memory": {"ADDR": "text"}, "user_memory": {...}} defines what
kernel_string()/user_string() can read; ADDR is decimal or 0x hex.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from ktap.backends.kbc import bytecode as bc
from ktap.core.diagnostics import KtapError, RuntimeErr, Source
from ktap.events.kinds import EV_END
from ktap.events.kinds import kind as event_kind
from ktap.backends.kbc.records import STATE
from ktap.refvm.jsonout import JsonFormatter
from ktap.refvm.output import Formatter
from ktap.events.specs import Spec, SpecError, matches, parse_spec
from ktap.refvm.vm import EventContext, Exit, Machine

MAX_REPEAT = 10_000_000
EVENT_KEYS = {"probe", "pid", "tid", "uid", "cpu", "execname", "args", "fields", "retval",
              "stack", "ustack", "time_ns", "nsecs", "repeat"}


@dataclass
class SimEvent:
    spec: object
    ctx: EventContext
    time_ns: int | None
    repeat: int
    line: int
    nsecs: int | None = None       # the monotonic clock at this event



@dataclass
class EventsFile:
    events: list[SimEvent] = field(default_factory=list)
    memory: dict[int, str] = field(default_factory=dict)
    user_memory: dict[int, str] = field(default_factory=dict)


def _int(v, what: str, fail) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise fail(f"'{what}' must be an integer")
    return v


def parse_events(text: str, name: str) -> EventsFile:
    out = EventsFile()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue

        def fail(msg: str, lineno=lineno) -> KtapError:
            return KtapError(f"events file: {msg}", filename=f"{name}:{lineno}")

        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise fail(f"not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise fail("each line must be a JSON object")
        if "memory" in obj or "user_memory" in obj:
            for key, dest in (("memory", out.memory), ("user_memory", out.user_memory)):
                for addr, s in (obj.get(key) or {}).items():
                    try:
                        dest[int(addr, 0)] = str(s)
                    except (TypeError, ValueError):
                        raise fail(f"bad address '{addr}'") from None
            continue
        out.events.append(_event(obj, lineno, fail))
    return out


def _event(obj: dict, lineno: int, fail) -> SimEvent:
    unknown = set(obj) - EVENT_KEYS
    if unknown:
        raise fail(f"unknown key(s): {', '.join(sorted(unknown))}")
    if not isinstance(obj.get("probe"), str):
        raise fail("every event needs a \"probe\" string")
    try:
        spec = parse_spec(obj["probe"])
    except SpecError as e:
        raise fail(str(e)) from None
    if spec.is_glob:
        raise fail("an event that fired names one probe, not a glob")
    ctx = EventContext(probename=spec.probename, is_tracepoint=event_kind(spec.kind).fields)
    for key in ("pid", "uid", "cpu"):
        if key in obj:
            setattr(ctx, key, _int(obj[key], key, fail))
    if "tid" in obj:
        ctx.tid = _int(obj["tid"], "tid", fail)
    if "retval" in obj:
        ctx.retval = _int(obj["retval"], "retval", fail)
    elif event_kind(spec.kind).retval:
        ctx.retval = 0
    if "execname" in obj:
        if not isinstance(obj["execname"], str):
            raise fail("'execname' must be a string")
        ctx.execname = obj["execname"]
    if "args" in obj:
        if not isinstance(obj["args"], list):
            raise fail("'args' must be a list")
        ctx.args = [_int(a, "args", fail) for a in obj["args"]]
    if "fields" in obj:
        if not isinstance(obj["fields"], dict):
            raise fail("'fields' must be an object")
        for k, v in obj["fields"].items():
            if not isinstance(v, str):
                _int(v, f"fields.{k}", fail)
        ctx.fields = dict(obj["fields"])
    if "stack" in obj:
        if not isinstance(obj["stack"], list):
            raise fail("'stack' must be a list")
        ctx.stack = [_int(a, "stack", fail) for a in obj["stack"]]
    if "ustack" in obj:
        if not (isinstance(obj["ustack"], list) and all(isinstance(x, str) for x in obj["ustack"])):
            raise fail("'ustack' must be a list of strings (PATH+0xOFFSET)")
        ctx.ustack = list(obj["ustack"])
    t, mono = obj.get("time_ns"), obj.get("nsecs")
    repeat = _int(obj.get("repeat", 1), "repeat", fail)
    if not 0 <= repeat <= MAX_REPEAT:
        raise fail(f"'repeat' must be between 0 and {MAX_REPEAT}")
    return SimEvent(spec, ctx, None if t is None else _int(t, "time_ns", fail), repeat, lineno,
                    None if mono is None else _int(mono, "nsecs", fail))


class Session:
    """Runs a whole session: setup, the events in order, then trace_end."""

    def __init__(self, image: bc.Image, write, source: Source | None = None,
                 events: EventsFile | None = None, symbolize=None, as_json: bool = False):
        self.img = image
        self.fmt = (JsonFormatter if as_json else Formatter)(image, symbolize)
        self.write = write
        self.events = events or EventsFile()
        self.vm = Machine(image, self._emit, source, self.events.memory, self.events.user_memory)

    def _emit(self, record) -> None:
        self.write(self.fmt.render(record))

    def handlers_for(self, spec) -> list[tuple[int, list[str]]]:
        return [(e.handler, e.fields) for e in self.img.events
                if e.kind != EV_END and matches(Spec(e.kind, e.name, e.offset, e.period_ns), spec)]

    def run(self) -> int:
        """Returns the session's exit status. Runtime errors propagate as RuntimeErr."""
        vm = self.vm
        try:
            vm.run_setup()
            for ev in self.events.events:
                targets = self.handlers_for(ev.spec)
                for _ in range(ev.repeat):
                    vm.clock_ns = ev.time_ns if ev.time_ns is not None else vm.clock_ns + 1000
                    vm.mono_ns = ev.nsecs if ev.nsecs is not None else vm.mono_ns + 1000
                    for handler, fields in targets:
                        vm.fire(handler, ev.ctx, fields)
        except Exit:
            pass
        # as on the board, the session's state is trace_end's: "exit" only
        # when trace_end itself calls exit()
        self.end_exited = False
        try:
            for e in self.img.events:
                if e.kind == EV_END:
                    vm.run_end(e.handler)
        except Exit:
            self.end_exited = True
        return vm.exit_code or 0

    def drop_report(self) -> list[str]:
        return [f"ktap: {n} events dropped ({reason})" for reason, n in
                sorted(self.vm.drops.items())]


def run_sim(image: bc.Image, write, source: Source | None, events: EventsFile,
            as_json: bool = False) -> tuple[int, list[str]]:
    """Runs a session; returns its exit status and the drop report's lines.
    as_json: the records as JSON lines, and a status object after them."""
    s = Session(image, write, source, events, as_json=as_json)
    try:
        status = s.run()
    except RuntimeErr as e:
        if as_json:
            write(JsonFormatter.status(STATE["error"], s.vm.exit_code or 0, s.vm.drops,
                                       (e.message, e.loc.line if e.loc else 0,
                                        e.loc.col if e.loc else 0)))
        raise
    if as_json:
        state = STATE["exit"] if s.end_exited else STATE["ran"]
        write(JsonFormatter.status(state, status, s.vm.drops))
    return status, s.drop_report()


__all__ = ["parse_events", "Session", "run_sim", "RuntimeErr"]
