"""Kernels for the QEMU boards, built from Debian's linux-source-6.1 and cached.

Cache layout (``$KTAP_CACHE``, default ``~/.cache/ktap``)::

    src/linux-source-6.1_<debian version>/   the extracted source, shared by all targets
    kernels/<target>-<key>/                   out-of-tree build dir (make O=...), kept whole
    kernels/<target>-<variant>-<key>/         the same for a variant ("debug", "smp")
        .config                               tinyconfig + targets/common.config + targets/<arch>/config
        ktap-build.log                        full output of every make step
        ktap-build.json                       written last: key, image path, build duration

The key hashes everything that changes the result: both fragments, the
source package version, the compiler version and the build recipe. The build
dir is never cleaned, so ``make -C <dir> M=<module dir> modules`` works
against it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ktap.core.cache import cache_root, cached_dir, locked
from ktap.core.tools import MissingTool, require_cross_gcc, require_tool
from ktap.core.targets import TARGETS_DIR, Target, get_target

# Bump when the steps in build_kernel() change in a way that changes the output.
RECIPE_VERSION = 1

COMMON_FRAGMENT = TARGETS_DIR / "common.config"
# Kernel variants: a fragment merged after the board's own (see variant_fragment()).
VARIANT_FRAGMENTS = {"debug": TARGETS_DIR / "debug.config", "smp": TARGETS_DIR / "smp.config"}
# Variants that exist only for some targets; a variant not listed here exists
# for every target. QEMU's malta and ppce500 boards would need their own SMP
# bring-up work, so "smp" is x86_64 and arm only.
VARIANT_TARGETS = {"smp": ("x86_64", "arm")}
DEFAULT_SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
SOURCE_PACKAGE = "linux-source-6.1"

# Tools a kernel build needs, with the Debian package that provides each one.
BUILD_TOOLS = {
    "make": "make", "gcc": "gcc", "bc": "bc", "flex": "flex", "bison": "bison",
    "xz": "xz-utils", "tar": "tar", "perl": "perl",
}


class KernelError(Exception):
    pass


def source_tarball() -> Path:
    return Path(os.environ.get("KTAP_LINUX_SOURCE", DEFAULT_SOURCE_TARBALL))


def source_version() -> str:
    """Debian version of the source package, so a package upgrade invalidates the cache."""
    tarball = source_tarball()
    if not tarball.exists():
        raise MissingTool(str(tarball), SOURCE_PACKAGE)
    if tarball == DEFAULT_SOURCE_TARBALL and shutil.which("dpkg-query"):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", SOURCE_PACKAGE],
                           capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    st = tarball.stat()
    return f"file-{st.st_size}-{int(st.st_mtime)}"


def compiler_version(target: Target) -> str:
    r = subprocess.run([require_cross_gcc(target), "-dumpfullversion", "-dumpversion"],
                       capture_output=True, text=True)
    return r.stdout.strip()


def config_key(target: Target, version: str, compiler: str, variant: str | None = None) -> str:
    # Not a ContentKey: built kernels are named by this hash, and a new
    # scheme would orphan every warm kernel cache.
    h = hashlib.sha256()
    parts = [f"recipe={RECIPE_VERSION}", f"target={target.name}",
             f"arch={target.kernel_arch}", f"cross={target.cross_compile}",
             f"source={version}", f"cc={compiler}",
             COMMON_FRAGMENT.read_text(), target.config_fragment.read_text()]
    if variant:   # the default kernel's key stays what it always was
        parts += [f"variant={variant}", variant_fragment(target, variant)]
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def build_dir(target: Target, variant: str | None = None) -> Path:
    key = config_key(target, source_version(), compiler_version(target), variant)
    name = f"{target.name}-{variant}" if variant else target.name
    return cache_root() / "kernels" / f"{name}-{key}"


def check_variant_target(target: Target, variant: str) -> None:
    """Refuses a variant that does not exist for this target (VARIANT_TARGETS)."""
    only = VARIANT_TARGETS.get(variant)
    if only is not None and target.name not in only:
        raise KernelError(f"the {variant} variant exists for {' and '.join(only)}, "
                          f"not for {target.name}")


def variant_fragment(target: Target, variant: str) -> str:
    """The lines of a variant's fragment that apply to `target`.

    A line ``#@ only: NAME ...`` restricts the lines after it to those
    targets, until the next ``#@`` line (``#@ all`` ends the restriction).
    """
    path = VARIANT_FRAGMENTS.get(variant)
    if path is None:
        raise KernelError(f"unknown kernel variant {variant!r} "
                          f"(known: {', '.join(sorted(VARIANT_FRAGMENTS))})")
    check_variant_target(target, variant)
    out, applies = [], True
    for line in path.read_text().splitlines():
        stripped = line.strip()
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


def wanted_options(target: Target, variant: str | None = None) -> dict[str, str]:
    wanted = parse_fragment(COMMON_FRAGMENT.read_text())
    wanted.update(parse_fragment(target.config_fragment.read_text()))
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


# ---------------------------------------------------------------- source

def ensure_source() -> Path:
    """Extract the kernel source once; every target builds out of tree from it."""
    version = source_version()
    src = cache_root() / "src" / f"{SOURCE_PACKAGE}_{version}"
    if src.exists():
        return src

    def extract(tmp: Path) -> None:
        _progress(f"extracting {source_tarball()} into {src}")
        r = subprocess.run(["tar", "-C", str(tmp), "--strip-components=1", "-xf",
                            str(source_tarball())], capture_output=True, text=True)
        if r.returncode != 0:
            raise KernelError(f"extracting {source_tarball()} failed: {r.stderr.strip()}")

    # The lock spares a second process the minute-long extraction, not only the race.
    with locked(src.parent / ".extract.lock"):
        return cached_dir(src, extract)


# ---------------------------------------------------------------- build

@dataclass
class KernelBuild:
    target: str
    directory: Path
    image: Path
    seconds: float | None       # duration of the cold build, if this cache entry recorded one
    cached: bool


def kernel_image(target: Target, directory: Path) -> Path:
    return directory / target.qemu["kernel_image"]


def cached_kernel(target: Target, variant: str | None = None) -> KernelBuild | None:
    directory = build_dir(target, variant)
    stamp = directory / "ktap-build.json"
    if not stamp.exists() or not kernel_image(target, directory).exists():
        return None
    info = json.loads(stamp.read_text())
    return KernelBuild(target.name, directory, kernel_image(target, directory),
                       info.get("seconds"), cached=True)


def ensure_kernel(target: Target | str, progress: bool = True, variant: str | None = None) -> Path:
    """Build directory of the target's kernel, building it on a cache miss.

    `variant` ("debug", "smp") adds that variant's fragment (VARIANT_FRAGMENTS);
    it is part of the cache key, so each variant has its own build dir. A
    variant that does not exist for the target (VARIANT_TARGETS) raises
    KernelError."""
    return ensure_kernel_build(target, progress, variant=variant).directory


def ensure_kernel_build(target: Target | str, progress: bool = True,
                        variant: str | None = None) -> KernelBuild:
    target = get_target(target)
    if variant:   # refuse an unknown or unsupported variant before touching any tool
        variant_fragment(target, variant)
    hit = cached_kernel(target, variant)
    if hit:
        return hit
    # Built in place under a lock rather than by cached_dir(): a second process
    # waits for the first build instead of repeating minutes of work, and
    # ktap-build.json, written last, marks the tree complete.
    directory = build_dir(target, variant)
    directory.mkdir(parents=True, exist_ok=True)
    with locked(directory / ".lock"):
        hit = cached_kernel(target, variant)   # another process may have built it meanwhile
        if hit:
            return hit
        return build_kernel(target, directory, progress, variant=variant)


def make_command(target: Target, directory: Path, *goals: str) -> list[str]:
    cmd = [require_tool("make", "make"), "-C", str(ensure_source()), f"O={directory}",
           f"ARCH={target.kernel_arch}", f"-j{os.cpu_count() or 1}"]
    if target.cross_compile:
        cmd.append(f"CROSS_COMPILE={target.cross_compile}")
    return cmd + list(goals)


def image_goal(target: Target) -> str:
    # powerpc's default goal wraps the image into a uImage, which needs
    # u-boot's mkimage; QEMU boots the ELF vmlinux directly, so ask for that.
    return Path(target.qemu["kernel_image"]).name


def build_kernel(target: Target, directory: Path, progress: bool = True,
                 variant: str | None = None) -> KernelBuild:
    for tool, package in BUILD_TOOLS.items():
        require_tool(tool, package)
    require_cross_gcc(target)
    log_path = directory / "ktap-build.log"
    started = time.monotonic()
    with open(log_path, "a") as log:
        label = f"{target.name} ({variant})" if variant else target.name
        log.write(f"==== ktap kernel build for {label} in {directory}\n")
        run = _StepRunner(label, log, log_path, started, progress)
        if not (directory / ".config").exists() or not (directory / ".ktap-config-merged").exists():
            run.step("tinyconfig", make_command(target, directory, "tinyconfig"))
            merge_fragments(target, directory, variant)
            run.step("olddefconfig", make_command(target, directory, "olddefconfig"))
            verify_config(target, directory, variant)
            (directory / ".ktap-config-merged").write_text("")
        # `modules` with no module to build still writes Module.symvers and
        # does modules_prepare, which out-of-tree module builds rely on.
        run.step("build", make_command(target, directory, image_goal(target), "modules"))
    image = kernel_image(target, directory)
    if not image.exists():
        raise KernelError(f"kernel build finished but {image} is missing; log: {log_path}")
    seconds = round(time.monotonic() - started, 1)
    (directory / "ktap-build.json").write_text(json.dumps({
        "target": target.name, "variant": variant, "image": str(image.relative_to(directory)),
        "seconds": seconds, "source_version": source_version(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }, indent=1) + "\n")
    _progress(f"kernel for {label} built in {_fmt_elapsed(seconds)}: {directory}")
    return KernelBuild(target.name, directory, image, seconds, cached=False)


def merge_fragments(target: Target, directory: Path, variant: str | None = None) -> None:
    # Kconfig keeps the last assignment of a symbol, so appending the
    # fragments (common first, board second) and running olddefconfig merges them.
    config = directory / ".config"
    with open(config, "a") as f:
        f.write("\n# ---- ktap: targets/common.config + targets/%s/config%s\n"
                % (target.name, f" + {VARIANT_FRAGMENTS[variant].name}" if variant else ""))
        f.write(fragment_lines(wanted_options(target, variant)))


def verify_config(target: Target, directory: Path, variant: str | None = None) -> None:
    bad = config_mismatches(wanted_options(target, variant), (directory / ".config").read_text())
    if bad:
        (directory / ".config").rename(directory / ".config.rejected")
        raise KernelError(
            f"kernel config for {target.name} lost options after the merge "
            f"(unmet dependencies?):\n  " + "\n  ".join(bad) +
            f"\nfragments: {COMMON_FRAGMENT}, {target.config_fragment}"
            f"{', ' + str(VARIANT_FRAGMENTS[variant]) if variant else ''}; "
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
