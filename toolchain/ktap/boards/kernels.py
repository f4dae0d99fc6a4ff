"""Kernels for the QEMU boards, built from Debian's linux-source-<version>
(5.10, 6.1 by default, 6.12; boards/sources.py) and cached.

Cache layout (``$KTAP_CACHE``, default ``~/.cache/ktap``)::

    src/linux-source-<v>_<debian version>/    the extracted source, shared by all targets
    kernels/<target>-<key>/                   out-of-tree build dir (make O=...), kept whole
    kernels/<target>-<variant>-<key>/         the same for a variant ("debug", "smp", "rt")
    kernels/<target>-<version>[-<variant>]-<key>/  the same for a version other than 6.1
        .config                               tinyconfig + targets/common.config + targets/<arch>/config
                                              (+ targets/kernels/<version>.config + variant)
        ktap-build.log                        full output of every make step
        ktap-build.json                       written last: key, image path, build duration

The key hashes everything that changes the result: the fragments, the
source package version, the compiler version and the build recipe. The build
dir is never cleaned, so ``make -C <dir> M=<module dir> modules`` works
against it.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# KernelError, KERNEL_VERSIONS and source_version are part of this module's
# interface too: callers know kernels.py, not where the sources come from.
from ktap.boards.sources import (DEFAULT_KERNEL, KERNEL_VERSIONS, KernelError,  # noqa: F401
                                 check_version, ensure_source, source_version)
from ktap.core.cache import cache_root, locked
from ktap.core.tools import require_cross_gcc, require_tool
from ktap.core.targets import TARGETS_DIR, Target, get_target

# Bump when the steps in build_kernel() change in a way that changes the output.
RECIPE_VERSION = 1

COMMON_FRAGMENT = TARGETS_DIR / "common.config"
# Kernel variants: fragments merged, in this order, after the board's own
# (see variant_fragment()). The PREEMPT_RT kernel is a two-CPU one with RT
# and its checkers on top.
VARIANT_FRAGMENTS = {"debug": (TARGETS_DIR / "debug.config",),
                     "smp": (TARGETS_DIR / "smp.config",),
                     "rt": (TARGETS_DIR / "smp.config", TARGETS_DIR / "rt.config")}
# Variants that exist only for some targets; a variant not listed here exists
# for every target. QEMU's malta and ppce500 boards would need their own SMP
# bring-up work, so "smp" is x86_64, arm and arm64 only. PREEMPT_RT needs
# ARCH_SUPPORTS_RT, which 6.12 selects on x86 and arm64 (and riscv), not on
# arm, mips or powerpc.
VARIANT_TARGETS = {"smp": ("x86_64", "arm", "arm64"), "rt": ("x86_64", "arm64")}
# Variants that exist only for some kernel versions: PREEMPT_RT is in mainline
# from 6.12; 5.10 and 6.1 have the option but no architecture selects
# ARCH_SUPPORTS_RT without the out-of-tree RT patch set, which Debian's
# linux-source-<version> does not apply.
VARIANT_KERNELS = {"rt": ("6.12",)}
# What one kernel version needs beyond (or instead of) the fragments above,
# merged after the board's fragment and before a variant's.
VERSION_FRAGMENTS = TARGETS_DIR / "kernels"

# (target, version) pairs whose kernel builds but cannot run a board, and why.
UNSUPPORTED = {
    ("powerpc", "5.10"):
        "QEMU's e500v2 raises the FP-unavailable trap for floating-point instructions, and "
        "5.10 (arch/powerpc/kernel/head_fsl_booke.S) sends that trap to unknown_exception "
        "instead of the math emulator (6.1 and later route it to emulation), so the board's "
        "hard-float static programs die at their first FP instruction",
}

# Tools a kernel build needs, with the Debian package that provides each one.
BUILD_TOOLS = {
    "make": "make", "gcc": "gcc", "bc": "bc", "flex": "flex", "bison": "bison",
    "xz": "xz-utils", "tar": "tar", "perl": "perl",
}

def compiler_version(target: Target) -> str:
    r = subprocess.run([require_cross_gcc(target), "-dumpfullversion", "-dumpversion"],
                       capture_output=True, text=True)
    return r.stdout.strip()


def config_key(target: Target, version: str, compiler: str, variant: str | None = None,
               kernel: str = DEFAULT_KERNEL) -> str:
    # Not a ContentKey: built kernels are named by this hash, and a new
    # scheme would orphan every warm kernel cache.
    h = hashlib.sha256()
    parts = [f"recipe={RECIPE_VERSION}", f"target={target.name}",
             f"arch={target.kernel_arch}", f"cross={target.cross_compile}",
             f"source={version}", f"cc={compiler}",
             COMMON_FRAGMENT.read_text(), target.config_fragment.read_text()]
    # The default kernel's (and variant's) key stays what it always was;
    # another version adds its name, its fragment and its make variables.
    if kernel != DEFAULT_KERNEL or version_fragment(target, kernel).strip():
        parts += [f"kernel={check_version(kernel)}", version_fragment(target, kernel),
                  " ".join(version_make_vars(target, kernel))]
    if variant:
        parts += [f"variant={variant}", variant_fragment(target, variant)]
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def build_dir(target: Target, variant: str | None = None, kernel: str = DEFAULT_KERNEL) -> Path:
    # The default's source_version() keeps its old call, no argument.
    version = source_version() if kernel == DEFAULT_KERNEL else source_version(kernel)
    key = config_key(target, version, compiler_version(target), variant, kernel)
    words = [target.name] + ([kernel] if kernel != DEFAULT_KERNEL else []) + \
        ([variant] if variant else [])
    return cache_root() / "kernels" / f"{'-'.join(words)}-{key}"


def check_supported(target: Target, kernel: str) -> None:
    why = UNSUPPORTED.get((target.name, kernel))
    if why:
        others = [v for v in KERNEL_VERSIONS if (target.name, v) not in UNSUPPORTED]
        raise KernelError(f"kernel {kernel} cannot run the {target.name} board: {why}; hint: "
                          f"use --kernel {' or '.join(others)} on {target.name}")


def check_variant_target(target: Target, variant: str) -> None:
    """Refuses a variant that does not exist for this target (VARIANT_TARGETS)."""
    only = VARIANT_TARGETS.get(variant)
    if only is not None and target.name not in only:
        names = f"{', '.join(only[:-1])} and {only[-1]}" if len(only) > 1 else only[0]
        raise KernelError(f"the {variant} variant exists for {names}, not for {target.name}")


def check_variant_kernel(variant: str, kernel: str) -> None:
    """Refuses a variant that does not exist for this kernel version (VARIANT_KERNELS)."""
    only = VARIANT_KERNELS.get(variant)
    if only is not None and kernel not in only:
        raise KernelError(f"the {variant} variant exists for kernel {' and '.join(only)}, not "
                          f"for {kernel}; hint: add --kernel {only[-1]}")


def variant_fragment(target: Target, variant: str) -> str:
    """The lines of a variant's fragments that apply to `target`, in merge order."""
    paths = VARIANT_FRAGMENTS.get(variant)
    if paths is None:
        raise KernelError(f"unknown kernel variant {variant!r} "
                          f"(known: {', '.join(sorted(VARIANT_FRAGMENTS))})")
    check_variant_target(target, variant)
    return "".join(fragment_for(target, path.read_text()) for path in paths)


