"""The `ktap` command line. Each command group lives in its own module, which is
imported only when its command runs: `ktap --help` loads none of them, and
`ktap compile` loads the compiler but not QEMU, build or transport code."""
from __future__ import annotations

import argparse
import importlib
import sys

from ktap import __version__
from ktap.core.diagnostics import KtapError, TargetError

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


# (command, module that registers it, the one-line help `ktap --help` shows).
# A module registers all of its commands; tests keep these lines equal to theirs.
COMMANDS = (
    ("compile", "ktap.cli.script", "compile a script into a KBC image"),
    ("check", "ktap.cli.script", "parse, analyse and verify a script without writing anything"),
    ("disasm", "ktap.cli.script", "list a KBC image (any byte order)"),
    ("sim", "ktap.cli.script", "run a script or image on the host reference VM"),
    ("targets", "ktap.cli.script", "list the supported targets"),
    ("board", "ktap.cli.board", "build kernels and run QEMU boards"),
    ("symbols", "ktap.cli.symbols", "list probeable kernel functions matching a pattern"),
    ("target", "ktap.cli.symbols", "record and show target kernel profiles"),
    ("fold", "ktap.cli.symbols", "folded stacks (flame graph input) from a session's output"),
    ("run", "ktap.cli.deploy", "run a script on a real board over ssh, adb or a serial line"),
)
MODULES = {name: module for name, module, _ in COMMANDS}


def requested_command(argv: list[str]) -> str | None:
    """The command word in argv, if any: the first argument that is not an option."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in MODULES else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported and registers its full
    arguments, the other commands appear by name and help line alone."""
    parser = argparse.ArgumentParser(prog="ktap", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ktap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    loaded = MODULES.get(command)
    for name, module, help_line in COMMANDS:
        if module != loaded:
            sub.add_parser(name, help=help_line)
        elif name == command:
            importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(requested_command(argv))
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
