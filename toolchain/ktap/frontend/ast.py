"""The abstract syntax tree. Every node carries the location of its first token."""
from __future__ import annotations

from dataclasses import dataclass, field

from ktap.core.diagnostics import Loc


@dataclass
class Node:
    loc: Loc


# -- expressions --------------------------------------------------------
@dataclass
class Number(Node):
    value: int


@dataclass
class String(Node):
    value: str


@dataclass
class Nil(Node):
    pass


@dataclass
class Bool(Node):
    value: bool


@dataclass
class Name(Node):
    name: str


@dataclass
class Index(Node):
    obj: Node
    key: Node


@dataclass
class Field(Node):
    obj: Node
    name: str


@dataclass
class Call(Node):
    name: str
    args: list[Node]
    # str(): the memory its address is in, decided by sema from the probe
    # ("user" in user-space probes, else "kernel")
    memory: str = ""


@dataclass
class Binary(Node):
    op: str
    left: Node
    right: Node


@dataclass
class Unary(Node):
    op: str
    operand: Node


@dataclass
class TableCons(Node):
    items: list[tuple[Node | None, Node]]   # (None, v) for positional items


# -- statements ---------------------------------------------------------
@dataclass
class Block(Node):
    body: list[Node]


@dataclass
class VarDecl(Node):
    name: str
    init: Node | None


@dataclass
class Assign(Node):
    target: Node          # Name, Index or Field
    op: str               # "=", "+=", "-=", "<<<"
    value: Node


@dataclass
class ExprStmt(Node):
    expr: Node


@dataclass
class If(Node):
    branches: list[tuple[Node, Block]]
    orelse: Block | None


@dataclass
class While(Node):
    cond: Node
    body: Block


@dataclass
class NumFor(Node):
    var: str
    start: Node
    stop: Node
    step: Node | None
    body: Block


@dataclass
class PairsFor(Node):
    key: str
    value: str | None
    table: Node
    body: Block


@dataclass
class Break(Node):
    pass


@dataclass
class Return(Node):
    value: Node | None


@dataclass
class FunctionDef(Node):
    name: str
    params: list[str]
    body: Block


@dataclass
class Probe(Node):
    spec: str             # as written: "probe:vfs_write", "sched:sched_switch", "tick-1s"
    filter: Node | None
    body: Block
    spec_loc: Loc | None = None


@dataclass
class TraceEnd(Node):
    body: Block


@dataclass
class Limit(Node):
    name: str
    value: int


@dataclass
class Script(Node):
    body: list[Node] = field(default_factory=list)
