"""Compiler: the analysed AST to IR. Registers are allocated Lua-style: locals
live in fixed registers for their scope, temporaries stack above them."""
from __future__ import annotations

from contextlib import contextmanager

from ktap.frontend import ast as A
from ktap.frontend import program
from ktap.events.kinds import EV_END
from ktap.core.diagnostics import Loc, SemanticError, Source
from ktap.ir.nodes import (Builtin, Const, FieldName, Fmt, Func, Global, Imm, Instr, IREvent,
                 IRFunction, IRProgram, Label, LabelDef, Reg, Table, Var)
from ktap.frontend.sema import ArgRef, FieldRef, GlobalRef, LocalSym, Program, VarRef
from ktap.frontend.printf import without_lengths

MAX_REGISTERS = 250
ARITH = {"+": "ADD", "-": "SUB", "*": "MUL", "/": "DIV", "%": "MOD", "..": "CONCAT",
         "==": "EQ", "!=": "NE", "<": "LT", "<=": "LE"}
SWAPPED = {">": "LT", ">=": "LE"}
SMALL_INT = range(-0x8000, 0x8000)
TINY_INT = range(-128, 128)


class _Scope:
    # A plain context manager: scopes open for every block and expression list,
    # and a generator-based one costs several times more per use.
    __slots__ = ("fc", "mark")

    def __init__(self, fc: "FunctionCompiler"):
        self.fc = fc

    def __enter__(self) -> None:
        self.mark = self.fc.free

    def __exit__(self, *exc) -> None:
        self.fc.free = self.mark


