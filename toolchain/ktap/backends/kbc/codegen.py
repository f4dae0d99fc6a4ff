"""The KBC backend: IR to an Image. Assigns constant, upvalue, format and
function indexes, resolves labels to jump offsets, and encodes instructions
through the opcode table."""
from __future__ import annotations

from ktap.backends.kbc import bytecode as bc
from ktap.ir import nodes as ir
from ktap.backends.kbc import opcodes
from ktap.backends.kbc.opcodes import BY_NAME
from ktap.core.targets import Target
from ktap.frontend import builtins


class ProtoBuilder:
    def __init__(self, fn: ir.IRFunction, image: bc.Image, func_index: dict[str, int],
                 globals_index: dict[str, int]):
        self.fn = fn
        self.image = image
        self.func_index = func_index
        self.globals_index = globals_index
        self.proto = bc.Proto(fn.name, fn.kind, len(fn.params), max(fn.nregs, 1))
        self._consts: dict[tuple, int] = {}
        self._upvals: dict[int, int] = {}

    def const(self, value: int | str) -> int:
        key = (type(value).__name__, value)
        if key not in self._consts:
            self._consts[key] = len(self.proto.consts)
            self.proto.consts.append(value)
        return self._consts[key]

    def upval(self, name: str) -> int:
        g = self.globals_index[name]
        if g not in self._upvals:
            self._upvals[g] = len(self.proto.upvals)
            self.proto.upvals.append(g)
        return self._upvals[g]

    def fmt(self, text: str) -> int:
        if text not in self.image.formats:
            self.image.formats.append(text)
        return self.image.formats.index(text)

    def field(self, name: str) -> int:
        return self.fn.fields.index(name)

    def operand(self, kind: str, value, labels: dict[int, int], next_pc: int) -> int:
        if value is None:
            return 0
        match kind:
            case "R":
                return value.n
            case "K":
                return self.const(value.value)
            case "U":
                return self.upval(value.name)
            case "T":
                return value.index
            case "F":
                return self.fmt(value.text)
            case "P":
                return self.func_index[value.name]
            case "B":
                return builtins.BUILTIN_BY_NAME[value.name].id
            case "V":
                return builtins.VARIABLE_BY_NAME[value.name].id
            case "D":
                return self.field(value.name)
            case "J":
                return labels[value.id] - next_pc
            case _:
                return value.value

    def build(self) -> bc.Proto:
        labels: dict[int, int] = {}
        pc = 0
        for item in self.fn.body:
            if isinstance(item, ir.LabelDef):
                labels[item.label.id] = pc
            else:
                pc += BY_NAME[item.op].words
        pc = 0
        for item in self.fn.body:
            if isinstance(item, ir.LabelDef):
                continue
            op = BY_NAME[item.op]
            kinds = (op.a, op.b, op.c)
            vals = [self.operand(k, v, labels, pc + op.words)
                    for k, v in zip(kinds, item.args)]
            words = opcodes.encode(op, *vals)
            self.proto.code += words
            self.proto.lines += [item.loc.line] * len(words)
            self.proto.cols += [item.loc.col] * len(words)
            pc += len(words)
        return self.proto


def generate(program: ir.IRProgram, target: Target) -> bc.Image:
    image = bc.Image(target, program.source_name, program.limits, list(program.globals),
                     list(program.tables))
    func_index = {fn.name: i for i, fn in enumerate(program.functions)}
    globals_index = {g: i for i, g in enumerate(program.globals)}
    for fn in program.functions:
        image.protos.append(ProtoBuilder(fn, image, func_index, globals_index).build())
    for ev in program.events:
        image.events.append(bc.Event(ev.kind, ev.spec, ev.name, ev.offset, ev.period_ns,
                                     func_index[ev.handler], list(ev.fields)))
    return image
