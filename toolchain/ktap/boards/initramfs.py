"""The boards' initramfs: static guest programs, newc cpio archives, the
cached base image and the per-run archive appended to it.

Cache layout (content-hash cache, core/cache.py)::

    $KTAP_CACHE/initramfs/<target>-<key>/
        init, ktapw           static guest programs
        base.cpio.gz          /init, /bin/ktapw, /dev/console, /dev/null, empty dirs
        ktap-build.json

Per run, a second gzip'd cpio archive (commands file + extra files) is
appended to base.cpio.gz: the kernel unpacks concatenated archives in order,
so the base is built once per target and never copied into a new archive.
A kernel that needs drivers as modules (Debian's stock kernels: virtio,
e1000) gets a third archive with them under /lib/ktap-boot and their load
order in /etc/ktap/boot-modules, which init reads before it says HELLO.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import re
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ktap.boards.errors import BoardError
from ktap.boards.frames import COMMANDS_FILE, encode_commands
from ktap.core.cache import ContentKey, cache_root, cached_dir
from ktap.core.paths import GUEST_DIR
from ktap.core.targets import Target, get_target
from ktap.core.tools import compiler_identity, require_cross_gcc

GUEST_PROGRAMS = {"init": "init.c", "ktapw": "ktapw.c"}
# Bump when build_guest_programs() or base_archive_entries() change output.
INITRAMFS_RECIPE_VERSION = 1
BASE_IMAGE = "base.cpio.gz"
# Where init finds the modules a stock kernel needs at boot (guest/init.c).
BOOT_MODULES_DIR = "lib/ktap-boot"
BOOT_MODULES_FILE = "etc/ktap/boot-modules"
LOCAL_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)

# ---------------------------------------------------------------- guest programs

def guest_inputs() -> set[Path]:
    """The guest sources and every file they include with #include "...",
    which may lie outside guest/ (init.c shares kmod's CRC-32)."""
    todo = [GUEST_DIR / source for source in GUEST_PROGRAMS.values()]
    seen: set[Path] = set()
    while todo:
        path = todo.pop().resolve()
        if path in seen:
            continue
        seen.add(path)
        todo += [path.parent / name for name in LOCAL_INCLUDE.findall(path.read_text())]
    return seen


def initramfs_key(target: Target) -> str:
    key = ContentKey(f"initramfs recipe {INITRAMFS_RECIPE_VERSION}", target.name,
                     target.cross_compile, compiler_identity(require_cross_gcc(target)))
    return key.add_files(guest_inputs()).hex()


def initramfs_dir(target: Target) -> Path:
    return cache_root() / "initramfs" / f"{target.name}-{initramfs_key(target)}"


def compile_static(target: Target, source: Path, output: Path) -> None:
    gcc = require_cross_gcc(target)
    r = subprocess.run([gcc, "-static", "-O2", "-s", "-Wall", "-o", str(output), str(source)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        hint = ""
        if "cannot find -lc" in r.stderr or "crt1.o" in r.stderr:
            pkg = target.packages.libc
            hint = f"\n(static C library missing: install the Debian package '{pkg}')"
        raise BoardError(f"{gcc} failed on {source}:\n{r.stderr.strip()}{hint}")


def build_guest_programs(target: Target, directory: Path) -> dict[str, Path]:
    programs = {}
    for name, source in GUEST_PROGRAMS.items():
        out = directory / name
        compile_static(target, GUEST_DIR / source, out)
        programs[name] = out
    return programs


# ---------------------------------------------------------------- cpio (newc)

@dataclass
class CpioEntry:
    path: str                 # inside the archive, no leading '/'
    mode: int                 # full st_mode: type bits and permissions
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def newc_archive(entries: list[CpioEntry]) -> bytes:
    """The "newc" cpio format the kernel's initramfs unpacker reads
    (Documentation/driver-api/early-userspace/buffer-format.rst)."""
    out = io.BytesIO()
    for ino, e in enumerate(entries + [CpioEntry("TRAILER!!!", 0)], start=1):
        name = e.path.encode() + b"\0"
        fields = [ino, e.mode, 0, 0, 1, 0, len(e.data), 0, 0, e.rdev[0], e.rdev[1],
                  len(name), 0]
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + name)
        out.write(b"\0" * (-out.tell() % 4))
        out.write(e.data)
        out.write(b"\0" * (-out.tell() % 4))
    return out.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    # mtime=0: the same entries give the same bytes, so images can be compared.
    return gzip.compress(data, compresslevel=6, mtime=0)


def directory_entries(paths: list[str]) -> list[CpioEntry]:
    dirs = set()
    for p in paths:
        parts = p.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return [CpioEntry(d, stat.S_IFDIR | 0o755) for d in sorted(dirs)]


def file_entries(files: dict[str, tuple[bytes, int]]) -> list[CpioEntry]:
    """Regular files ({archive path: (data, permissions)}) after the directories above them."""
    entries = directory_entries(list(files))
    return entries + [CpioEntry(p, stat.S_IFREG | mode, data) for p, (data, mode) in files.items()]


def base_archive_entries(programs: dict[str, Path]) -> list[CpioEntry]:
    entries = [CpioEntry(d, stat.S_IFDIR | 0o755)
               for d in ("bin", "sbin", "dev", "etc", "etc/ktap", "proc", "sys", "tmp", "root")]
    # The kernel opens /dev/console for init before devtmpfs is mounted.
    entries.append(CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries.append(CpioEntry("dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3)))
    entries.append(CpioEntry("init", stat.S_IFREG | 0o755, programs["init"].read_bytes()))
    entries.append(CpioEntry("bin/ktapw", stat.S_IFREG | 0o755, programs["ktapw"].read_bytes()))
    return entries


def base_initramfs(target: Target | str) -> Path:
    """The cached per-target initramfs with init and ktapw; built on a miss."""
    target = get_target(target)

    def build(directory: Path) -> None:
        started = time.monotonic()
        programs = build_guest_programs(target, directory)
        image = directory / BASE_IMAGE
        image.write_bytes(gzip_bytes(newc_archive(base_archive_entries(programs))))
        (directory / "ktap-build.json").write_text(json.dumps(
            {"target": target.name, "seconds": round(time.monotonic() - started, 2),
             "size": image.stat().st_size}, indent=1) + "\n")

    return cached_dir(initramfs_dir(target), build) / BASE_IMAGE


def run_archive(commands: list[list[str]] | None,
                extra_files: dict[str, str | Path] | None) -> bytes:
    files: dict[str, tuple[bytes, int]] = {}
    for guest_path, host_path in (extra_files or {}).items():
        host_path = Path(host_path)
        mode = 0o755 if os.access(host_path, os.X_OK) else 0o644
        files[guest_path.strip("/")] = (host_path.read_bytes(), mode)
    if commands is not None:
        files[COMMANDS_FILE] = (encode_commands(commands), 0o644)
    return gzip_bytes(newc_archive(file_entries(files)))


def boot_module_files(boot_modules: Sequence[Path]) -> dict[str, tuple[bytes, int]]:
    """The archive entries that make init load `boot_modules` (host .ko files,
    in load order) before it says HELLO: the modules and their list."""
    files: dict[str, tuple[bytes, int]] = {}
    guest_paths = []
    for i, module in enumerate(boot_modules):
        guest = f"{BOOT_MODULES_DIR}/{i:02d}-{Path(module).name}"
        files[guest] = (Path(module).read_bytes(), 0o644)
        guest_paths.append("/" + guest)
    if guest_paths:
        files[BOOT_MODULES_FILE] = ("".join(p + "\n" for p in guest_paths).encode(), 0o644)
    return files


def build_initramfs(target: Target | str, extra_files: dict[str, str | Path] | None = None,
                    commands: list[list[str]] | None = None, output: Path | None = None,
                    more: list[CpioEntry] = (), boot_modules: Sequence[Path] = ()) -> Path:
    """An initramfs for one run: the cached base plus extra files
    ({guest path: host path}), `more` entries as they are and, if given, the
    commands init runs in batch mode. boot_modules: host .ko files init loads,
    in this order, before its first command (KernelBuild.boot_modules)."""
    target = get_target(target)
    base = base_initramfs(target)
    if not extra_files and commands is None and not more and not boot_modules:
        return base
    if output is None:
        fd, name = tempfile.mkstemp(prefix=f"ktap-{target.name}-", suffix=".cpio.gz")
        os.close(fd)
        output = Path(name)
    data = base.read_bytes() + run_archive(commands, extra_files)
    if boot_modules:
        data += gzip_bytes(newc_archive(file_entries(boot_module_files(boot_modules))))
    if more:
        data += gzip_bytes(newc_archive(list(more)))
    output.write_bytes(data)
    return output
