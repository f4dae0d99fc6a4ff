"""`ktap board` subcommand: check, exec, shell and kernel on QEMU boards.

The main CLI calls register(subparsers) and then args.func(args), using the
returned int as the exit status.
"""
from __future__ import annotations

import argparse
import sys

from ktap.backends.kbc import bytecode as bc
from ktap.boards import choice, kernels
from ktap.boards.batch import DEFAULT_TIMEOUT, run_commands
from ktap.boards.check import CHECK_COMMANDS, check_board, evaluate_check
from ktap.boards.errors import BoardError
from ktap.boards.initramfs import guest_sysroot
from ktap.boards.shell import interactive_shell
from ktap.boards.sessions import Session, run_sessions
from ktap.build.bundle import BundleError
from ktap.build.kbuild import KmodError
from ktap.build.ktaprun import RunnerError
from ktap.cli.common import (add_backend_arg, add_folded_arg, add_format_arg, image_for_run,
                             write_folded,
                             split_script_and_workload)
from ktap.core.diagnostics import KtapError
from ktap.core.tools import MissingTool
from ktap.core.targets import TargetError, get_target, target_names
from ktap.symbols.profiles import parse_config
from ktap.symbols.usymbolize import UserSymbolizer


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("board", help="build kernels and run QEMU boards",
                              description="QEMU boards for the ktap targets.")
    p.add_argument("-t", "--target", required=True, choices=target_names(),
                   help="target architecture")
    p.add_argument("--kernel", default=choice.DEFAULT_KERNEL, metavar="KERNEL",
                   help="kernel the board boots: " + ", ".join(choice.KERNEL_CHOICES) +
                   " (versions built from Debian's linux-source-*; debian and debian-rt are "
                   "Debian's stock kernels; default %(default)s)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds before a hanging board is killed (default %(default)s)")
    sub = p.add_subparsers(dest="board_command", metavar="COMMAND", required=True)

    c = sub.add_parser("check", help="boot, show uname/arch/features, verify them against the descriptor")
    c.set_defaults(func=cmd_check)

    e = sub.add_parser("exec", help="run one command in a fresh board; exit with its status")
    e.add_argument("--add", action="append", default=[], metavar="HOST:GUEST",
                   help="add a host file to the initramfs at GUEST path (repeatable)")
    e.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    e.set_defaults(func=cmd_exec)

    s = sub.add_parser("shell", help="interactive console on the board (Ctrl-A x quits QEMU)")
    s.add_argument("--add", action="append", default=[], metavar="HOST:GUEST",
                   help="add a host file to the initramfs at GUEST path (repeatable)")
    s.set_defaults(func=cmd_shell)

    r = sub.add_parser("run", help="run a script or image in a fresh board with ktaprun",
                       description="Compiles the script for the board, builds (or takes from the "
                       "cache) ktaprun and, for the ktapvm backend, ktapvm.ko, boots, runs the "
                       "session with CMD as the workload, prints the output and exits with the "
                       "session's status. --backend auto decides from the board kernel's "
                       "config.")
    r.add_argument("-e", dest="program", metavar="PROGRAM", help="script text on the command line")
    add_backend_arg(r)
    add_format_arg(r)
    add_folded_arg(r)
    r.add_argument("--limit", action="append", metavar="NAME=N", help="override a limit")
    r.add_argument("--sysroot", metavar="DIR",
                   help="where user-space probes are resolved (default: the board's own "
                        "files, unstripped: ktapw, ktapdyn, their libraries)")
    r.add_argument("rest", nargs=argparse.REMAINDER, metavar="[SCRIPT|FILE.kbc] [-- CMD ARGS]",
                   help="the script or image, then the workload run in the board")
    r.set_defaults(func=cmd_run)

    k = sub.add_parser("kernel", help="build (or find cached) the target's kernel and print its build dir")
    k.set_defaults(func=cmd_kernel)
    return p


def _extra_files(specs: list[str]) -> dict[str, str]:
    files = {}
    for spec in specs:
        host, sep, guest = spec.rpartition(":")
        if not sep or not host or not guest.startswith("/"):
            raise SystemExit(f"ktap board: --add wants HOST:/GUEST/PATH, got '{spec}'")
        files[guest] = host
    return files


