"""QEMU boards: guest programs, initramfs images, boot, and the framed console protocol.

One boot runs a whole list of commands: the host writes them into the
initramfs, guest/init.c runs them one after another and reports each one's
output and exit status as frames on the serial console, then the host stops
QEMU. The frame format is described in guest/init.c and parsed by
FrameParser below.

Cache layout (next to the kernels, see kernel.py)::

    $KTAP_CACHE/initramfs/<target>-<key>/
        init, ktapw           static guest programs
        base.cpio.gz          /init, /bin/ktapw, /dev/console, /dev/null, empty dirs
        ktap-build.json

Per run, a second gzip'd cpio archive (commands file + extra files) is
appended to base.cpio.gz: the kernel unpacks concatenated archives in order.
"""
from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import json
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ktap.boards import kernels as kernel
from ktap.core.cache import cache_root
from ktap.core.tools import MissingTool, require_cross_gcc, require_tool
from ktap.core.targets import Target, get_target
from ktap.core.paths import GUEST_DIR

GUEST_PROGRAMS = {"init": "init.c", "ktapw": "ktapw.c"}
COMMANDS_FILE = "etc/ktap/commands"
PROTOCOL_VERSION = 1
# Bump when build_guest_programs() or base_archive_entries() change output.
INITRAMFS_RECIPE_VERSION = 1
DEFAULT_TIMEOUT = 120.0

# CPUs of a board booted with a kernel variant (run_commands(...,
# kernel_variant=...)); a variant not listed boots one CPU.
VARIANT_CPUS = {"smp": 2}
# QEMU before this version livelocks an SMP guest under -icount: its
# round-robin loop gives the first vCPU the whole budget up to the next timer,
# and a vCPU that busy-waits for the other one (x86 do_boot_cpu, arm
# stop_machine) uses all of it, so the other vCPU never runs. Fixed upstream
# by "accel/tcg/tcg-accel-ops-rr: ensure fairness with icount" (QEMU 8.1).
ICOUNT_SMP_MIN_QEMU = (8, 1)


def variant_cpus(kernel_variant: str | None) -> int:
    return VARIANT_CPUS.get(kernel_variant, 1) if kernel_variant else 1


def variant_qemu_args(kernel_variant: str | None) -> list[str]:
    """Extra QEMU arguments for a kernel variant: -smp N for "smp".

    One core per socket: without ACPI (tinyconfig has none) the x86_64 kernel
    finds CPUs in SeaBIOS's MP table, which lists only the first CPU of each
    package, so QEMU's default topology (N cores in one socket) would leave
    the guest with one CPU. arm virt takes the same topology."""
    cpus = variant_cpus(kernel_variant)
    return ["-smp", f"{cpus},sockets={cpus}"] if cpus > 1 else []