def version_fragment(target: Target, kernel: str = DEFAULT_KERNEL) -> str:
    """The lines of targets/kernels/<version>.config that apply to `target`
    ("" when the version has no fragment)."""
    path = VERSION_FRAGMENTS / f"{check_version(kernel)}.config"
    return fragment_for(target, path.read_text()) if path.exists() else ""


def version_make_vars(target: Target, kernel: str = DEFAULT_KERNEL) -> list[str]:
    """make variables a kernel version needs on this target, from the
    fragment's ``#@ make: VAR=VALUE`` lines (those that apply to `target`)."""
    path = VERSION_FRAGMENTS / f"{check_version(kernel)}.config"
    if not path.exists():
        return []
    return [line.split(":", 1)[1].strip() for line in fragment_for(
        target, path.read_text(), keep_make=True).splitlines()
        if line.startswith("#@ make:")]


def fragment_for(target: Target, text: str, keep_make: bool = False) -> str:
    """The lines of a fragment that apply to `target`.

    A line ``#@ only: NAME ...`` restricts the lines after it to those
    targets, until the next ``#@ only``/``#@ all`` line (``#@ all`` ends the
    restriction). ``#@ make: VAR=VALUE`` lines are make variables, kept
    only with keep_make.
    """
    out, applies = [], True
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#@ make:"):
            if applies and keep_make:
                out.append(stripped)
            continue
        if stripped.startswith("#@"):
            words = stripped[2:].replace(":", " ").split()
            applies = not words or words[0] == "all" or (
                words[0] == "only" and target.name in words[1:])
            continue
        if applies:
            out.append(line)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- fragments

