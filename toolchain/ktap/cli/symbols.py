"""`ktap symbols` and `ktap target`: offline kernel symbols and target profiles.

The main CLI calls register(subparsers) and then args.func(args), using the
returned int as the exit status; KtapError is reported by the main CLI.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ktap.boards import kernels
from ktap.boards.profile import sync_board
from ktap.core.diagnostics import KtapError, UsageError
from ktap.core.targets import get_target, target_names
from ktap.deploy.connect import open_transport
from ktap.deploy.profile import sync_transport
from ktap.deploy.transport import TransportError
from ktap.symbols import profiles
from ktap.symbols.codecheck import CodeReader, check_probe_point
from ktap.symbols.readers import load, load_system_map, load_vmlinux
from ktap.symbols.resolve import expand_symbols, is_glob, split_spec
from ktap.symbols.symbolize import fold_output
from ktap.symbols.table import REASONS, SymbolTable


def register(subparsers) -> None:
    _register_symbols(subparsers)
    _register_target(subparsers)
    _register_fold(subparsers)


def _register_fold(subparsers) -> None:
    p = subparsers.add_parser(
        "fold", help="folded stacks (flame graph input) from a session's output",
        description="Reads what a session printed (a file, or standard input) and writes "
        "one folded stack per line, `root;...;leaf COUNT`, for every printed table entry "
        "keyed by stack() or ustack(): the input of flame graph tools. Offsets are "
        "dropped, so one function is one frame. Example: ktap board -t arm run prof.kp "
        "-- ktapw calls 100 | ktap fold > prof.folded")
    p.add_argument("input", nargs="?", metavar="FILE", help="the output (default: stdin)")
    p.add_argument("-o", "--output", metavar="FILE", help="where to write (default: stdout)")
    p.set_defaults(func=cmd_fold)


def cmd_fold(args) -> int:
    try:
        text = Path(args.input).read_text(errors="replace") if args.input else sys.stdin.read()
    except OSError as e:
        raise KtapError(f"cannot read {args.input}: {e.strerror}") from None
    lines = "".join(line + "\n" for line in fold_output(text))
    if args.output:
        Path(args.output).write_text(lines)
    else:
        sys.stdout.write(lines)
    return 0 if lines else 1


def _register_symbols(subparsers) -> None:
    p = subparsers.add_parser(
        "symbols", help="list probeable kernel functions matching a pattern",
        description="Lists the functions matching PATTERN (a name or glob) with addresses "
        "and sizes, and why the others cannot be probed. With SYM+OFF, checks that the "
        "offset is a safe probe point (needs a vmlinux: --vmlinux or --board).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--vmlinux", metavar="FILE", help="unstripped kernel ELF (or a .ko)")
    src.add_argument("--system-map", metavar="FILE", help="the kernel's System.map")
    src.add_argument("--profile", metavar="DIR", help="a profile from `ktap target sync`")
    src.add_argument("--board", metavar="ARCH", choices=target_names(),
                     help="the QEMU board's kernel (its cached vmlinux)")
    p.add_argument("-t", "--target", choices=target_names(),
                   help="target architecture (default: from the ELF header, board or profile)")
    p.add_argument("--no-refused", action="store_true", help="do not list refused symbols")
    p.add_argument("pattern", metavar="PATTERN", help="e.g. 'vfs_*', 'ksys_write+0x8'")
    p.set_defaults(func=cmd_symbols)


def _register_target(subparsers) -> None:
    p = subparsers.add_parser("target", help="record and show target kernel profiles",
                              description="Target profiles: kernel release, config, kallsyms, "
                              "tracepoint formats, recorded once from a board.")
    sub = p.add_subparsers(dest="target_command", metavar="COMMAND", required=True)
    s = sub.add_parser("sync", help="record a profile from a running kernel")
    how = s.add_mutually_exclusive_group(required=True)
    how.add_argument("--board", metavar="ARCH", choices=target_names(), help="a QEMU board")
    how.add_argument("--ssh", metavar="USER@HOST[:PORT]", help="a board over ssh (the system's OpenSSH)")
    how.add_argument("--adb", nargs="?", const="", metavar="SERIAL",
                     help="a device over adb (the system's adb client)")
    how.add_argument("--serial", metavar="DEV[:BAUD]",
                     help="a board running `ktaprun --serve` on a serial line")
    s.add_argument("-t", "--target", choices=target_names(),
                   help="the board's architecture (needed with --ssh, --adb, --serial)")
    s.add_argument("-i", dest="key", metavar="KEY", help="ssh identity file")
    s.add_argument("--ssh-option", action="append", default=[], metavar="OPTION",
                   help="extra ssh -o option (repeatable)")
    s.add_argument("--kdir", metavar="DIR",
                   help="the kernel's build tree, for its .config when /proc/config.gz is absent")
    s.add_argument("-o", "--output", required=True, metavar="DIR", help="profile directory")
    s.add_argument("--file", action="append", default=[], metavar="PATH", dest="files",
                   help="pull this board file too, recording its build-id: user-space probes "
                        "in it then resolve with --profile DIR alone (repeatable; the board's "
                        "copies are often stripped: a shared library's exported functions "
                        "still resolve, an executable wants --sysroot)")
    s.add_argument("--timeout", type=float, default=300, help="seconds (default %(default)s)")
    s.set_defaults(func=cmd_target_sync)
    show = sub.add_parser("show", help="summarise a profile")
    show.add_argument("profile", metavar="DIR")
    show.set_defaults(func=cmd_target_show)


# ---------------------------------------------------------------- symbols

def _table(args) -> tuple[SymbolTable, Path | None, str | None]:
    """The symbol table, the vmlinux for code checks (if any), and the target name."""
    target = args.target
    if args.board:
        vmlinux = Path(kernels.ensure_kernel(args.board)) / "vmlinux"
        return load_vmlinux(vmlinux), vmlinux, target or args.board
    if args.vmlinux:
        table = load(args.vmlinux)
        return table, Path(args.vmlinux), target or table.machine or None
    if args.system_map:
        word = get_target(target).word_size if target else 0
        return load_system_map(args.system_map, word_size=word), None, target
    prof = profiles.load(args.profile)
    return prof.symbols, None, target or prof.target or None


def cmd_symbols(args) -> int:
    table, vmlinux, target = _table(args)
    prefix, sym, suffix = split_spec(args.pattern)
    if suffix.startswith("+"):
        return _check_offset(table, vmlinux, target, sym, suffix[1:])
    exp = expand_symbols(sym, table)
    for name in exp.names:
        s = table.function(name)
        extra = f"  ({exp.ambiguous[name]} functions with this name)" if name in exp.ambiguous else ""
        print(f"{s.addr:#0{2 + 2 * (table.word_size or 8)}x} {s.size:#8x} {name}{extra}")
    if not args.no_refused:
        for r in exp.refused:
            print(f"refused {r.symbol.name}: {REASONS[r.code]} [{r.code}]")
    if not exp.names:
        if not is_glob(sym) and not exp.refused:
            raise UsageError(table.missing_message(sym))
        return 1
    return 0


def _check_offset(table: SymbolTable, vmlinux: Path | None, target: str | None, sym: str,
                  off: str) -> int:
    try:
        offset = int(off, 0)
    except ValueError:
        raise UsageError(f"bad offset '{off}' (decimal or 0x hex)") from None
    if vmlinux is None or target is None:
        print(f"notice: probe-point checks of {sym}+{offset:#x} skipped: "
              f"they need a vmlinux (--vmlinux or --board) and a target (-t)")
        return 0 if table.function(sym) else 1
    reader = CodeReader(vmlinux)
    try:
        check = check_probe_point(table, reader, get_target(target), sym, offset)
    finally:
        reader.close()
    if check.instruction:
        print(f"{sym}+{offset:#x}: {check.instruction}")
    for kind, msgs in (("error", check.errors), ("warning", check.warnings),
                       ("notice", check.notices)):
        for m in msgs:
            print(f"{kind}: {m}")
    return 0 if check.ok else 1


# ---------------------------------------------------------------- target

def cmd_target_sync(args) -> int:
    if args.board:
        return _show(profiles.load(sync_board(args.board, args.output, args.timeout,
                                              files=args.files)))
    if not args.target:
        raise UsageError("ktap target sync over --ssh, --adb or --serial needs -t ARCH")
    where = args.ssh or args.serial or (f"adb:{args.adb}" if args.adb else "adb")
    try:
        with open_transport(ssh=args.ssh, key=args.key, ssh_options=args.ssh_option,
                            adb=args.adb is not None, adb_serial=args.adb or None,
                            serial=args.serial) as t:
            out = sync_transport(t, args.target, args.output, where, args.kdir, args.files)
    except TransportError as e:
        raise KtapError(str(e)) from None
    return _show(profiles.load(out))


def cmd_target_show(args) -> int:
    return _show(profiles.load(args.profile))


def _show(prof: profiles.Profile) -> int:
    m = prof.meta
    print(f"profile:      {prof.path}")
    print(f"target:       {prof.target}  ({m.get('source')})")
    print(f"release:      {prof.release}")
    print(f"config:       {m.get('config_source')}")
    ks = m.get("kallsyms", {})
    print(f"kallsyms:     {ks.get('lines')} symbols, {ks.get('text')} text, "
          f"sha256 {ks.get('sha256', '')[:16]}")
    print(f"tracepoints:  {m.get('tracepoints')}")
    print(f"ftrace functions list: {'yes' if m.get('available_filter_functions') else 'no'}")
    feats = ", ".join(f"{k}={'?' if v is None else 'yes' if v else 'no'}"
                      for k, v in prof.features.items())
    print(f"features:     {feats}")
    for path, f in sorted(m.get("files", {}).items()):
        print(f"file:         {path}  {f['size']} bytes, build-id {f['build_id'] or 'none'}")
    return 0
