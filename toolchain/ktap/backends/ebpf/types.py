"""Static types for the eBPF backend. ktap values are dynamically typed; eBPF
registers and maps are not. This pass gives every IR register, before every
instruction of a handler, the set of value kinds it may hold, and every table
a handler touches its key and value kind. What cannot be typed is a
compile-time error at the script's line and column that suggests ktapvm."""
from __future__ import annotations

from dataclasses import dataclass, field

from ktap.core.diagnostics import Loc, SemanticError, Source
from ktap.frontend.builtins import CLOCK_VARIABLES, TABLE_CALLS
from ktap.ir import nodes as ir

NIL, BOOL, NUM, STR = "nil", "boolean", "number", "string"
GLOBAL_KINDS = frozenset((NIL, BOOL, NUM))
COMM_BYTES = 16
PROBENAME_BYTES = 64


class Unsupported(SemanticError):
    """Something a handler does that the eBPF backend cannot express."""


def unsupported(src: Source, loc: Loc, what: str) -> Unsupported:
    return Unsupported(f"{what} is not supported in probe handlers by the ebpf backend "
                       "(use --backend ktapvm)", src, loc)


@dataclass(frozen=True)
class T:
    kinds: frozenset
    strsize: int = 0            # buffer bytes (NUL included, multiple of 8) when STR is possible
    table: str | None = None    # a table global's name

    def only(self, kind: str) -> bool:
        return self.kinds == frozenset((kind,))

    def may(self, kind: str) -> bool:
        return kind in self.kinds

    def union(self, other: "T") -> "T":
        if self.table != other.table:
            return T(self.kinds | other.kinds | {"table?"}, max(self.strsize, other.strsize))
        return T(self.kinds | other.kinds, max(self.strsize, other.strsize), self.table)

    def describe(self) -> str:
        return " or ".join(sorted(k for k in self.kinds if k != "table?")) or "table"


def t(*kinds: str, size: int = 0) -> T:
    return T(frozenset(kinds), size)


def round8(n: int) -> int:
    return (n + 7) & ~7


def str_t(nbytes: int) -> T:
    return t(STR, size=round8(nbytes))


State = tuple  # one T | None per register


@dataclass
class TableUse:
    """How handlers use one table (held by a global)."""
    name: str
    key_kinds: set = field(default_factory=set)
    key_size: int = 8
    value_kinds: set = field(default_factory=set)
    value_size: int = 8
    loc: Loc | None = None
    # handlers only ever add to its entries (t[k] += n): a per-CPU map serves
    only_added: bool = True


@dataclass
class Facts:
    """What the setup code leaves behind, as far as the compiler can tell."""
    table_globals: dict[str, int]           # global -> table descriptor index
    global_kinds: dict[str, str]            # other globals -> NUM or BOOL
    string_bytes: int                       # buffer for a string of the session's string_size
    tables: dict[str, TableUse] = field(default_factory=dict)
    # per table global: (key type, value type, loc) of each entry the setup code stores
    setup_entries: dict[str, list] = field(default_factory=dict)
    # per other global: the kinds handlers store into it
    global_stored: dict[str, set] = field(default_factory=dict)
    # per other global: how handlers use it, of "read", "set" and "add"
    global_ops: dict[str, set] = field(default_factory=dict)

    def kinds_of(self, name: str) -> frozenset:
        """Every kind a global may hold while handlers run."""
        return frozenset({self.global_kinds[name]} | self.global_stored.get(name, set()))

    def is_counter(self, name: str) -> bool:
        """A number global that handlers only add to (`g += n`) and never read:
        its per-CPU shares sum to the same value, so it needs no atomic add."""
        return (self.global_ops.get(name) == {"add"} and
                self.kinds_of(name) == frozenset({NUM}))


