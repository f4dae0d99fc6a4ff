"""LiveBoard: a QEMU board that stays up and that the host talks to like a real
board, over the serial agent (`ktaprun --serve` on a second serial line) and, on
x86_64, over ssh (dropbear, busybox and their libraries copied from the host,
which is the same architecture). `ktap run --serial/--ssh/--adb` are tested this
way; wait_agent() opens the agent's transport. A test tool: the product has no
use for a board kept up by the host."""
from __future__ import annotations

import os
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, TypeVar

from ktap.boards import qemu
from ktap.boards.errors import BoardError, BoardTimeout, console_tail
from ktap.boards.frames import FrameParser
from ktap.boards.initramfs import CpioEntry, build_initramfs, directory_entries
from ktap.build.bundle import serve_argv
from ktap.build.ktaprun import build_ktaprun
from ktap.core.cache import cache_root, cached_file
from ktap.core.targets import Target, get_target
from ktap.core.tools import require_tool
from ktap.deploy.serial import SerialTransport
from ktap.deploy.transport import TransportError

AGENT_BAUD = ":921600"
GUEST_AGENT = "/bin/ktaprun-agent"
SSH_BOARD_TARGETS = ("x86_64",)
BUSYBOX_APPLETS = ("sh", "cat", "mkdir", "mv", "chmod", "rm", "kill", "sha256sum", "uname",
                   "id", "grep", "sleep", "ls", "df", "stat", "echo", "true", "false", "ps")
DROPBEAR_COMMAND = ["/usr/sbin/dropbear", "-s", "-r", "/etc/dropbear/dropbear_ed25519_host_key",
                    "-p", "22"]

T = TypeVar("T")


# ---------------------------------------------------------------- the ssh server

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _elf_needs(binary: Path) -> list[Path]:
    """The shared libraries and interpreter of a host binary (ldd)."""
    r = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    libs = []
    for line in r.stdout.splitlines():
        for p in line.split():
            if p.startswith("/") and Path(p).exists():
                libs.append(Path(p))
                break
    return libs


def ssh_host_key() -> Path:
    """The board's dropbear host key, made once (dropbearkey) and cached, so
    a client that accepted it once keeps trusting the next boot."""
    def generate(tmp: Path) -> None:
        tool = require_tool("dropbearkey", "dropbear-bin")
        subprocess.run([tool, "-t", "ed25519", "-f", str(tmp)], check=True, capture_output=True)

    return cached_file(cache_root() / "sshboard" / "dropbear_ed25519_host_key", generate)


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


# ---------------------------------------------------------------- LiveBoard

class LiveBoard:
    """A QEMU board kept running: init runs `commands` in batch mode (the last
    usually being the agent, which never ends), the console is collected in a
    thread, and the host talks to the guest over `agent_spec` / `ssh_port`.

        with live.LiveBoard("arm", agent=True) as b:
            t = wait_agent(b)          # deploy/live.py
    """

    def __init__(self, target: Target | str, *, agent: bool = True,
                 ssh_authorized_keys: str | None = None,
                 extra_files: dict[str, str | Path] | None = None,
                 commands: list[list[str]] | None = None, agent_binary: Path | None = None):
        self.target = get_target(target)
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
        target = self.target
        qemu.require_qemu(target)
        commands = list(self.commands)
        files = dict(self.extra_files)
        more: list[CpioEntry] = []
        if self.ssh_keys is not None:
            if target.name not in SSH_BOARD_TARGETS:
                raise BoardError(f"{target.name}: the ssh board needs host binaries of the "
                                 f"same architecture (only {', '.join(SSH_BOARD_TARGETS)})")
            self.ssh_port = _free_port()
            commands.insert(0, DROPBEAR_COMMAND)
            more = ssh_server_entries(self.ssh_keys)
        if self.agent:
            if self.agent_binary is None:
                self.agent_binary = build_ktaprun(target)
            files[GUEST_AGENT] = self.agent_binary
            commands.append(serve_argv(GUEST_AGENT, qemu.agent_device(target) + AGENT_BAUD))
        else:
            commands.append(["ktapw", "sleep", str(24 * 3600 * 1000)])   # stay up
        initrd = build_initramfs(target, files, commands,
                                 Path(self.tmp.name) / "initrd.cpio.gz", more)
        cmd = qemu.boot_command(target, initrd,
                                agent_socket=self.agent_socket if self.agent else None,
                                ssh_port=self.ssh_port)
        self.started = time.monotonic()
        self.proc = qemu.spawn(cmd)
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

    def wait_for(self, probe: Callable[[], T | None], what: str, timeout: float,
                 pause: float = 0.3) -> T:
        """Calls probe() until it returns something; BoardError when QEMU
        exits first, BoardTimeout naming `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BoardError(f"{self.target.name}: QEMU exited ({self.proc.returncode}); "
                                 f"last console lines:\n{console_tail(self.console_text())}",
                                 self.console_text())
            got = probe()
            if got is not None:
                return got
            if time.monotonic() > deadline:
                raise BoardTimeout(f"{self.target.name}: {what}; last console lines:\n"
                                   f"{console_tail(self.console_text())}", self.console_text())
            time.sleep(pause)

    def wait_ssh(self, timeout: float = 90.0) -> None:
        """Waits until the guest's ssh server sends its banner."""
        def banner() -> bool | None:
            try:
                with socket.create_connection(("127.0.0.1", self.ssh_port), timeout=2) as s:
                    s.settimeout(3)
                    return True if s.recv(64).startswith(b"SSH-") else None
            except OSError:
                return None

        self.wait_for(banner, f"no ssh server on 127.0.0.1:{self.ssh_port}", timeout)

    def stop(self) -> None:
        if self.proc is not None:
            qemu.stop(self.proc)
            self._thread.join(timeout=5)
            self.proc = None
        self.tmp.cleanup()

    def __enter__(self) -> "LiveBoard":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_agent(board: LiveBoard, timeout: float = 90.0) -> SerialTransport:
    """Connects to the board's agent once the guest runs it."""
    def answer() -> SerialTransport | None:
        try:
            t = SerialTransport(board.agent_spec, timeout=2.0)
        except TransportError:          # QEMU has not opened the socket yet
            return None
        try:
            t.hello(attempts=1, wait=0.5)
        except TransportError:
            t.close()
            return None
        t.timeout = 10.0
        return t

    return board.wait_for(answer, f"the agent did not answer within {timeout:.0f} s", timeout,
                          pause=0.2)
