"""The boards' initramfs: static guest programs, newc cpio archives, the
cached base image and the per-run archive appended to it.

Cache layout (content-hash cache, core/cache.py)::

    $KTAP_CACHE/initramfs/<target>-<key>/
        init                  the static init
        sysroot/              bin/ktapw (static), bin/ktapdyn (dynamic), lib/ with
                              libktapdyn.so, libc.so.6 and the loader: unstripped,
                              where user-space probes are resolved
        stripped/             the board's copies of ktapw, ktapdyn, libktapdyn.so
        base.cpio.gz          /init, /bin/ktapw, /bin/ktapdyn, /lib/..., /dev/console,
                              /dev/null, empty dirs
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
import shutil
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
from ktap.symbols.readers import open_elf

GUEST_SOURCES = ("init.c", "ktapw.c", "ktapdyn.c", "ktapdyn_lib.c")
# Bump when build_guest_programs() or base_archive_entries() change output.
INITRAMFS_RECIPE_VERSION = 2
BASE_IMAGE = "base.cpio.gz"
# The unstripped guest programs and the libraries the dynamic one loads, laid
# out as on the board: where user-space probes are resolved (guest_sysroot()).
SYSROOT = "sysroot"
# Where init finds the modules a stock kernel needs at boot (guest/init.c).
BOOT_MODULES_DIR = "lib/ktap-boot"
BOOT_MODULES_FILE = "etc/ktap/boot-modules"
LOCAL_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
SDT_PACKAGE = "systemtap-sdt-dev"

# ---------------------------------------------------------------- guest programs

def guest_inputs() -> set[Path]:
    """The guest sources and every file they include with #include "...",
    which may lie outside guest/ (init.c shares kmod's CRC-32)."""
    todo = [GUEST_DIR / source for source in GUEST_SOURCES]
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
                     target.cross_compile, compiler_identity(require_cross_gcc(target)),
                     " ".join(target.user.guest_cflags))
    files = guest_inputs() | set(_sdt_headers())
    return key.add_files(files).hex()


def initramfs_dir(target: Target) -> Path:
    return cache_root() / "initramfs" / f"{target.name}-{initramfs_key(target)}"


def guest_sysroot(target: Target | str) -> Path:
    """The board's files as the host resolves user-space probes in them:
    bin/ktapw, bin/ktapdyn unstripped, lib/ with libktapdyn.so, the target's
    libc.so.6 and its loader. Built with the base initramfs."""
    target = get_target(target)
    base_initramfs(target)
    return initramfs_dir(target) / SYSROOT


def _sdt_headers() -> list[Path]:
    """sys/sdt.h and sys/sdt-config.h: Debian puts them in the host's
    multiarch include directory, which a cross compiler does not search."""
    for d in [Path("/usr/include/sys"), *sorted(Path("/usr/include").glob("*/sys"))]:
        if (d / "sdt.h").is_file() and (d / "sdt-config.h").is_file():
            return [d / "sdt.h", d / "sdt-config.h"]
    return []


def _sdt_include_dir(directory: Path) -> Path:
    headers = _sdt_headers()
    if not headers:
        raise BoardError(f"sys/sdt.h not found: install the Debian package '{SDT_PACKAGE}' "
                         f"(apt-get install {SDT_PACKAGE}, or run scripts/setup.sh)")
    inc = directory / "include"
    (inc / "sys").mkdir(parents=True, exist_ok=True)
    for h in headers:
        shutil.copyfile(h, inc / "sys" / h.name)
    return inc


def _gcc(target: Target, args: list[str], what: str) -> None:
    gcc = require_cross_gcc(target)
    r = subprocess.run([gcc, *args], capture_output=True, text=True)
    if r.returncode != 0:
        hint = ""
        if "cannot find -lc" in r.stderr or "crt1.o" in r.stderr:
            pkg = target.packages.libc
            hint = f"\n(C library missing: install the Debian package '{pkg}')"
        raise BoardError(f"{gcc} failed on {what}:\n{r.stderr.strip()}{hint}")


