"""A handler's eBPF stack frame, and the session's maps.

Every IR register has a tag slot (the value kinds of docs/kmod.md's records:
0 nil, 1 false, 2 true, 3 number, 4 string) and an 8-byte value slot; a
register that may hold a string also has a NUL-padded buffer. Tags make
truthiness one comparison (falsy is tag <= 1) and let a register whose kind
is known only at run time (a table read: number or nil) be checked there."""
from __future__ import annotations

from dataclasses import dataclass, field

from ktap.backends.ebpf import image as im
from ktap.backends.ebpf.insn import MAP_TYPES, STACK_SIZE
from ktap.backends.ebpf.types import Facts, Inference, TableUse, round8
from ktap.backends.kbc.records import VAL
from ktap.core.diagnostics import Loc, SemanticError, Source
from ktap.frontend.program import TABLE_LINEAR, TABLE_LOG2, TableDesc

TAG = {"nil": VAL["nil"], "false": VAL["false"], "true": VAL["true"], "number": VAL["num"],
       "string": VAL["str"]}
KEY0, STATE_PTR, GLOBALS_PTR, TEMP, SPARE = -8, -16, -24, -32, -40
REGS_BASE = 40
LOG2_BUCKETS = 128
AGG_HEADER = 8 + 32          # seq, count, sum, min, max


class Frame:
    def __init__(self, inf: Inference, facts: Facts, src: Source, loc: Loc):
        self.nregs = max(inf.fn.nregs, 1)
        low = REGS_BASE + 16 * self.nregs
        self.buffers: dict[int, int] = {}
        for r, size in enumerate(inf.reg_strsize):
            if size:
                low += size
                self.buffers[r] = -low
        keysize = max([u.key_size for u in facts.tables.values()] + [8])
        low += round8(keysize)
        self.key = -low
        valsize = max([u.value_size for u in facts.tables.values()] + [8]) + 8
        low += round8(valsize)
        self.value = -low
        if low > STACK_SIZE:
            raise SemanticError(f"this handler needs {low} bytes of eBPF stack, more than "
                                f"{STACK_SIZE}: use fewer string values or a smaller "
                                "`limit string_size` (or --backend ktapvm)", src, loc)

    @staticmethod
    def tag(r: int) -> int:
        return -(REGS_BASE + 16 * r + 8)

    @staticmethod
    def val(r: int) -> int:
        return -(REGS_BASE + 16 * r + 16)


def linear_buckets(d: TableDesc) -> int:
    """values.Agg's linear bucket count: the buckets plus below and above."""
    span = (d.lmax - d.lmin) & 0xFFFFFFFFFFFFFFFF
    return span // d.lstep + (span % d.lstep != 0) + 2 if d.lstep else 2


def agg_layout(d: TableDesc) -> tuple[int, int, int]:
    """(offset of log2 buckets or 0, offset of linear buckets or 0, value size)."""
    size = AGG_HEADER
    log2 = lin = 0
    if d.flags & TABLE_LOG2:
        log2, size = size, size + 8 * LOG2_BUCKETS
    if d.flags & TABLE_LINEAR:
        lin, size = size, size + 8 * linear_buckets(d)
    return log2, lin, size


@dataclass
class Maps:
    """The session's maps, in image order, and where each role is."""
    maps: list[im.Map] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, m: im.Map) -> int:
        self.index[key] = len(self.maps)
        self.maps.append(m)
        return self.index[key]

    def __getitem__(self, key: str) -> int:
        return self.index[key]

    def get(self, key: str) -> im.Map:
        return self.maps[self.index[key]]


def session_maps(facts: Facts, globals_index: dict[str, int], tables: list[TableDesc],
                 limit_entries: int, uses_probenames: bool) -> Maps:
    m = Maps()
    m.add("state", im.Map("state", im.ROLE_STATE, MAP_TYPES["array"], 4, im.STATE_SIZE, 1))
    m.add("output", im.Map("output", im.ROLE_OUTPUT, MAP_TYPES["perf_event_array"], 4, 4, 0))
    m.add("scratch", im.Map("scratch", im.ROLE_SCRATCH, MAP_TYPES["percpu_array"], 4, 64, 1))
    m.add("drops", im.Map("drops", im.ROLE_DROPS, MAP_TYPES["percpu_array"], 4,
                          im.DROPS_SIZE, 1))
    shared = [g for g in sorted(facts.global_kinds) if not facts.is_counter(g)]
    counters = [g for g in sorted(facts.global_kinds) if facts.is_counter(g)]
    if shared:
        slots, size = global_slots(shared, facts, globals_index)
        m.add("globals", im.Map("globals", im.ROLE_GLOBALS, MAP_TYPES["array"], 4,
                                size, 1, slots=slots))
    if counters:
        slots, size = global_slots(counters, facts, globals_index)
        m.add("counters", im.Map("counters", im.ROLE_COUNTERS, MAP_TYPES["percpu_array"], 4,
                                 size, 1, slots=slots))
    if uses_probenames:
        m.add("probenames", im.Map("probenames", im.ROLE_PROBENAMES, MAP_TYPES["array"], 4,
                                   64, 0))
    zero_size = 0
    for name, use in sorted(facts.tables.items()):
        m.add("table:" + name, table_map(name, use, globals_index[name],
                                         tables[facts.table_globals[name]], limit_entries))
        if "aggregate" in use.value_kinds:
            zero_size = max(zero_size, m.get("table:" + name).value_size)
    if zero_size:
        m.add("zeroes", im.Map("zeroes", im.ROLE_SCRATCH, MAP_TYPES["array"], 4, zero_size, 1))
    return m


def global_slots(names: list[str], facts: Facts,
                 globals_index: dict[str, int]) -> tuple[list[im.Slot], int]:
    """One slot per global, end to end; returns them and the value's size."""
    slots, offset = [], 0
    for g in names:
        kind = slot_kind(facts.kinds_of(g))
        slots.append(im.Slot(globals_index[g], offset, kind))
        offset += 16 if kind == im.SLOT_TAGGED else 8
    return slots, offset


def slot_kind(kinds: frozenset) -> int:
    """A global that only ever holds numbers (or only booleans) needs no tag."""
    if kinds == {"number"}:
        return im.SLOT_NUM
    return im.SLOT_BOOL if kinds == {"boolean"} else im.SLOT_TAGGED


def table_map(name: str, use: TableUse, gindex: int, desc: TableDesc, entries: int) -> im.Map:
    key_kind = im.KEY_STR if "string" in use.key_kinds else im.KEY_NUM
    key_size = round8(use.key_size) if key_kind == im.KEY_STR else 8
    if "aggregate" in use.value_kinds:
        return im.Map(name, im.ROLE_TABLE, MAP_TYPES["percpu_hash"], key_size,
                      agg_layout(desc)[2], entries, gindex, key_kind, im.VAL_AGG)
    if "string" in use.value_kinds:
        return im.Map(name, im.ROLE_TABLE, MAP_TYPES["hash"], key_size,
                      8 + round8(use.value_size), entries, gindex, key_kind, im.VAL_STR)
    # handlers that only add to the entries (and print, zero or delete them
    # through ktaprun) add to this CPU's share, summed when read
    kind = "percpu_hash" if use.only_added else "hash"
    return im.Map(name, im.ROLE_TABLE, MAP_TYPES[kind], key_size, 16, entries, gindex,
                  key_kind, im.VAL_NUM)
