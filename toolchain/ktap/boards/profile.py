"""Target profiles of the QEMU boards: one boot reads the kernel's kallsyms,
tracepoint formats and config with ktapw, and the profile is cached beside the
kernel build it describes.

The profile data model is ktap.symbols.profiles; this module only records.
"""
from __future__ import annotations

from pathlib import Path

from ktap.boards.batch import run_commands
from ktap.boards.choice import DEFAULT_KERNEL, boot_kernel
from ktap.core.cache import cache_root
from ktap.core.targets import Target, get_target
from ktap.symbols import profiles
from ktap.symbols.profiles import EVENTS_ROOT, FILTER_FUNCTIONS, Profile

# One boot collects everything, in the order profiles.collect() reads.
SYNC_COMMANDS = [
    ["ktapw", "uname"],
    ["ktapw", "cat", "/proc/kallsyms"],
    ["ktapw", "dump", "-n", "format", EVENTS_ROOT],
    ["ktapw", "cat", "/proc/config.gz"],
    ["ktapw", "cat", FILTER_FUNCTIONS],
    ["ktapw", "cat", "/proc/cmdline"],
]


def board_profile_dir(target: Target | str, kernel: str = DEFAULT_KERNEL) -> Path:
    """$KTAP_CACHE/profiles/<kernel build dir's name>: a new kernel gets a new
    profile (the default 6.1 kernel's names are what they always were)."""
    target = get_target(target)
    build = boot_kernel(target, kernel).directory
    return cache_root() / "profiles" / build.name


def board_profile(target: Target | str, timeout: float = 300,
                  kernel: str = DEFAULT_KERNEL) -> Profile:
    """The cached profile of a QEMU board's kernel; recorded (one boot) on a miss."""
    directory = board_profile_dir(target, kernel)
    if not (directory / "profile.json").exists():
        sync_board(target, directory, timeout, kernel)
    return profiles.load(directory)


def sync_board(target: Target | str, out_dir: str | Path, timeout: float = 300,
               kernel: str = DEFAULT_KERNEL, files: list[str] = ()) -> Path:
    """files: board paths to pull too (user-space probes resolve in them)."""
    target = get_target(target)
    build = boot_kernel(target, kernel).directory
    commands = SYNC_COMMANDS + [["ktapw", "cat", path] for path in files]
    run = run_commands(target, commands, timeout=timeout, kernel=kernel)
    label = f"board:{target.name}" if kernel == DEFAULT_KERNEL else f"board:{target.name}:{kernel}"
    collected = profiles.collect(target, run.results, build, label)
    collected.files = profiles.pulled_files(run.results[len(SYNC_COMMANDS):], list(files), label)
    meta = {"kernel_build": build.name}
    if kernel != DEFAULT_KERNEL:
        meta["kernel"] = kernel
    return profiles.write_profile(collected, Path(out_dir), meta)
