"""Semantic analysis: resolves every name, checks where each construct may
appear, and collects what the image declares (globals, functions, tables,
events, limits). It annotates the AST in place:

    Name.ref      -> LocalSym | GlobalRef | VarRef | ArgRef
    Field.ref     -> FieldRef  (for args.NAME)
    Probe.spec_parsed, Probe.fields
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from ktap.frontend import ast as A
from ktap.frontend import builtins, program
from ktap.core.diagnostics import Loc, SemanticError, Source
from ktap.frontend.printf import FormatError, count_conversions
from ktap.events.kinds import kind as event_kind
from ktap.events.specs import SpecError, parse_spec

MAX_LHIST_BUCKETS = 1000
_ARGN = re.compile(r"arg([1-9])$")

# Built-ins compiled to their own instructions or checked specially, beyond CALLB ones.
SPECIAL_CALLS = {"printf": (1, 17), "len": (1, 1), "delete": (1, 2), "pairs": (1, 1),
                 "lhist": (4, 4), "clear": (1, 1), "str": (1, 1)}


@dataclass(eq=False)
class LocalSym:
    name: str
    loc: Loc
    reg: int = -1          # assigned by the compiler


@dataclass(frozen=True)
class GlobalRef:
    name: str


@dataclass(frozen=True)
class VarRef:
    name: str


@dataclass(frozen=True)
class ArgRef:
    n: int


@dataclass(frozen=True)
class FieldRef:
    name: str


@dataclass
class Context:
    kind: str                      # "setup", "function", "handler", "end"
    spec: object = None            # probes.Spec for handlers
    fields: list[str] | None = None
    loops: int = 0


@dataclass
class Program:
    """What sema learned about the script as a whole."""
    globals: list[str] = field(default_factory=list)
    global_tables: dict[str, int] = field(default_factory=dict)   # global -> table desc
    tables: list[program.TableDesc] = field(default_factory=list)
    functions: dict[str, A.FunctionDef] = field(default_factory=dict)
    limits: program.Limits = field(default_factory=program.Limits)


class Analyzer:
    def __init__(self, source: Source, limits: program.Limits | None = None):
        self.src = source
        self.prog = Program(limits=limits or program.Limits())
        self.scopes: list[dict[str, LocalSym]] = []
        self.ctx = Context("setup")
        self.limit_overrides: set[str] = set()

    def error(self, msg: str, loc: Loc) -> SemanticError:
        return SemanticError(msg, self.src, loc)

    # -- declarations -----------------------------------------------------
    def analyze(self, script: A.Script, cli_limits: set[str] = frozenset()) -> Program:
        self.limit_overrides = set(cli_limits)
        self.collect(script)
        for node in script.body:
            self.toplevel(node)
        return self.prog

    def collect(self, script: A.Script) -> None:
        seen: dict[str, Loc] = {}
        for node in script.body:
            if isinstance(node, A.VarDecl):
                self.declare_global(node, seen)
            elif isinstance(node, A.FunctionDef):
                self.check_new_name(node.name, node.loc, seen)
                seen[node.name] = node.loc
                self.prog.functions[node.name] = node

    def declare_global(self, node: A.VarDecl, seen: dict[str, Loc]) -> None:
        if node.name in seen and node.name in self.prog.globals:
            # `var x` twice at the top level re-initialises the same global.
            pass
        else:
            self.check_new_name(node.name, node.loc, seen)
            seen[node.name] = node.loc
            self.prog.globals.append(node.name)
        if isinstance(node.init, A.TableCons):
            node.init.desc = len(self.prog.tables)
            self.prog.tables.append(program.TableDesc())
            self.prog.global_tables.setdefault(node.name, node.init.desc)

    def check_new_name(self, name: str, loc: Loc, seen: dict[str, Loc]) -> None:
        if name in seen:
            prev = seen[name]
            raise self.error(f"'{name}' is already declared at line {prev.line}", loc)
        self.check_not_builtin(name, loc)

    def check_not_builtin(self, name: str, loc: Loc) -> None:
        if (name in builtins.VARIABLE_BY_NAME or _ARGN.match(name) or name == "args"):
            raise self.error(f"'{name}' is a built-in variable and cannot be redeclared", loc)
        if name in builtins.BUILTIN_BY_NAME or name in SPECIAL_CALLS:
            raise self.error(f"'{name}' is a built-in function and cannot be redeclared", loc)

    # -- top level --------------------------------------------------------
    def toplevel(self, node: A.Node) -> None:
        if isinstance(node, A.FunctionDef):
            self.function(node)
        elif isinstance(node, A.Probe):
            self.probe(node)
        elif isinstance(node, A.TraceEnd):
            self.with_context(Context("end"), node.body)
        elif isinstance(node, A.Limit):
            self.limit(node)
        elif isinstance(node, A.VarDecl):
            if node.init is not None:
                self.expr(node.init)
        else:
            self.stmt(node)

    def limit(self, node: A.Limit) -> None:
        if node.name not in program.Limits.FIELDS:
            raise self.error(f"unknown limit '{node.name}' (known: "
                             f"{', '.join(program.Limits.FIELDS)})", node.loc)
        top = program.Limits.MAXIMUM[node.name]
        if not 1 <= node.value <= top:
            raise self.error(f"limit {node.name} must be between 1 and {top}", node.loc)
        if node.name not in self.limit_overrides:   # the command line wins
            setattr(self.prog.limits, node.name, node.value)

    def function(self, node: A.FunctionDef) -> None:
        if len(set(node.params)) != len(node.params):
            raise self.error(f"duplicate parameter name in '{node.name}'", node.loc)
        for p in node.params:
            self.check_not_builtin(p, node.loc)
        self.with_context(Context("function"), node.body,
                          [LocalSym(p, node.loc) for p in node.params], node)

    def probe(self, node: A.Probe) -> None:
        try:
            spec = parse_spec(node.spec)
        except SpecError as e:
            raise self.error(str(e), node.spec_loc or node.loc) from None
        node.spec_parsed = spec
        node.fields = []
        ctx = Context("handler", spec, node.fields)
        saved = self.ctx
        self.ctx = ctx
        if node.filter is not None:
            self.expr(node.filter)
        self.ctx = saved
        self.with_context(ctx, node.body)

    def with_context(self, ctx: Context, body: A.Block, params: list[LocalSym] = (),
                     owner: A.Node | None = None) -> None:
        saved, saved_scopes = self.ctx, self.scopes
        self.ctx, self.scopes = ctx, [{p.name: p for p in params}]
        if owner is not None:
            owner.param_syms = list(params)
        self.block_body(body)
        self.ctx, self.scopes = saved, saved_scopes

    # -- statements -------------------------------------------------------
    def block(self, block: A.Block) -> None:
        self.scopes.append({})
        self.block_body(block)
        self.scopes.pop()

    def block_body(self, block: A.Block) -> None:
        for s in block.body:
            self.stmt(s)

    def declare_local(self, name: str, loc: Loc) -> LocalSym:
        self.check_not_builtin(name, loc)
        if not self.scopes:
            self.scopes.append({})
        scope = self.scopes[-1]
        if name in scope:
            raise self.error(f"'{name}' is already declared in this block", loc)
        sym = LocalSym(name, loc)
        scope[name] = sym
        return sym

    def stmt(self, s: A.Node) -> None:
        method = getattr(self, "stmt_" + type(s).__name__, None)
        if method is None:
            raise self.error("unexpected statement", s.loc)
        method(s)

    def stmt_VarDecl(self, s: A.VarDecl) -> None:
        if s.init is not None:
            self.expr(s.init)
        s.sym = self.declare_local(s.name, s.loc)

    def stmt_Assign(self, s: A.Assign) -> None:
        t = s.target
        if s.op == "<<<" and not isinstance(t, (A.Index, A.Field)):
            raise self.error("'<<<' feeds a table entry: write t[key] <<< value", s.loc)
        if isinstance(t, A.Name):
            self.resolve_assignable(t)
        elif isinstance(t, A.Field) and isinstance(t.obj, A.Name) and t.obj.name == "args":
            raise self.error("tracepoint fields are read-only", t.loc)
        else:
            self.expr(t)
        self.expr(s.value)

    def resolve_assignable(self, t: A.Name) -> None:
        ref = self.lookup(t.name)
        if isinstance(ref, (LocalSym, GlobalRef)):
            t.ref = ref
            return
        if ref is not None:
            raise self.error(f"cannot assign to built-in variable '{t.name}'", t.loc)
        if t.name in self.prog.functions:
            raise self.error(f"cannot assign to function '{t.name}'", t.loc)
        raise self.error(f"assignment to undeclared variable '{t.name}' "
                         f"(declare it with 'var {t.name}')" + self.suggest(t.name, "variable"), t.loc)

    def stmt_ExprStmt(self, s: A.ExprStmt) -> None:
        self.expr(s.expr)

    def stmt_If(self, s: A.If) -> None:
        for cond, body in s.branches:
            self.expr(cond)
            self.block(body)
        if s.orelse is not None:
            self.block(s.orelse)

    def stmt_While(self, s: A.While) -> None:
        self.expr(s.cond)
        self.loop_body(s.body)

    def loop_body(self, body: A.Block, syms: list[LocalSym] = ()) -> None:
        self.ctx.loops += 1
        self.scopes.append({sym.name: sym for sym in syms})
        self.block_body(body)
        self.scopes.pop()
        self.ctx.loops -= 1

    def stmt_NumFor(self, s: A.NumFor) -> None:
        for e in (s.start, s.stop, s.step):
            if e is not None:
                self.expr(e)
        if isinstance(s.step, A.Number) and s.step.value == 0:
            raise self.error("for step cannot be zero", s.step.loc)
        self.check_not_builtin(s.var, s.loc)
        s.sym = LocalSym(s.var, s.loc)
        self.loop_body(s.body, [s.sym])

    def stmt_PairsFor(self, s: A.PairsFor) -> None:
        self.expr(s.table)
        names = [s.key] + ([s.value] if s.value else [])
        if len(set(names)) != len(names):
            raise self.error("the key and value variables need different names", s.loc)
        for n in names:
            self.check_not_builtin(n, s.loc)
        s.key_sym = LocalSym(s.key, s.loc)
        s.value_sym = LocalSym(s.value, s.loc) if s.value else None
        self.loop_body(s.body, [x for x in (s.key_sym, s.value_sym) if x])

    def stmt_Break(self, s: A.Break) -> None:
        if self.ctx.loops == 0:
            raise self.error("'break' outside a loop", s.loc)

    def stmt_Return(self, s: A.Return) -> None:
        if self.ctx.kind == "setup":
            raise self.error("'return' outside a function or probe", s.loc)
        if s.value is not None:
            self.expr(s.value)

    def stmt_Block(self, s: A.Block) -> None:
        self.block(s)

    # -- expressions ------------------------------------------------------
    def lookup(self, name: str):
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        if name in self.prog.globals:
            return GlobalRef(name)
        if name in builtins.VARIABLE_BY_NAME:
            return VarRef(name)
        m = _ARGN.match(name)
        if m:
            return ArgRef(int(m.group(1)))
        return None

    def suggest(self, name: str, what: str = "any") -> str:
        """A "did you mean" hint: among variables, functions, or both."""
        pool = set()
        if what in ("any", "variable"):
            pool |= set(self.prog.globals) | set(builtins.VARIABLE_BY_NAME)
            for scope in self.scopes:
                pool |= set(scope)
        if what in ("any", "function"):
            pool |= set(self.prog.functions) | set(builtins.BUILTIN_BY_NAME) | set(SPECIAL_CALLS)
        close = difflib.get_close_matches(name, sorted(pool), n=1)
        return f"; did you mean '{close[0]}'?" if close else ""

    def expr(self, e: A.Node) -> None:
        method = getattr(self, "expr_" + type(e).__name__, None)
        if method is not None:
            method(e)

    def expr_Name(self, e: A.Name) -> None:
        ref = self.lookup(e.name)
        if ref is None:
            if e.name in self.prog.functions:
                raise self.error(f"function '{e.name}' is not a value; call it", e.loc)
            if e.name == "args":
                raise self.error("'args' is used as args.FIELD in tracepoint probes", e.loc)
            raise self.error(f"undeclared variable '{e.name}'" + self.suggest(e.name, "variable"),
                             e.loc)
        if isinstance(ref, (VarRef, ArgRef)):
            self.check_event_variable(e, ref)
        e.ref = ref

    def check_event_variable(self, e: A.Name, ref) -> None:
        if isinstance(ref, VarRef) and ref.name in builtins.CLOCK_VARIABLES:
            return          # the clocks have a value everywhere
        kind = self.ctx.kind
        if kind in ("setup", "end"):
            where = "the setup code" if kind == "setup" else "trace_end"
            raise self.error(f"built-in variable '{e.name}' has no value in {where}; "
                             "use it inside a probe", e.loc)
        spec = self.ctx.spec
        if spec is None:
            return
        kind = event_kind(spec.kind)
        if isinstance(ref, VarRef) and ref.name == "retval" and not kind.retval:
            raise self.error("'retval' is only available in return probes "
                             "(probe:SYM%return)", e.loc)
        if isinstance(ref, ArgRef) and not kind.args:
            what = "timer probes" if kind.timer else "return probes (use retval)" if \
                kind.retval else f"{kind.name} probes"
            raise self.error(f"'{e.name}' is not available in {what}", e.loc)

    def expr_Field(self, e: A.Field) -> None:
        if isinstance(e.obj, A.Name) and e.obj.name == "args" and self.lookup("args") is None:
            spec = self.ctx.spec
            if self.ctx.kind != "handler" or spec is None or not event_kind(spec.kind).fields:
                raise self.error("args.NAME reads a tracepoint field; it is only available "
                                 "in tracepoint probes (trace SUBSYS:EVENT)", e.loc)
            if e.name not in self.ctx.fields:
                self.ctx.fields.append(e.name)
            e.ref = FieldRef(e.name)
            return
        self.expr(e.obj)

    def expr_Index(self, e: A.Index) -> None:
        self.expr(e.obj)
        self.expr(e.key)

    def expr_Binary(self, e: A.Binary) -> None:
        self.expr(e.left)
        self.expr(e.right)

    def expr_Unary(self, e: A.Unary) -> None:
        self.expr(e.operand)

    def expr_TableCons(self, e: A.TableCons) -> None:
        if self.ctx.kind != "setup":
            raise self.error("tables can only be created in the top-level setup code, not in "
                             "probes or functions (scripts never allocate in probe context)",
                             e.loc)
        if not hasattr(e, "desc"):
            e.desc = len(self.prog.tables)
            self.prog.tables.append(program.TableDesc())
        for k, v in e.items:
            if k is not None:
                self.expr(k)
            self.expr(v)

    def expr_Call(self, e: A.Call) -> None:
        name = e.name
        if name in self.prog.functions:
            fn = self.prog.functions[name]
            if len(e.args) != len(fn.params):
                raise self.error(f"'{name}' takes {len(fn.params)} argument(s), "
                                 f"{len(e.args)} given", e.loc)
        elif name in SPECIAL_CALLS or name in builtins.BUILTIN_BY_NAME:
            if name in SPECIAL_CALLS:
                lo, hi = SPECIAL_CALLS[name]
            else:
                b = builtins.BUILTIN_BY_NAME[name]
                lo, hi = b.min_args, b.max_args
            if not lo <= len(e.args) <= hi:
                want = f"{lo}" if lo == hi else f"{lo} to {hi}"
                raise self.error(f"'{name}' takes {want} argument(s), {len(e.args)} given",
                                 e.loc)
            check = getattr(self, "call_" + name, None)
            if check is not None:
                check(e)
        else:
            raise self.error(f"unknown function '{name}'" + self.suggest(name, "function"), e.loc)
        for a in e.args:
            self.expr(a)

    def call_str(self, e: A.Call) -> None:
        """str(addr) reads the memory the probe's pointers point into: user
        memory in a user-space probe, kernel memory in the others."""
        spec = self.ctx.spec if self.ctx.kind == "handler" else None
        if spec is None:
            raise self.error("str() reads the memory of the probe it is in; outside a probe "
                             "body say which: user_string(addr) or kernel_string(addr)", e.loc)
        e.memory = "user" if event_kind(spec.kind).user else "kernel"

    def call_pairs(self, e: A.Call) -> None:
        raise self.error("pairs() is only used in 'for (k, v in pairs(t))'", e.loc)

    def call_printf(self, e: A.Call) -> None:
        fmt = e.args[0]
        if not isinstance(fmt, A.String):
            raise self.error("printf's format must be a string literal", fmt.loc)
        try:
            n = count_conversions(fmt.value)
        except FormatError as err:
            raise self.error(str(err), Loc(fmt.loc.line, fmt.loc.col + 1 + err.offset)) from None
        if n != len(e.args) - 1:
            raise self.error(f"printf format has {n} conversion(s) but {len(e.args) - 1} "
                             "argument(s) follow", e.loc)

    def table_global(self, e: A.Call) -> int:
        arg = e.args[0]
        if not isinstance(arg, A.Name) or arg.name not in self.prog.global_tables:
            raise self.error(f"{e.name}() needs a global table declared with "
                             f"'var NAME = {{}}'", arg.loc)
        return self.prog.global_tables[arg.name]

    def call_hist(self, e: A.Call) -> None:
        self.prog.tables[self.table_global(e)].flags |= program.TABLE_LOG2

    def call_lhist(self, e: A.Call) -> None:
        desc = self.prog.tables[self.table_global(e)]
        vals = []
        for a in e.args[1:]:
            if not isinstance(a, A.Number):
                raise self.error("lhist's min, max and step must be integer literals", a.loc)
            vals.append(a.value)
        lo, hi, step = vals
        if step <= 0 or hi <= lo:
            raise self.error("lhist needs min < max and step > 0", e.loc)
        if (hi - lo + step - 1) // step > MAX_LHIST_BUCKETS:
            raise self.error(f"lhist would have more than {MAX_LHIST_BUCKETS} buckets", e.loc)
        if desc.flags & program.TABLE_LINEAR and (desc.lmin, desc.lmax, desc.lstep) != (lo, hi, step):
            raise self.error("this table already has different lhist bounds", e.loc)
        desc.flags |= program.TABLE_LINEAR
        desc.lmin, desc.lmax, desc.lstep = lo, hi, step
        e.args = e.args[:1]


def analyze(script: A.Script, source: Source, limits: program.Limits | None = None,
            cli_limits: set[str] = frozenset()) -> Program:
    return Analyzer(source, limits).analyze(script, cli_limits)
