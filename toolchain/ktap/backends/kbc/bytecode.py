"""KBC images: the in-memory model, and dump/undump.

The writer and the reader mirror each other function by function. Byte order
and word size come only from the Target object: this module never chooses one.
Layout (docs/bytecode.md has the full picture):

    header   magic "\\x1bKBC", version, target id, byte order, word size,
             instruction size, number size, backend, 1 reserved byte  (single bytes)
             check_int  i64 = 0x1122334455667788
             check_word word = 0x4B544150 ("KTAP")
             body_size word, body_crc32 u32
    body     source name, limits, globals, table descriptors, formats,
             events, functions, and for the ebpf backend its section
             (backends/ebpf/image.py, docs/ebpf.md)
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from ktap.backends.ebpf import image as ebpf_image
from ktap.core.diagnostics import ImageError
from ktap.core.targets import Target, target_by_id
from ktap.frontend.program import Limits, TableDesc

MAGIC = b"\x1bKBC"
VERSION = 1
CHECK_INT = 0x1122334455667788
CHECK_WORD = 0x4B544150
BYTE_ORDERS = {"little": 0, "big": 1}
INSN_SIZE = 4
NUMBER_SIZE = 8


# Constant tags
K_NUMBER, K_STRING = 0, 1


@dataclass
class Event:
    kind: int
    spec: str                 # as written in the script
    name: str                 # symbol, subsys:event or timer name (may hold globs)
    offset: int = 0           # kprobe offset
    period_ns: int = 0        # tick/profile period
    handler: int = 0          # function index
    fields: list[str] = field(default_factory=list)   # tracepoint fields used by args.NAME


@dataclass
class Proto:
    name: str
    kind: int
    nparams: int
    frame_size: int
    code: list[int] = field(default_factory=list)
    consts: list[int | str] = field(default_factory=list)
    upvals: list[int] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)     # one per code word
    cols: list[int] = field(default_factory=list)


@dataclass
class Image:
    target: Target
    source_name: str = ""
    limits: Limits = field(default_factory=Limits)
    globals: list[str] = field(default_factory=list)
    tables: list[TableDesc] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    protos: list[Proto] = field(default_factory=list)
    ebpf: ebpf_image.Section | None = None     # the ebpf backend's maps and programs

    @property
    def backend(self) -> str:
        return "ktapvm" if self.ebpf is None else "ebpf"


# -- writer ---------------------------------------------------------------
class Writer:
    """Serialises an Image. `fields` records (offset, size) of every multi-byte
    field, so tests can check that byte order is the only difference."""

    def __init__(self, target: Target):
        self.t = target
        self.p = target.struct_prefix
        self.buf = bytearray()
        self.fields: list[tuple[int, int]] = []

    def raw(self, data: bytes) -> None:
        self.buf += data

    def u8(self, v: int) -> None:
        self.buf.append(v & 0xFF)

    def _multi(self, fmt: str, v: int) -> None:
        data = struct.pack(self.p + fmt, v)
        self.fields.append((len(self.buf), len(data)))
        self.buf += data

    def u16(self, v: int) -> None:
        self._multi("H", v)

    def u32(self, v: int) -> None:
        self._multi("I", v)

    def i64(self, v: int) -> None:
        self._multi("q", v)

    def word(self, v: int) -> None:
        self._multi(self.t.word_format, v)

    def string(self, s: str) -> None:
        data = s.encode("utf-8", "surrogateescape")
        self.word(len(data))
        self.raw(data)

    # mirrors Reader.header
    def header(self, body: bytes, body_fields: list[tuple[int, int]], backend: int = 0) -> None:
        self.raw(MAGIC)
        for b in (VERSION, self.t.id, BYTE_ORDERS[self.t.byte_order], self.t.word_size,
                  INSN_SIZE, NUMBER_SIZE, backend, 0):
            self.u8(b)
        self.i64(CHECK_INT)
        self.word(CHECK_WORD)
        self.word(len(body))
        self.u32(zlib.crc32(body))
        base = len(self.buf)
        self.fields += [(base + off, size) for off, size in body_fields]
        self.raw(body)

    def limits(self, lim: Limits) -> None:
        self.word(len(Limits.FIELDS))
        for name in Limits.FIELDS:
            self.i64(getattr(lim, name))

    def table_desc(self, d: TableDesc) -> None:
        self.u8(d.flags)
        self.i64(d.lmin)
        self.i64(d.lmax)
        self.i64(d.lstep)

    def event(self, e: Event) -> None:
        self.u8(e.kind)
        self.string(e.spec)
        self.string(e.name)
        self.word(e.offset)
        self.i64(e.period_ns)
        self.u32(e.handler)
        self.word(len(e.fields))
        for f in e.fields:
            self.string(f)

    def constant(self, k: int | str) -> None:
        if isinstance(k, str):
            self.u8(K_STRING)
            self.string(k)
        else:
            self.u8(K_NUMBER)
            self.i64(k)

    def proto(self, p: Proto) -> None:
        self.string(p.name)
        self.u8(p.kind)
        self.u8(p.nparams)
        self.u16(p.frame_size)
        self.word(len(p.code))
        for w in p.code:
            self.u32(w)
        self.word(len(p.consts))
        for k in p.consts:
            self.constant(k)
        self.word(len(p.upvals))
        for u in p.upvals:
            self.u32(u)
        if len(p.lines) != len(p.cols):
            raise ValueError(f"function {p.name!r}: {len(p.lines)} lines but {len(p.cols)} columns")
        self.word(len(p.lines))
        for line, col in zip(p.lines, p.cols):
            self.u32(line)
            self.u32(col)

    def body(self, img: Image) -> None:
        self.string(img.source_name)
        self.limits(img.limits)
        self.word(len(img.globals))
        for g in img.globals:
            self.string(g)
        self.word(len(img.tables))
        for d in img.tables:
            self.table_desc(d)
        self.word(len(img.formats))
        for f in img.formats:
            self.string(f)
        self.word(len(img.events))
        for e in img.events:
            self.event(e)
        self.word(len(img.protos))
        for p in img.protos:
            self.proto(p)
        if img.ebpf is not None:
            ebpf_image.write_section(self, img.ebpf)


def dump_with_fields(img: Image) -> tuple[bytes, list[tuple[int, int]]]:
    body = Writer(img.target)
    body.body(img)
    out = Writer(img.target)
    out.header(bytes(body.buf), body.fields, ebpf_image.BACKENDS[img.backend])
    return bytes(out.buf), out.fields


def dump(img: Image) -> bytes:
    return dump_with_fields(img)[0]


# -- reader ---------------------------------------------------------------
class Reader:
    # Counts read from an image are bounded before any list is built, so a
    # hostile image cannot make the reader allocate without limit.
    MAX_COUNT = 1 << 20

    def __init__(self, data: bytes, name: str = "<image>"):
        self.data = data
        self.pos = 0
        self.name = name
        self.t: Target | None = None
        self.p = "<"
        self.backend = 0

    def fail(self, msg: str) -> ImageError:
        return ImageError(f"bad image: {msg}", filename=self.name)

    def raw(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"truncated at byte {self.pos} (needed {n} more)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.raw(1)[0]

    def _multi(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        return struct.unpack(self.p + fmt, self.raw(size))[0]

    def u16(self) -> int:
        return self._multi("H")

    def u32(self) -> int:
        return self._multi("I")

    def i64(self) -> int:
        return self._multi("q")

    def word(self) -> int:
        return self._multi(self.t.word_format)

    def count(self, what: str) -> int:
        n = self.word()
        if n > self.MAX_COUNT or n > len(self.data) - self.pos:
            raise self.fail(f"{what} count {n} exceeds the image size")
        return n

    def string(self) -> str:
        n = self.count("string length")
        return self.raw(n).decode("utf-8", "surrogateescape")

    def header(self, expect: Target | None) -> None:
        if self.raw(4) != MAGIC:
            raise self.fail("not a KBC image (bad magic)")
        version, tid, order, wsize, isize, nsize, backend, _ = self.raw(8)
        if version != VERSION:
            raise self.fail(f"format version {version}, this loader reads version {VERSION}")
        if backend not in ebpf_image.BACKEND_NAMES:
            raise self.fail(f"unknown backend code {backend}")
        self.backend = backend
        if order not in BYTE_ORDERS.values():
            raise self.fail(f"unknown byte order code {order}")
        if wsize not in (4, 8) or isize != INSN_SIZE or nsize != NUMBER_SIZE:
            raise self.fail(f"unsupported sizes (word {wsize}, instruction {isize}, number {nsize})")
        img_order = "big" if order else "little"
        target = target_by_id(tid)
        tname = target.name if target else f"target id {tid}"
        if expect is not None:
            mine = f"{expect.byte_order}-endian {expect.word_size * 8}-bit ({expect.name})"
            theirs = f"{img_order}-endian {wsize * 8}-bit ({tname})"
            if img_order != expect.byte_order or wsize != expect.word_size:
                raise self.fail(f"image is {theirs}, this loader is {mine}")
            if tid != expect.id:
                raise self.fail(f"image is for {tname}, this loader is for {expect.name}")
        if target is None:
            raise self.fail(f"unknown target id {tid}")
        if target.byte_order != img_order or target.word_size != wsize:
            raise self.fail(f"header says {img_order}-endian {wsize * 8}-bit, but target "
                            f"{target.name} is {target.byte_order}-endian {target.word_size * 8}-bit")
        self.t = target
        self.p = target.struct_prefix
        if self.i64() != CHECK_INT:
            raise self.fail("check integer mismatch (byte order or number format corrupt)")
        if self.word() != CHECK_WORD:
            raise self.fail("check word mismatch (word size corrupt)")
        size = self.word()
        crc = self.u32()
        if size != len(self.data) - self.pos:
            raise self.fail(f"body is {len(self.data) - self.pos} bytes, header says {size}")
        if zlib.crc32(self.data[self.pos:]) != crc:
            raise self.fail("body checksum mismatch")

    def limits(self) -> Limits:
        n = self.count("limits")
        values = [self.i64() for _ in range(n)]
        if n != len(Limits.FIELDS):
            raise self.fail(f"{n} limits, expected {len(Limits.FIELDS)}")
        return Limits(**dict(zip(Limits.FIELDS, values)))

    def table_desc(self) -> TableDesc:
        return TableDesc(self.u8(), self.i64(), self.i64(), self.i64())

    def event(self) -> Event:
        kind = self.u8()
        spec = self.string()
        name = self.string()
        offset = self.word()
        period = self.i64()
        handler = self.u32()
        fields = [self.string() for _ in range(self.count("field"))]
        return Event(kind, spec, name, offset, period, handler, fields)

    def constant(self) -> int | str:
        tag = self.u8()
        if tag == K_STRING:
            return self.string()
        if tag == K_NUMBER:
            return self.i64()
        raise self.fail(f"unknown constant tag {tag}")

    def proto(self) -> Proto:
        name = self.string()
        kind, nparams, frame = self.u8(), self.u8(), self.u16()
        code = [self.u32() for _ in range(self.count("code word"))]
        consts = [self.constant() for _ in range(self.count("constant"))]
        upvals = [self.u32() for _ in range(self.count("upvalue"))]
        nlines = self.count("line")
        lines, cols = [], []
        for _ in range(nlines):
            lines.append(self.u32())
            cols.append(self.u32())
        return Proto(name, kind, nparams, frame, code, consts, upvals, lines, cols)

    def body(self) -> Image:
        img = Image(self.t)
        img.source_name = self.string()
        img.limits = self.limits()
        img.globals = [self.string() for _ in range(self.count("global"))]
        img.tables = [self.table_desc() for _ in range(self.count("table"))]
        img.formats = [self.string() for _ in range(self.count("format"))]
        img.events = [self.event() for _ in range(self.count("event"))]
        img.protos = [self.proto() for _ in range(self.count("function"))]
        if self.backend == ebpf_image.BACKENDS["ebpf"]:
            img.ebpf = ebpf_image.read_section(self)
        if self.pos != len(self.data):
            raise self.fail(f"{len(self.data) - self.pos} trailing bytes")
        return img


def load(data: bytes, expect: Target | None = None, name: str = "<image>") -> Image:
    """Reads an image of any byte order, or only `expect`'s when given."""
    r = Reader(data, name)
    r.header(expect)
    return r.body()