class FunctionCompiler:
    def __init__(self, fn: IRFunction, src: Source, labels: list[int]):
        self.fn = fn
        self.src = src
        self.free = 0
        self.loc = Loc(0, 0)
        self.loops: list[Label] = []
        self._labels = labels

    # -- emission helpers ------------------------------------------------
    def emit(self, op: str, *args) -> None:
        self.fn.body.append(Instr(op, args, self.loc))

    def new_label(self) -> Label:
        self._labels[0] += 1
        return Label(self._labels[0])

    def place(self, label: Label) -> None:
        self.fn.body.append(LabelDef(label))

    def alloc(self, n: int = 1) -> int:
        r = self.free
        self.free += n
        if self.free > MAX_REGISTERS:
            raise SemanticError(f"function needs more than {MAX_REGISTERS} registers; "
                                "split it up", self.src, self.loc)
        self.fn.nregs = max(self.fn.nregs, self.free)
        return r

    def scope(self) -> "_Scope":
        """`with self.scope():` frees the registers the block allocated."""
        return _Scope(self)

    def at(self, node: A.Node) -> None:
        self.loc = node.loc

    # -- statements ------------------------------------------------------
    def block(self, block: A.Block) -> None:
        with self.scope():
            for s in block.body:
                self.stmt(s)

    def stmt(self, s: A.Node) -> None:
        self.at(s)
        mark = self.free
        getattr(self, "stmt_" + type(s).__name__)(s)
        if not isinstance(s, A.VarDecl):
            self.free = mark

    def stmt_Block(self, s: A.Block) -> None:
        self.block(s)

    def stmt_VarDecl(self, s: A.VarDecl) -> None:
        sym = getattr(s, "sym", None)
        if sym is None:                        # a global, in the setup chunk
            with self.scope():
                r = self.alloc()
                self.value_into(s.init, r)
                self.emit("SETUPV", Reg(r), Global(s.name))
            return
        r = self.alloc()
        with self.scope():
            self.value_into(s.init, r)
        sym.reg = r

    def value_into(self, e: A.Node | None, r: int) -> None:
        if e is None:
            self.emit("LOADNIL", Reg(r))
        else:
            self.expr_into(e, r)

    def stmt_ExprStmt(self, s: A.ExprStmt) -> None:
        self.expr_any(s.expr)

    def stmt_Assign(self, s: A.Assign) -> None:
        t = s.target
        if isinstance(t, A.Name):
            self.assign_name(t, s.op, s.value)
        else:
            self.assign_entry(t, s.op, s.value)

    def assign_name(self, t: A.Name, op: str, value: A.Node) -> None:
        ref = t.ref
        if isinstance(ref, LocalSym):
            if op == "=":
                if self.safe_in_place(value):
                    self.expr_into(value, ref.reg)
                else:
                    self.emit("MOVE", Reg(ref.reg), Reg(self.expr_any(value)))
            else:
                v = self.expr_any(value)
                self.emit("ADD" if op == "+=" else "SUB", Reg(ref.reg), Reg(ref.reg), Reg(v))
            return
        r = self.alloc()
        if op == "=":
            self.expr_into(value, r)
        else:
            self.emit("GETUPV", Reg(r), Global(ref.name))
            v = self.expr_any(value)
            self.emit("ADD" if op == "+=" else "SUB", Reg(r), Reg(r), Reg(v))
        self.emit("SETUPV", Reg(r), Global(ref.name))

    @staticmethod
    def safe_in_place(e: A.Node) -> bool:
        """Whether e can be computed straight into a variable's own register:
        not when the variable would be overwritten before e reads it."""
        if isinstance(e, A.Binary) and e.op in ("&&", "||"):
            return False
        return not isinstance(e, A.TableCons)

    def entry_parts(self, t: A.Node) -> tuple[int, A.Node]:
        if isinstance(t, A.Field):
            return self.expr_any(t.obj), A.String(t.loc, t.name)
        return self.expr_any(t.obj), t.key

    def assign_entry(self, t: A.Node, op: str, value: A.Node) -> None:
        obj, key = self.entry_parts(t)
        if op == "=" and isinstance(key, A.String):
            v = self.expr_any(value)
            self.emit("SETTABLEK", Reg(obj), Const(key.value), Reg(v))
            return
        k = self.expr_any(key)
        if op in ("+=", "-=") and isinstance(value, A.Number):
            delta = value.value if op == "+=" else -value.value
            if delta in TINY_INT:
                self.emit("TADDI", Reg(obj), Reg(k), Imm(delta))
                return
        v = self.expr_any(value)
        if op == "=":
            self.emit("SETTABLE", Reg(obj), Reg(k), Reg(v))
        elif op == "<<<":
            self.emit("AGGR", Reg(obj), Reg(k), Reg(v))
        else:
            if op == "-=":
                neg = self.alloc()
                self.emit("UNM", Reg(neg), Reg(v))
                v = neg
            self.emit("TADD", Reg(obj), Reg(k), Reg(v))

    def stmt_If(self, s: A.If) -> None:
        end = self.new_label()
        for i, (cond, body) in enumerate(s.branches):
            nxt = self.new_label()
            with self.scope():
                self.at(cond)
                self.emit("JMPF", Reg(self.expr_any(cond)), nxt)
            self.block(body)
            if i < len(s.branches) - 1 or s.orelse is not None:
                self.emit("JMP", None, end)
            self.place(nxt)
        if s.orelse is not None:
            self.block(s.orelse)
        self.place(end)

    @contextmanager
    def loop(self):
        end = self.new_label()
        self.loops.append(end)
        yield end
        self.loops.pop()
        self.place(end)

    def stmt_While(self, s: A.While) -> None:
        top = self.new_label()
        self.place(top)
        with self.loop() as end:
            with self.scope():
                self.emit("JMPF", Reg(self.expr_any(s.cond)), end)
            self.block(s.body)
            self.at(s)
            self.emit("JMP", None, top)

    def stmt_NumFor(self, s: A.NumFor) -> None:
        base = self.alloc(4)
        self.expr_into(s.start, base)
        self.expr_into(s.stop, base + 1)
        if s.step is None:
            self.emit("LOADI", Reg(base + 2), Imm(1))
        else:
            self.expr_into(s.step, base + 2)
        s.sym.reg = base + 3
        body, test = self.new_label(), self.new_label()
        self.at(s)
        self.emit("FORPREP", Reg(base), test)
        with self.loop():
            self.place(body)
            self.block(s.body)
            self.place(test)
            self.at(s)
            self.emit("FORLOOP", Reg(base), body)

    def stmt_PairsFor(self, s: A.PairsFor) -> None:
        table = self.alloc()
        self.expr_into(s.table, table)
        base = self.alloc(3)
        s.key_sym.reg = base + 1
        if s.value_sym is not None:
            s.value_sym.reg = base + 2
        self.emit("LOADI", Reg(base), Imm(0))
        top = self.new_label()
        self.place(top)
        with self.loop() as end:
            self.emit("NEXT", Reg(base), Reg(table))
            self.emit("JMPF", Reg(base + 1), end)
            self.block(s.body)
            self.at(s)
            self.emit("JMP", None, top)

    def stmt_Break(self, s: A.Break) -> None:
        self.emit("JMP", None, self.loops[-1])

    def stmt_Return(self, s: A.Return) -> None:
        v = s.value
        if v is None:
            self.emit("RET", Reg(0), Imm(0))
        elif isinstance(v, A.Call) and v.name in self.program.functions:
            base = self.call_args(v.args)
            self.emit("TAILCALL", Reg(base), Func(v.name), Imm(len(v.args)))
        else:
            self.emit("RET", Reg(self.expr_any(v)), Imm(1))

    # -- expressions -----------------------------------------------------
    def expr_any(self, e: A.Node) -> int:
        """Returns a register holding e's value: a local's own, or a new temporary."""
        if isinstance(e, A.Name) and isinstance(getattr(e, "ref", None), LocalSym):
            return e.ref.reg
        r = self.alloc()
        self.expr_into(e, r)
        return r

    def expr_into(self, e: A.Node, r: int) -> None:
        saved = self.loc
        self.at(e)
        with self.scope():
            getattr(self, "expr_" + type(e).__name__)(e, r)
        self.loc = saved

    def expr_Number(self, e: A.Number, r: int) -> None:
        if e.value in SMALL_INT:
            self.emit("LOADI", Reg(r), Imm(e.value))
        else:
            self.emit("LOADI64", Reg(r), Imm(e.value))

    def expr_String(self, e: A.String, r: int) -> None:
        self.emit("LOADK", Reg(r), Const(e.value))

    def expr_Nil(self, e: A.Nil, r: int) -> None:
        self.emit("LOADNIL", Reg(r))

    def expr_Bool(self, e: A.Bool, r: int) -> None:
        self.emit("LOADBOOL", Reg(r), Imm(int(e.value)))

    def expr_Name(self, e: A.Name, r: int) -> None:
        ref = e.ref
        if isinstance(ref, LocalSym):
            if ref.reg != r:
                self.emit("MOVE", Reg(r), Reg(ref.reg))
        elif isinstance(ref, GlobalRef):
            self.emit("GETUPV", Reg(r), Global(ref.name))
        elif isinstance(ref, VarRef):
            self.emit("LOADVAR", Reg(r), Var(ref.name))
        elif isinstance(ref, ArgRef):
            self.emit("ARG", Reg(r), Imm(ref.n))

    def expr_Field(self, e: A.Field, r: int) -> None:
        if isinstance(getattr(e, "ref", None), FieldRef):
            self.emit("FIELD", Reg(r), FieldName(e.ref.name))
            return
        self.emit("GETTABLEK", Reg(r), Reg(self.expr_any(e.obj)), Const(e.name))

    def expr_Index(self, e: A.Index, r: int) -> None:
        obj = self.expr_any(e.obj)
        if isinstance(e.key, A.String):
            self.emit("GETTABLEK", Reg(r), Reg(obj), Const(e.key.value))
        else:
            self.emit("GETTABLE", Reg(r), Reg(obj), Reg(self.expr_any(e.key)))

    def expr_Binary(self, e: A.Binary, r: int) -> None:
        if e.op in ("&&", "||"):
            end = self.new_label()
            self.expr_into(e.left, r)
            self.emit("JMPF" if e.op == "&&" else "JMPT", Reg(r), end)
            self.expr_into(e.right, r)
            self.place(end)
            return
        left, right = e.left, e.right
        op = ARITH.get(e.op)
        if op is None:
            op, left, right = SWAPPED[e.op], right, left
        a = self.expr_any(left)
        b = self.expr_any(right)
        self.loc = e.loc
        self.emit(op, Reg(r), Reg(a), Reg(b))

    def expr_Unary(self, e: A.Unary, r: int) -> None:
        v = self.expr_any(e.operand)
        self.loc = e.loc
        self.emit("UNM" if e.op == "-" else "NOT", Reg(r), Reg(v))

    def expr_TableCons(self, e: A.TableCons, r: int) -> None:
        self.emit("NEWTABLE", Reg(r), Table(e.desc))
        pos = 0
        for key, value in e.items:
            with self.scope():
                if key is None:
                    pos += 1
                    key = A.Number(value.loc, pos)
                k = self.expr_any(key)
                v = self.expr_any(value)
                self.emit("SETTABLE", Reg(r), Reg(k), Reg(v))

    def call_args(self, args: list[A.Node]) -> int:
        base = self.alloc(max(len(args), 1))
        for i, a in enumerate(args):
            self.expr_into(a, base + i)
        return base

    def expr_Call(self, e: A.Call, r: int) -> None:
        name, args = e.name, e.args
        if name in self.program.functions:
            base = self.call_args(args)
            self.emit("CALL", Reg(base), Func(name), Imm(len(args)))
        elif name == "printf":
            base = self.call_args(args[1:])
            self.emit("PRINTF", Reg(base), Fmt(without_lengths(args[0].value)),
                      Imm(len(args) - 1))
            self.emit("LOADNIL", Reg(r))
            return
        elif name == "len":
            self.emit("LEN", Reg(r), Reg(self.expr_any(args[0])))
            return
        elif name == "str":         # sema chose the memory from the probe's kind
            base = self.call_args(args)
            self.emit("CALLB", Reg(base), Builtin(f"{e.memory}_string"), Imm(1))
        elif name in ("delete", "clear"):      # clear(t) is delete(t): every key goes
            t = self.expr_any(args[0])
            if len(args) == 1:
                self.emit("CLEAR", Reg(t))
            else:
                self.emit("DELETE", Reg(t), Reg(self.expr_any(args[1])))
            self.emit("LOADNIL", Reg(r))
            return
        else:
            base = self.call_args(args)
            self.emit("CALLB", Reg(base), Builtin(name), Imm(len(args)))
        if base != r:
            self.emit("MOVE", Reg(r), Reg(base))


