"""The verifier: statically checks a KBC image before anything runs.

Python mirror of the kernel module's C verifier; both use the reason codes of
REASONS, in the same order of checks. What cannot be proven here (loop trip
counts) is bounded at run time by the instruction budget.
"""
from __future__ import annotations

from ktap.backends.kbc import bytecode as bc
from ktap.backends.kbc import opcodes
from ktap.core.diagnostics import Loc, Source, VerifyError
from ktap.frontend.printf import FormatError, parse_format
from ktap.events import perf
from ktap.events.kinds import EV_PERF, EVENT_KIND_NAMES
from ktap.events.kinds import kind as event_kind
from ktap.events.specs import MIN_PERIOD_NS
from ktap.frontend.sema import MAX_LHIST_BUCKETS
from ktap.frontend import program
from ktap.frontend import builtins

MAX_FRAME = 250
MAX_CODE_WORDS = 65535
MAX_FIELDS = 64

REASONS = {
    "bad-limits": "a limit is zero or above its maximum",
    "bad-table": "a table descriptor or table index is invalid",
    "bad-format": "a printf format index or format string is invalid",
    "bad-event": "an event entry is invalid (kind, handler, period, fields)",
    "bad-function": "a function header is invalid, or a call names a non-function",
    "bad-frame": "a frame is empty or larger than the maximum",
    "bad-opcode": "an unknown opcode",
    "truncated-instruction": "a multi-word instruction runs past the end of the code",
    "falls-off-end": "the last instruction can fall through past the end",
    "bad-operand": "an unused operand field is not zero",
    "bad-register": "a register operand lies outside the frame",
    "bad-constant": "a constant index is out of range, or a constant is too long",
    "bad-upvalue": "an upvalue index, or the global it names, is out of range",
    "bad-call": "a call's argument count does not match the callee",
    "bad-builtin": "an unknown built-in function",
    "bad-variable": "an unknown built-in variable",
    "bad-argument": "an argument number outside 1..9",
    "bad-field": "a tracepoint field index outside the handler's event",
    "bad-jump": "a jump target out of bounds or inside an instruction",
    "recursion": "the call graph has a cycle",
    "alloc-in-handler": "a table is created in code reachable from a probe handler",
    "stack-too-deep": "the deepest call chain needs more registers than max_stack",
}

TERMINATORS = {"RET", "TAILCALL", "JMP"}


# Register spans of operand A fixed by the opcode; other spans are read from C.
_FIXED_SPANS = {"1": 1, "3": 3, "4": 4}