def parse_fragment(text: str) -> dict[str, str]:
    """Map CONFIG_FOO to its wanted value: 'y', 'm', a literal, or 'n' for
    '# CONFIG_FOO is not set'."""
    wanted = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# CONFIG_") and line.endswith(" is not set"):
            wanted[line[2:-len(" is not set")]] = "n"
        elif line.startswith("CONFIG_") and "=" in line:
            name, value = line.split("=", 1)
            wanted[name] = "n" if value == "n" else value
    return wanted


def fragment_lines(wanted: dict[str, str]) -> str:
    return "".join(f"# {k} is not set\n" if v == "n" else f"{k}={v}\n" for k, v in wanted.items())


def wanted_options(target: Target, variant: str | None = None,
                   kernel: str = DEFAULT_KERNEL) -> dict[str, str]:
    wanted = parse_fragment(COMMON_FRAGMENT.read_text())
    wanted.update(parse_fragment(target.config_fragment.read_text()))
    wanted.update(parse_fragment(version_fragment(target, kernel)))
    if variant:
        wanted.update(parse_fragment(variant_fragment(target, variant)))
    return wanted


def config_mismatches(wanted: dict[str, str], config_text: str) -> list[str]:
    have = parse_fragment(config_text)
    bad = []
    for name, value in wanted.items():
        got = have.get(name, "n")
        if got != value:
            bad.append(f"{name}: wanted {value}, got {got}")
    return bad


# ---------------------------------------------------------------- build

@dataclass
class KernelBuild:
    """A kernel a board boots, and what a module for it is built against."""
    target: str
    directory: Path             # kbuild dir for out-of-tree modules (make -C directory M=...)
    image: Path                 # what QEMU's -kernel boots
    seconds: float | None       # duration of the cold build, if this cache entry recorded one
    cached: bool
    kernel: str = "6.1"         # "5.10", "6.1", "6.12", "debian", "debian-rt"
    cpus: int = 1               # QEMU -smp for this kernel
    memory: str | None = None   # QEMU -m, when the target's default is too small
    # Modules the kernel needs before ktap can run (virtio, consoles), loaded
    # by the initramfs's init in this order before the first command.
    boot_modules: tuple[Path, ...] = ()
    system_map: Path | None = None
    config: Path | None = None  # the kernel's .config


def kernel_image(target: Target, directory: Path) -> Path:
    return directory / target.qemu["kernel_image"]


def build_record(target: Target, directory: Path, seconds: float | None, cached: bool,
                 kernel: str = DEFAULT_KERNEL) -> KernelBuild:
    return KernelBuild(target.name, directory, kernel_image(target, directory), seconds, cached,
                       kernel=kernel, system_map=directory / "System.map",
                       config=directory / ".config")


def cached_kernel(target: Target, variant: str | None = None,
                  kernel: str = DEFAULT_KERNEL) -> KernelBuild | None:
    directory = build_dir(target, variant, kernel)
    stamp = directory / "ktap-build.json"
    if not stamp.exists() or not kernel_image(target, directory).exists():
        return None
    info = json.loads(stamp.read_text())
    return build_record(target, directory, info.get("seconds"), True, kernel)


