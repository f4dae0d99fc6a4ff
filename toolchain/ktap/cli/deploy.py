"""`ktap run`: compile, deploy and run a script on a real board over ssh, adb
or a serial line (deploy/; docs/deploy.md)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.cli.common import (add_backend_arg, add_folded_arg, add_format_arg, add_sysroot_arg,
                             image_for_run, sysroot_of, write_folded,
                             split_script_and_workload)
from ktap.core.diagnostics import KtapError
from ktap.core.targets import target_names
from ktap.symbols.usymbolize import LineRewriter, UserSymbolizer
from ktap.deploy import deploy
from ktap.deploy.connect import open_transport
from ktap.deploy.transport import TransportError
from ktap.symbols.profiles import parse_config


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "run", help="run a script on a real board over ssh, adb or a serial line",
        description="Compiles the script for the target, pushes ktapvm.ko, ktaprun and the "
        "image to the board (only what it lacks or holds with another SHA-256), checks that "
        "the module fits the board's kernel, then runs the session with CMD as the workload. "
        "The output is streamed; the exit status is the script's. Ctrl-C stops the session "
        "cleanly (trace_end runs); a second Ctrl-C drops the connection.")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--ssh", metavar="USER@HOST[:PORT]", help="over ssh (the system's OpenSSH)")
    how.add_argument("--adb", action="store_true", help="over adb (the system's adb client)")
    how.add_argument("--serial", metavar="DEV[:BAUD]",
                     help="over a serial line to `ktaprun --serve` on the board "
                     "(also unix:PATH, tcp:HOST:PORT)")
    p.add_argument("-i", dest="key", metavar="KEY", help="ssh identity file")
    p.add_argument("-o", dest="ssh_options", action="append", default=[], metavar="OPTION",
                   help="extra ssh -o option (repeatable)")
    p.add_argument("-s", dest="adb_serial", metavar="SERIAL", help="adb device serial")
    p.add_argument("-t", "--target", required=True, choices=target_names(),
                   help="target architecture")
    p.add_argument("--profile", metavar="DIR", help="target profile: check probes offline")
    add_sysroot_arg(p)
    p.add_argument("--kdir", metavar="DIR",
                   help="the board kernel's build tree for ktapvm.ko (default: the QEMU board "
                   "kernel from the cache)")
    p.add_argument("--remote-dir", default=None, metavar="DIR",
                   help="where the bundle lives on the board (default /tmp/ktap)")
    p.add_argument("--keepalive", type=int, default=5, metavar="S",
                   help="serial: the board stops the session after S s without the host")
    p.add_argument("-e", dest="program", metavar="PROGRAM", help="script text on the command line")
    p.add_argument("--limit", action="append", metavar="NAME=N", help="override a limit")
    add_backend_arg(p)
    add_format_arg(p)
    add_folded_arg(p)
    p.add_argument("-v", "--verbose", action="store_true", help="say what is pushed, and timings")
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="[SCRIPT|FILE.kbc] [-- CMD ARGS]")
    p.set_defaults(func=cmd_run)
    return p


def kdir_config(kdir: str | None) -> dict[str, str] | None:
    """The .config of --kdir, which --backend auto reads when there is no --profile."""
    config = Path(kdir) / ".config" if kdir else None
    return parse_config(config.read_text(errors="replace")) if config and config.exists() else None


def cmd_run(args) -> int:
    args.script, workload = split_script_and_workload("ktap run", list(args.rest))
    log = (lambda m: print(m, file=sys.stderr)) if args.verbose else None
    try:
        config = kdir_config(args.kdir) if args.backend == "auto" and not args.profile else None
        image = image_for_run(args, args.target, api.KernelInfo(profile=args.profile), config)
        name = Path(args.script).stem + ".kbc" if args.script else "cmdline.kbc"
        bundle = deploy.deploy_bundle(args.target, bc.dump(image), name,
                                    kdir=Path(args.kdir) if args.kdir else None)
        # ustack() frames: symbolized in the --sysroot copy as lines arrive
        sysroot = sysroot_of(args)
        seen = bytearray()          # what --folded reads, as the user saw it

        def show(data: bytes) -> None:
            if args.folded:
                seen.extend(data)
            stdout(data)
        stdout = deploy.stdout_writer()
        out = (LineRewriter(show, UserSymbolizer(sysroot, args.target)) if sysroot
               else show)
        with open_transport(ssh=args.ssh, key=args.key, ssh_options=args.ssh_options,
                            adb=args.adb, adb_serial=args.adb_serial,
                            serial=args.serial) as t:
            result = deploy.deploy_and_run(t, bundle, workload,
                                           args.remote_dir or deploy.DEFAULT_REMOTE_DIR,
                                           out=out, log=log, keepalive=args.keepalive,
                                           options=["--format", args.format])
        if isinstance(out, LineRewriter):
            out.close()
        write_folded(args.folded, seen.decode(errors="replace"))
    except KtapError as e:
        print(e.render(), file=sys.stderr)
        return e.exit_status
    except TransportError as e:
        print(f"ktap run: error: {e.cause}", file=sys.stderr)
        if e.hint:
            print(f"ktap run: hint: {e.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ktap run: interrupted; the connection was dropped (the board stops the "
              "session by itself)", file=sys.stderr)
        return 130
    if result.hint:
        print(f"ktap run: hint: {result.hint}", file=sys.stderr)
    if log:
        log("ktap run: pushed " + (", ".join(result.pushed) or "nothing") + "; " +
            ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items()))
    return result.status
