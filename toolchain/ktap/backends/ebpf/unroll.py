"""Numeric for loops with constant bounds, unrolled for the eBPF backend.

A handler's loop becomes straight-line code, one copy of the body per
iteration, so the kernel's verifier sees no back edge and the program's cost
is known. Bounds must be number literals; more than MAX_ITERATIONS iterations
is a compile-time error."""
from __future__ import annotations

import dataclasses
import itertools

from ktap.backends.ebpf.types import unsupported
from ktap.core.diagnostics import Source
from ktap.ir import nodes as ir

MAX_ITERATIONS = 64
INT64 = range(-(1 << 63), 1 << 63)


def unroll_loops(fn: ir.IRFunction, src: Source) -> ir.IRFunction:
    body = list(fn.body)
    next_label = [max([i.label.id for i in body if isinstance(i, ir.LabelDef)] + [0]) + 1]
    while True:
        at = next((k for k, i in enumerate(body)
                   if isinstance(i, ir.Instr) and i.op == "FORPREP"), None)
        if at is None:
            return dataclasses.replace(fn, body=body)
        body = _unroll_one(body, at, next_label, src)


def _constant(body: list, end: int, reg: ir.Reg) -> int | None:
    """The literal the straight-line code before `end` last loaded into reg."""
    for k in range(end - 1, -1, -1):
        item = body[k]
        if isinstance(item, ir.LabelDef):
            return None
        if item.args and item.args[0] == reg:
            if item.op == "MOVE":            # an enclosing loop's variable, once unrolled
                return _constant(body, k, item.args[1])
            return item.args[1].value if item.op in ("LOADI", "LOADI64") else None
    return None


def _unroll_one(body: list, at: int, next_label: list[int], src: Source) -> list:
    prep = body[at]
    base, test = prep.args[0].n, prep.args[1]
    start, stop, step = (_constant(body, at, ir.Reg(base + k)) for k in range(3))
    if None in (start, stop, step) or step == 0:
        raise unsupported(src, prep.loc, "a for loop whose bounds are not number literals")
    loop_at = next(k for k in range(at + 1, len(body))
                   if isinstance(body[k], ir.Instr) and body[k].op == "FORLOOP"
                   and body[k].args[0].n == base)
    # [FORPREP][body label][...body...][test label][FORLOOP]
    inner = [i for i in body[at + 1:loop_at]
             if not (isinstance(i, ir.LabelDef) and i.label in (test, body[loop_at].args[1]))]
    values = list(itertools.islice(_iterations(start, stop, step), MAX_ITERATIONS + 1))
    if len(values) > MAX_ITERATIONS:
        raise unsupported(src, prep.loc, f"a for loop of more than {MAX_ITERATIONS} "
                          "iterations (the ebpf backend unrolls loops)")
    out = body[:at]
    for v in values:
        out.append(ir.Instr("LOADI64", (ir.Reg(base + 3), ir.Imm(v)), prep.loc))
        out += _copy(inner, next_label)
    return out + body[loop_at + 1:]


def _iterations(start: int, stop: int, step: int):
    """ktapvm's FORPREP/FORLOOP: 64-bit values, stopping at the bound or on wrap."""
    v = start
    while (v <= stop) if step > 0 else (v >= stop):
        yield v
        v += step
        if v not in INT64:
            return


def _copy(items: list, next_label: list[int]) -> list:
    """The body again, with the labels it defines renamed (jumps out keep theirs)."""
    renamed = {}
    for item in items:
        if isinstance(item, ir.LabelDef):
            renamed[item.label.id] = ir.Label(next_label[0])
            next_label[0] += 1
    out = []
    for item in items:
        if isinstance(item, ir.LabelDef):
            out.append(ir.LabelDef(renamed[item.label.id]))
        else:
            args = tuple(renamed.get(a.id, a) if isinstance(a, ir.Label) else a
                         for a in item.args)
            out.append(ir.Instr(item.op, args, item.loc))
    return out