def ensure_kernel(target: Target | str, progress: bool = True, variant: str | None = None,
                  kernel: str = DEFAULT_KERNEL) -> Path:
    """Build directory of the target's kernel, building it on a cache miss.

    `kernel` is the version ("5.10", "6.1", "6.12"; KERNEL_VERSIONS), each
    built from Debian's linux-source-<version>. `variant` ("debug", "smp",
    "rt") adds that variant's fragments (VARIANT_FRAGMENTS). Both are part of the
    cache key, so each has its own build dir. A variant that does not exist
    for the target (VARIANT_TARGETS) or the version (VARIANT_KERNELS), or an
    unknown version, raises KernelError."""
    return ensure_kernel_build(target, progress, variant=variant, kernel=kernel).directory


def ensure_kernel_build(target: Target | str, progress: bool = True,
                        variant: str | None = None, kernel: str = DEFAULT_KERNEL) -> KernelBuild:
    target = get_target(target)
    check_version(kernel)   # refuse an unknown version or variant before touching any tool
    check_supported(target, kernel)
    if variant:
        variant_fragment(target, variant)
        check_variant_kernel(variant, kernel)
    hit = cached_kernel(target, variant, kernel)
    if hit:
        return hit
    # Built in place under a lock rather than by cached_dir(): a second process
    # waits for the first build instead of repeating minutes of work, and
    # ktap-build.json, written last, marks the tree complete.
    directory = build_dir(target, variant, kernel)
    directory.mkdir(parents=True, exist_ok=True)
    with locked(directory / ".lock"):
        hit = cached_kernel(target, variant, kernel)   # another process may have built it meanwhile
        if hit:
            return hit
        return build_kernel(target, directory, progress, variant=variant, kernel=kernel)


def make_command(target: Target, directory: Path, *goals: str,
                 kernel: str = DEFAULT_KERNEL) -> list[str]:
    cmd = [require_tool("make", "make"), "-C", str(ensure_source(kernel)), f"O={directory}",
           f"ARCH={target.kernel_arch}", f"-j{os.cpu_count() or 1}"]
    if target.cross_compile:
        cmd.append(f"CROSS_COMPILE={target.cross_compile}")
    return cmd + version_make_vars(target, kernel) + list(goals)


def image_goal(target: Target) -> str:
    # powerpc's default goal wraps the image into a uImage, which needs
    # u-boot's mkimage; QEMU boots the ELF vmlinux directly, so ask for that.
    return Path(target.qemu["kernel_image"]).name


def build_label(target: Target, variant: str | None, kernel: str) -> str:
    extra = [kernel] if kernel != DEFAULT_KERNEL else []
    extra += [variant] if variant else []
    return f"{target.name} ({', '.join(extra)})" if extra else target.name


def build_kernel(target: Target, directory: Path, progress: bool = True,
                 variant: str | None = None, kernel: str = DEFAULT_KERNEL) -> KernelBuild:
    for tool, package in BUILD_TOOLS.items():
        require_tool(tool, package)
    require_cross_gcc(target)
    log_path = directory / "ktap-build.log"
    started = time.monotonic()
    label = build_label(target, variant, kernel)
    with open(log_path, "a") as log:
        log.write(f"==== ktap kernel build for {label} in {directory}\n")
        run = _StepRunner(label, log, log_path, started, progress)
        if not (directory / ".config").exists() or not (directory / ".ktap-config-merged").exists():
            run.step("tinyconfig", make_command(target, directory, "tinyconfig", kernel=kernel))
            merge_fragments(target, directory, variant, kernel)
            run.step("olddefconfig", make_command(target, directory, "olddefconfig",
                                                  kernel=kernel))
            verify_config(target, directory, variant, kernel)
            (directory / ".ktap-config-merged").write_text("")
        # `modules` with no module to build still writes Module.symvers and
        # does modules_prepare, which out-of-tree module builds rely on.
        run.step("build", make_command(target, directory, image_goal(target), "modules",
                                       kernel=kernel))
    image = kernel_image(target, directory)
    if not image.exists():
        raise KernelError(f"kernel build finished but {image} is missing; log: {log_path}")
    seconds = round(time.monotonic() - started, 1)
    (directory / "ktap-build.json").write_text(json.dumps({
        "target": target.name, "variant": variant, "kernel": kernel,
        "image": str(image.relative_to(directory)),
        "seconds": seconds, "source_version": source_version(kernel),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }, indent=1) + "\n")
    _progress(f"kernel for {label} built in {_fmt_elapsed(seconds)}: {directory}")
    return build_record(target, directory, seconds, False, kernel)