def setup_facts(prog: ir.IRProgram) -> Facts:
    """Which globals hold tables and which hold numbers after the setup code,
    and the kinds of the entries it puts in the tables (ktaprun copies them
    into the maps, so they must fit the maps' key and value kinds). Only
    straight-line constant code is understood; a handler that reads a global
    left out gets a compile error."""
    setup = prog.functions[0]
    regs: dict[int, tuple] = {}
    tables: dict[str, int] = {}
    kinds: dict[str, str] = {}
    entries: dict[str, list] = {}
    for item in setup.body:
        if isinstance(item, ir.LabelDef):
            regs.clear()
            continue
        a = item.args
        if item.op == "NEWTABLE":
            regs[a[0].n] = ("table", a[1].index, [])
        elif item.op == "GETUPV" and a[1].name in tables:
            regs[a[0].n] = ("table", tables[a[1].name], entries[a[1].name])
        elif item.op in ("LOADI", "LOADI64", "ADD", "SUB", "MUL", "UNM") or \
                (item.op == "LOADVAR" and a[1].name in CLOCK_VARIABLES):
            regs[a[0].n] = (NUM, 0)
        elif item.op == "LOADBOOL":
            regs[a[0].n] = (BOOL, 0)
        elif item.op == "LOADK":
            v = a[1].value
            regs[a[0].n] = (STR, len(v.encode()) + 1) if isinstance(v, str) else (NUM, 0)
        elif item.op in ("SETTABLE", "SETTABLEK") and regs.get(a[0].n, ("",))[0] == "table":
            key = Inference.const_type(a[1]) if item.op == "SETTABLEK" else \
                _setup_type(regs.get(a[1].n))
            regs[a[0].n][2].append((key, _setup_type(regs.get(a[2].n)), item.loc))
        elif item.op == "SETUPV":
            what = regs.get(a[0].n, (None,))
            tables.pop(a[1].name, None)
            kinds.pop(a[1].name, None)
            if what[0] == "table":
                tables[a[1].name], entries[a[1].name] = what[1], what[2]
            elif what[0] is not None:
                kinds[a[1].name] = what[0]
        elif item.op not in ("SETTABLE", "SETTABLEK") and a and isinstance(a[0], ir.Reg):
            regs.pop(a[0].n, None)
    return Facts(tables, kinds, round8(prog.limits.string_size + 1), setup_entries=entries)


def _setup_type(reg: tuple | None) -> T | None:
    if reg is None or reg[0] == "table":
        return None
    return str_t(reg[1]) if reg[0] == STR else t(reg[0])


def merge(a: State | None, b: State) -> State:
    if a is None:
        return b
    return tuple(None if x is None or y is None else x.union(y) for x, y in zip(a, b))


VAR_TYPES = {"pid": t(NUM), "tid": t(NUM), "uid": t(NUM), "cpu": t(NUM), "nsecs": t(NUM),
             "walltime": t(NUM),
             "retval": t(NUM), "execname": str_t(COMM_BYTES),
             "probename": str_t(PROBENAME_BYTES)}
NUM_RESULT = {"ADD", "SUB", "MUL", "DIV", "MOD", "UNM"}
BOOL_RESULT = {"NOT", "EQ", "NE", "LT", "LE"}
NIL_BUILTINS = {"print", "exit"}
# built-ins on a whole table: ktaprun runs them (a CALL record, docs/ebpf.md)
# built-ins a handler calls on a whole table (print(t) is told apart by its arity)
TABLE_BUILTINS = set(TABLE_CALLS) - {"print"}
STRING_BUILTINS = {"kernel_string", "user_string"}


