"""Running compiled scripts on QEMU boards: the bundle (ktapvm.ko, ktaprun,
images) and one boot that runs many sessions. `ktap board run` and the board
test suite both go through here."""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ktap.boards import board
from ktap.core.targets import Target, get_target

GUEST_DIR = "/ktap"
GUEST_MODULE = f"{GUEST_DIR}/ktapvm.ko"
GUEST_RUNNER = f"{GUEST_DIR}/ktaprun"
# What a healthy kernel never prints; any of these fails a board run.
KERNEL_TROUBLE = re.compile(r"\bOops\b|BUG:|WARNING:|Call Trace|Kernel panic|general protection|"
                            r"Unable to handle kernel|unhandled|soft lockup|hung_task|"
                            r"INFO: task .* blocked|kmemleak|KASAN|UBSAN|lockdep",
                            re.IGNORECASE)


class BundleError(Exception):
    pass


@dataclass
class Session:
    """One script to run on a board: an image plus the workload run under it."""
    name: str
    image: bytes
    workload: list[str]


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


def bundle_parts(target: Target, kernel_variant: str | None = None) -> tuple[Path, Path]:
    """Builds (or takes from the cache) ktapvm.ko and ktaprun for the target,
    the module against the kernel of `kernel_variant` (default: the board's)."""
    from ktap.build import kmod
    try:
        from ktap.build import ktaprun as runner
    except ImportError:
        runner = None
    if not hasattr(kmod, "build_module"):
        raise BundleError("the ktapvm module build is not available yet")
    if not hasattr(runner, "build_ktaprun"):
        raise BundleError("the ktaprun build is not available yet")
    kdir = None
    if kernel_variant:
        from ktap.boards.kernels import ensure_kernel
        kdir = ensure_kernel(target, variant=kernel_variant)
    return Path(kmod.build_module(target, kdir)), Path(runner.build_ktaprun(target))


def kernel_trouble(console: str) -> list[str]:
    return [line.strip() for line in console.splitlines()
            if KERNEL_TROUBLE.search(line) and "@@KTAP:" not in line]


def run_sessions(target: Target | str, sessions: list[Session], timeout: float = 300.0,
                 unload: bool = True, kernel_variant: str | None = None) -> SuiteRun:
    """Boots the board once and runs every session in order with ktaprun, then
    unloads the module. The module is loaded by the first ktaprun.
    kernel_variant ("smp", "debug") boots that kernel, with the module built
    for it."""
    if isinstance(target, str):
        target = get_target(target)
    module, runner_bin = bundle_parts(target, kernel_variant)
    with tempfile.TemporaryDirectory(prefix="ktap-sessions-") as tmp:
        files: dict[str, str | Path] = {GUEST_MODULE: module, GUEST_RUNNER: runner_bin}
        commands = []
        for i, s in enumerate(sessions):
            host = Path(tmp) / f"s{i}.kbc"
            host.write_bytes(s.image)
            files[f"{GUEST_DIR}/s{i}.kbc"] = host
            argv = [GUEST_RUNNER, "-m", GUEST_MODULE, f"{GUEST_DIR}/s{i}.kbc"]
            commands.append(argv + (["--"] + s.workload if s.workload else []))
        if unload:
            commands.append(["ktapw", "rmmod", "ktapvm"])
        run = board.run_commands(target, commands, extra_files=files, timeout=timeout,
                                 kernel_variant=kernel_variant)
    results = [SessionResult(s.name, r.status, r.stdout.decode("utf-8", "replace"),
                             r.stderr.decode("utf-8", "replace"))
               for s, r in zip(sessions, run.results)]
    unload_status = run.results[-1].status if unload else None
    return SuiteRun(target.name, results, unload_status, kernel_trouble(run.console),
                    run.console, run.total_seconds)