def fragment_names(target: Target, variant: str | None, kernel: str) -> list[str]:
    names = [str(COMMON_FRAGMENT), str(target.config_fragment)]
    if version_fragment(target, kernel):
        names.append(str(VERSION_FRAGMENTS / f"{kernel}.config"))
    if variant:
        names += [str(path) for path in VARIANT_FRAGMENTS[variant]]
    return names


def merge_fragments(target: Target, directory: Path, variant: str | None = None,
                    kernel: str = DEFAULT_KERNEL) -> None:
    # Kconfig keeps the last assignment of a symbol, so appending the
    # fragments (common first, board, version, variant) and running
    # olddefconfig merges them.
    config = directory / ".config"
    with open(config, "a") as f:
        f.write("\n# ---- ktap: " + " + ".join(
            Path(n).relative_to(TARGETS_DIR.parent).as_posix()
            for n in fragment_names(target, variant, kernel)) + "\n")
        f.write(fragment_lines(wanted_options(target, variant, kernel)))


def verify_config(target: Target, directory: Path, variant: str | None = None,
                  kernel: str = DEFAULT_KERNEL) -> None:
    bad = config_mismatches(wanted_options(target, variant, kernel),
                            (directory / ".config").read_text())
    if bad:
        (directory / ".config").rename(directory / ".config.rejected")
        raise KernelError(
            f"kernel config for {build_label(target, variant, kernel)} lost options after "
            f"the merge (unmet dependencies?):\n  " + "\n  ".join(bad) +
            f"\nfragments: {', '.join(fragment_names(target, variant, kernel))}; "
            f"rejected config kept as {directory / '.config.rejected'}")


# ---------------------------------------------------------------- progress

def _fmt_elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s"


def _progress(msg: str) -> None:
    print(f"ktap: {msg}", file=sys.stderr, flush=True)


class _StepRunner:
    """Runs make steps with all output in the log and a short live status on stderr."""

    def __init__(self, name: str, log, log_path: Path, started: float, enabled: bool):
        self.name, self.log, self.log_path = name, log, log_path
        self.started, self.enabled = started, enabled
        self.tty = sys.stderr.isatty()

    def step(self, label: str, cmd: list[str]) -> None:
        self.log.write("$ " + " ".join(cmd) + "\n")
        self.log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", bufsize=1)
        tail: list[str] = []
        last_shown = 0.0
        for line in proc.stdout:
            self.log.write(line)
            tail = (tail + [line.rstrip()])[-20:]
            now = time.monotonic()
            # A terminal gets a status line redrawn often; a pipe or CI log gets
            # one line every 15 s so it shows progress without flooding.
            if self.enabled and now - last_shown >= (0.5 if self.tty else 15):
                last_shown = now
                self._status(label, line.strip())
        rc = proc.wait()
        self.log.flush()
        if self.enabled and self.tty:
            sys.stderr.write("\r\033[K")
        if rc != 0:
            raise KernelError(
                f"kernel {label} for {self.name} failed (make exit {rc}); last lines:\n  "
                + "\n  ".join(tail) + f"\nfull log: {self.log_path}")

    def _status(self, label: str, line: str) -> None:
        msg = f"ktap: kernel {self.name} [{label}] {_fmt_elapsed(time.monotonic() - self.started)}  {line[:90]}"
        if self.tty:
            sys.stderr.write("\r\033[K" + msg)
            sys.stderr.flush()
        else:
            print(msg, file=sys.stderr, flush=True)
