"""Running compiled scripts on QEMU boards: the bundle goes into the
initramfs under GUEST_DIR, and one boot runs many ktaprun sessions. `ktap
board run` and the board test suite both go through here."""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ktap.boards.batch import run_commands
from ktap.boards.choice import DEFAULT_KERNEL, boot_kernel
from ktap.boards.errors import BoardError
from ktap.build.bundle import MODULE_NAME, RUNNER_NAME, Bundle, make_bundle
from ktap.core.targets import Target, get_target

GUEST_DIR = "/ktap"
GUEST_MODULE = Bundle.path(GUEST_DIR, MODULE_NAME)
GUEST_RUNNER = Bundle.path(GUEST_DIR, RUNNER_NAME)
# What a healthy kernel never prints; any of these fails a board run. BUG:
# is matched in capitals only: x86's "..MP-BIOS bug: 8254 timer not connected
# to IO-APIC" is the timer check losing a race on a loaded host, not a bug.
# The checkers' reports are matched, not their names: a kernel with lockdep,
# kmemleak or KASAN names them in its boot banner. Their reports start with
# BUG: or WARNING: (KASAN, lockdep) or say "suspected memory leaks" (kmemleak).
KERNEL_TROUBLE = re.compile(r"\bOops\b|(?-i:BUG:)|WARNING:|Call Trace|Kernel panic|general protection|"
                            r"Unable to handle kernel|unhandled|soft lockup|hung_task|"
                            r"INFO: task .* blocked|suspected memory leaks|UBSAN:|"
                            r"possible (circular|recursive) locking|inconsistent lock state|"
                            r"suspicious RCU usage", re.IGNORECASE)


@dataclass
class Session:
    """One script to run on a board: an image plus the workload run under it,
    after `before` (commands that must succeed)."""
    name: str
    image: bytes
    workload: list[str]
    before: list[list[str]] = field(default_factory=list)
    options: list[str] = field(default_factory=list)      # more ktaprun options


@dataclass
class SessionResult:
    name: str
    status: int | None
    stdout: str
    stderr: str


@dataclass
class SuiteRun:
    target: str
    sessions: list[SessionResult]
    unload_status: int | None     # rmmod ktapvm after every session
    trouble: list[str]            # kernel oops/warning lines seen on the console
    console: str
    seconds: float


def board_bundle(target: Target | str, images: dict[str, bytes] | None = None,
                 workdir: Path | None = None, kernel_variant: str | None = None,
                 kernel: str = DEFAULT_KERNEL) -> Bundle:
    """make_bundle() against the build dir of the board's kernel (`kernel`,
    choice.KERNEL_CHOICES; of `kernel_variant`, default the plain one)."""
    target = get_target(target)
    build = boot_kernel(target, kernel, kernel_variant)
    return make_bundle(target, build.directory, images, workdir)


def guest_files(bundle: Bundle) -> dict[str, Path]:
    """The initramfs entries ({guest path: host file}) of a bundle in GUEST_DIR."""
    return {Bundle.path(GUEST_DIR, f.name): f.local for f in bundle.files()}


def kernel_trouble(console: str) -> list[str]:
    return [line.strip() for line in console.splitlines()
            if KERNEL_TROUBLE.search(line) and "@@KTAP:" not in line]


def run_sessions(target: Target | str, sessions: list[Session], timeout: float = 300.0,
                 unload: bool = True, kernel_variant: str | None = None,
                 kernel: str = DEFAULT_KERNEL, before: list[list[str]] = ()) -> SuiteRun:
    """Boots the board once, runs the `before` commands (which must succeed),
    then every session in order with ktaprun, then
    unloads the module. The module is loaded by the first ktaprun; when every
    image is for the eBPF backend the bundle has no module and nothing is
    unloaded (unload_status None).
    kernel ("5.10", "6.1", "6.12", "debian", "debian-rt") and kernel_variant
    ("smp", "debug") choose the kernel booted, with the module built for it."""
    target = get_target(target)
    with tempfile.TemporaryDirectory(prefix="ktap-sessions-") as tmp:
        images = {f"s{i}.kbc": s.image for i, s in enumerate(sessions)}
        bundle = board_bundle(target, images, Path(tmp), kernel_variant, kernel)
        # (session or None for a command that must succeed, the command)
        steps = [(None, c) for c in before]
        for name, s in zip(images, sessions):
            steps += [(None, c) for c in s.before]
            steps.append((s, bundle.command(GUEST_DIR, name, s.workload, s.options)))
        commands = [c for _, c in steps]
        unload = unload and bundle.module is not None
        if unload:
            commands.append(["ktapw", "rmmod", "ktapvm"])
        run = run_commands(target, commands, extra_files=guest_files(bundle), timeout=timeout,
                           kernel_variant=kernel_variant, kernel=kernel)
    results = []
    for (session, command), r in zip(steps, run.results):
        if session is not None:
            results.append(SessionResult(session.name, r.status,
                                         r.stdout.decode("utf-8", "replace"),
                                         r.stderr.decode("utf-8", "replace")))
        elif r.status != 0:
            raise BoardError(f"{target.name}: `{' '.join(command)}` failed before a session: "
                             f"{r.stderr.decode(errors='replace').strip()}", run.console)
    unload_status = run.results[-1].status if unload else None
    return SuiteRun(target.name, results, unload_status, kernel_trouble(run.console),
                    run.console, run.total_seconds)
