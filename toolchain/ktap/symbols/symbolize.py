"""Stack addresses to names, and folded stacks for flame graph tools.

The kernel only emits raw addresses (keeping it small), so names are put on
them here, on the host or in ktaprun, from the kernel's symbol table.
"""
from __future__ import annotations

import re

from typing import Iterable

from ktap.symbols.table import SymbolTable


class Symbolizer:
    """Runtime addresses to `symbol+0xoff`. KASLR moves the whole kernel by one
    slide, so one runtime address of a known symbol (reported by the module,
    e.g. printk) corrects every lookup."""

    def __init__(self, symbols: SymbolTable, anchor_name: str | None = None,
                 anchor_runtime: int | None = None):
        self.symbols = symbols
        self.slide = 0
        if anchor_name is not None and anchor_runtime is not None:
            self.slide = anchor_runtime - symbols.address_of(anchor_name)

    def symbolize(self, addr: int) -> str:
        sym = self.symbols.containing(addr - self.slide)
        if sym is None:
            return f"{addr:#x}"
        off = addr - self.slide - sym.addr
        return f"{sym.name}+{off:#x}"

    def __call__(self, addr: int) -> str:
        return self.symbolize(addr)


def folded(stacks: Iterable[tuple[tuple, int]], symbolizer: Symbolizer | None = None,
           leaf_first: bool = True) -> list[str]:
    """Folded stacks (`root;...;leaf count`), the input of flame graph tools.
    Kernel stack traces list the innermost frame first, hence leaf_first.
    Frames are names, or addresses when a symbolizer is given; offsets are
    dropped so one function is one flame."""
    totals: dict[str, int] = {}
    for stack, count in stacks:
        frames = [_frame_name(f, symbolizer) for f in stack]
        if leaf_first:
            frames.reverse()
        key = ";".join(frames)
        totals[key] = totals.get(key, 0) + count
    return [f"{k} {v}" for k, v in sorted(totals.items())]


def _frame_name(frame, symbolizer: Symbolizer | None) -> str:
    if isinstance(frame, int):
        text = symbolizer.symbolize(frame) if symbolizer else f"{frame:#x}"
    else:
        text = str(frame)
    # a frame nobody symbolized keeps its offset: the path alone would merge
    # every function of the file
    name = text if text[:1] == "/" else text.split("+", 1)[0]
    # `;` separates frames and a space ends the stack in the folded format.
    return name.replace(";", ":").replace(" ", "_")


# A stack frame as ktap prints it: a kernel symbol or address, a user frame as
# the board prints it (/bin/ktapw+0x2f70) or as the host symbolized it
# (ktapw_tick+0x0 [/bin/ktapw]).
_FRAME = re.compile(r"(?:[\w.$@]+\+0x[0-9a-f]+(?: \[[^\]]+\])?|0x[0-9a-f]+|/\S+\+0x[0-9a-f]+)")
_KERNEL_COUNT = re.compile(r"    (-?\d+)")                 # print(t) of stack() keys
_USER_COUNT = re.compile(r"(.*)\t(-?\d+)")                # ... of ustack() keys (strings)


def fold_output(text: str) -> list[str]:
    """Folded stacks from a session's text output: every entry of a printed
    table whose key is a stack (`stack()`: frame lines, then the count
    indented; `ustack()`: frame lines, the count after a tab on the last).
    Everything else in the output is skipped."""
    stacks: list[tuple[tuple, int]] = []
    frames: list[str] = []
    for line in text.splitlines():
        user = _USER_COUNT.fullmatch(line)
        kernel = _KERNEL_COUNT.fullmatch(line)
        if user and _FRAME.fullmatch(user.group(1)):
            stacks.append((tuple(frames + [user.group(1)]), int(user.group(2))))
            frames = []
        elif kernel and frames:
            stacks.append((tuple(frames), int(kernel.group(1))))
            frames = []
        elif _FRAME.fullmatch(line):
            frames.append(line)
        else:
            frames = []
    return folded(stacks)
