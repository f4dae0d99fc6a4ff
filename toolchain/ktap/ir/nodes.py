"""The intermediate representation: symbolic three-address code.

Operands name things (registers, constants by value, globals by name, labels,
functions by name); nothing here knows KBC's bit layout or index tables, so a
second backend (eBPF) can consume the same IR.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ktap.frontend.program import Limits, TableDesc
from ktap.core.diagnostics import Loc


@dataclass(frozen=True)
class Reg:
    n: int


@dataclass(frozen=True)
class Const:
    value: int | str


@dataclass(frozen=True)
class Global:
    name: str


@dataclass(frozen=True)
class Label:
    id: int


@dataclass(frozen=True)
class Func:
    name: str


@dataclass(frozen=True)
class Table:
    index: int


@dataclass(frozen=True)
class Fmt:
    text: str


@dataclass(frozen=True)
class Builtin:
    name: str


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class FieldName:
    name: str


@dataclass(frozen=True)
class Imm:
    value: int


Operand = Reg | Const | Global | Label | Func | Table | Fmt | Builtin | Var | FieldName | Imm


@dataclass
class Instr:
    op: str                    # an operation name (see opcodes.py for their meaning)
    args: tuple                # operands, in A, B, C order
    loc: Loc


@dataclass
class LabelDef:
    label: Label


@dataclass
class IRFunction:
    name: str
    kind: int                  # frontend.program.SETUP / FUNCTION / HANDLER
    params: list[str]
    body: list[Instr | LabelDef] = field(default_factory=list)
    nregs: int = 1
    fields: list[str] = field(default_factory=list)   # tracepoint fields (handlers)


@dataclass
class IREvent:
    kind: int
    spec: str
    name: str
    offset: int
    period_ns: int
    handler: str
    fields: list[str]


@dataclass
class IRProgram:
    source_name: str
    limits: Limits
    globals: list[str]
    tables: list[TableDesc]
    functions: list[IRFunction]      # functions[0] is the setup chunk
    events: list[IREvent]
