"""One boot runs a whole list of commands: the host writes them into the
initramfs, guest/init.c runs them one after another in batch mode and reports
each one's output and exit status as frames on the serial console
(frames.py), then the host stops QEMU."""
from __future__ import annotations

import dataclasses
import os
import select
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ktap.boards import choice, qemu
from ktap.boards.errors import BoardError, BoardTimeout, console_tail
from ktap.boards.frames import CommandResult, FrameParser
from ktap.boards.initramfs import build_initramfs
from ktap.core.targets import Target, get_target

DEFAULT_TIMEOUT = 120.0


@dataclass
class BoardRun:
    target: str
    results: list[CommandResult]
    console: str                        # everything the serial console printed
    init_seconds: float | None          # host time from QEMU start to init's first frame
    guest_uptime_at_init: float | None  # the guest kernel's uptime at that frame
    total_seconds: float
    boots: int                          # HELLO frames seen: 1 for a healthy run
    frame_errors: list[str]


def run_commands(target: Target | str, commands: list[list[str]],
                 extra_files: dict[str, str | Path] | None = None,
                 timeout: float = DEFAULT_TIMEOUT, *, deterministic: bool = False,
                 console_loglevel: int | None = None, strict: bool = True,
                 kernel_variant: str | None = None,
                 kernel: str = choice.DEFAULT_KERNEL, cpus: int | None = None) -> BoardRun:
    """Boots the target once and runs every command in order inside it.

    extra_files maps guest paths to host files added to the initramfs (e.g.
    {"/lib/ktapvm.ko": build/ktapvm.ko, "/bin/ktaprun": ...}); executables
    keep their x bit. Raises BoardTimeout if the board does not finish within
    timeout seconds, BoardError if QEMU stops early or (strict) if a frame
    was lost or corrupted. kernel_variant ("debug", "smp", "rt") boots that
    kernel variant with its CPU count (VARIANT_CPUS: 2 for "smp" and "rt");
    kernel ("5.10", "6.1", "6.12", "debian", "debian-rt"; choice.py) picks
    the kernel, with its own CPUs and memory; deterministic=True with more
    than one CPU raises BoardError on a QEMU older than ICOUNT_SMP_MIN_QEMU.
    cpus overrides the kernel's CPU count: a deterministic benchmark boots
    Debian's SMP kernels on one CPU.
    """
    target = get_target(target)
    binary = qemu.require_qemu(target)
    build = qemu.boot_build(target, kernel_variant, kernel)
    if cpus is not None:
        build = dataclasses.replace(build, cpus=cpus)
    if deterministic:
        qemu.check_deterministic(binary, kernel_variant, build.cpus)
    with tempfile.TemporaryDirectory(prefix="ktap-board-") as tmp:
        initrd = build_initramfs(target, extra_files, commands, Path(tmp) / "initrd.cpio.gz",
                                 boot_modules=build.boot_modules)
        append = [] if console_loglevel is None else [f"ktap.loglevel={console_loglevel}"]
        cmd = qemu.boot_command(target, initrd, deterministic=deterministic, append=append,
                                kernel_variant=kernel_variant, build=build)
        run = drive(target, cmd, commands, timeout)
    if strict and run.frame_errors:
        raise BoardError(f"{target.name}: console frames damaged: {'; '.join(run.frame_errors[:5])}",
                         run.console)
    return run


def run_command(target: Target | str, argv: list[str], **kwargs) -> CommandResult:
    return run_commands(target, [argv], **kwargs).results[0]


def drive(target: Target, cmd: list[str], commands: list[list[str]], timeout: float) -> BoardRun:
    """Runs QEMU (`cmd`) until the guest's DONE frame, the timeout, or QEMU's exit."""
    parser = FrameParser(commands)
    console = bytearray()
    pending = b""
    init_seconds = None
    started = time.monotonic()
    deadline = started + timeout
    proc = qemu.spawn(cmd)
    try:
        while not parser.done:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BoardTimeout(
                    f"{target.name}: board did not finish within {timeout:.0f} s; "
                    f"last console lines:\n{console_tail(console.decode(errors='replace'))}",
                    console.decode(errors="replace"))
            ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                proc.wait()
                text = console.decode(errors="replace")
                raise BoardError(
                    f"{target.name}: QEMU exited (status {proc.returncode}) before the guest "
                    f"finished; last console lines:\n{console_tail(text)}\ncommand: {' '.join(cmd)}",
                    text)
            console += chunk
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                tag = parser.feed_line(raw.decode(errors="replace"))
                if tag == "HELLO" and init_seconds is None:
                    init_seconds = time.monotonic() - started
                if parser.done:
                    break
    finally:
        # Not every board can power itself off (mips malta, x86 pc without
        # ACPI), so QEMU is stopped as soon as the guest says it is done.
        qemu.stop(proc)
    parser.finish()
    hello = parser.hello or []
    return BoardRun(
        target=target.name, results=parser.results,
        console=console.decode(errors="replace"), init_seconds=init_seconds,
        guest_uptime_at_init=float(hello[3]) if len(hello) > 3 else None,
        total_seconds=time.monotonic() - started, boots=parser.hello_count,
        frame_errors=parser.errors)
