"""What the script-taking commands share: the script argument group, -e, --limit,
the target kernel options, and how a run command finds its image."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ktap import api
from ktap.core.diagnostics import Source, UsageError
from ktap.core.targets import target_names
from ktap.frontend import program
from ktap.symbols import profiles
from ktap.symbols.symbolize import fold_output


def limits(pairs: list[str] | None) -> dict[str, int]:
    out = {}
    for item in pairs or []:
        name, _, value = item.partition("=")
        if name not in program.Limits.FIELDS:
            raise UsageError(f"unknown limit '{name}' (known: {', '.join(program.Limits.FIELDS)})")
        try:
            n = int(value, 0)
        except ValueError:
            raise UsageError(f"limit {name} needs an integer value, got '{value}'") from None
        if not 1 <= n <= program.Limits.MAXIMUM[name]:
            raise UsageError(f"limit {name} must be between 1 and {program.Limits.MAXIMUM[name]}")
        out[name] = n
    return out


def source(args) -> Source:
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


def image_for_run(args, target: str, kernel: api.KernelInfo | None = None,
                  config: dict[str, str] | None = None, where: str = "the target kernel",
                  sysroot: str | None = None):
    """The image a run command sends: a .kbc as given, else the script compiled
    (`config`: the kernel's, for --backend auto; `sysroot`: the board's files
    when --sysroot does not name them)."""
    if args.script and args.script.endswith(".kbc") and args.program is None:
        return api.load_image(args.script)
    return api.compile_source(source(args), target, limits(args.limit), kernel, warn,
                              backend(args, config, where), checked_later=True,
                              sysroot=sysroot_of(args) or sysroot)


def sysroot_of(args) -> str | None:
    """--sysroot, else the files `ktap target sync --file` put in --profile's."""
    if getattr(args, "sysroot", None):
        return args.sysroot
    if getattr(args, "profile", None):
        root = profiles.load(args.profile).sysroot
        return str(root) if root else None
    return None


def add_script_args(p: argparse.ArgumentParser, target_default: str | None = "x86_64",
                    with_backend: bool = True, with_sysroot: bool = True) -> None:
    p.add_argument("script", nargs="?", help="script file (.kp)")
    if with_backend:
        add_backend_arg(p)
    p.add_argument("-e", dest="program", metavar="PROGRAM", help="script text on the command line")
    p.add_argument("-t", "--target", default=target_default, choices=target_names(),
                   help=f"target architecture (default: {target_default})")
    p.add_argument("--limit", action="append", metavar="NAME=N",
                   help="override a limit: " + ", ".join(program.Limits.FIELDS))
    k = p.add_argument_group("the target kernel (optional: checks probes offline, expands globs)")
    k.add_argument("--vmlinux", metavar="FILE", help="the target's vmlinux (symbols, code checks)")
    k.add_argument("--system-map", metavar="FILE", help="the target's System.map")
    k.add_argument("--profile", metavar="DIR", help="a target profile from 'ktap target sync'")
    if with_sysroot:
        add_sysroot_arg(p)


def add_sysroot_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sysroot", metavar="DIR",
                   help="a copy of the board's root filesystem with unstripped binaries: "
                        "user-space probes (probe:/PATH:SYMBOL, sdt:/PATH:PROVIDER:NAME) are "
                        "resolved in its files")


def add_backend_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=api.BACKEND_CHOICES, default="ktapvm",
                   help="ktapvm: handlers run in the ktapvm.ko module (default); ebpf: "
                   "handlers become eBPF programs that ktaprun loads without any module "
                   "(docs/ebpf.md); auto: ktapvm where the kernel can load the module, "
                   "else ebpf, decided from the kernel's config (--profile)")


def backend(args, config: dict[str, str] | None = None, where: str = "the target kernel") -> str:
    """The backend the command compiles for; `auto` is decided once, from
    `config` or the --profile's, and said on stderr with its reason."""
    requested = getattr(args, "backend", None) or "ktapvm"
    if requested != "auto":
        return requested
    if getattr(args, "chosen_backend", None) is None:
        if config is None and getattr(args, "profile", None):
            config = profiles.load(args.profile).config
        args.chosen_backend, why = api.choose_backend(requested, config, where)
        print(f"ktap: backend {args.chosen_backend} ({why})", file=sys.stderr)
    return args.chosen_backend


def kernel_info(args) -> api.KernelInfo:
    return api.KernelInfo(getattr(args, "vmlinux", None), getattr(args, "system_map", None),
                          getattr(args, "profile", None))


def add_folded_arg(p) -> None:
    p.add_argument("--folded", metavar="FILE",
                   help="also write the folded stacks of every printed table keyed by "
                        "stack() or ustack() to FILE, symbolized (as `ktap fold` does)")


def write_folded(path: str | None, text: str) -> None:
    if path:
        Path(path).write_text("".join(line + "\n" for line in fold_output(text)))


def add_format_arg(p) -> None:
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text: what the script prints (default); json: one JSON object per "
                        "output record, then a status object (docs/output.md)")


def warn(text: str) -> None:
    print(text, file=sys.stderr)