class Verifier:
    def __init__(self, image: bc.Image, src: Source | None = None):
        self.img = image
        self.src = src
        self.calls: dict[int, set[int]] = {}
        self.allocates: set[int] = set()
        self.handler_fields: dict[int, int | None] = {}

    def fail(self, reason: str, msg: str, proto: int | None = None, pc: int | None = None):
        loc = None
        name = None
        if proto is not None and 0 <= proto < len(self.img.protos):
            p = self.img.protos[proto]
            name = p.name
            at = pc if pc is not None else 0       # whole-function problems point at its start
            if at < len(p.lines) and at < len(p.cols) and p.lines[at]:
                loc = Loc(p.lines[at], p.cols[at])
        return VerifyError(reason, msg, proto=name, pc=pc, source=self.src, loc=loc,
                           filename=self.src.name if self.src else (self.img.source_name or None))

    # -- image level -----------------------------------------------------
    def run(self) -> None:
        self.check_limits()
        self.check_tables()
        self.check_formats()
        self.check_events()
        for i in range(len(self.img.protos)):
            self.check_proto(i)
        self.check_call_graph()

    def check_limits(self) -> None:
        for name in program.Limits.FIELDS:
            v = getattr(self.img.limits, name)
            if not 1 <= v <= program.Limits.MAXIMUM[name]:
                raise self.fail("bad-limits", f"limit {name} = {v} is outside "
                                f"1..{program.Limits.MAXIMUM[name]}")

    def check_tables(self) -> None:
        for i, d in enumerate(self.img.tables):
            if d.flags & ~(program.TABLE_LOG2 | program.TABLE_LINEAR):
                raise self.fail("bad-table", f"table descriptor {i} has unknown flags {d.flags:#x}")
            if d.flags & program.TABLE_LINEAR:
                if d.lstep <= 0 or d.lmax <= d.lmin or \
                        (d.lmax - d.lmin + d.lstep - 1) // d.lstep > MAX_LHIST_BUCKETS:
                    raise self.fail("bad-table", f"table descriptor {i} has bad linear bounds")

    def check_formats(self) -> None:
        for i, f in enumerate(self.img.formats):
            try:
                parse_format(f)
            except FormatError as e:
                raise self.fail("bad-format", f"format {i}: {e}") from None

    def check_events(self) -> None:
        protos = self.img.protos
        if not protos or protos[0].kind != program.SETUP:
            raise self.fail("bad-function", "function 0 must be the setup chunk")
        for i, e in enumerate(self.img.events):
            if e.kind not in EVENT_KIND_NAMES:
                raise self.fail("bad-event", f"event {i} has unknown kind {e.kind}")
            if not 0 <= e.handler < len(protos) or protos[e.handler].kind != program.HANDLER:
                raise self.fail("bad-event", f"event {i} names handler {e.handler}, "
                                "which is not a handler function")
            if e.kind in MIN_PERIOD_NS and e.period_ns < MIN_PERIOD_NS[e.kind]:
                raise self.fail("bad-event", f"event {i} period {e.period_ns} ns is too short")
            if e.kind == EV_PERF:
                self.check_perf_event(i, e)
            row = event_kind(e.kind)
            # user probes' fields are what ktaprun defines them with, not
            # fields a handler reads by name (docs/bytecode.md)
            if len(e.fields) > MAX_FIELDS or (e.fields and not (row.fields or row.user)):
                raise self.fail("bad-event", f"event {i} has a bad field list")
            nfields = len(e.fields) if event_kind(e.kind).fields else 0
            prev = self.handler_fields.get(e.handler, nfields)
            self.handler_fields[e.handler] = min(prev, nfields)

    def check_perf_event(self, i: int, e) -> None:
        """perf:NAME of events/perf.py, sampled at a frequency (offset) or a period."""
        ev = perf.BY_NAME.get(e.name.removeprefix("perf:")) if e.name.startswith("perf:") \
            else None
        if ev is None:
            raise self.fail("bad-event", f"event {i} is no perf event ktap knows: {e.name!r}")
        if e.offset:
            ok = 1 <= e.offset <= perf.MAX_FREQ_HZ and e.period_ns == 0
        else:
            ok = e.period_ns >= ev.min_period
        if not ok:
            raise self.fail("bad-event", f"event {i} ({e.name}) samples too often "
                            f"(frequency {e.offset} Hz, period {e.period_ns})")

    # -- function level --------------------------------------------------
    def check_proto(self, i: int) -> None:
        p = self.img.protos[i]
        if p.kind not in program.KIND_NAMES or (p.kind == program.SETUP) != (i == 0):
            raise self.fail("bad-function", f"bad kind {p.kind}", i)
        if p.kind != program.FUNCTION and p.nparams:
            raise self.fail("bad-function", "setup and handlers take no parameters", i)
        if not 1 <= p.frame_size <= MAX_FRAME or p.nparams > p.frame_size:
            raise self.fail("bad-frame", f"frame size {p.frame_size} (parameters "
                            f"{p.nparams}) outside 1..{MAX_FRAME}", i)
        if not 1 <= len(p.code) <= MAX_CODE_WORDS or len(p.lines) != len(p.code):
            raise self.fail("bad-function", f"code length {len(p.code)} / line table "
                            f"{len(p.lines)} invalid", i)
        for k, g in enumerate(p.upvals):
            if g >= len(self.img.globals):
                raise self.fail("bad-upvalue", f"upvalue {k} names global {g}, but the image "
                                f"has {len(self.img.globals)}", i)
        for k, c in enumerate(p.consts):
            if isinstance(c, str) and len(c.encode("utf-8", "surrogateescape")) > \
                    self.img.limits.string_size:
                raise self.fail("bad-constant", f"constant {k} is longer than the string limit", i)
        starts = self.instruction_starts(i, p)
        self.calls[i] = set()
        for pc in sorted(starts):
            self.check_instruction(i, p, pc, starts)

    def instruction_starts(self, i: int, p: bc.Proto) -> set[int]:
        starts = set()
        pc, last = 0, 0
        while pc < len(p.code):
            opcode = p.code[pc] & 0xFF
            if opcode >= opcodes.NUM_OPS:
                raise self.fail("bad-opcode", f"unknown opcode {opcode:#04x}", i, pc)
            words = opcodes.OPS[opcode].words
            if pc + words > len(p.code):
                raise self.fail("truncated-instruction", f"{opcodes.OPS[opcode].name} needs "
                                f"{words} words", i, pc)
            starts.add(pc)
            last = pc
            pc += words
        if opcodes.OPS[p.code[last] & 0xFF].name not in TERMINATORS:
            raise self.fail("falls-off-end", "the last instruction must be RET, TAILCALL "
                            "or JMP", i, last)
        return starts

    def check_instruction(self, i: int, p: bc.Proto, pc: int, starts: set[int]) -> None:
        d = opcodes.decode(p.code, pc)
        op = d.op
        _, a, b, c = opcodes.decode_word(p.code[pc])
        fields = [("A", op.a, a)]
        if op.fmt == "ABC":
            fields += [("B", op.b, b), ("C", op.c, c)]
        elif op.fmt == "AX64":
            fields += [("B", op.b, b), ("C", op.c, c)]
        else:
            fields += [("B", op.b, d.b)]
        for fname, kind, value in fields:
            self.check_operand(i, p, pc, op, fname, kind, value, d, starts)

    def check_operand(self, i, p, pc, op, fname, kind, value, d, starts) -> None:
        img = self.img
        where = f"{op.name} operand {fname}"
        if kind == "-":
            if value != 0:
                raise self.fail("bad-operand", f"{where} must be 0, is {value}", i, pc)
        elif kind == "R":
            span = _FIXED_SPANS.get(op.span) if fname == "A" else 1
            if span is None:
                span = max((p.code[pc] >> 24) & 0xFF, 1)
            if value + span > p.frame_size:
                raise self.fail("bad-register", f"{where}: register {value + span - 1} "
                                f"outside the frame of {p.frame_size}", i, pc)
        elif kind == "K":
            if value >= len(p.consts):
                raise self.fail("bad-constant", f"{where}: constant {value}, the function "
                                f"has {len(p.consts)}", i, pc)
        elif kind == "U":
            if value >= len(p.upvals):
                raise self.fail("bad-upvalue", f"{where}: upvalue {value}, the function "
                                f"has {len(p.upvals)}", i, pc)
        elif kind == "T":
            if value >= len(img.tables):
                raise self.fail("bad-table", f"{where}: table descriptor {value}, the image "
                                f"has {len(img.tables)}", i, pc)
            if op.flags == "A":
                self.allocates.add(i)
        elif kind == "F":
            if value >= len(img.formats):
                raise self.fail("bad-format", f"{where}: format {value}, the image has "
                                f"{len(img.formats)}", i, pc)
        elif kind == "P":
            nargs = (p.code[pc] >> 24) & 0xFF
            if value >= len(img.protos) or img.protos[value].kind != program.FUNCTION:
                raise self.fail("bad-function", f"{where}: {value} is not a callable "
                                "function", i, pc)
            if img.protos[value].nparams != nargs:
                raise self.fail("bad-call", f"{op.name} passes {nargs} argument(s), "
                                f"'{img.protos[value].name}' takes "
                                f"{img.protos[value].nparams}", i, pc)
            self.calls[i].add(value)
        elif kind == "B":
            nargs = (p.code[pc] >> 24) & 0xFF
            if value >= len(builtins.BUILTINS):
                raise self.fail("bad-builtin", f"{where}: built-in {value}", i, pc)
            bi = builtins.BUILTINS[value]
            if not bi.min_args <= nargs <= bi.max_args:
                raise self.fail("bad-call", f"{bi.name} takes {bi.min_args}..{bi.max_args} "
                                f"arguments, {nargs} given", i, pc)
        elif kind == "V":
            if value >= len(builtins.VARIABLES):
                raise self.fail("bad-variable", f"{where}: variable {value}", i, pc)
        elif kind == "N":
            if not 1 <= value <= builtins.MAX_ARGS:
                raise self.fail("bad-argument", f"{where}: argument {value}", i, pc)
        elif kind == "D":
            nfields = self.handler_fields.get(i)
            if nfields is None or value >= nfields:
                raise self.fail("bad-field", f"{where}: field {value} is not a field of "
                                "this handler's event", i, pc)
        elif kind == "J":
            target = pc + op.words + value
            if target not in starts:
                raise self.fail("bad-jump", f"jump to {target} is "
                                + ("out of bounds" if not 0 <= target < len(p.code)
                                   else "inside an instruction"), i, pc)

    # -- whole program ---------------------------------------------------
    def check_call_graph(self) -> None:
        protos = self.img.protos
        state: dict[int, int] = {}          # 1 = on the current path, 2 = done
        depth: dict[int, int] = {}

        def visit(f: int, path: list[int]) -> int:
            if state.get(f) == 1:
                cycle = path[path.index(f):]          # path already ends with f
                raise self.fail("recursion", "recursive calls: " +
                                " -> ".join(protos[x].name for x in cycle), f)
            if state.get(f) == 2:
                return depth[f]
            state[f] = 1
            deepest = max((visit(g, path + [g]) for g in sorted(self.calls.get(f, ()))),
                           default=0)
            state[f] = 2
            depth[f] = protos[f].frame_size + deepest
            return depth[f]

        for f in range(len(protos)):
            if visit(f, [f]) > self.img.limits.max_stack:
                raise self.fail("stack-too-deep", f"needs {depth[f]} registers, "
                                f"max_stack is {self.img.limits.max_stack}", f)
        reachable: set[int] = set()
        todo = [e.handler for e in self.img.events]
        while todo:
            f = todo.pop()
            if f not in reachable:
                reachable.add(f)
                todo += self.calls.get(f, ())
        for f in sorted(reachable & self.allocates):
            raise self.fail("alloc-in-handler", f"'{protos[f].name}' creates a table but "
                            "runs in probe context; only the setup chunk may allocate", f)


def verify(image: bc.Image, src: Source | None = None) -> None:
    Verifier(image, src).run()
