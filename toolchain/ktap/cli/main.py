"""The `ktap` command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ktap import __version__, api
from ktap.backends.kbc import bytecode as bc
from ktap.core.diagnostics import KtapError, Source, UsageError
from ktap.core.targets import TargetError, target_names

DESCRIPTION = """\
ktap: dynamic tracing for embedded Linux. Scripts are compiled on the host into
verified KBC bytecode for the target's byte order and word size."""

EPILOG = """\
examples:
  ktap compile -t arm samples/hello.kp -o hello.kbc
  ktap compile -t mips -e 'trace probe:vfs_write { printf("%d\\n", arg3) }' -o w.kbc
  ktap disasm hello.kbc
  ktap check samples/count_writes.kp
  ktap sim samples/count_writes.kp --events samples/count_writes.events
"""


def _limits(pairs: list[str] | None) -> dict[str, int]:
    out = {}
    for item in pairs or []:
        name, _, value = item.partition("=")
        if name not in bc.Limits.FIELDS:
            raise UsageError(f"unknown limit '{name}' (known: {', '.join(bc.Limits.FIELDS)})")
        try:
            n = int(value, 0)
        except ValueError:
            raise UsageError(f"limit {name} needs an integer value, got '{value}'") from None
        if not 1 <= n <= bc.Limits.MAXIMUM[name]:
            raise UsageError(f"limit {name} must be between 1 and {bc.Limits.MAXIMUM[name]}")
        out[name] = n
    return out


def _source(args) -> Source:
    if args.program is not None:
        if args.script is not None:
            raise UsageError("give either a script file or -e PROGRAM, not both")
        return Source("<command line>", args.program)
    if args.script is None:
        raise UsageError("no script given (a file, or -e PROGRAM)")
    return api.read_source(args.script)


def split_script_and_workload(prog: str, rest: list[str]) -> tuple[str | None, list[str]]:
    """`[SCRIPT|FILE.kbc] [-- CMD ARGS]` as `board run` and `run` take it."""
    before, workload = (rest[:rest.index("--")], rest[rest.index("--") + 1:]) if "--" in rest \
        else (rest, [])
    if len(before) > 1:
        raise UsageError(f"{prog}: one script expected, got {' '.join(before)}")
    return (before[0] if before else None), workload


def image_for_run(args, target: str, kernel: api.KernelInfo | None = None):
    """The image a run command sends: a .kbc as given, else the script compiled."""
    if args.script and args.script.endswith(".kbc") and args.program is None:
        return api.load_image(args.script)
    return api.compile_source(_source(args), target, _limits(args.limit), kernel, _warn)


def _add_script_args(p: argparse.ArgumentParser, target_default: str | None = "x86_64") -> None:
    p.add_argument("script", nargs="?", help="script file (.kp)")
    p.add_argument("-e", dest="program", metavar="PROGRAM", help="script text on the command line")
    p.add_argument("-t", "--target", default=target_default, choices=target_names(),
                   help=f"target architecture (default: {target_default})")
    p.add_argument("--limit", action="append", metavar="NAME=N",
                   help="override a limit: " + ", ".join(bc.Limits.FIELDS))
    k = p.add_argument_group("the target kernel (optional: checks probes offline, expands globs)")
    k.add_argument("--vmlinux", metavar="FILE", help="the target's vmlinux (symbols, code checks)")
    k.add_argument("--system-map", metavar="FILE", help="the target's System.map")
    k.add_argument("--profile", metavar="DIR", help="a target profile from 'ktap target sync'")


def _kernel(args) -> api.KernelInfo:
    return api.KernelInfo(getattr(args, "vmlinux", None), getattr(args, "system_map", None),
                          getattr(args, "profile", None))


def _warn(text: str) -> None:
    print(text, file=sys.stderr)


def cmd_compile(args) -> int:
    src = _source(args)
    image = api.compile_source(src, args.target, _limits(args.limit), _kernel(args), _warn)
    out = args.output or (Path(args.script).with_suffix(".kbc").name if args.script else "a.kbc")
    Path(out).write_bytes(bc.dump(image))
    if args.verbose:
        print(f"ktap: wrote {out} ({len(bc.dump(image))} bytes, {args.target})", file=sys.stderr)
    return 0


def cmd_check(args) -> int:
    src = _source(args)
    api.compile_source(src, args.target, _limits(args.limit), _kernel(args), _warn)
    print(f"{src.name}: ok ({args.target})")
    return 0


def cmd_disasm(args) -> int:
    from ktap.backends.kbc.disasm import disassemble
    from ktap.backends.kbc.verifier import verify
    image = api.load_image(args.image)
    sys.stdout.write(disassemble(image))
    if args.verify:
        verify(image)
        print("; verifier: ok")
    return 0


def cmd_sim(args) -> int:
    from ktap.refvm.sim import EventsFile, parse_events, run_sim
    from ktap.backends.kbc.verifier import verify
    src = None
    if args.script and args.script.endswith(".kbc") and args.program is None:
        image = api.load_image(args.script)
        verify(image)
    else:
        src = _source(args)
        image = api.compile_source(src, args.target, _limits(args.limit))
    events = EventsFile()
    if args.events:
        try:
            text = Path(args.events).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise KtapError(f"cannot read events file: {e}", filename=args.events) from None
        events = parse_events(text, args.events)
    status, drops = run_sim(image, sys.stdout.write, src, events)
    sys.stdout.flush()
    for line in drops:
        print(line, file=sys.stderr)
    return status


def cmd_targets(args) -> int:
    from ktap.core.targets import get_target
    for name in target_names():
        t = get_target(name)
        print(f"{t.name:8} {t.byte_order + '-endian':13} {t.word_size * 8}-bit  "
              f"ARCH={t.kernel_arch} CROSS_COMPILE={t.cross_compile or '(native)'}  "
              f"qemu: {t.qemu.get('binary')} -M {t.qemu.get('machine')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ktap", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ktap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("compile", help="compile a script into a KBC image")
    _add_script_args(p)
    p.add_argument("-o", "--output", metavar="OUT.kbc", help="output image (default: SCRIPT.kbc)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("check", help="parse, analyse and verify a script without writing anything")
    _add_script_args(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("disasm", help="list a KBC image (any byte order)")
    p.add_argument("image", help="KBC image")
    p.add_argument("--verify", action="store_true", help="also run the verifier on it")
    p.set_defaults(func=cmd_disasm)

    p = sub.add_parser("sim", help="run a script or image on the host reference VM",
                       description="Runs the setup code, feeds the events of --events FILE "
                       "to the matching probes, then runs trace_end. The output is what a "
                       "board prints. The events file format is in docs/language.md.")
    _add_script_args(p)
    p.add_argument("--events", metavar="FILE", help="events to feed (JSON lines)")
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("targets", help="list the supported targets")
    p.set_defaults(func=cmd_targets)

    from ktap.cli import board as board_cli, deploy as deploy_cli, symbols as symbols_cli
    board_cli.register(sub)
    symbols_cli.register(sub)
    deploy_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KtapError as e:
        print(e.render(), file=sys.stderr)
        return e.exit_status
    except TargetError as e:
        print(f"ktap: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