class Compiler:
    def __init__(self, program: Program, src: Source):
        self.program = program
        self.src = src
        self.labels = [0]

    def function(self, name: str, kind: int, params: list[LocalSym]) -> FunctionCompiler:
        fn = IRFunction(name, kind, [p.name for p in params])
        fc = FunctionCompiler(fn, self.src, self.labels)
        fc.program = self.program
        for p in params:
            p.reg = fc.alloc()
        return fc

    @staticmethod
    def finish(fc: FunctionCompiler, loc: Loc) -> IRFunction:
        fc.loc = loc
        fc.emit("RET", Reg(0), Imm(0))
        return fc.fn

    def compile(self, script: A.Script) -> IRProgram:
        setup = self.function("(setup)", program.SETUP, [])
        functions: list[IRFunction] = []
        handlers: list[IRFunction] = []
        events: list[IREvent] = []
        last = script.loc
        for node in script.body:
            last = node.loc
            if isinstance(node, A.FunctionDef):
                fc = self.function(node.name, program.FUNCTION, node.param_syms)
                fc.block(node.body)
                functions.append(self.finish(fc, node.loc))
            elif isinstance(node, (A.Probe, A.TraceEnd)):
                fn, ev = self.handler(node)
                handlers.append(fn)
                events.append(ev)
            elif isinstance(node, A.Limit):
                continue
            else:
                setup.stmt(node)
        protos = [self.finish(setup, last)] + functions + handlers
        return IRProgram(self.src.name, self.program.limits, list(self.program.globals),
                         self.program.tables, protos, events)

    def handler(self, node: A.Node) -> tuple[IRFunction, IREvent]:
        if isinstance(node, A.TraceEnd):
            name = f"trace_end@{node.loc.line}"
            fc = self.function(name, program.HANDLER, [])
            fc.block(node.body)
            return self.finish(fc, node.loc), IREvent(EV_END, "trace_end", "trace_end",
                                                      0, 0, name, [])
        spec = node.spec_parsed
        name = f"{node.spec}@{node.loc.line}"
        fc = self.function(name, program.HANDLER, [])
        fc.fn.fields = node.fields
        done = fc.new_label()
        if node.filter is not None:
            fc.at(node.filter)
            with fc.scope():
                fc.emit("JMPF", Reg(fc.expr_any(node.filter)), done)
        fc.block(node.body)
        fc.place(done)
        fn = self.finish(fc, node.loc)
        return fn, IREvent(spec.kind, node.spec, spec.name, spec.offset, spec.period_ns,
                           name, list(node.fields))


def compile_program(script: A.Script, program: Program, src: Source) -> IRProgram:
    return Compiler(program, src).compile(script)