def _errors_as_status(func):
    """Known failures print one clear message and exit 1 instead of a traceback."""
    def wrapper(args) -> int:
        try:
            choice.check_kernel(args.kernel)
            return func(args)
        except (BoardError, kernels.KernelError, MissingTool, TargetError, KmodError) as e:
            print(f"ktap board: error: {e}", file=sys.stderr)
            return 1
    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


@_errors_as_status
def cmd_check(args) -> int:
    target = get_target(args.target)
    if args.kernel == choice.DEFAULT_KERNEL:
        check = check_board(target, timeout=args.timeout)
    else:   # check_board() boots the default kernel only
        check = evaluate_check(target, run_commands(target, CHECK_COMMANDS, timeout=args.timeout,
                                                    kernel=args.kernel))
    print(f"target:     {target.name} ({target.qemu['binary']} -M {target.qemu['machine']})")
    print(f"kernel:     {args.kernel}")
    print(f"uname -a:   {check.uname}")
    print(f"byte order: {check.arch.get('byte_order')} (descriptor: {target.byte_order})")
    print(f"word size:  {check.arch.get('word_size')} bytes (descriptor: {target.word_size})")
    print("features:   " + " ".join(f"{name}={'yes' if have else 'no'}"
                                    for name, have in check.features.items()))
    if check.run.init_seconds is not None:
        print(f"boot:       init reached {check.run.init_seconds:.2f} s after QEMU start")
    for problem in check.problems:
        print(f"FAIL: {problem}")
    print("board check: " + ("OK" if check.ok else "FAILED"))
    return 0 if check.ok else 1


@_errors_as_status
def cmd_exec(args) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("ktap board exec: no command given (ktap board -t ARCH exec -- CMD ARGS)",
              file=sys.stderr)
        return 2
    run = run_commands(args.target, [argv], _extra_files(args.add), timeout=args.timeout,
                       kernel=args.kernel)
    result = run.results[0]
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(result.stderr)
    for err in result.errors:
        print(f"ktap board: {err}", file=sys.stderr)
    return result.status if result.status is not None else 1


@_errors_as_status
def cmd_shell(args) -> int:
    print(f"ktap: booting {args.target} ({args.kernel}); type 'help', 'poweroff' to leave "
          f"(or Ctrl-A x to stop QEMU)", file=sys.stderr)
    return interactive_shell(args.target, _extra_files(args.add), kernel=args.kernel)


@_errors_as_status
def cmd_kernel(args) -> int:
    build = choice.boot_kernel(args.target, args.kernel)
    print(build.directory)
    print(f"  image: {build.image}", file=sys.stderr)
    if build.seconds is not None:
        print(f"  cold build took {build.seconds:.0f} s"
              f"{' (cached)' if build.cached else ''}", file=sys.stderr)
    return 0


def cmd_run(args) -> int:
    target = get_target(args.target)
    try:
        choice.check_kernel(args.kernel)
        args.script, workload = split_script_and_workload("ktap board run", list(args.rest))
        build = choice.boot_kernel(target, args.kernel) if args.backend == "auto" else None
        config = parse_config((build.directory / ".config").read_text()) if build else None
        sysroot = args.sysroot or str(guest_sysroot(target))
        data = bc.dump(image_for_run(args, target.name, config=config,
                                     where=f"the {target.name} board's {args.kernel} kernel",
                                     sysroot=sysroot))
        run = run_sessions(target, [Session("run", data, workload,
                                            options=["--format", args.format])],
                           timeout=args.timeout, kernel=args.kernel)
    except KtapError as e:
        print(e.render(), file=sys.stderr)
        return e.exit_status
    except (BoardError, kernels.KernelError, MissingTool, BundleError, KmodError,
            RunnerError) as e:
        print(f"ktap board: error: {e}", file=sys.stderr)
        return 1
    result = run.sessions[0]
    stdout = UserSymbolizer(sysroot, target).rewrite(result.stdout)
    sys.stdout.write(stdout)
    write_folded(args.folded, stdout)
    sys.stderr.write(result.stderr)
    for line in run.trouble:
        print(f"ktap board: kernel reported: {line}", file=sys.stderr)
    if run.unload_status not in (0, None):
        print("ktap board: error: unloading ktapvm failed after the session", file=sys.stderr)
        return 1
    if run.trouble:
        return 1
    return result.status if result.status is not None else 1

