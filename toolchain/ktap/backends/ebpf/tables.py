"""Tables as BPF maps, and the event's data (built-in variables, arguments,
tracepoint fields), for the eBPF lowering. Each map value starts with the
entry's insertion stamp, so ktaprun can rebuild the insertion order that
ktapvm's tables keep (docs/ebpf.md)."""
from __future__ import annotations

from ktap.backends.ebpf import image as im
from ktap.backends.ebpf.asm import Label
from ktap.backends.ebpf.frame import KEY0, SPARE, TEMP, agg_layout, linear_buckets
from ktap.backends.ebpf.insn import (BPF_NOEXIST, DW, MAP_TYPES, R0, R1, R2, R3, R4, R5, R6, R7,
                                     R10, W, alu64, ld_imm64, ldx, mov, mov32, movi, st, stx,
                                     xadd)
from ktap.backends.ebpf.types import NIL, STR, unsupported
from ktap.events.kinds import (EV_KPROBE, EV_KRETPROBE, EV_TRACEPOINT, EV_UPROBE, EV_URETPROBE,
                               EV_USDT)
from ktap.frontend.program import TABLE_LINEAR, TABLE_LOG2
from ktap.ir import nodes as ir

EEXIST = 17
DROP_TABLE_FULL = 0


class TableOps:
    """Mixin of Lowering."""

    def table_map(self, r: ir.Reg) -> tuple[int, im.Map]:
        name = self.ty(r).table
        index = self.maps["table:" + name]
        return index, self.maps.maps[index]

    def key(self, m: im.Map, key) -> int:
        """Writes the key (a register or a constant) where the map helpers read
        it; returns its frame offset."""
        a, off = self.asm, self.frame.key
        if isinstance(key, ir.Const):
            if isinstance(key.value, str):
                self.const_string(off, m.key_size, key.value)
            else:
                a.imm64(R1, key.value)
                a.add(stx(DW, R10, off, R1))
            return off
        if self.ty(key).may(NIL):
            ok = Label()
            self.load_tag(R1, key)
            a.jump("jne", R1, ok, imm=0)
            self.runtime_error("invalid table key (nil)")
            a.place(ok)
        if m.key_kind == im.KEY_NUM:
            self.load_val(R1, key)
            a.add(stx(DW, R10, off, R1))
            return off
        size = self.inf.reg_strsize[key.n]
        if size == m.key_size:
            return self.buffer(key)
        a.zero(R10, off, m.key_size)
        a.copy(R10, off, R10, self.buffer(key), min(size, m.key_size), R1)
        return off

    def next_seq(self, dst: int) -> None:
        """dst := a new insertion stamp: the state map's counter, incremented
        atomically. Where the JIT has no atomic add, a plain increment: two CPUs
        inserting at once may then share a stamp, and their order is a race anyway."""
        a = self.asm
        self.state_ptr(R1)
        if "atomic64" in self.target.bpf_jit_lacks:
            a.add(ldx(DW, dst, R1, im.STATE_SEQ), alu64("add", dst, None, 1),
                  stx(DW, R1, im.STATE_SEQ, dst))
        else:
            a.add(movi(R2, 1), xadd(DW, R1, im.STATE_SEQ, R2), ldx(DW, dst, R1, im.STATE_SEQ))

    def insert(self, index: int, key_off: int, value_off: int, done: Label) -> None:
        """map[key] := the value at value_off (a new entry). A full table drops
        the event, as ktapvm does; another CPU inserting the key first jumps
        back to `done`'s caller through a second lookup."""
        a = self.asm
        a.map_ref(R1, index)
        a.add(mov(R2, R10), alu64("add", R2, None, key_off), mov(R3, R10),
              alu64("add", R3, None, value_off), movi(R4, BPF_NOEXIST))
        a.call("map_update_elem")
        a.jump("jeq", R0, done, imm=0)

    def drop_event(self, reason: int) -> None:
        self.count_drop(reason)
        self.asm.goto(self.done)

    # -- reads ------------------------------------------------------------------
    def op_GETTABLE(self, item, r, t, k) -> None:
        a = self.asm
        index, m = self.table_map(t)
        key = self.key(m, k)
        missing, end = Label(), Label()
        a.lookup(index, key, missing)
        if m.value_kind == im.VAL_NUM:
            a.add(ldx(DW, R1, R0, 8))
            self.set_num(r, R1)
        elif m.value_kind == im.VAL_STR:
            size = min(self.inf.reg_strsize[r.n], m.value_size - 8)
            a.zero(R10, self.buffer(r), self.inf.reg_strsize[r.n])
            a.copy(R10, self.buffer(r), R0, 8, size, R1)
            self.set_tag(r, STR)
        else:
            raise unsupported(self.src, item.loc, "reading an aggregate")
        a.goto(end)
        a.place(missing)
        self.set_tag(r, NIL)
        a.place(end)

    op_GETTABLEK = op_GETTABLE

    # -- writes -------------------------------------------------------------------
    def op_TADD(self, item, t, k, delta) -> None:
        a = self.asm
        index, m = self.table_map(t)
        key = self.key(m, k)
        # a literal delta (the common `t[k] += 1`) is an immediate, not a spill
        imm = delta.value if isinstance(delta, ir.Imm) and \
            -(1 << 31) <= delta.value < (1 << 31) else None
        if imm is None:
            if isinstance(delta, ir.Imm):
                a.imm64(R1, delta.value)
            else:
                self.number(delta, R1, "attempt to add a %s to a number table entry")
            a.add(stx(DW, R10, SPARE, R1))
        missing, again, end = Label(), Label(), Label()
        a.lookup(index, key, missing)
        a.place(again)
        if imm is None:
            a.add(ldx(DW, R1, R10, SPARE))
        self.add_to(R0, 8, R1, atomic=m.type != MAP_TYPES["percpu_hash"], imm=imm)
        a.goto(end)
        a.place(missing)
        self.next_seq(R3)
        a.add(stx(DW, R10, self.frame.value, R3))
        if imm is not None:
            a.add(st(DW, R10, self.frame.value + 8, imm))
        else:
            a.add(ldx(DW, R1, R10, SPARE), stx(DW, R10, self.frame.value + 8, R1))
        self.insert(index, key, self.frame.value, end)
        a.lookup(index, key, self.drop_label())
        a.goto(again)
        a.place(end)

    op_TADDI = op_TADD

    def drop_label(self) -> Label:
        """A label that counts a table-full drop and ends the handler."""
        label, skip = Label(), Label()
        self.asm.goto(skip)
        self.asm.place(label)
        self.drop_event(DROP_TABLE_FULL)
        self.asm.place(skip)
        return label

    def op_SETTABLE(self, item, t, k, v) -> None:
        a = self.asm
        index, m = self.table_map(t)
        ty = self.ty(v)
        key = self.key(m, k)
        delete, end = Label(), Label()
        if ty.may(NIL):
            self.load_tag(R1, v)
            a.jump("jeq", R1, delete, imm=0)
        if ty.kinds != {NIL}:
            self.store_entry(index, m, key, v, end)
        a.goto(end)
        a.place(delete)
        a.map_ref(R1, index)
        a.add(mov(R2, R10), alu64("add", R2, None, key))
        a.call("map_delete_elem")
        a.place(end)

    op_SETTABLEK = op_SETTABLE

    def op_DELETE(self, item, t, k) -> None:
        index, m = self.table_map(t)
        key = self.key(m, k)
        self.asm.map_ref(R1, index)
        self.asm.add(mov(R2, R10), alu64("add", R2, None, key))
        self.asm.call("map_delete_elem")

    def store_entry(self, index: int, m: im.Map, key: int, v: ir.Reg, end: Label) -> None:
        a = self.asm
        missing, again = Label(), Label()
        a.lookup(index, key, missing)
        a.place(again)
        if m.value_kind == im.VAL_NUM:
            self.load_val(R1, v)
            a.add(stx(DW, R0, 8, R1))
        else:
            size = min(self.inf.reg_strsize[v.n], m.value_size - 8)
            a.copy(R0, 8, R10, self.buffer(v), size, R1)
            for off in range(8 + size, m.value_size, 8):
                a.add(st(DW, R0, off, 0))
        a.goto(end)
        a.place(missing)
        self.next_seq(R3)
        a.add(stx(DW, R10, self.frame.value, R3))
        if m.value_kind == im.VAL_NUM:
            self.load_val(R1, v)
            a.add(stx(DW, R10, self.frame.value + 8, R1))
        else:
            a.zero(R10, self.frame.value + 8, m.value_size - 8)
            a.copy(R10, self.frame.value + 8, R10, self.buffer(v),
                   min(self.inf.reg_strsize[v.n], m.value_size - 8), R1)
        self.insert(index, key, self.frame.value, end)
        a.lookup(index, key, self.drop_label())
        a.goto(again)

    # -- aggregates -------------------------------------------------------------
    def op_AGGR(self, item, t, k, v) -> None:
        a = self.asm
        index, m = self.table_map(t)
        desc = self.tables[self.facts.table_globals[self.ty(t).table]]
        key = self.key(m, k)
        self.number(v, R1, "'<<<' needs a number, got a %s")
        a.add(stx(DW, R10, SPARE, R1))
        have, missing = Label(), Label()
        a.lookup(index, key, missing)
        a.goto(have)
        a.place(missing)
        a.lookup(self.maps["zeroes"], KEY0, self.done)
        a.map_ref(R1, index)
        a.add(mov(R3, R0), mov(R2, R10), alu64("add", R2, None, key), movi(R4, BPF_NOEXIST))
        a.call("map_update_elem")
        a.lookup(index, key, self.drop_label())
        a.place(have)
        a.add(mov(R7, R0))
        self.feed(desc)

    def feed(self, desc) -> None:
        """values.Agg.feed on this CPU's value at r7; the value is in SPARE."""
        a = self.asm
        stamped, first, minmax_done = Label(), Label(), Label()
        a.add(ldx(DW, R1, R7, 0))
        a.jump("jne", R1, stamped, imm=0)
        self.next_seq(R3)
        a.add(stx(DW, R7, 0, R3))
        a.place(stamped)
        a.add(ldx(DW, R1, R10, SPARE), ldx(DW, R2, R7, 8))
        a.jump("jeq", R2, first, imm=0)
        lower, upper = Label(), Label()
        a.add(ldx(DW, R3, R7, 24))
        a.jump("jsge", R1, lower, R3)
        a.add(stx(DW, R7, 24, R1))
        a.place(lower)
        a.add(ldx(DW, R3, R7, 32))
        a.jump("jsle", R1, upper, R3)
        a.add(stx(DW, R7, 32, R1))
        a.place(upper)
        a.goto(minmax_done)
        a.place(first)
        a.add(stx(DW, R7, 24, R1), stx(DW, R7, 32, R1))
        a.place(minmax_done)
        a.add(alu64("add", R2, None, 1), stx(DW, R7, 8, R2),
              ldx(DW, R2, R7, 16), alu64("add", R2, R1), stx(DW, R7, 16, R2))
        log2, lin, _ = agg_layout(desc)
        if desc.flags & TABLE_LOG2:
            self.log2_index()
            self.bump(log2)
        if desc.flags & TABLE_LINEAR:
            self.linear_index(desc)
            self.bump(lin)

    def bump(self, base: int) -> None:
        """The bucket r4 (an index the verifier can bound) of the row at r7+base += 1."""
        a = self.asm
        a.add(alu64("lsh", R4, None, 3), mov(R5, R7), alu64("add", R5, R4),
              ldx(DW, R1, R5, base), alu64("add", R1, None, 1), stx(DW, R5, base, R1))

    def log2_index(self) -> None:
        """r4 := ktap_table.h's log2_index(value): 64 for 0, 65+k for 2^k.., 63-k for -2^k.."""
        a = self.asm
        zero, positive, have_mag, end = Label(), Label(), Label(), Label()
        a.add(ldx(DW, R1, R10, SPARE), movi(R4, 64))
        a.jump("jeq", R1, end, imm=0)
        a.add(movi(R2, 65))
        a.jump("jsgt", R1, positive, imm=0)
        a.add(alu64("neg", R1), movi(R2, 63))
        a.place(positive)
        a.add(movi(R3, 0))
        for shift in (32, 16, 8, 4, 2, 1):
            skip = Label()
            a.add(mov(R5, R1), alu64("rsh", R5, None, shift))
            a.jump("jeq", R5, skip, imm=0)
            a.add(mov(R1, R5), alu64("add", R3, None, shift))
            a.place(skip)
        a.add(mov(R4, R2))
        a.jump("jeq", R2, have_mag, imm=63)
        a.add(alu64("add", R4, R3))
        a.goto(zero)
        a.place(have_mag)
        a.add(alu64("sub", R4, R3))
        a.place(zero)
        a.place(end)
        a.add(alu64("and", R4, None, 127))

    def linear_index(self, desc) -> None:
        """r4 := the linear bucket: 0 below lmin, the last at or above lmax."""
        a = self.asm
        n = linear_buckets(desc)
        below, above, end = Label(), Label(), Label()
        a.add(ldx(DW, R1, R10, SPARE))
        a.imm64(R2, desc.lmin)
        a.jump("jslt", R1, below, R2)
        a.imm64(R3, desc.lmax)
        a.jump("jsge", R1, above, R3)
        a.add(alu64("sub", R1, R2))
        a.imm64(R3, desc.lstep)
        a.add(alu64("div", R1, R3), mov(R4, R1), alu64("add", R4, None, 1))
        a.jump("jle", R4, end, imm=n - 1)
        a.place(above)
        a.add(movi(R4, n - 1))
        a.goto(end)
        a.place(below)
        a.add(movi(R4, 0))
        a.place(end)

    # -- the event's data ----------------------------------------------------------
    def op_LOADVAR(self, item, r, var) -> None:
        a, name = self.asm, var.name
        if name in ("pid", "tid"):
            a.call("get_current_pid_tgid")
            a.add(alu64("rsh", R0, None, 32) if name == "pid" else mov32(R0, R0))
        elif name == "uid":
            a.call("get_current_uid_gid")
            a.add(mov32(R0, R0))
        elif name == "cpu":
            a.call("get_smp_processor_id")
        elif name == "nsecs":
            a.call("ktime_get_ns")
        elif name == "walltime":
            # the boot clock (it counts suspend, so its distance to the wall
            # clock stays put) plus that distance, measured by ktaprun at load
            a.call("ktime_get_boot_ns")
            at = a.add(*ld_imm64(R1, 0))
            a.relocs.append(im.Reloc(at, im.RELOC_WALL_OFFSET, 0))
            a.add(alu64("add", R0, R1))
        elif name == "execname":
            # zeroed first: since 6.x the helper copies with strscpy, which leaves
            # the bytes after the NUL as they were, and keys compare all 16
            self.asm.zero(R10, self.buffer(r), self.inf.reg_strsize[r.n])
            a.add(mov(R1, R10), alu64("add", R1, None, self.buffer(r)), movi(R2, 16))
            a.call("get_current_comm")
            self.set_tag(r, STR)
            return
        elif name == "probename":
            self.probename(r)
            return
        elif name == "retval":
            if self.kind not in (EV_KRETPROBE, EV_URETPROBE):
                self.set_tag(r, NIL)
                return
            self.ctx_word(R0, self.target.abi.pt_regs_retval, signed=True)
        self.set_num(r, R0)

    def probename(self, r: ir.Reg) -> None:
        a = self.asm
        at = a.add(movi(R1, 0))
        a.relocs.append(im.Reloc(at, im.RELOC_ATTACH_INDEX, 0))
        a.add(stx(W, R10, TEMP, R1))
        a.lookup(self.maps["probenames"], TEMP, self.done)
        size = self.inf.reg_strsize[r.n]
        a.zero(R10, self.buffer(r), size)
        a.copy(R10, self.buffer(r), R0, 0, min(size, 64), R1)
        self.set_tag(r, STR)

    def ctx_word(self, dst: int, off: int, signed: bool) -> None:
        """A machine word of struct pt_regs (the context), widened to 64 bits."""
        word = self.target.word_size
        self.asm.add(ldx(DW if word == 8 else W, dst, R6, off))
        if signed and word == 4:
            self.asm.add(alu64("lsh", dst, None, 32), alu64("arsh", dst, None, 32))

    def op_ARG(self, item, r, n) -> None:
        if self.kind == EV_TRACEPOINT:
            self.field_load(r, im.RELOC_FIELD_POS, n.value - 1)
            return
        if self.kind == EV_USDT:
            self.usdt_arg(item, r, n.value)
            return
        regs = self.target.abi.pt_regs_args
        if self.kind not in (EV_KPROBE, EV_KRETPROBE, EV_UPROBE) or n.value > len(regs):
            raise unsupported(self.src, item.loc, f"arg{n.value} here")
        # user arguments as ktapvm fetches them: signed words
        self.ctx_word(R0, regs[n.value - 1], signed=self.kind == EV_UPROBE)
        self.set_num(r, R0)

    def usdt_arg(self, item, r: ir.Reg, n: int) -> None:
        """A USDT operand in an argument register, from the user pt_regs,
        sign- or zero-extended from its size (the event's fetch argument,
        `%r4:s32`, says which register and size). Others need user memory
        reads, which this backend does not make yet."""
        fetch = self.fields[2:]
        if n > len(fetch):
            self.set_tag(r, NIL)
            return
        reg, _, kind = fetch[n - 1].partition(":")
        user_regs = self.target.user.args
        if reg not in user_regs:
            raise unsupported(self.src, item.loc, f"USDT arg{n} (operand {reg}: memory, a "
                              f"constant or a register other than the argument registers)")
        self.ctx_word(R0, self.target.abi.pt_regs_args[user_regs.index(reg)], signed=False)
        bits = int(kind[1:])
        if bits < 64:
            self.asm.add(alu64("lsh", R0, None, 64 - bits),
                         alu64("arsh" if kind[0] == "s" else "rsh", R0, None, 64 - bits))
        self.set_num(r, R0)

    def op_FIELD(self, item, r, name) -> None:
        self.field_load(r, im.RELOC_FIELD_NAMED, self.fields.index(name.name))

    def field_load(self, r: ir.Reg, kind: int, arg: int) -> None:
        """The three instructions ktaprun patches with the field's offset, size
        and signedness from the tracepoint's format file."""
        a = self.asm
        at = a.add(ldx(DW, R0, R6, 0), alu64("lsh", R0, None, 0), alu64("arsh", R0, None, 0))
        a.relocs.append(im.Reloc(at, kind, arg))
        self.set_num(r, R0)

