"""ktap compile, check, disasm, sim and targets: the commands that work on a script
or an image on the host alone."""
from __future__ import annotations

import sys
from pathlib import Path

from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.backends.kbc.disasm import disassemble
from ktap.backends.kbc.verifier import verify
from ktap.cli.common import (add_format_arg, add_script_args, backend, kernel_info, limits,
                             source, sysroot_of, warn)
from ktap.core.diagnostics import KtapError
from ktap.core.targets import get_target, target_names
from ktap.refvm.sim import EventsFile, parse_events, run_sim


def cmd_compile(args) -> int:
    src = source(args)
    image = api.compile_source(src, args.target, limits(args.limit), kernel_info(args), warn,
                               backend(args), sysroot=sysroot_of(args))
    out = args.output or (Path(args.script).with_suffix(".kbc").name if args.script else "a.kbc")
    Path(out).write_bytes(bc.dump(image))
    if args.verbose:
        print(f"ktap: wrote {out} ({len(bc.dump(image))} bytes, {args.target})", file=sys.stderr)
    return 0


def cmd_check(args) -> int:
    src = source(args)
    api.compile_source(src, args.target, limits(args.limit), kernel_info(args), warn,
                       backend(args), sysroot=sysroot_of(args))
    print(f"{src.name}: ok ({args.target}, {backend(args)})")
    return 0


def cmd_disasm(args) -> int:
    image = api.load_image(args.image)
    sys.stdout.write(disassemble(image))
    if args.verify:
        verify(image)
        print("; verifier: ok")
    return 0


def cmd_sim(args) -> int:
    src = None
    if args.script and args.script.endswith(".kbc") and args.program is None:
        image = api.load_image(args.script)
        verify(image)
    else:
        src = source(args)
        image = api.compile_source(src, args.target, limits(args.limit), resolve_user=False)
    events = EventsFile()
    if args.events:
        try:
            text = Path(args.events).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise KtapError(f"cannot read events file: {e}", filename=args.events) from None
        events = parse_events(text, args.events)
    status, drops = run_sim(image, sys.stdout.write, src, events, as_json=args.format == "json")
    sys.stdout.flush()
    for line in drops:
        print(line, file=sys.stderr)
    return status


def cmd_targets(args) -> int:
    for name in target_names():
        t = get_target(name)
        print(f"{t.name:8} {t.byte_order + '-endian':13} {t.word_size * 8}-bit  "
              f"ARCH={t.kernel_arch} CROSS_COMPILE={t.cross_compile or '(native)'}  "
              f"qemu: {t.qemu.get('binary')} -M {t.qemu.get('machine')}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("compile", help="compile a script into a KBC image")
    add_script_args(p)
    p.add_argument("-o", "--output", metavar="OUT.kbc", help="output image (default: SCRIPT.kbc)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("check", help="parse, analyse and verify a script without writing anything")
    add_script_args(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("disasm", help="list a KBC image (any byte order; eBPF programs too)")
    p.add_argument("image", help="KBC image")
    p.add_argument("--verify", action="store_true", help="also run the verifier on it")
    p.set_defaults(func=cmd_disasm)

    p = sub.add_parser("sim", help="run a script or image on the host reference VM",
                       description="Runs the setup code, feeds the events of --events FILE "
                       "to the matching probes, then runs trace_end. The output is what a "
                       "board prints. The events file format is in docs/language.md.")
    add_script_args(p, with_backend=False, with_sysroot=False)
    p.add_argument("--events", metavar="FILE", help="events to feed (JSON lines)")
    add_format_arg(p)
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("targets", help="list the supported targets")
    p.set_defaults(func=cmd_targets)