class Inference:
    """Forward pass over one handler. Jumps may only go forward, so by the time
    a label is reached every edge into it has been seen."""

    def __init__(self, fn: ir.IRFunction, facts: Facts, src: Source):
        self.fn = fn
        self.facts = facts
        self.src = src
        self.before: list[State | None] = []      # per body item
        self.reg_strsize = [0] * max(fn.nregs, 1)
        self.pending: dict[int, State] = {}

    def run(self) -> "Inference":
        state: State | None = tuple([None] * max(self.fn.nregs, 1))
        positions = {item.label.id: i for i, item in enumerate(self.fn.body)
                     if isinstance(item, ir.LabelDef)}
        for i, item in enumerate(self.fn.body):
            if isinstance(item, ir.LabelDef):
                state = merge(state, self.pending.pop(item.label.id)) \
                    if item.label.id in self.pending else state
                self.before.append(state)
                continue
            self.before.append(state)
            if state is None:           # unreachable (after a JMP or RET)
                continue
            for label in (x for x in item.args if isinstance(x, ir.Label)):
                if positions[label.id] < i:
                    raise unsupported(self.src, item.loc, "a loop")
                self.pending[label.id] = merge(self.pending.get(label.id), state)
            state = None if item.op in ("JMP", "RET") else self.step(item, state)
        return self

    def set(self, state: State, r: ir.Reg, ty: T) -> State:
        if ty.may(STR):
            self.reg_strsize[r.n] = max(self.reg_strsize[r.n], ty.strsize)
        return state[:r.n] + (ty,) + state[r.n + 1:]

    def table(self, state: State, r: ir.Reg, loc: Loc, per_cpu_ok: bool = False) -> TableUse:
        """The table r holds. per_cpu_ok: this use works on a per-CPU map too
        (adding, deleting, and what ktaprun does for a CALL record, which sums
        the CPUs' shares); reading or storing an entry in a handler does not."""
        ty = state[r.n]
        if ty is None or ty.table is None or ty.kinds:
            raise SemanticError("the ebpf backend needs a table here that a global holds "
                                "from the setup code on (use --backend ktapvm)", self.src, loc)
        use = self.facts.tables.get(ty.table)
        if use is None:
            use = self.facts.tables[ty.table] = TableUse(ty.table, loc=loc)
            self.setup_entries(use, loc)
        use.only_added = use.only_added and per_cpu_ok
        return use

    def setup_entries(self, use: TableUse, loc: Loc) -> None:
        """The entries the setup code stores shape the map too."""
        for key, value, _ in self.facts.setup_entries.get(use.name, []):
            self.key(use, key, loc)
            if value is not None and (value.only(NUM) or value.only(STR)):
                kind = NUM if value.only(NUM) else STR
                self.value(use, kind, value.strsize if kind == STR else 8, loc)

    def key(self, use: TableUse, ty: T | None, loc: Loc) -> None:
        if ty is not None and ty.table is None and NIL in ty.kinds and len(ty.kinds) == 2:
            ty = T(ty.kinds - {NIL}, ty.strsize)     # nil: ktapvm's runtime error, at run time
        if ty is None or not (ty.only(NUM) or ty.only(STR)):
            kind = ty.describe() if ty else "undefined"
            raise SemanticError(f"the ebpf backend needs the keys of table '{use.name}' to be "
                                f"numbers or strings, this one may be {kind} "
                                "(use --backend ktapvm)", self.src, loc)
        use.key_kinds.add(NUM if ty.only(NUM) else STR)
        if len(use.key_kinds) > 1:
            raise SemanticError(f"the ebpf backend needs every key of table '{use.name}' to "
                                "be of one type; it is used with numbers and strings "
                                "(use --backend ktapvm)", self.src, loc)
        if ty.only(STR):
            use.key_size = max(use.key_size, ty.strsize)

    def value(self, use: TableUse, kind: str, size: int, loc: Loc) -> None:
        use.value_kinds.add(kind)
        if len(use.value_kinds) > 1:
            raise SemanticError(f"the ebpf backend needs every value of table '{use.name}' to "
                                f"be of one kind; it holds {' and '.join(sorted(use.value_kinds))} "
                                "(use --backend ktapvm)", self.src, loc)
        use.value_size = max(use.value_size, size)

    def read_type(self, use: TableUse) -> T:
        kinds = use.value_kinds or {NUM}
        if "aggregate" in kinds:
            return t(NIL, "aggregate")
        if STR in kinds:
            return T(frozenset((STR, NIL)), use.value_size)
        return t(NUM, NIL)

    def step(self, item: ir.Instr, state: State) -> State:
        op, a, loc = item.op, item.args, item.loc
        if op == "MOVE":
            return self.set(state, a[0], state[a[1].n] or t(NIL))
        if op in ("LOADI", "LOADI64"):
            return self.set(state, a[0], t(NUM))
        if op == "LOADK":
            v = a[1].value
            return self.set(state, a[0], str_t(len(v.encode()) + 1) if isinstance(v, str)
                            else t(NUM))
        if op == "LOADNIL":
            return self.set(state, a[0], t(NIL))
        if op == "LOADBOOL":
            return self.set(state, a[0], t(BOOL))
        if op in ("GETUPV", "SETUPV", "GADD"):
            name = (a[0] if op == "GADD" else a[1]).name
            use = {"GETUPV": "read", "SETUPV": "set", "GADD": "add"}[op]
            self.facts.global_ops.setdefault(name, set()).add(use)
        if op == "GETUPV":
            name = a[1].name
            if name in self.facts.table_globals:
                return self.set(state, a[0], T(frozenset(), 0, name))
            if name in self.facts.global_kinds:
                return self.set(state, a[0], t(*self.facts.kinds_of(name)))
            raise SemanticError(f"the ebpf backend needs global '{name}' to start as a number, "
                                "a boolean or a table in the setup code (use --backend ktapvm)",
                                self.src, loc)
        if op == "SETUPV":
            self.global_store(a[1].name, state[a[0].n], loc)
            return state
        if op == "GADD":
            self.global_store(a[0].name, t(NUM), loc)
            return state
        if op in ("GETTABLE", "GETTABLEK"):
            use = self.table(state, a[1], loc)
            self.key(use, state[a[2].n] if op == "GETTABLE" else self.const_type(a[2]), loc)
            return self.set(state, a[0], self.read_type(use))
        if op in ("SETTABLE", "SETTABLEK", "TADD", "TADDI", "AGGR"):
            self.table_write(item, state)
            return state
        if op in NUM_RESULT:
            return self.set(state, a[0], t(NUM))
        if op in BOOL_RESULT:
            return self.set(state, a[0], t(BOOL))
        if op == "LOADVAR":
            return self.set(state, a[0], VAR_TYPES[a[1].name])
        if op in ("ARG", "FIELD"):
            return self.set(state, a[0], t(NUM))
        if op == "CALLB":
            name = a[1].name
            if name in TABLE_BUILTINS or (name == "print" and a[2].value == 1 and
                                          state[a[0].n] is not None and
                                          state[a[0].n].table is not None):
                self.table(state, a[0], loc, per_cpu_ok=True)
                return self.set(state, a[0], t(NIL))
            if name in NIL_BUILTINS:
                return self.set(state, a[0], t(NIL))
            if name in STRING_BUILTINS:
                return self.set(state, a[0], T(frozenset((STR, NIL)), self.facts.string_bytes))
            raise unsupported(self.src, loc, f"{name}()")
        if op == "CLEAR":
            self.table(state, a[0], loc, per_cpu_ok=True)
            return state
        if op == "DELETE":
            self.key(self.table(state, a[0], loc, per_cpu_ok=True), state[a[1].n], loc)
            return state
        if op in ("PRINTF", "JMPF", "JMPT", "NOP"):
            return state
        raise unsupported(self.src, loc, self.describe_op(op))

    @staticmethod
    def describe_op(op: str) -> str:
        return {"CONCAT": "string concatenation (..)", "LEN": "len()",
                "CALL": "calling a script function", "TAILCALL": "calling a script function",
                "NEXT": "pairs()", "FORPREP": "a for loop", "FORLOOP": "a for loop",
                "NEWTABLE": "a table constructor", "DELETE": "delete()",
                "CLEAR": "delete()"}.get(op, op)

    @staticmethod
    def const_type(k: ir.Const) -> T:
        v = k.value
        return str_t(len(v.encode()) + 1) if isinstance(v, str) else t(NUM)

    def global_store(self, name: str, ty: T | None, loc: Loc) -> None:
        kind = self.facts.global_kinds.get(name)
        if name in self.facts.table_globals or kind is None or ty is None or \
                not ty.kinds <= GLOBAL_KINDS or ty.table is not None:
            what = ty.describe() if ty is not None else "undefined"
            raise SemanticError(f"the ebpf backend keeps global '{name}' in a map slot for "
                                f"numbers, booleans and nil; this value may be {what} "
                                "(use --backend ktapvm)", self.src, loc)
        self.facts.global_stored.setdefault(name, set()).update(ty.kinds)

    def table_write(self, item: ir.Instr, state: State) -> None:
        op, a, loc = item.op, item.args, item.loc
        use = self.table(state, a[0], loc, per_cpu_ok=op in ("TADD", "TADDI"))
        self.key(use, self.const_type(a[1]) if op == "SETTABLEK" else state[a[1].n], loc)
        if op in ("TADD", "TADDI"):
            self.value(use, NUM, 8, loc)
        elif op == "AGGR":
            self.value(use, "aggregate", 0, loc)
        else:
            ty = state[a[2].n]
            kinds = ty.kinds - {NIL} if ty else frozenset()
            if kinds == {NUM}:
                self.value(use, NUM, 8, loc)
            elif kinds == {STR}:
                self.value(use, STR, ty.strsize, loc)
            elif ty is None or kinds:
                raise SemanticError(f"the ebpf backend stores numbers or strings in tables; "
                                    f"this value may be {ty.describe() if ty else 'undefined'} "
                                    "(use --backend ktapvm)", self.src, loc)
        for r in (x for x in a[1:] if isinstance(x, ir.Reg)):
            if state[r.n] is None:
                raise SemanticError("internal: register used before it is set", self.src, loc)
