"""Script functions called from handlers, inlined for the eBPF backend.

eBPF programs here have no calls of their own, so each call site gets a copy
of the callee's body, its registers placed above the caller's and its labels
renamed; `return` becomes a move into the call's result register and a jump
past the copy. The KBC verifier already refuses recursion, so inlining ends;
MAX_INLINED_INSTRS bounds what a chain of calls may grow into."""
from __future__ import annotations

import dataclasses

from ktap.backends.ebpf.types import unsupported
from ktap.core.diagnostics import Source
from ktap.ir import nodes as ir

MAX_INLINED_INSTRS = 4000


def inline_calls(fn: ir.IRFunction, functions: dict[str, ir.IRFunction],
                 src: Source) -> ir.IRFunction:
    body, nregs = list(fn.body), fn.nregs
    labels = [max([i.label.id for f in functions.values() for i in f.body
                   if isinstance(i, ir.LabelDef)] + [0]) + 1]
    # A copy's registers are dead once it returns, so the copies of sibling
    # calls share one area; a call inside a copy goes above that copy's.
    tops: dict[int, int] = {}
    while True:
        at = next((k for k, i in enumerate(body)
                   if isinstance(i, ir.Instr) and i.op in ("CALL", "TAILCALL")), None)
        if at is None:
            return dataclasses.replace(fn, body=body, nregs=nregs)
        call = body[at]
        callee = functions[call.args[1].name]
        copy, used = _expand(call, callee, tops.get(id(call), fn.nregs), labels)
        for item in copy:
            if isinstance(item, ir.Instr) and item.op in ("CALL", "TAILCALL"):
                tops[id(item)] = used
        body[at:at + 1] = copy
        nregs = max(nregs, used)
        if len(body) > MAX_INLINED_INSTRS:
            raise unsupported(src, call.loc, "a handler this large once its function calls "
                              "are inlined")


def _expand(call: ir.Instr, callee: ir.IRFunction, base_reg: int,
            labels: list[int]) -> tuple[list, int]:
    """The call site as straight code: arguments into the callee's parameter
    registers (moved above the caller's), its body, the result in R[A]."""
    result, nargs = call.args[0], call.args[2].value
    shift = base_reg
    end = ir.Label(labels[0])
    labels[0] += 1
    renamed: dict[int, ir.Label] = {}
    for item in callee.body:
        if isinstance(item, ir.LabelDef):
            renamed[item.label.id] = ir.Label(labels[0])
            labels[0] += 1
    out: list = []
    for k in range(len(callee.params)):
        arg = ir.Instr("MOVE", (ir.Reg(shift + k), ir.Reg(result.n + k)), call.loc) \
            if k < nargs else ir.Instr("LOADNIL", (ir.Reg(shift + k),), call.loc)
        out.append(arg)
    for item in callee.body:
        if isinstance(item, ir.LabelDef):
            out.append(ir.LabelDef(renamed[item.label.id]))
            continue
        args = tuple(ir.Reg(a.n + shift) if isinstance(a, ir.Reg) else
                     renamed.get(a.id, a) if isinstance(a, ir.Label) else a
                     for a in item.args)
        if item.op == "RET":
            value = ir.Instr("MOVE", (result, args[0]), item.loc) if item.args[1].value \
                else ir.Instr("LOADNIL", (result,), item.loc)
            out += [value, ir.Instr("JMP", (None, end), item.loc)]
        elif item.op == "TAILCALL":
            out += [ir.Instr("CALL", args, item.loc),
                    ir.Instr("MOVE", (result, args[0]), item.loc),
                    ir.Instr("JMP", (None, end), item.loc)]
        else:
            out.append(ir.Instr(item.op, args, item.loc))
    out.append(ir.LabelDef(end))
    return out, shift + max(callee.nregs, len(callee.params), 1)
