"""The eBPF section of a KBC image (docs/ebpf.md): maps, programs and their
relocations. bytecode.Writer/Reader call write_section/read_section after the
functions when the header's backend byte says ebpf; the field order here is
the order docs/ebpf.md lists and kmod/ktap_load.c reads."""
from __future__ import annotations

from dataclasses import dataclass, field

from ktap.backends.ebpf.insn import MAX_INSNS, Insn

BACKENDS = {"ktapvm": 0, "ebpf": 1}
BACKEND_NAMES = {v: k for k, v in BACKENDS.items()}

# Map roles. "counters" holds the globals handlers only add to, and "drops"
# the drop counts: both per CPU, so the programs update them with plain loads
# and stores (no atomics, which some 32-bit JITs lack) and ktaprun sums the CPUs.
(ROLE_TABLE, ROLE_GLOBALS, ROLE_OUTPUT, ROLE_SCRATCH, ROLE_STATE, ROLE_PROBENAMES,
 ROLE_COUNTERS, ROLE_DROPS) = range(8)
ROLE_NAMES = ("table", "globals", "output", "scratch", "state", "probenames", "counters",
              "drops")
# Key and value kinds of table maps; kinds of global slots
KEY_NUM, KEY_STR = 0, 1
VAL_NUM, VAL_STR, VAL_AGG = 0, 1, 2
# slot kinds: an i64; a boolean as 0/1; or 16 bytes, the value's tag (the
# record value codes: 0 nil, 1 false, 2 true, 3 number) then the i64
SLOT_NUM, SLOT_BOOL, SLOT_TAGGED = 0, 1, 2
# Relocation kinds
RELOC_MAP_FD, RELOC_FIELD_POS, RELOC_FIELD_NAMED, RELOC_ATTACH_INDEX, RELOC_WALL_OFFSET = range(5)
RELOC_NAMES = ("map fd", "field by position", "field by name", "attachment index",
               "wall clock offset")

MAX_NAME = 256         # bytes of a map name (kmod/ktap_vm.h KTAP_BPF_MAX_NAME)

# The state map's value: u64 stopped, u64 seq; the drops map's: u64 drops[4]
STATE_STOPPED, STATE_SEQ = 0, 8
STATE_SIZE = 16
DROPS_SIZE = 8 * 4


@dataclass
class Slot:
    global_index: int
    offset: int
    kind: int = SLOT_NUM


@dataclass
class Map:
    name: str
    role: int
    type: int
    key_size: int
    value_size: int
    max_entries: int
    global_index: int = 0
    key_kind: int = KEY_NUM
    value_kind: int = VAL_NUM
    slots: list[Slot] = field(default_factory=list)


@dataclass
class Reloc:
    insn: int
    kind: int
    arg: int


@dataclass
class Program:
    event: int
    prog_type: int
    insns: list[Insn] = field(default_factory=list)
    relocs: list[Reloc] = field(default_factory=list)
    lines: list[tuple[int, int]] = field(default_factory=list)   # (line, col) per insn


@dataclass
class Section:
    maps: list[Map] = field(default_factory=list)
    programs: list[Program] = field(default_factory=list)


def write_section(w, sec: Section) -> None:
    w.word(len(sec.maps))
    for m in sec.maps:
        w.string(m.name)
        w.u8(m.role)
        for v in (m.type, m.key_size, m.value_size, m.max_entries, m.global_index):
            w.u32(v)
        w.u8(m.key_kind)
        w.u8(m.value_kind)
        w.word(len(m.slots))
        for s in m.slots:
            w.u32(s.global_index)
            w.u32(s.offset)
            w.u8(s.kind)
    w.word(len(sec.programs))
    for p in sec.programs:
        w.u32(p.event)
        w.u32(p.prog_type)
        w.word(len(p.insns))
        for i in p.insns:
            w.raw(i.encode(w.t.byte_order))
        w.word(len(p.relocs))
        for r in p.relocs:
            w.u32(r.insn)
            w.u8(r.kind)
            w.u32(r.arg)
        w.word(len(p.lines))
        for line, col in p.lines:
            w.u32(line)
            w.u32(col)


def read_section(r) -> Section:
    sec = Section()
    for _ in range(r.count("map")):
        name, role = r.string(), r.u8()
        if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME:
            raise r.fail(f"map name of {len(name.encode('utf-8', 'surrogateescape'))} bytes "
                         f"(at most {MAX_NAME})")
        mtype, ksize, vsize, entries, glob = (r.u32() for _ in range(5))
        m = Map(name, role, mtype, ksize, vsize, entries, glob, r.u8(), r.u8())
        m.slots = [Slot(r.u32(), r.u32(), r.u8()) for _ in range(r.count("slot"))]
        sec.maps.append(m)
    for _ in range(r.count("program")):
        p = Program(r.u32(), r.u32())
        n = r.count("eBPF instruction")
        if n > MAX_INSNS:
            raise r.fail(f"{n} eBPF instructions in one program (at most {MAX_INSNS})")
        p.insns = [Insn.decode(r.raw(8), r.t.byte_order) for _ in range(n)]
        p.relocs = [Reloc(r.u32(), r.u8(), r.u32()) for _ in range(r.count("relocation"))]
        p.lines = [(r.u32(), r.u32()) for _ in range(r.count("line"))]
        sec.programs.append(p)
    return sec
