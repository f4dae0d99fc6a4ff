"""One handler's IR to one eBPF program. Registers r6-r9 keep what must
survive helper calls: r6 the context, r7 and r8 the record being built (write
pointer and start), r9 the record's variable length. IR registers live in the
stack frame (frame.py)."""
from __future__ import annotations

from ktap.backends.ebpf import image as im
from ktap.backends.ebpf.asm import Asm, Label
from ktap.backends.ebpf.frame import GLOBALS_PTR, KEY0, SPARE, STATE_PTR, TAG, TEMP, Frame, Maps
from ktap.backends.ebpf.insn import (B, DW, NEGATED, PROG_TYPES, R0, R1, R2, R3, R6, R10, W,
                                     alu64, exit_insn, ldx, mov, movi, st, stx, xadd)
from ktap.backends.ebpf.output import Records
from ktap.backends.ebpf.tables import TableOps
from ktap.backends.ebpf.types import NIL, NUM, STR, Facts, Inference, T, unsupported
from ktap.core.diagnostics import Source
from ktap.core.targets import Target
from ktap.events.kinds import (EV_KPROBE, EV_KRETPROBE, EV_PERF, EV_PROFILE, EV_TICK,
                               EV_TRACEPOINT, EV_UPROBE, EV_URETPROBE, EV_USDT)
from ktap.ir import nodes as ir

PROG_TYPE = {EV_KPROBE: PROG_TYPES["kprobe"], EV_KRETPROBE: PROG_TYPES["kprobe"],
             EV_TRACEPOINT: PROG_TYPES["tracepoint"], EV_TICK: PROG_TYPES["perf_event"],
             EV_PROFILE: PROG_TYPES["perf_event"], EV_PERF: PROG_TYPES["perf_event"],
             # user probes run kprobe programs on the user registers (uprobe PMU)
             EV_UPROBE: PROG_TYPES["kprobe"], EV_URETPROBE: PROG_TYPES["kprobe"],
             EV_USDT: PROG_TYPES["kprobe"]}
ARITH = {"ADD": "add", "SUB": "sub", "MUL": "mul"}