def compile_ktapw(target: Target, output: Path, strip: bool = True) -> None:
    """ktapw alone, as the boards have it (tests that need no initramfs)."""
    inc = _sdt_include_dir(output.parent / "ktapw-include")
    compile_static(target, GUEST_DIR / "ktapw.c", output,
                   [f"-I{inc}", *target.user.guest_cflags, "-fno-omit-frame-pointer"], strip)


def compile_static(target: Target, source: Path, output: Path, flags: Sequence[str] = (),
                   strip: bool = True) -> None:
    _gcc(target, ["-static", "-O2", *(["-s"] if strip else []), "-Wall", *flags, "-o",
                  str(output), str(source)], str(source))


def _strip(target: Target, src: Path, out: Path, library: bool = False) -> None:
    """A stripped copy that keeps the build-id note of the unstripped one (gcc -s
    would link a different file, with another build-id)."""
    tool = require_cross_gcc(target)[:-3] + "strip"
    r = subprocess.run([tool, "--strip-unneeded" if library else "--strip-all", "-o", str(out),
                        str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        raise BoardError(f"{tool} failed on {src}:\n{r.stderr.strip()}")


def _print_file_name(target: Target, name: str) -> Path:
    gcc = require_cross_gcc(target)
    r = subprocess.run([gcc, f"-print-file-name={name}"], capture_output=True, text=True)
    found = Path(r.stdout.strip())
    if not found.is_absolute() or not found.is_file():
        raise BoardError(f"{gcc} knows no {name}: install the Debian package "
                         f"'{target.packages.libc}'")
    return found.resolve()


def _interpreter(program: Path) -> str:
    f, elf = open_elf(program)
    with f:
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_INTERP":
                return seg.get_interp_name()
    raise BoardError(f"{program} names no program interpreter")


def build_guest_programs(target: Target, directory: Path) -> dict[str, Path]:
    """The guest programs: {archive path: host file}. init and ktapw are
    static; ktapdyn is dynamic, with its library, libc and loader. The
    unstripped copies stay under SYSROOT for offline probe resolution."""
    sysroot = directory / SYSROOT
    for d in ("bin", "lib"):
        (sysroot / d).mkdir(parents=True, exist_ok=True)
    user = [*target.user.guest_cflags, "-fno-omit-frame-pointer"]
    compile_static(target, GUEST_DIR / "init.c", directory / "init")
    inc = _sdt_include_dir(directory)
    compile_static(target, GUEST_DIR / "ktapw.c", sysroot / "bin" / "ktapw",
                   [f"-I{inc}", *user], strip=False)
    lib = sysroot / "lib" / "libktapdyn.so"
    _gcc(target, ["-shared", "-fPIC", "-O2", "-Wall", *user, "-o", str(lib),
                  str(GUEST_DIR / "ktapdyn_lib.c")], "ktapdyn_lib.c")
    _gcc(target, ["-O2", "-Wall", *user, "-o", str(sysroot / "bin" / "ktapdyn"),
                  str(GUEST_DIR / "ktapdyn.c"), f"-L{lib.parent}", "-lktapdyn"], "ktapdyn.c")
    interp = _interpreter(sysroot / "bin" / "ktapdyn")
    runtime = {"lib/libc.so.6": _print_file_name(target, "libc.so.6"),
               interp.lstrip("/"): _print_file_name(target, Path(interp).name)}
    for rel, host in runtime.items():
        (sysroot / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(host, sysroot / rel)
    stripped = directory / "stripped"
    stripped.mkdir(exist_ok=True)
    programs = {"init": directory / "init"}
    for rel in ("bin/ktapw", "bin/ktapdyn", "lib/libktapdyn.so"):
        out = stripped / Path(rel).name
        _strip(target, sysroot / rel, out, library=rel.endswith(".so"))
        programs[rel] = out
    for rel in runtime:
        programs[rel] = sysroot / rel
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
    files = {rel: (path.read_bytes(), 0o755) for rel, path in programs.items()}
    have = {e.path for e in entries}
    return entries + [e for e in file_entries(files) if e.path not in have]


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
