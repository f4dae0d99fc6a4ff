"""The host reference VM: executes verified KBC images. It is the semantic
oracle the kernel module is tested against, and `ktap sim` runs on it.

The VM emits output records (see output.py) instead of text, as the kernel
does; the formatter turns records into what a user reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ktap.backends.kbc import bytecode as bc
from ktap.backends.kbc import opcodes
from ktap.core.diagnostics import Loc, RuntimeErr, Source
from ktap.refvm.tablebuiltins import TableBuiltins
from ktap.refvm.values import (Agg, Stack, Table, TableFull, Time, cdiv, cmod, type_name,
                               wrap)
from ktap.frontend import builtins

OPS = {op.code: op.name for op in opcodes.OPS}
BUILTIN_NAMES = [b.name for b in builtins.BUILTINS]
VAR_NAMES = [v.name for v in builtins.VARIABLES]


@dataclass
class EventContext:
    """What a fired event carries: filled by `ktap sim` from an events file."""
    probename: str = ""
    pid: int = 1
    tid: int | None = None
    uid: int = 0
    cpu: int = 0
    execname: str = "sim"
    args: list[int] = field(default_factory=list)
    fields: dict[str, object] = field(default_factory=dict)
    retval: int | None = None
    stack: list[int] = field(default_factory=list)
    ustack: list[str] = field(default_factory=list)      # "PATH+0xOFFSET", innermost first
    is_tracepoint: bool = False


class Exit(Exception):
    pass


class Dropped(Exception):
    def __init__(self, reason: str):
        self.reason = reason


class Machine(TableBuiltins):
    def __init__(self, image: bc.Image, emit, source: Source | None = None,
                 memory: dict[int, str] | None = None, user_memory: dict[int, str] | None = None):
        self.img = image
        self.emit = emit
        self.src = source
        self.globals: list[object] = [None] * len(image.globals)
        self.protos = image.protos
        self.decoded = [self._decode(p) for p in image.protos]
        self.limits = image.limits
        self.exit_code: int | None = None
        self.drops: dict[str, int] = {}
        self.clock_ns = 0          # walltime and gettimeofday_*()
        self.mono_ns = 0           # nsecs
        self.memory = memory or {}
        self.user_memory = user_memory or {}
        self.event: EventContext | None = None
        self.event_fields: list[str] = []
        self.budget = 0

    @staticmethod
    def _decode(p: bc.Proto) -> list:
        out = [None] * len(p.code)
        pc = 0
        while pc < len(p.code):
            d = opcodes.decode(p.code, pc)
            out[pc] = (d.op.name, d.a, d.b, d.c, d.op.words)
            pc += d.op.words
        return out

    # -- errors ----------------------------------------------------------
    def error(self, msg: str, proto: int, pc: int) -> RuntimeErr:
        p = self.protos[proto]
        loc = Loc(p.lines[pc], p.cols[pc]) if pc < len(p.lines) else None
        return RuntimeErr(msg, source=self.src, loc=loc,
                          filename=self.src.name if self.src else self.img.source_name)

    # -- entry points ----------------------------------------------------
    def run_setup(self) -> None:
        self.event = None
        self._run_handler(0, [])

    def fire(self, handler: int, event: EventContext, fields: list[str]) -> None:
        """Runs one handler for one event. A runtime error propagates; a drop is counted."""
        self.event = event
        self.event_fields = fields
        self._run_handler(handler, [])

    def run_end(self, handler: int) -> None:
        self.event = None
        self._run_handler(handler, [])

    def _run_handler(self, proto: int, args: list) -> None:
        self.budget = self.limits.budget
        try:
            self.call(proto, args)
        except Dropped as d:
            self.drops[d.reason] = self.drops.get(d.reason, 0) + 1

    # -- the interpreter -------------------------------------------------
    def call(self, proto: int, args: list):
        while True:
            p = self.protos[proto]
            regs = [None] * p.frame_size
            regs[:len(args)] = args
            result = self.execute(proto, regs)
            if isinstance(result, _Tail):
                proto, args = result.proto, result.args
                continue
            return result

    def charge(self, cost: int, proto: int, pc: int) -> None:
        self.budget -= cost
        if self.budget < 0:
            raise self.error(f"instruction budget of {self.limits.budget} exhausted "
                             "(a loop or a call chain ran too long)", proto, pc)

    def execute(self, proto: int, R: list):
        code = self.decoded[proto]
        p = self.protos[proto]
        pc = 0
        while True:
            name, a, b, c, words = code[pc]
            nxt = pc + words
            try:
                jump = getattr(self, "op_" + name)(R, a, b, c, p, proto, pc)
            except _Return as r:
                return r.value
            except _Tail as t:
                self.charge(len(self.protos[t.proto].code), proto, pc)
                return t
            if jump is not None:
                target = nxt + jump
                if target <= pc:
                    self.charge(nxt - target, proto, pc)
                pc = target
            else:
                pc = nxt

    # Each op_* returns None, or a jump offset relative to the next instruction.
    def op_NOP(self, R, a, b, c, p, f, pc): pass
    def op_MOVE(self, R, a, b, c, p, f, pc): R[a] = R[b]
    def op_LOADK(self, R, a, b, c, p, f, pc): R[a] = p.consts[b]
    def op_LOADI(self, R, a, b, c, p, f, pc): R[a] = b
    def op_LOADI64(self, R, a, b, c, p, f, pc): R[a] = b
    def op_LOADNIL(self, R, a, b, c, p, f, pc): R[a] = None
    def op_LOADBOOL(self, R, a, b, c, p, f, pc): R[a] = b != 0
    def op_GETUPV(self, R, a, b, c, p, f, pc): R[a] = self.globals[p.upvals[b]]

    def op_SETUPV(self, R, a, b, c, p, f, pc):
        self.globals[p.upvals[b]] = R[a]

    def op_NEWTABLE(self, R, a, b, c, p, f, pc):
        R[a] = Table(b, self.img.tables[b], self.limits.table_entries)

    def table(self, v, f, pc) -> Table:
        if not isinstance(v, Table):
            raise self.error(f"attempt to index a {type_name(v)} value", f, pc)
        return v

    def key(self, k, f, pc):
        if isinstance(k, bool) or not isinstance(k, (int, str, Stack, Time)):
            raise self.error(f"invalid table key ({type_name(k)})", f, pc)
        return k

    def store(self, t: Table, k, v, f, pc) -> None:
        try:
            t.set(self.key(k, f, pc), v)
        except TableFull:
            raise Dropped("table full") from None

    def op_GETTABLE(self, R, a, b, c, p, f, pc):
        R[a] = self.table(R[b], f, pc).get(self.key(R[c], f, pc))

    def op_GETTABLEK(self, R, a, b, c, p, f, pc):
        R[a] = self.table(R[b], f, pc).get(p.consts[c])

    def op_SETTABLE(self, R, a, b, c, p, f, pc):
        self.store(self.table(R[a], f, pc), R[b], R[c], f, pc)

    def op_SETTABLEK(self, R, a, b, c, p, f, pc):
        self.store(self.table(R[a], f, pc), p.consts[b], R[c], f, pc)

    def add_entry(self, t, k, delta, f, pc) -> None:
        t = self.table(t, f, pc)
        k = self.key(k, f, pc)
        old = t.get(k)
        if old is None:
            old = 0
        if not isinstance(old, int) or isinstance(old, bool) or \
                not isinstance(delta, int) or isinstance(delta, bool):
            raise self.error(f"attempt to add a {type_name(delta)} to a "
                             f"{type_name(old)} table entry", f, pc)
        self.store(t, k, wrap(old + delta), f, pc)

    def op_TADD(self, R, a, b, c, p, f, pc):
        self.add_entry(R[a], R[b], R[c], f, pc)

    def op_TADDI(self, R, a, b, c, p, f, pc):
        self.add_entry(R[a], R[b], opcodes.sign8(c), f, pc)

    def op_AGGR(self, R, a, b, c, p, f, pc):
        t = self.table(R[a], f, pc)
        k = self.key(R[b], f, pc)
        v = R[c]
        if not isinstance(v, int) or isinstance(v, bool):
            raise self.error(f"'<<<' needs a number, got a {type_name(v)}", f, pc)
        agg = t.get(k)
        if agg is None:
            agg = Agg()
            self.store(t, k, agg, f, pc)
        elif not isinstance(agg, Agg):
            raise self.error(f"'<<<' on an entry holding a {type_name(agg)}", f, pc)
        agg.feed(v, t.desc)

    def op_DELETE(self, R, a, b, c, p, f, pc):
        t = self.table(R[a], f, pc)
        if not isinstance(R[b], bool):      # True == 1 in Python; no boolean is ever a key
            t.delete(R[b])

    def op_CLEAR(self, R, a, b, c, p, f, pc):
        self.table(R[a], f, pc).clear()

    def op_LEN(self, R, a, b, c, p, f, pc):
        v = R[b]
        if isinstance(v, Table):
            R[a] = len(v)
        elif isinstance(v, str):
            R[a] = len(v.encode("utf-8", "surrogateescape"))
        else:
            raise self.error(f"attempt to get the length of a {type_name(v)} value", f, pc)

    def numbers(self, x, y, what, f, pc):
        for v in (x, y):
            if not isinstance(v, int) or isinstance(v, bool):
                raise self.error(f"attempt to {what} a {type_name(v)} value", f, pc)

    def op_ADD(self, R, a, b, c, p, f, pc):
        self.numbers(R[b], R[c], "perform arithmetic on", f, pc)
        R[a] = wrap(R[b] + R[c])

    def op_SUB(self, R, a, b, c, p, f, pc):
        self.numbers(R[b], R[c], "perform arithmetic on", f, pc)
        R[a] = wrap(R[b] - R[c])

    def op_MUL(self, R, a, b, c, p, f, pc):
        self.numbers(R[b], R[c], "perform arithmetic on", f, pc)
        R[a] = wrap(R[b] * R[c])

    def op_DIV(self, R, a, b, c, p, f, pc):
        self.numbers(R[b], R[c], "perform arithmetic on", f, pc)
        if R[c] == 0:
            raise self.error("division by zero", f, pc)
        R[a] = cdiv(R[b], R[c])

    def op_MOD(self, R, a, b, c, p, f, pc):
        self.numbers(R[b], R[c], "perform arithmetic on", f, pc)
        if R[c] == 0:
            raise self.error("modulo by zero", f, pc)
        R[a] = cmod(R[b], R[c])

    def op_CONCAT(self, R, a, b, c, p, f, pc):
        parts = []
        for v in (R[b], R[c]):
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                raise self.error(f"attempt to concatenate a {type_name(v)} value", f, pc)
            parts.append(str(v))
        R[a] = self.clip("".join(parts))

    def clip(self, s: str) -> str:
        data = s.encode("utf-8", "surrogateescape")
        if len(data) <= self.limits.string_size:
            return s
        return data[:self.limits.string_size].decode("utf-8", "surrogateescape")

    def op_UNM(self, R, a, b, c, p, f, pc):
        self.numbers(R[b], 0, "negate", f, pc)
        R[a] = wrap(-R[b])

    def op_NOT(self, R, a, b, c, p, f, pc):
        R[a] = R[b] is None or R[b] is False

    @staticmethod
    def equal(x, y) -> bool:
        return type(x) is type(y) and x == y if not isinstance(x, (Table, Agg)) else x is y

    def op_EQ(self, R, a, b, c, p, f, pc): R[a] = self.equal(R[b], R[c])
    def op_NE(self, R, a, b, c, p, f, pc): R[a] = not self.equal(R[b], R[c])

    def ordered(self, x, y, f, pc) -> None:
        ok = (isinstance(x, int) and not isinstance(x, bool) and isinstance(y, int)
              and not isinstance(y, bool)) or (isinstance(x, str) and isinstance(y, str))
        if not ok:
            raise self.error(f"attempt to compare a {type_name(x)} with a {type_name(y)}", f, pc)

    @staticmethod
    def as_bytes(v):
        return v.encode("utf-8", "surrogateescape") if isinstance(v, str) else v

    def op_LT(self, R, a, b, c, p, f, pc):
        self.ordered(R[b], R[c], f, pc)
        R[a] = self.as_bytes(R[b]) < self.as_bytes(R[c])

    def op_LE(self, R, a, b, c, p, f, pc):
        self.ordered(R[b], R[c], f, pc)
        R[a] = self.as_bytes(R[b]) <= self.as_bytes(R[c])

    def op_JMP(self, R, a, b, c, p, f, pc): return b

    def op_JMPF(self, R, a, b, c, p, f, pc):
        if R[a] is None or R[a] is False:
            return b

    def op_JMPT(self, R, a, b, c, p, f, pc):
        if not (R[a] is None or R[a] is False):
            return b

    def op_FORPREP(self, R, a, b, c, p, f, pc):
        for v, what in ((R[a], "initial value"), (R[a + 1], "limit"), (R[a + 2], "step")):
            if not isinstance(v, int) or isinstance(v, bool):
                raise self.error(f"'for' {what} must be a number, got a {type_name(v)}", f, pc)
        if R[a + 2] == 0:
            raise self.error("'for' step is zero", f, pc)
        R[a] = wrap(R[a] - R[a + 2])
        return b

    def op_FORLOOP(self, R, a, b, c, p, f, pc):
        step = R[a + 2]
        R[a] = wrap(R[a] + step)
        if (step > 0 and R[a] <= R[a + 1]) or (step < 0 and R[a] >= R[a + 1]):
            R[a + 3] = R[a]
            return b

    def op_NEXT(self, R, a, b, c, p, f, pc):
        t = self.table(R[b], f, pc)
        cursor, slot = t.next(R[a] if isinstance(R[a], int) else 0)
        if slot is None:
            R[a + 1] = None
        else:
            R[a], R[a + 1], R[a + 2] = cursor, slot[0], slot[1]

    def op_CALL(self, R, a, b, c, p, f, pc):
        self.charge(len(self.protos[b].code), f, pc)
        R[a] = self.call(b, R[a:a + c])

    def op_TAILCALL(self, R, a, b, c, p, f, pc):
        raise _Tail(b, R[a:a + c])

    def op_RET(self, R, a, b, c, p, f, pc):
        raise _Return(R[a] if b else None)

    def op_PRINTF(self, R, a, b, c, p, f, pc):
        self.emit(("printf", b, list(R[a:a + c])))

    def op_LOADVAR(self, R, a, b, c, p, f, pc):
        ev, name = self.event, VAR_NAMES[b]
        if name in ("nsecs", "walltime"):      # the clocks tick outside handlers too
            R[a] = self.mono_ns if name == "nsecs" else self.clock_ns
            return
        if ev is None:
            R[a] = None
            return
        if name == "tid":
            R[a] = ev.tid if ev.tid is not None else ev.pid
        elif name in ("execname", "probename"):
            R[a] = self.clip(getattr(ev, name))
        else:
            R[a] = getattr(ev, name)

    def op_ARG(self, R, a, b, c, p, f, pc):
        ev = self.event
        if ev is None:
            R[a] = None
        elif ev.is_tracepoint:
            values = list(ev.fields.values())
            R[a] = values[b - 1] if b <= len(values) else None
        else:
            R[a] = ev.args[b - 1] if b <= len(ev.args) else 0

    def op_FIELD(self, R, a, b, c, p, f, pc):
        ev = self.event
        R[a] = None if ev is None else ev.fields.get(self.event_fields[b])

    def op_CALLB(self, R, a, b, c, p, f, pc):
        R[a] = getattr(self, "b_" + BUILTIN_NAMES[b])(R[a:a + c], f, pc)

    # -- built-in functions ----------------------------------------------
    def b_print(self, args, f, pc):
        if len(args) == 1 and isinstance(args[0], Table):
            self.emit(("dump", args[0].snapshot()))
        else:
            self.emit(("print", list(args)))

    def b_exit(self, args, f, pc):
        code = args[0] if args else 0
        if not isinstance(code, int) or isinstance(code, bool):
            raise self.error(f"exit() needs a number, got a {type_name(code)}", f, pc)
        self.exit_code = code
        raise Exit()

    def aggregate(self, args, f, pc) -> Agg | None:
        v = args[0]
        if v is not None and not isinstance(v, Agg):
            raise self.error(f"expected an aggregate (fed with <<<), got a {type_name(v)}", f, pc)
        return v

    def agg_field(self, args, f, pc, name: str, of_nil):
        """count(a) and the like: a field of the aggregate, or of_nil for nil."""
        v = self.aggregate(args, f, pc)
        return getattr(v, name) if v else of_nil

    def b_count(self, args, f, pc): return self.agg_field(args, f, pc, "count", 0)
    def b_sum(self, args, f, pc): return self.agg_field(args, f, pc, "sum", 0)
    def b_min(self, args, f, pc): return self.agg_field(args, f, pc, "min", None)
    def b_max(self, args, f, pc): return self.agg_field(args, f, pc, "max", None)
    def b_avg(self, args, f, pc): return self.agg_field(args, f, pc, "avg", None)

    def b_gettimeofday_ns(self, args, f, pc): return self.clock_ns
    def b_gettimeofday_us(self, args, f, pc): return self.clock_ns // 1_000
    def b_gettimeofday_ms(self, args, f, pc): return self.clock_ns // 1_000_000
    def b_gettimeofday_s(self, args, f, pc): return self.clock_ns // 1_000_000_000

    def address(self, args, f, pc) -> int:
        addr = args[0]
        if not isinstance(addr, int) or isinstance(addr, bool):
            raise self.error(f"expected an address, got a {type_name(addr)}", f, pc)
        return addr & 0xFFFFFFFFFFFFFFFF

    def read_string(self, memory, args, f, pc):
        s = memory.get(self.address(args, f, pc))
        return None if s is None else self.clip(s)

    def b_kernel_string(self, args, f, pc):
        return self.read_string(self.memory, args, f, pc)

    def b_user_string(self, args, f, pc):
        return self.read_string(self.user_memory, args, f, pc)

    def b_ksym(self, args, f, pc):       # a one-frame stack: it prints as its symbol
        return Stack([self.address(args, f, pc)])

    def b_strftime(self, args, f, pc):
        fmt, ns = args[0], args[1]
        if not isinstance(fmt, str):
            raise self.error(f"strftime format must be a string, got a {type_name(fmt)}", f, pc)
        if not isinstance(ns, int) or isinstance(ns, bool):
            raise self.error("strftime time must be a number of nanoseconds, got a "
                             f"{type_name(ns)}", f, pc)
        limit = self.limits.string_size - 8
        return Time((ns, fmt.encode("utf-8", "surrogateescape")[:limit].decode("utf-8", "surrogateescape")))

    def b_ustack(self, args, f, pc):     # frames as the board formats them: PATH+0xOFFSET
        depth = self.depth(args, f, pc)
        frames = self.event.ustack if self.event else []
        return "\n".join(frames[:depth])

    def depth(self, args, f, pc) -> int:
        depth = args[0] if args else builtins.STACK_DEFAULT_DEPTH
        if not isinstance(depth, int) or isinstance(depth, bool):
            raise self.error(f"stack depth must be a number, got a {type_name(depth)}", f, pc)
        return min(max(depth, 1), builtins.STACK_MAX_DEPTH)

    def b_stack(self, args, f, pc):
        depth = args[0] if args else builtins.STACK_DEFAULT_DEPTH
        if not isinstance(depth, int) or isinstance(depth, bool):
            raise self.error(f"stack depth must be a number, got a {type_name(depth)}", f, pc)
        depth = min(max(depth, 1), builtins.STACK_MAX_DEPTH)
        frames = self.event.stack if self.event else []
        return Stack(frames[:depth])


class _Return(Exception):
    def __init__(self, value):
        self.value = value


class _Tail(Exception):
    def __init__(self, proto: int, args: list):
        self.proto = proto
        self.args = args
