"""ustack() frames symbolized on the host. The board prints each user frame
as the file it lies in and the offset in that file (`/bin/ktapw+0x2f70`);
here that becomes `ktapw_tick+0x0 [/bin/ktapw]`, from the host copy of the
same file in the sysroot. Frames whose file the sysroot lacks, or whose
offset no function covers, stay as the board printed them."""
from __future__ import annotations

import re
from pathlib import Path

from ktap.core.targets import Target, get_target
from ktap.symbols.table import SymbolError
from ktap.symbols.userelf import open_user_elf, symbol_table

FRAME = re.compile(r"(?<![\w.])(/[\w.+@/-]*[\w.])\+0x([0-9a-f]+)\b")


class UserSymbolizer:
    def __init__(self, sysroot: str | Path, target: Target | str):
        self.sysroot = Path(sysroot)
        self.target = get_target(target)
        self._files: dict[str, tuple | None] = {}

    def _file(self, path: str):
        if path not in self._files:
            try:
                elf = open_user_elf(self.sysroot, path, self.target)
            except SymbolError:
                self._files[path] = None
            else:
                self._files[path] = (elf, symbol_table(self.sysroot, elf)[0])
                elf.close()
        return self._files[path]

    def frame(self, path: str, offset: int) -> str | None:
        found = self._file(path)
        if found is None:
            return None
        elf, table = found
        vaddr = elf.vaddr_of(offset)
        if vaddr is None:
            return None
        # a return address may be one past its call, at the next function
        sym = table.containing(vaddr) or table.containing(vaddr - 1)
        if sym is None:
            return None
        return f"{sym.name}+{vaddr - sym.addr:#x} [{path}]"

    def rewrite(self, text: str) -> str:
        return FRAME.sub(lambda m: self.frame(m.group(1), int(m.group(2), 16)) or m.group(0),
                         text)


class LineRewriter:
    """A byte sink that symbolizes whole lines as they stream (ktap run)."""

    def __init__(self, sink, symbolizer: UserSymbolizer):
        self.sink, self.symbolizer, self.pending = sink, symbolizer, b""

    def __call__(self, data: bytes) -> None:
        self.pending += data
        head, nl, self.pending = self.pending.rpartition(b"\n")
        if nl:
            self.sink(self.symbolizer.rewrite((head + nl).decode(errors="replace")).encode())

    def close(self) -> None:
        if self.pending:
            self.sink(self.symbolizer.rewrite(self.pending.decode(errors="replace")).encode())
            self.pending = b""
