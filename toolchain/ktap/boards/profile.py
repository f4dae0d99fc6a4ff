"""Target profiles of the QEMU boards: one boot reads the kernel's kallsyms,
tracepoint formats and config with ktapw, and the profile is cached beside the
kernel build it describes.

The profile data model is ktap.symbols.profiles; this module only records.
"""
from __future__ import annotations

from pathlib import Path

from ktap.boards import kernels as kernel
from ktap.boards.batch import run_commands
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


def board_profile_dir(target: Target | str) -> Path:
    """$KTAP_CACHE/profiles/<target>-<kernel key>: a new kernel gets a new profile."""
    target = get_target(target)
    build = Path(kernel.ensure_kernel(target.name))
    return cache_root() / "profiles" / build.name


def board_profile(target: Target | str, timeout: float = 300) -> Profile:
    """The cached profile of a QEMU board's kernel; recorded (one boot) on a miss."""
    directory = board_profile_dir(target)
    if not (directory / "profile.json").exists():
        sync_board(target, directory, timeout)
    return profiles.load(directory)


def sync_board(target: Target | str, out_dir: str | Path, timeout: float = 300) -> Path:
    target = get_target(target)
    build = Path(kernel.ensure_kernel(target.name))
    run = run_commands(target, SYNC_COMMANDS, timeout=timeout)
    collected = profiles.collect(target, run.results, build, f"board:{target.name}")
    return profiles.write_profile(collected, Path(out_dir), {"kernel_build": build.name})