class Lowering(Records, TableOps):
    def __init__(self, fn: ir.IRFunction, fn_index: int, event_kind: int, fields: list[str],
                 inf: Inference, facts: Facts, maps: Maps, formats: list[str],
                 target: Target, src: Source):
        self.fn, self.fn_index, self.kind, self.fields = fn, fn_index, event_kind, fields
        self.inf, self.facts, self.maps, self.formats = inf, facts, maps, formats
        self.target, self.src = target, src
        self.asm = Asm(target.byte_order)
        self.first_loc = next((i.loc for i in fn.body if isinstance(i, ir.Instr)), None)
        self.frame = Frame(inf, facts, src, self.first_loc)
        self.labels: dict[int, Label] = {}
        self.done = Label()
        self.record_max = 0
        self.check_stopped = True
        self.stops = False          # whether this handler can stop the session

    # -- the program --------------------------------------------------------
    def program(self, event_index: int) -> im.Program:
        a = self.asm
        self.prologue()
        for item, state in zip(self.fn.body, self.inf.before):
            if isinstance(item, ir.LabelDef):
                a.place(self.label(item.label))
            elif state is not None:
                a.loc = item.loc
                self.state = state
                getattr(self, "op_" + item.op, self.op_unsupported)(item, *item.args)
        a.place(self.done)
        a.add(movi(R0, 0), exit_insn())
        a.finish()
        return im.Program(event_index, PROG_TYPE[self.kind], a.insns, a.relocs, a.lines)

    def label(self, label: ir.Label) -> Label:
        return self.labels.setdefault(label.id, Label())

    def prologue(self) -> None:
        """Saves the context and, when some handler of the session can stop it
        (exit() or a runtime error), returns at once once it has stopped."""
        a = self.asm
        if self.first_loc is not None:
            a.loc = self.first_loc
        a.add(mov(R6, 1), st(DW, R10, KEY0, 0))
        if self.check_stopped:
            a.lookup(self.maps["state"], KEY0, self.done)
            a.add(stx(DW, R10, STATE_PTR, R0), ldx(DW, R1, R0, im.STATE_STOPPED))
            a.jump("jne", R1, self.done, imm=0)
        if self.uses_globals():
            a.lookup(self.maps["globals"], KEY0, self.done)
            a.add(stx(DW, R10, GLOBALS_PTR, R0))

    def uses_globals(self) -> bool:
        """Whether the handler uses the shared globals map (not the counters)."""
        names = (i.args[1].name if i.op != "GADD" else i.args[0].name
                 for i in self.fn.body
                 if isinstance(i, ir.Instr) and i.op in ("GETUPV", "SETUPV", "GADD"))
        return any(n in self.facts.global_kinds and not self.facts.is_counter(n) for n in names)

    def state_ptr(self, dst: int) -> None:
        """dst := the state map's value (clobbers r0-r5 unless the prologue kept it)."""
        if self.check_stopped:
            self.asm.add(ldx(DW, dst, R10, STATE_PTR))
            return
        self.asm.lookup(self.maps["state"], KEY0, self.done)
        self.asm.add(mov(dst, R0))

    # -- register slots -----------------------------------------------------
    def ty(self, r: ir.Reg) -> T:
        return self.state[r.n]

    def set_tag(self, r: ir.Reg, tag: str) -> None:
        self.asm.add(st(DW, R10, Frame.tag(r.n), TAG[tag]))

    def set_num(self, r: ir.Reg, reg: int) -> None:
        """r := the number in machine register `reg`."""
        self.asm.add(stx(DW, R10, Frame.val(r.n), reg))
        self.set_tag(r, NUM)

    def load_val(self, dst: int, r: ir.Reg) -> None:
        self.asm.add(ldx(DW, dst, R10, Frame.val(r.n)))

    def load_tag(self, dst: int, r: ir.Reg) -> None:
        self.asm.add(ldx(DW, dst, R10, Frame.tag(r.n)))

    def buffer(self, r: ir.Reg) -> int:
        return self.frame.buffers[r.n]

    def number(self, r: ir.Reg, dst: int, what: str) -> None:
        """Loads r's number into dst, or stops with ktapvm's runtime error when r
        holds another kind (decided here when the kind is known statically)."""
        ty = self.ty(r)
        if not ty.may(NUM):
            self.runtime_error(what % kind_name(ty))
            return
        if not ty.only(NUM):
            ok = Label()
            self.load_tag(R1, r)
            self.asm.jump("jeq", R1, ok, imm=TAG[NUM])
            self.runtime_error(what % "nil" if ty.may(NIL) else what % kind_name(ty))
            self.asm.place(ok)
        self.load_val(dst, r)

    # -- loads and moves ----------------------------------------------------
    def op_NOP(self, item, *args) -> None:
        pass

    def op_LOADI(self, item, r, imm) -> None:
        self.asm.imm64(R1, imm.value)
        self.set_num(r, R1)

    op_LOADI64 = op_LOADI

    def op_LOADNIL(self, item, r) -> None:
        self.set_tag(r, NIL)

    def op_LOADBOOL(self, item, r, imm) -> None:
        self.set_tag(r, "true" if imm.value else "false")

    def op_LOADK(self, item, r, k) -> None:
        if not isinstance(k.value, str):
            self.asm.imm64(R1, k.value)
            self.set_num(r, R1)
            return
        self.const_string(self.buffer(r), self.inf.reg_strsize[r.n], k.value)
        self.set_tag(r, STR)

    def const_string(self, off: int, size: int, text: str) -> None:
        data = text.encode("utf-8", "surrogateescape").ljust(size, b"\0")
        for k in range(0, size, 4):
            word = int.from_bytes(data[k:k + 4], self.target.byte_order, signed=True)
            self.asm.add(st(W, R10, off + k, word))

    def op_MOVE(self, item, dst, src) -> None:
        a = self.asm
        ty = self.ty(src)
        a.add(ldx(DW, R1, R10, Frame.tag(src.n)), stx(DW, R10, Frame.tag(dst.n), R1),
              ldx(DW, R1, R10, Frame.val(src.n)), stx(DW, R10, Frame.val(dst.n), R1))
        if ty.may(STR):
            self.copy_string(dst, src)

    def copy_string(self, dst: ir.Reg, src: ir.Reg) -> None:
        dsize, ssize = self.inf.reg_strsize[dst.n], self.inf.reg_strsize[src.n]
        self.asm.zero(R10, self.buffer(dst), dsize)
        self.asm.copy(R10, self.buffer(dst), R10, self.buffer(src), min(dsize, ssize), R1)

    # -- globals --------------------------------------------------------------
    def global_slot(self, name: str) -> im.Slot:
        gm = self.maps.get("counters" if self.facts.is_counter(name) else "globals")
        return next(s for s in gm.slots if self.global_name(s.global_index) == name)

    def global_name(self, index: int) -> str:
        return self.globals[index]

    def op_GETUPV(self, item, r, g) -> None:
        if g.name in self.facts.table_globals:
            return
        a, slot = self.asm, self.global_slot(g.name)
        a.add(ldx(DW, R2, R10, GLOBALS_PTR))
        if slot.kind == im.SLOT_NUM:
            a.add(ldx(DW, R1, R2, slot.offset))
            self.set_num(r, R1)
        elif slot.kind == im.SLOT_BOOL:
            a.add(ldx(DW, R1, R2, slot.offset), alu64("add", R1, None, TAG["false"]),
                  stx(DW, R10, Frame.tag(r.n), R1))
        else:
            a.add(ldx(DW, R1, R2, slot.offset), stx(DW, R10, Frame.tag(r.n), R1),
                  ldx(DW, R1, R2, slot.offset + 8), stx(DW, R10, Frame.val(r.n), R1))

    def op_SETUPV(self, item, r, g) -> None:
        a, slot = self.asm, self.global_slot(g.name)
        a.add(ldx(DW, R2, R10, GLOBALS_PTR))
        if slot.kind == im.SLOT_NUM:
            self.load_val(R1, r)
            a.add(stx(DW, R2, slot.offset, R1))
        elif slot.kind == im.SLOT_BOOL:
            self.load_tag(R1, r)
            a.add(alu64("sub", R1, None, TAG["false"]), stx(DW, R2, slot.offset, R1))
        else:
            self.load_tag(R1, r)
            a.add(stx(DW, R2, slot.offset, R1))
            self.load_val(R1, r)
            a.add(stx(DW, R2, slot.offset + 8, R1))

    def op_GADD(self, item, g, r) -> None:
        """global += number, atomically (the fused GETUPV/ADD/SETUPV); a counter
        adds to this CPU's share."""
        a, slot = self.asm, self.global_slot(g.name)
        if self.facts.is_counter(g.name):
            self.number(r, R1, "attempt to perform arithmetic on a %s value")
            a.add(stx(DW, R10, SPARE, R1))
            a.lookup(self.maps["counters"], KEY0, self.done)
            a.add(ldx(DW, R1, R10, SPARE))
            self.add_to(R0, slot.offset, R1, atomic=False)
            return
        offset = slot.offset
        if slot.kind == im.SLOT_TAGGED:
            number, boolean = Label(), Label()
            a.add(ldx(DW, R2, R10, GLOBALS_PTR), ldx(DW, R1, R2, slot.offset))
            a.jump("jeq", R1, number, imm=TAG[NUM])
            a.jump("jne", R1, boolean, imm=TAG[NIL])
            self.runtime_error("attempt to perform arithmetic on a nil value")
            a.place(boolean)
            self.runtime_error("attempt to perform arithmetic on a boolean value")
            a.place(number)
            offset += 8
        self.number(r, R1, "attempt to perform arithmetic on a %s value")
        a.add(ldx(DW, R2, R10, GLOBALS_PTR))
        self.add_to(R2, offset, R1, atomic=True)

    def add_to(self, base: int, off: int, src: int, atomic: bool, imm: int | None = None) -> None:
        """*(u64 *)(base + off) += src (or += imm, a 32-bit immediate, through
        src if atomic): atomic for a value other CPUs update too, plain for this
        CPU's share of a per-CPU value (clobbers r3)."""
        a = self.asm
        if atomic:
            if imm is not None:
                a.add(movi(src, imm))
            a.add(xadd(DW, base, off, src))
        elif imm is not None:
            a.add(ldx(DW, R3, base, off), alu64("add", R3, None, imm), stx(DW, base, off, R3))
        else:
            a.add(ldx(DW, R3, base, off), alu64("add", R3, src), stx(DW, base, off, R3))

    # -- arithmetic and comparison -------------------------------------------
    def arith_operands(self, b: ir.Reg, c: ir.Reg) -> None:
        self.number(b, R2, "attempt to perform arithmetic on a %s value")
        self.asm.add(stx(DW, R10, TEMP, R2))
        self.number(c, R3, "attempt to perform arithmetic on a %s value")
        self.asm.add(ldx(DW, R2, R10, TEMP))

    def op_ADD(self, item, r, b, c) -> None:
        self.arith_operands(b, c)
        self.asm.add(alu64(ARITH[item.op], R2, R3))
        self.set_num(r, R2)

    op_SUB = op_MUL = op_ADD

    def op_DIV(self, item, r, b, c) -> None:
        """Signed division from unsigned: eBPF before cpu v4 has no sdiv."""
        a = self.asm
        self.arith_operands(b, c)
        nonzero, pos_a, pos_b, positive = Label(), Label(), Label(), Label()
        a.jump("jne", R3, nonzero, imm=0)
        self.runtime_error("division by zero" if item.op == "DIV" else "modulo by zero")
        a.place(nonzero)
        a.add(movi(4, 0))
        a.jump("jsge", R2, pos_a, imm=0)
        a.add(alu64("neg", R2), alu64("xor", 4, None, 1))
        a.place(pos_a)
        a.jump("jsge", R3, pos_b, imm=0)
        a.add(alu64("neg", R3))
        if item.op == "DIV":
            a.add(alu64("xor", 4, None, 1))
        a.place(pos_b)
        a.add(alu64("div" if item.op == "DIV" else "mod", R2, R3))
        a.jump("jeq", 4, positive, imm=0)
        a.add(alu64("neg", R2))
        a.place(positive)
        self.set_num(r, R2)

    op_MOD = op_DIV

    def op_UNM(self, item, r, b) -> None:
        self.number(b, R2, "attempt to negate a %s value")
        self.asm.add(alu64("neg", R2))
        self.set_num(r, R2)

    def op_NOT(self, item, r, b) -> None:
        a, falsy, end = self.asm, Label(), Label()
        self.load_tag(R1, b)
        a.jump("jle", R1, falsy, imm=TAG["false"])
        self.set_tag(r, "false")
        a.goto(end)
        a.place(falsy)
        self.set_tag(r, "true")
        a.place(end)

    def op_EQ(self, item, r, b, c) -> None:
        a, yes, no, end = self.asm, Label(), Label(), Label()
        tb, tc = self.ty(b), self.ty(c)
        self.load_tag(R1, b)
        self.load_tag(R2, c)
        a.jump("jne", R1, no, R2)
        if (tb.may(NUM) and tc.may(NUM)) or (tb.may(STR) and tc.may(STR)):
            a.jump("jle", R1, yes, imm=TAG["true"])       # nil, false, true: equal tags
        if tb.may(NUM) and tc.may(NUM):
            after = Label()
            a.jump("jne", R1, after, imm=TAG[NUM])
            self.load_val(R1, b)
            self.load_val(R2, c)
            a.jump("jeq", R1, yes, R2)
            a.goto(no)
            a.place(after)
        if tb.may(STR) and tc.may(STR):
            self.string_equal(b, c, yes, no)
        a.goto(yes)
        truth = ("true", "false") if item.op == "EQ" else ("false", "true")
        a.place(yes)
        self.set_tag(r, truth[0])
        a.goto(end)
        a.place(no)
        self.set_tag(r, truth[1])
        a.place(end)

    op_NE = op_EQ

    def string_equal(self, b: ir.Reg, c: ir.Reg, yes: Label, no: Label) -> None:
        """Both buffers are NUL-padded: equal words up to the shorter buffer's
        size, and a NUL in the longer one just past it."""
        a = self.asm
        sb, sc = self.inf.reg_strsize[b.n], self.inf.reg_strsize[c.n]
        for k in range(0, min(sb, sc), 8):
            a.add(ldx(DW, R1, R10, self.buffer(b) + k), ldx(DW, R2, R10, self.buffer(c) + k))
            a.jump("jne", R1, no, R2)
        if sb != sc:
            longer = b if sb > sc else c
            a.add(ldx(B, R1, R10, self.buffer(longer) + min(sb, sc)))
            a.jump("jne", R1, no, imm=0)
        a.goto(yes)

    def op_LT(self, item, r, b, c) -> None:
        a, yes, end = self.asm, Label(), Label()
        for x in (b, c):
            if not self.ty(x).kinds <= {NUM, NIL}:
                raise unsupported(self.src, item.loc, "comparing values other than numbers "
                                  "with < or <=")
        self.compare_kinds(b, c)
        self.load_val(R1, b)
        self.load_val(R2, c)
        a.jump("jslt" if item.op == "LT" else "jsle", R1, yes, R2)
        self.set_tag(r, "false")
        a.goto(end)
        a.place(yes)
        self.set_tag(r, "true")
        a.place(end)

    def compare_kinds(self, b: ir.Reg, c: ir.Reg) -> None:
        """ktapvm's runtime error when an operand of < or <= is nil, naming both kinds."""
        a = self.asm
        if not (self.ty(b).may(NIL) or self.ty(c).may(NIL)):
            return
        ok, b_nil, c_number = Label(), Label(), Label()
        self.load_tag(R1, b)
        self.load_tag(R2, c)
        a.jump("jne", R1, b_nil, imm=TAG[NUM])
        a.jump("jeq", R2, ok, imm=TAG[NUM])
        self.runtime_error("attempt to compare a number with a nil")
        a.place(b_nil)
        a.jump("jeq", R2, c_number, imm=TAG[NUM])
        self.runtime_error("attempt to compare a nil with a nil")
        a.place(c_number)
        self.runtime_error("attempt to compare a nil with a number")
        a.place(ok)

    op_LE = op_LT

    # -- control flow ---------------------------------------------------------
    def op_JMP(self, item, _, label) -> None:
        self.asm.goto(self.label(label))

    def op_JMPF(self, item, r, label) -> None:
        self.load_tag(R1, r)
        op = "jle" if item.op == "JMPF" else NEGATED["jle"]
        self.asm.jump(op, R1, self.label(label), imm=TAG["false"])

    op_JMPT = op_JMPF

    def op_RET(self, item, *args) -> None:
        self.asm.goto(self.done)

    def op_unsupported(self, item, *args) -> None:
        raise unsupported(self.src, item.loc, Inference.describe_op(item.op))


def kind_name(ty: T) -> str:
    kinds = sorted(k for k in ty.kinds if k != "table?")
    return kinds[0] if len(kinds) == 1 else "table" if not kinds else " or ".join(kinds)
