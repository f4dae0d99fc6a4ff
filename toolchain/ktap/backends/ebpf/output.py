"""Output records from eBPF programs: PRINTF, PRINT and STATUS, byte for byte
the layout ktapvm's record writer uses (docs/kmod.md), built in the scratch
map and sent through the perf event array. The record's static part is
tracked at compile time (`coff`); strings add a length only known at run
time, kept in r9 with bounds the kernel's verifier can follow."""
from __future__ import annotations

from ktap.backends.ebpf import image as im
from ktap.backends.ebpf.asm import Label
from ktap.backends.ebpf.frame import KEY0, SPARE, TAG
from ktap.backends.ebpf.insn import (B, BPF_F_CURRENT_CPU, DW, R0, R1, R2, R3, R4, R5, R6, R7,
                                     R8, R9, R10, alu64, ldx, mov, movi, st, stx)
from ktap.backends.ebpf.types import NIL, NUM, STR, TABLE_BUILTINS, unsupported
from ktap.backends.kbc.records import CALL_CLEAR, REC, STATE
from ktap.frontend.builtins import BUILTIN_BY_NAME
from ktap.ir import nodes as ir


class Records:
    """Mixin of Lowering: records and the built-in functions that write them."""

    # -- building a record ----------------------------------------------------
    def rec_begin(self, kind: int) -> None:
        a = self.asm
        a.lookup(self.maps["scratch"], KEY0, self.done)
        a.add(mov(R8, R0), mov(R7, R0), movi(R9, 0))
        self.coff, self.dyn_max = 4, 0
        self.rec_u8(kind)

    def rec_u8(self, v: int) -> None:
        self.asm.add(st(B, R7, self.coff, v))
        self.coff += 1

    def rec_imm(self, v: int, size: int) -> None:
        self.asm.store_bytes_imm(R7, self.coff, v, size)
        self.coff += size

    def rec_reg(self, reg: int, size: int) -> None:
        self.asm.store_bytes_reg(R7, self.coff, reg, size, R3)
        self.coff += size

    def rec_text(self, text: str) -> None:
        data = text.encode("utf-8", "surrogateescape")
        self.rec_imm(len(data), 4)
        for byte in data:
            self.rec_u8(byte)

    def fold(self, extra: int) -> None:
        """r9 += coff + extra; the write pointer moves to the record's new end."""
        self.asm.add(alu64("add", R9, None, self.coff + extra), mov(R7, R8),
                     alu64("add", R7, R9))
        self.coff = 0

    def rec_end(self) -> None:
        a = self.asm
        a.add(mov(R1, R9), alu64("add", R1, None, self.coff))
        a.store_bytes_reg(R8, 0, R1, 4, R3)
        self.record_max = max(self.record_max, self.coff + self.dyn_max + 8)
        a.add(mov(R5, R1), mov(R1, R6))
        a.map_ref(R2, self.maps["output"])
        a.imm64(R3, BPF_F_CURRENT_CPU)
        a.add(mov(R4, R8))
        a.call("perf_event_output")
        ok = Label()
        a.jump("jsge", R0, ok, imm=0)
        self.count_drop(2)
        a.place(ok)

    def count_drop(self, reason: int) -> None:
        """drops[reason] += 1 in this CPU's share (clobbers r0-r5)."""
        self.asm.lookup(self.maps["drops"], KEY0, self.done)
        self.asm.add(ldx(DW, R1, R0, 8 * reason), alu64("add", R1, None, 1),
                     stx(DW, R0, 8 * reason, R1))

    # -- values ---------------------------------------------------------------
    def rec_value(self, r: ir.Reg) -> None:
        """One value: a tag byte, then a number's 8 bytes or a string's length and bytes."""
        ty = self.ty(r)
        a = self.asm
        if ty.kinds - {NIL, "boolean", NUM, STR}:
            raise unsupported(self.src, a.loc, "printing a table or an aggregate")
        self.load_tag(R1, r)
        a.add(stx(B, R7, self.coff, R1))
        if ty.kinds <= {NIL, "boolean"}:
            self.coff += 1
            return
        if ty.only(NUM):
            self.coff += 1
            self.load_val(R2, r)
            self.rec_reg(R2, 8)
            return
        end = Label()
        self.coff += 1
        if ty.may(NUM):
            other = Label()
            a.jump("jne", R1, other, imm=TAG[NUM])
            self.load_val(R2, r)
            self.asm.store_bytes_reg(R7, self.coff, R2, 8, R3)
            a.add(alu64("add", R9, None, 8))
            a.goto(end)
            a.place(other)
        if ty.may(STR):
            a.jump("jne", R1, end, imm=TAG[STR])
            self.rec_string(r)
        a.place(end)
        self.fold(0)
        self.dyn_max += 4 + max(8, self.inf.reg_strsize[r.n])

    def rec_string(self, r: ir.Reg) -> None:
        """u32 length and the bytes of r's buffer; adds 4 + length to r9."""
        a = self.asm
        size = self.inf.reg_strsize[r.n]
        a.add(mov(R1, R7), alu64("add", R1, None, self.coff + 4), movi(R2, size),
              mov(R3, R10), alu64("add", R3, None, self.buffer(r)))
        a.call("probe_read_kernel_str")
        low, high = Label(), Label()
        a.jump("jsge", R0, low, imm=1)
        a.add(movi(R0, 1))
        a.place(low)
        a.jump("jsle", R0, high, imm=size)
        a.add(movi(R0, size))
        a.place(high)
        a.add(alu64("sub", R0, None, 1))
        a.store_bytes_reg(R7, self.coff, R0, 4, R3)
        a.add(alu64("add", R9, R0), alu64("add", R9, None, 4))

    def rec_values(self, base: int, n: int) -> None:
        self.rec_imm(n, 4)
        for i in range(n):
            self.rec_value(ir.Reg(base + i))

    # -- the built-ins that write records ----------------------------------------
    def op_PRINTF(self, item, base, fmt, n) -> None:
        self.rec_begin(REC["printf"])
        self.rec_imm(self.formats.index(fmt.text), 4)
        self.rec_values(base.n, n.value)
        self.rec_end()

    def op_CALLB(self, item, base, builtin, n) -> None:
        name = builtin.name
        if name in TABLE_BUILTINS or (name == "print" and n.value == 1 and
                                      self.ty(base).table is not None):
            self.call_record(BUILTIN_BY_NAME[name].id, base, n.value - 1)
            self.set_tag(base, NIL)
        elif name == "print":
            self.rec_begin(REC["print"])
            self.rec_values(base.n, n.value)
            self.rec_end()
            self.set_tag(base, NIL)
        elif name == "exit":
            self.exit_session(base if n.value else None)
        elif name in ("kernel_string", "user_string"):
            self.read_string(base, name)
        else:
            raise unsupported(self.src, item.loc, f"{name}()")

    def call_record(self, builtin: int, table: ir.Reg, nargs: int) -> None:
        """Asks ktaprun to run a built-in on the table's map (docs/ebpf.md)."""
        self.rec_begin(REC["call"])
        self.rec_u8(builtin)
        self.rec_imm(self.globals.index(self.ty(table).table), 4)
        self.rec_values(table.n + 1, nargs)
        self.rec_end()

    def op_CLEAR(self, item, table) -> None:
        self.call_record(CALL_CLEAR, table, 0)

    def exit_session(self, code: ir.Reg | None) -> None:
        if code is not None:
            self.number(code, R2, "exit() needs a number, got a %s")
            self.asm.add(stx(DW, R10, SPARE, R2))
        self.rec_begin(REC["status"])
        if code is None:
            self.rec_imm(0, 8)
        else:
            self.asm.add(ldx(DW, R2, R10, SPARE))
            self.rec_reg(R2, 8)
        self.rec_u8(STATE["exit"])
        for _ in range(4):
            self.rec_imm(0, 4)          # line, col, function, message length
        self.rec_imm(0, 4)              # drops: ktaprun reports them
        self.rec_end()
        self.stop(STATE["exit"])

    def runtime_error(self, message: str) -> None:
        """Stops the session with ktapvm's runtime error at this script position."""
        line, col = self.asm.loc.line, self.asm.loc.col
        self.rec_begin(REC["status"])
        self.rec_imm(0, 8)
        self.rec_u8(STATE["error"])
        self.rec_imm(line, 4)
        self.rec_imm(col, 4)
        self.rec_imm(self.fn_index, 4)
        self.rec_text(message)
        self.rec_imm(0, 4)
        self.rec_end()
        self.stop(STATE["error"])

    def stop(self, state: int) -> None:
        self.stops = True
        self.state_ptr(R1)
        self.asm.add(st(DW, R1, im.STATE_STOPPED, state))
        self.asm.goto(self.done)

    def read_string(self, r: ir.Reg, name: str) -> None:
        """kernel_string/user_string: the string at an address, or nil."""
        a = self.asm
        size = self.inf.reg_strsize[r.n]
        self.number(r, R3, f"{name}() needs a number (an address), got a %s")
        a.zero(R10, self.buffer(r), size)
        a.add(mov(R1, R10), alu64("add", R1, None, self.buffer(r)), movi(R2, size))
        a.call("probe_read_kernel_str" if name == "kernel_string" else "probe_read_user_str")
        bad, end = Label(), Label()
        a.jump("jslt", R0, bad, imm=0)
        self.set_tag(r, STR)
        a.goto(end)
        a.place(bad)
        self.set_tag(r, NIL)
        a.place(end)