def qemu_version(binary: str) -> tuple[int, ...]:
    """(major, minor) of a QEMU binary, from `--version`; () if unknown."""
    r = subprocess.run([binary, "--version"], capture_output=True, text=True)
    m = re.search(r"version (\d+)\.(\d+)", r.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else ()


def check_deterministic(qemu: str, kernel_variant: str | None) -> None:
    """Refuses -icount on a multi-CPU board where QEMU would livelock."""
    if variant_cpus(kernel_variant) <= 1:
        return
    version = qemu_version(qemu)
    if version and version < ICOUNT_SMP_MIN_QEMU:
        need = ".".join(map(str, ICOUNT_SMP_MIN_QEMU))
        raise BoardError(
            f"deterministic (-icount) runs of the {kernel_variant} board need QEMU {need} or "
            f"later; {qemu} is {'.'.join(map(str, version))}, whose round-robin vCPU loop "
            f"under -icount starves one CPU while the other busy-waits for it, and the "
            f"guest hangs (x86_64 bringing CPU 1 up, arm in stop_machine)")

# run_commands() runs all its commands in one boot; callers batching work
# per boot (the module runner, the test fixtures) rely on this.
ONE_BOOT_PER_RUN = True

QEMU_PACKAGES = {
    "qemu-system-arm": "qemu-system-arm",
    "qemu-system-mips": "qemu-system-mips",
    "qemu-system-ppc": "qemu-system-ppc",
    "qemu-system-x86_64": "qemu-system-x86",
}
LIBC_PACKAGES = {
    "arm-linux-gnueabihf-": "libc6-dev-armhf-cross",
    "mips-linux-gnu-": "libc6-dev-mips-cross",
    "powerpc-linux-gnu-": "libc6-dev-powerpc-cross",
    "": "libc6-dev",
}


class BoardError(Exception):
    def __init__(self, message: str, console: str = ""):
        self.console = console
        super().__init__(message)


class BoardTimeout(BoardError):
    pass


def console_tail(console: str, lines: int = 20) -> str:
    return "\n".join("  | " + l for l in console.splitlines()[-lines:])


def require_qemu(target: Target) -> str:
    binary = target.qemu["binary"]
    return require_tool(binary, QEMU_PACKAGES.get(binary, binary))


# ---------------------------------------------------------------- guest programs

def initramfs_key(target: Target) -> str:
    h = hashlib.sha256()
    h.update(f"recipe={INITRAMFS_RECIPE_VERSION};target={target.name};"
             f"cross={target.cross_compile};cc={kernel.compiler_version(target)}\0".encode())
    for name in sorted(GUEST_PROGRAMS):
        h.update((GUEST_DIR / GUEST_PROGRAMS[name]).read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def initramfs_dir(target: Target) -> Path:
    return cache_root() / "initramfs" / f"{target.name}-{initramfs_key(target)}"


def compile_static(target: Target, source: Path, output: Path) -> None:
    gcc = require_cross_gcc(target)
    r = subprocess.run([gcc, "-static", "-O2", "-s", "-Wall", "-o", str(output), str(source)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        hint = ""
        if "cannot find -lc" in r.stderr or "crt1.o" in r.stderr:
            pkg = LIBC_PACKAGES.get(target.cross_compile, "libc6-dev")
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
    return gzip.compress(data, compresslevel=6, mtime=0)


def directory_entries(paths: list[str]) -> list[CpioEntry]:
    dirs = set()
    for p in paths:
        parts = p.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return [CpioEntry(d, stat.S_IFDIR | 0o755) for d in sorted(dirs)]


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
    if isinstance(target, str):
        target = get_target(target)
    directory = initramfs_dir(target)
    image = directory / "base.cpio.gz"
    if image.exists():
        return image
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    programs = build_guest_programs(target, directory)
    tmp = image.with_suffix(".tmp")
    tmp.write_bytes(gzip_bytes(newc_archive(base_archive_entries(programs))))
    tmp.rename(image)
    (directory / "ktap-build.json").write_text(json.dumps(
        {"target": target.name, "seconds": round(time.monotonic() - started, 2),
         "size": image.stat().st_size}, indent=1) + "\n")
    return image


def encode_commands(commands: list[list[str]]) -> bytes:
    """The commands file guest/init.c reads: a line per command, hex arguments."""
    lines = []
    for argv in commands:
        if not argv:
            raise BoardError("empty command")
        lines.append(" ".join(a.encode().hex() for a in argv))
    return ("\n".join(lines) + "\n").encode()


def run_archive(commands: list[list[str]] | None,
                extra_files: dict[str, str | Path] | None) -> bytes:
    files: dict[str, tuple[bytes, int]] = {}
    for guest_path, host_path in (extra_files or {}).items():
        host_path = Path(host_path)
        mode = 0o755 if os.access(host_path, os.X_OK) else 0o644
        files[guest_path.strip("/")] = (host_path.read_bytes(), mode)
    if commands is not None:
        files[COMMANDS_FILE] = (encode_commands(commands), 0o644)
    entries = directory_entries(list(files))
    entries += [CpioEntry(p, stat.S_IFREG | mode, data) for p, (data, mode) in files.items()]
    return gzip_bytes(newc_archive(entries))


def build_initramfs(target: Target | str, extra_files: dict[str, str | Path] | None = None,
                    commands: list[list[str]] | None = None, output: Path | None = None) -> Path:
    """An initramfs for one run: the cached base plus extra files
    ({guest path: host path}) and, if given, the commands init runs in batch mode."""
    if isinstance(target, str):
        target = get_target(target)
    base = base_initramfs(target)
    if not extra_files and commands is None:
        return base
    if output is None:
        fd, name = tempfile.mkstemp(prefix=f"ktap-{target.name}-", suffix=".cpio.gz")
        os.close(fd)
        output = Path(name)
    output.write_bytes(base.read_bytes() + run_archive(commands, extra_files))
    return output


# ---------------------------------------------------------------- QEMU

def kernel_command_line(target: Target, extra: list[str] = ()) -> str:
    # panic=-1 plus QEMU's -no-reboot turns a guest panic into QEMU exiting,
    # so a broken boot fails fast instead of waiting for the timeout.
    args = [f"console={target.qemu['console']}", "rdinit=/init", "panic=-1"]
    args += target.qemu.get("append", [])
    return " ".join(args + list(extra))


def qemu_command(target: Target, kernel_image: Path, initrd: Path, *,
                 interactive: bool = False, deterministic: bool = False,
                 append: list[str] = (), agent_socket: Path | None = None,
                 ssh_port: int | None = None, kernel_variant: str | None = None) -> list[str]:
    """agent_socket: a second serial line for `ktaprun --serve` (guest device
    agent_device(target)) as a unix socket QEMU listens on. ssh_port: user
    networking with the guest's port 22 forwarded to 127.0.0.1:ssh_port (the
    guest gets 10.0.2.15/24 from ip= on the kernel command line).
    kernel_variant: the kernel variant booted, for variant_qemu_args()
    (-smp 2 for "smp")."""
    q = target.qemu
    cmd = [q["binary"], "-M", q["machine"]]
    if q.get("cpu"):
        cmd += ["-cpu", q["cpu"]]
    cmd += variant_qemu_args(kernel_variant)
    append = list(append)
    if ssh_port is not None:
        append.append(GUEST_IP_ARG)
    cmd += ["-m", str(q.get("memory", "256")), "-kernel", str(kernel_image),
            "-initrd", str(initrd), "-append", kernel_command_line(target, append),
            "-no-reboot"]
    if ssh_port is None:
        cmd += ["-net", "none"]
    else:
        cmd += ["-netdev", f"user,id=ktapnet,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
                "-device", "e1000,netdev=ktapnet"]
    if interactive:
        cmd += ["-nographic"]
    else:
        cmd += ["-display", "none", "-serial", "stdio", "-monitor", "none"]
    if deterministic:
        cmd += list(q.get("icount_args", ["-icount", "shift=0,sleep=off"]))
    if agent_socket is not None:
        chardev = f"socket,id=ktapagent,path={agent_socket},server=on,wait=off"
        if AGENT_LINES.get(target.name, ("uart",))[0] == "virtio":
            cmd += ["-device", "virtio-serial-device", "-chardev", chardev,
                    "-device", "virtconsole,chardev=ktapagent"]
        else:
            cmd += ["-chardev", chardev, "-serial", "chardev:ktapagent"]
    return cmd + list(q.get("extra_args", []))


# ---------------------------------------------------------------- frames

@dataclass
class CommandResult:
    argv: list[str]
    status: int | None = None           # exit status; 128+N when killed by signal N
    stdout: bytes = b""
    stderr: bytes = b""
    output: str = ""                    # stdout and stderr interleaved as they arrived
    seconds: float | None = None        # guest-side wall time
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == 0 and not self.errors


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


class FrameParser:
    """Turns console lines into command results; tolerant of any non-frame text."""

    MARK = "@@KTAP:"

    def __init__(self, commands: list[list[str]]):
        self.results = [CommandResult(list(argv)) for argv in commands]
        self.next_seq = 0
        self.errors: list[str] = []
        self.hello: list[str] | None = None
        self.hello_count = 0
        self.done = False

    def feed_line(self, line: str) -> str | None:
        """Parses one console line; returns the frame tag or None for other text."""
        at = line.find(self.MARK)
        if at < 0:
            return None
        frame = line[at + len(self.MARK):].rstrip("\r\n")
        body, sep, crc = frame.rpartition(":")
        if not sep or not self._crc_ok(body, crc):
            self.errors.append(f"corrupted frame (kernel output mixed in?): {line.strip()[:120]}")
            return None
        seq_text, _, rest = body.partition(":")
        fields = rest.split(":")
        seq = int(seq_text)
        if seq == 0 and fields[0] == "HELLO":
            self.next_seq = 0     # a reboot starts counting again
        elif seq != self.next_seq:
            self.errors.append(f"lost frames {self.next_seq}..{seq - 1}")
        self.next_seq = seq + 1
        self._apply(fields)
        return fields[0]

    @staticmethod
    def _crc_ok(body: str, crc: str) -> bool:
        try:
            return zlib.crc32(body.encode()) == int(crc, 16)
        except ValueError:
            return False

    def _result(self, index: str) -> CommandResult:
        i = int(index)
        while i >= len(self.results):      # the guest ran more than we know of
            self.results.append(CommandResult([]))
        return self.results[i]

    def _apply(self, fields: list[str]) -> None:
        tag = fields[0]
        if tag == "HELLO":
            self.hello = fields[1:]
            self.hello_count += 1
        elif tag in ("O", "E"):
            r = self._result(fields[1])
            try:
                data = base64.b64decode(fields[2], validate=True)
            except (binascii.Error, IndexError):
                r.errors.append("undecodable output frame")
                return
            if tag == "O":
                r.stdout += data
            else:
                r.stderr += data
            r.output += data.decode(errors="replace")
        elif tag == "END":
            r = self._result(fields[1])
            r.status = int(fields[2])
            try:
                r.seconds = float(fields[3])
            except (IndexError, ValueError):
                r.errors.append(f"guest could not run the command: {fields[3:]}")
        elif tag == "DONE":
            self.done = True

    def finish(self) -> None:
        for r in self.results:
            if r.status is None:
                r.errors.append("no exit status received")
        if self.errors:
            for r in self.results:
                r.errors.extend(self.errors)


# ---------------------------------------------------------------- running

def boot_files(target: Target, kernel_variant: str | None = None) -> Path:
    """Kernel image for the target, built or taken from the cache.
    kernel_variant="debug" boots the debug kernel (targets/debug.config),
    "smp" the two-CPU kernel of x86_64 and arm (targets/smp.config)."""
    if kernel_variant:
        return kernel.ensure_kernel_build(target, variant=kernel_variant).image
    return kernel.ensure_kernel_build(target).image


def run_commands(target: Target | str, commands: list[list[str]],
                 extra_files: dict[str, str | Path] | None = None,
                 timeout: float = DEFAULT_TIMEOUT, *, deterministic: bool = False,
                 console_loglevel: int | None = None, strict: bool = True,
                 kernel_variant: str | None = None) -> BoardRun:
    """Boots the target once and runs every command in order inside it.

    extra_files maps guest paths to host files added to the initramfs (e.g.
    {"/lib/ktapvm.ko": build/ktapvm.ko, "/bin/ktaprun": ...}); executables
    keep their x bit. Raises BoardTimeout if the board does not finish within
    timeout seconds, BoardError if QEMU stops early or (strict) if a frame
    was lost or corrupted. kernel_variant ("debug", "smp") boots that
    kernel variant with its CPU count (VARIANT_CPUS: 2 for "smp");
    deterministic=True with more than one CPU raises BoardError on a QEMU
    older than ICOUNT_SMP_MIN_QEMU.
    """
    if isinstance(target, str):
        target = get_target(target)
    qemu = require_qemu(target)
    if deterministic:
        check_deterministic(qemu, kernel_variant)
    image = boot_files(target, kernel_variant)
    with tempfile.TemporaryDirectory(prefix="ktap-board-") as tmp:
        initrd = build_initramfs(target, extra_files, commands, Path(tmp) / "initrd.cpio.gz")
        append = [] if console_loglevel is None else [f"ktap.loglevel={console_loglevel}"]
        cmd = qemu_command(target, image, initrd, deterministic=deterministic, append=append,
                           kernel_variant=kernel_variant)
        cmd[0] = qemu
        run = _drive_qemu(target, cmd, commands, timeout)
    if strict and run.frame_errors:
        raise BoardError(f"{target.name}: console frames damaged: {'; '.join(run.frame_errors[:5])}",
                         run.console)
    return run


def run_command(target: Target | str, argv: list[str], **kwargs) -> CommandResult:
    return run_commands(target, [argv], **kwargs).results[0]


def _drive_qemu(target: Target, cmd: list[str], commands: list[list[str]],
                timeout: float) -> BoardRun:
    parser = FrameParser(commands)
    console = bytearray()
    pending = b""
    init_seconds = None
    started = time.monotonic()
    deadline = started + timeout
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
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
        _stop(proc)
    parser.finish()
    hello = parser.hello or []
    return BoardRun(
        target=target.name, results=parser.results,
        console=console.decode(errors="replace"), init_seconds=init_seconds,
        guest_uptime_at_init=float(hello[3]) if len(hello) > 3 else None,
        total_seconds=time.monotonic() - started, boots=parser.hello_count,
        frame_errors=parser.errors)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.stdout:
        proc.stdout.close()


def interactive_shell(target: Target | str,
                      extra_files: dict[str, str | Path] | None = None, *,
                      kernel_variant: str | None = None) -> int:
    """QEMU attached to this terminal with init's command loop (Ctrl-A x quits)."""
    if isinstance(target, str):
        target = get_target(target)
    qemu = require_qemu(target)
    image = boot_files(target, kernel_variant)
    with tempfile.TemporaryDirectory(prefix="ktap-shell-") as tmp:
        initrd = build_initramfs(target, extra_files, None, Path(tmp) / "initrd.cpio.gz")
        cmd = qemu_command(target, image, initrd, interactive=True, append=["ktap.shell"],
                           kernel_variant=kernel_variant)
        cmd[0] = qemu
        return subprocess.call(cmd)


# ---------------------------------------------------------------- board check

def parse_key_values(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_features(text: str) -> dict[str, bool]:
    return {k: v.split(" ", 1)[0] == "yes" for k, v in parse_key_values(text).items()}


REQUIRED_FEATURES = ("kprobes", "tracepoints")
CHECK_COMMANDS = [["ktapw", "uname"], ["ktapw", "arch"], ["ktapw", "features"]]


@dataclass
class BoardCheck:
    target: str
    uname: str
    arch: dict[str, str]
    features: dict[str, bool]
    problems: list[str]
    run: BoardRun

    @property
    def ok(self) -> bool:
        return not self.problems


def evaluate_check(target: Target, run: BoardRun) -> BoardCheck:
    uname_r, arch_r, feat_r = run.results[:3]
    arch = parse_key_values(arch_r.stdout.decode(errors="replace"))
    features = parse_features(feat_r.stdout.decode(errors="replace"))
    problems = [f"`{' '.join(r.argv)}` failed: status {r.status} {r.errors} {r.output.strip()}"
                for r in run.results[:3] if not r.ok]
    if arch.get("byte_order") != target.byte_order:
        problems.append(f"byte order: guest says {arch.get('byte_order')}, "
                        f"descriptor says {target.byte_order}")
    if arch.get("word_size") != str(target.word_size):
        problems.append(f"word size: guest says {arch.get('word_size')}, "
                        f"descriptor says {target.word_size}")
    problems += [f"kernel lacks {name}" for name in REQUIRED_FEATURES if not features.get(name)]
    return BoardCheck(target.name, uname_r.stdout.decode(errors="replace").strip(), arch,
                      features, problems, run)


def check_board(target: Target | str, timeout: float = DEFAULT_TIMEOUT) -> BoardCheck:
    if isinstance(target, str):
        target = get_target(target)
    return evaluate_check(target, run_commands(target, CHECK_COMMANDS, timeout=timeout))


# ---------------------------------------------------------------- live boards (deploy tests)
#
# A board that stays up while the host talks to it like a real one: over the
# serial agent (`ktaprun --serve` on a second serial line) and, on x86_64,
# over ssh (dropbear, busybox and their libraries copied from the host, which
# is the same architecture). `ktap run --serial/--ssh/--adb` are tested this way.

# The agent's line in the guest: a second 8250 UART where the machine has one,
# a virtio console on arm virt (one PL011 only).
AGENT_LINES = {"arm": ("virtio", "/dev/hvc0"), "x86_64": ("uart", "/dev/ttyS1"),
               "mips": ("uart", "/dev/ttyS1"), "powerpc": ("uart", "/dev/ttyS1")}
AGENT_BAUD = ":921600"
GUEST_IP_ARG = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off"
GUEST_AGENT = "/bin/ktaprun-agent"
SSH_BOARD_TARGETS = ("x86_64",)
BUSYBOX_APPLETS = ("sh", "cat", "mkdir", "mv", "chmod", "rm", "kill", "sha256sum", "uname",
                   "id", "grep", "sleep", "ls", "df", "stat", "echo", "true", "false", "ps")


def agent_device(target: Target | str) -> str:
    name = target if isinstance(target, str) else target.name
    return AGENT_LINES.get(name, ("uart", "/dev/ttyS1"))[1]


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _elf_needs(binary: Path) -> list[Path]:
    """The shared libraries and interpreter of a host binary (ldd)."""
    r = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    libs = []
    for line in r.stdout.splitlines():
        parts = line.split()
        for p in parts:
            if p.startswith("/") and Path(p).exists():
                libs.append(Path(p))
                break
    return libs


def ssh_host_key() -> Path:
    """The board's dropbear host key, made once (dropbearkey) and cached."""
    d = cache_root() / "sshboard"
    key = d / "dropbear_ed25519_host_key"
    if not key.exists():
        d.mkdir(parents=True, exist_ok=True)
        tool = require_tool("dropbearkey", "dropbear-bin")
        tmp = d / f"key.{os.getpid()}"
        subprocess.run([tool, "-t", "ed25519", "-f", str(tmp)], check=True, capture_output=True)
        tmp.rename(key)
    return key


def ssh_server_entries(authorized_keys: str) -> list[CpioEntry]:
    """dropbear + busybox (sh and the tools `ktap run --ssh` uses) + their
    shared libraries, /etc/passwd, a host key and root's authorized_keys."""
    dropbear = Path(require_tool("dropbear", "dropbear-bin"))
    busybox = Path(require_tool("busybox", "busybox-static"))
    files: dict[str, tuple[bytes, int]] = {
        "usr/sbin/dropbear": (dropbear.read_bytes(), 0o755),
        "bin/busybox": (busybox.read_bytes(), 0o755),
        "etc/passwd": (b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
        "etc/group": (b"root:x:0:\n", 0o644),
        "etc/shells": (b"/bin/sh\n", 0o644),
        "etc/dropbear/dropbear_ed25519_host_key": (ssh_host_key().read_bytes(), 0o600),
        "root/.ssh/authorized_keys": (authorized_keys.encode(), 0o600),
    }
    for lib in _elf_needs(dropbear) + _elf_needs(busybox):
        files[str(lib).lstrip("/")] = (lib.read_bytes(), 0o755)
    # dropbear refuses an authorized_keys below a group/world-writable directory
    private = ("root", "root/.ssh")
    entries = [e for e in directory_entries(list(files) + ["var/log/x"]) if e.path not in private]
    entries += [CpioEntry(d, stat.S_IFDIR | 0o700) for d in private]
    entries += [CpioEntry(p, stat.S_IFREG | m, d) for p, (d, m) in files.items()]
    entries += [CpioEntry(f"bin/{a}", stat.S_IFLNK | 0o777, b"busybox") for a in BUSYBOX_APPLETS]
    return entries


DROPBEAR_COMMAND = ["/usr/sbin/dropbear", "-s", "-r", "/etc/dropbear/dropbear_ed25519_host_key",
                    "-p", "22"]


class LiveBoard:
    """A QEMU board kept running: init runs `commands` in batch mode (the last
    usually being the agent, which never ends), the console is collected in a
    thread, and the host talks to the guest over `agent_spec` / `ssh_port`.

        with board.LiveBoard("arm", agent=True) as b:
            t = transport.SerialTransport(b.agent_spec)
    """

    def __init__(self, target: Target | str, *, agent: bool = True,
                 ssh_authorized_keys: str | None = None,
                 extra_files: dict[str, str | Path] | None = None,
                 commands: list[list[str]] | None = None, agent_binary: Path | None = None):
        self.target = get_target(target) if isinstance(target, str) else target
        self.agent = agent
        self.ssh_keys = ssh_authorized_keys
        self.extra_files = dict(extra_files or {})
        self.commands = list(commands or [])
        self.agent_binary = agent_binary
        self.proc: subprocess.Popen | None = None
        self.console = bytearray()
        self.ssh_port: int | None = None
        self.tmp = tempfile.TemporaryDirectory(prefix="ktap-live-")
        self.agent_socket = Path(self.tmp.name) / "agent.sock"
        self.started = 0.0

    @property
    def agent_spec(self) -> str:
        return f"unix:{self.agent_socket}"

    def start(self) -> "LiveBoard":
        import threading
        target = self.target
        qemu = require_qemu(target)
        image = boot_files(target)
        commands = list(self.commands)
        files = dict(self.extra_files)
        if self.ssh_keys is not None:
            if target.name not in SSH_BOARD_TARGETS:
                raise BoardError(f"{target.name}: the ssh board needs host binaries of the "
                                 f"same architecture (only {', '.join(SSH_BOARD_TARGETS)})")
            self.ssh_port = _free_port()
            commands.insert(0, DROPBEAR_COMMAND)
        if self.agent:
            if self.agent_binary is None:
                from ktap.build import ktaprun as runner
                self.agent_binary = runner.build_ktaprun(target)
            files[GUEST_AGENT] = self.agent_binary
            commands.append([GUEST_AGENT, "--serve", agent_device(target) + AGENT_BAUD])
        else:
            commands.append(["ktapw", "sleep", str(24 * 3600 * 1000)])   # stay up
        initrd = Path(self.tmp.name) / "initrd.cpio.gz"
        data = base_initramfs(target).read_bytes() + run_archive(commands or None, files)
        if self.ssh_keys is not None:
            data += gzip_bytes(newc_archive(ssh_server_entries(self.ssh_keys)))
        initrd.write_bytes(data)
        cmd = qemu_command(target, image, initrd,
                           agent_socket=self.agent_socket if self.agent else None,
                           ssh_port=self.ssh_port)
        cmd[0] = qemu
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()
        return self

    def _collect(self) -> None:
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.console += chunk

    def console_text(self) -> str:
        return self.console.decode(errors="replace")

    def frames(self) -> FrameParser:
        """The batch commands' frames seen so far (output of the agent itself, ...)."""
        parser = FrameParser(self.commands)
        for line in self.console_text().splitlines():
            parser.feed_line(line)
        return parser

    def wait_agent(self, timeout: float = 90.0):
        """Connects to the agent once the guest runs it; returns a SerialTransport."""
        from ktap.deploy import transport
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BoardError(f"{self.target.name}: QEMU exited ({self.proc.returncode}); "
                                 f"last console lines:\n{console_tail(self.console_text())}",
                                 self.console_text())
            try:
                t = transport.SerialTransport(self.agent_spec, timeout=2.0)
                try:
                    t.hello(attempts=1, wait=0.5)
                    t.timeout = 10.0
                    return t
                except transport.TransportError:
                    t.close()
            except transport.TransportError:
                time.sleep(0.2)
            if time.monotonic() > deadline:
                raise BoardTimeout(f"{self.target.name}: the agent did not answer within "
                                   f"{timeout:.0f} s; last console lines:\n"
                                   f"{console_tail(self.console_text())}", self.console_text())

    def wait_ssh(self, timeout: float = 90.0) -> None:
        """Waits until the guest's ssh server sends its banner."""
        import socket
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.ssh_port), timeout=2) as s:
                    s.settimeout(3)
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise BoardTimeout(f"{self.target.name}: no ssh server on 127.0.0.1:{self.ssh_port}; "
                           f"last console lines:\n{console_tail(self.console_text())}",
                           self.console_text())

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self._thread.join(timeout=5)
            self.proc = None
        self.tmp.cleanup()

    def __enter__(self) -> "LiveBoard":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
