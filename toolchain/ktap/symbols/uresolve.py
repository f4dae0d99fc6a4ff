"""User-space probes resolved offline, in the host copies of the target's
files: symbol (or glob, or address) to file offset, the instruction boundary
checked with capstone, USDT notes to fetch arguments, and the build-id that
ktaprun checks against the board's file before it attaches.

Each resolved image event of a user kind carries what ktaprun writes into
uprobe_events (docs/bytecode.md): its name is PATH:WHAT as printed
(`probename`), its offset the file offset, and its fields are
[build-id, reference-counter offset, fetch arguments...].
"""
from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

from ktap.core.targets import Target
from ktap.events.kinds import EV_URETPROBE, EV_USDT, USER_KINDS
from ktap.symbols.codecheck import CodeReader, check_probe_point
from ktap.symbols.table import SymbolError, SymbolTable, did_you_mean
from ktap.symbols.userelf import UserElf, UserElfError, open_user_elf, symbol_table
from ktap.symbols.usdt import UsdtError, fetch_args

SYSROOT_HINT = ("user-space probes are resolved on the host in a copy of the board's files: "
                "give --sysroot DIR (the board's root filesystem, unstripped)")


class UserProbeError(SymbolError):
    def __init__(self, message: str, spec: str):
        super().__init__(message)
        self.spec = spec


@dataclass
class _Files:
    sysroot: Path
    target: Target
    open: dict[str, UserElf] = field(default_factory=dict)
    tables: dict[str, tuple[SymbolTable, bool]] = field(default_factory=dict)

    def elf(self, path: str) -> UserElf:
        if path not in self.open:
            self.open[path] = open_user_elf(self.sysroot, path, self.target)
        return self.open[path]

    def symbols(self, elf: UserElf) -> tuple[SymbolTable, bool]:
        if elf.target_path not in self.tables:
            self.tables[elf.target_path] = symbol_table(self.sysroot, elf)
        return self.tables[elf.target_path]

    def close(self) -> None:
        for e in self.open.values():
            e.close()


def has_user_probes(events: list) -> bool:
    return any(ev.kind in USER_KINDS for ev in events)


def resolve_user_events(events: list, target: Target, sysroot: str | Path | None,
                        nargs: int) -> list:
    """The image events with every user-space probe resolved (globs expanded
    to one event per function, a USDT name to one per site). nargs: the
    highest argN any handler reads. Raises UserProbeError for the first
    probe that cannot be resolved."""
    if not has_user_probes(events):
        return events
    first = next(ev for ev in events if ev.kind in USER_KINDS)
    if sysroot is None:
        raise UserProbeError(SYSROOT_HINT, first.spec)
    if not Path(sysroot).is_dir():
        raise UserProbeError(f"--sysroot {sysroot} is not a directory", first.spec)
    files = _Files(Path(sysroot), target)
    out = []
    try:
        for ev in events:
            if ev.kind not in USER_KINDS:
                out.append(ev)
                continue
            try:
                out += _resolve(files, ev, nargs)
            except (UserElfError, SymbolError) as e:
                raise UserProbeError(e.message, ev.spec) from None
    finally:
        files.close()
    return out


def _resolve(files: _Files, ev, nargs: int) -> list:
    path, where = ev.name.split(":", 1)
    elf = files.elf(path)
    if ev.kind == EV_USDT:
        return _usdt_events(elf, ev, where)
    if ev.kind == EV_URETPROBE:
        fetch = [f"$retval:s{8 * files.target.word_size}"]
    else:
        word = 8 * files.target.word_size
        fetch = [f"{reg}:s{word}" for reg in files.target.user.args[:nargs]]
    if where.startswith("0x"):
        return [_event(ev, elf, f"{path}:{where}", int(where, 16) + ev.offset, fetch)]
    table, full = files.symbols(elf)
    names = _matching(table, where, elf, full)
    out = []
    for name in names:
        sym = _probeable(table, name, elf, files.target)
        if ev.offset:
            _check_boundary(files, elf, table, name, ev.offset)
        shown = f"{path}:{name}" + (f"+{ev.offset:#x}" if ev.offset else "")
        out.append(_event(ev, elf, shown, sym.addr + ev.offset, fetch))
    return out


def _event(ev, elf: UserElf, shown: str, vaddr: int, fetch: list[str], refctr: int = 0):
    fields = [elf.build_id, f"{elf.file_offset(refctr):#x}" if refctr else ""] + fetch
    return dataclasses.replace(ev, name=shown, offset=elf.file_offset(vaddr), fields=fields)


def _matching(table: SymbolTable, where: str, elf: UserElf, full: bool) -> list[str]:
    glob = any(c in where for c in "*?[")
    if glob:
        names = sorted({s.name for s in table.functions() if fnmatch.fnmatchcase(s.name, where)}
                       - elf.ifuncs)
        if names:
            return names
    elif table.lookup(where):
        return [where]
    what = f"no function matches '{where}'" if glob else f"no symbol '{where}'"
    if not full:
        raise UserElfError(
            f"{what} in {elf.target_path}: the sysroot's copy ({elf.host_path}) is stripped "
            f"(no .symtab, and no debug file by build-id or .gnu_debuglink); --sysroot "
            f"needs the unstripped copy of the board's file")
    raise UserElfError(f"{what} in {elf.target_path}"
                       + ("" if glob else did_you_mean(table.suggest(where))))


def _probeable(table: SymbolTable, name: str, elf: UserElf, target: Target):
    sym = table.function(name)
    if sym is None:
        kind = table.lookup(name)[0].kind
        what = "a data object" if kind == "D" else "not a function"
        raise UserElfError(f"'{name}' in {elf.target_path} is {what}: a uprobe needs a "
                           f"function (STT_FUNC)")
    if name in elf.ifuncs:
        raise UserElfError(f"'{name}' in {elf.target_path} is an IFUNC: its symbol is the "
                           f"resolver that picks an implementation, not the function; probe "
                           f"the implementation (probe:{elf.target_path}:{name}_*)")
    if sym.thumb:
        raise UserElfError(f"'{name}' in {elf.target_path} is Thumb code: arm uprobes decode "
                           f"ARM instructions only; build it with -marm")
    return sym


def _check_boundary(files: _Files, elf: UserElf, table: SymbolTable, name: str,
                    offset: int) -> None:
    reader = CodeReader(elf.host_path)
    try:
        check = check_probe_point(table, reader, files.target, name, offset, False)
    finally:
        reader.close()
    if check.errors:
        raise UserElfError(check.errors[0])


def _usdt_events(elf: UserElf, ev, where: str) -> list:
    provider, name = where.split(":", 1)
    notes = [n for n in elf.usdt_notes if (n.provider, n.name) == (provider, name)]
    if not notes:
        have = sorted({f"{n.provider}:{n.name}" for n in elf.usdt_notes})
        listing = (f"; it has {', '.join(have)}" if have
                   else " (it has no .note.stapsdt section)")
        raise UserElfError(f"no USDT probe {provider}:{name} in {elf.target_path}{listing}")
    out = []
    for note in notes:
        try:
            fetch = fetch_args(note.args, elf.target)
        except UsdtError as e:
            raise UserElfError(f"USDT probe {provider}:{name} in {elf.target_path}: cannot "
                               f"read its operand '{e}' (note arguments: '{note.args}')") from None
        out.append(_event(ev, elf, f"{elf.target_path}:{provider}:{name}", note.pc, fetch,
                          note.semaphore))
    return out
