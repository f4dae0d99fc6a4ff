"""What every transport to a real board provides, and the pieces the
transports share.

A transport answers the same few questions (`Transport`): what the target is
(`info()`), which files it already holds (`hashes()`), pushing one file
(`push()`), and running one command with its output streamed live (`run()`).
deploy.py builds `ktap run` on top of these; ssh.py, adb.py and serial.py are
the transports, connect.py picks one from the command line.

The shell helpers serve the transports that drive a POSIX shell on the target
(ssh, adb): the target needs `uname`, `id`, `cat`, `mkdir`, `mv`, `chmod`,
`kill` and (optional, else everything is pushed) `sha256sum`; busybox and
toybox have them all.

Ctrl-C during `run()` sends SIGINT to the remote ktaprun (which stops the
session, runs trace_end and exits with the script's status); the output keeps
streaming until then. A second Ctrl-C drops the connection: ktaprun notices
the hang-up and stops by itself.
"""
from __future__ import annotations

import os
import select
import shlex
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

Sink = Callable[[bytes], None]


class TransportError(Exception):
    """A failure users meet: a one-line cause and a hint."""

    def __init__(self, cause: str, hint: str = "", kind: str = "error"):
        self.cause = cause
        self.hint = hint
        self.kind = kind
        super().__init__(cause + (f"\n  hint: {hint}" if hint else ""))


UNREACHABLE = "unreachable"
AUTH = "auth"
NO_SPACE = "no-space"


@dataclass
class RemoteInfo:
    release: str
    machine: str = ""
    uid: int | None = None
    kprobes: bool | None = None        # None: could not tell
    extra: dict[str, str] = field(default_factory=dict)
    modules: bool | None = None        # the kernel loads modules (CONFIG_MODULES); None: could not tell


class Transport:
    name = "transport"

    def info(self) -> RemoteInfo:
        raise NotImplementedError

    def hashes(self, paths: list[str]) -> dict[str, str | None]:
        """{remote path: sha256 hex or None when missing}."""
        raise NotImplementedError

    def push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        raise NotImplementedError

    def run(self, argv: list[str], out: Sink, err: Sink, keepalive: int = 5) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- shell helpers

def info_script() -> str:
    # kprobes: the debugfs directory, else the symbol in kallsyms. modules:
    # /proc/modules exists exactly when the kernel has CONFIG_MODULES.
    return ("echo release=$(uname -r); echo machine=$(uname -m); echo uid=$(id -u); "
            "if [ -d /sys/kernel/debug/kprobes ] || grep -q ' register_kprobe$' /proc/kallsyms "
            "2>/dev/null; then echo kprobes=yes; else echo kprobes=no; fi; "
            "if [ -e /proc/modules ]; then echo modules=yes; else echo modules=no; fi")


def parse_info(text: str) -> RemoteInfo:
    kv = {}
    for line in text.replace("\r", "").splitlines():
        k, sep, v = line.partition("=")
        if sep:
            kv[k.strip()] = v.strip()
    if not kv.get("release"):
        raise TransportError(f"the target did not report its kernel release: {text.strip()[:200]!r}",
                             "does the target have a POSIX shell with uname?")
    uid = kv.get("uid", "")
    return RemoteInfo(kv["release"], kv.get("machine", ""), int(uid) if uid.isdigit() else None,
                      yes_no(kv.get("kprobes")), kv, modules=yes_no(kv.get("modules")))


def yes_no(value: str | None) -> bool | None:
    """A probe's yes/no answer; None when the target did not say."""
    return None if value is None else value == "yes"


def hashes_script(paths: list[str]) -> str:
    qs = " ".join(shlex.quote(p) for p in paths)
    return (f"for f in {qs}; do if [ -f \"$f\" ]; then sha256sum \"$f\" 2>/dev/null "
            f"|| echo \"- $f\"; else echo \"- $f\"; fi; done")


def parse_hashes(text: str, paths: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {p: None for p in paths}
    for line in text.replace("\r", "").splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[1].strip() in out and len(parts[0]) == 64:
            out[parts[1].strip()] = parts[0].lower()
    return out


def push_script(remote: str, mode: int) -> str:
    tmp = shlex.quote(remote + ".ktap-tmp")
    d = shlex.quote(os.path.dirname(remote) or "/")
    return (f"mkdir -p {d} && cat > {tmp} && chmod {mode:o} {tmp} && mv -f {tmp} "
            f"{shlex.quote(remote)} || {{ rm -f {tmp}; exit 1; }}")


def classify_push_error(text: str, remote: str) -> TransportError:
    low = text.lower()
    if "no space left" in low or "enospc" in low or "quota" in low:
        return TransportError(f"no space left on the target while writing {remote}",
                              "free space there, or choose another directory with --remote-dir",
                              NO_SPACE)
    if "read-only file system" in low:
        return TransportError(f"{os.path.dirname(remote)} is read-only on the target",
                              "choose a writable directory with --remote-dir (e.g. /tmp/ktap)")
    if "permission denied" in low:
        return TransportError(f"cannot write {remote} on the target: permission denied",
                              "log in as root, or choose a writable --remote-dir")
    return TransportError(f"pushing {remote} failed: {text.strip()[:300]}")


class ShellTransport(Transport):
    """A transport that runs POSIX shell scripts on the target (ssh, adb):
    info() and hashes() are scripts whose output is parsed here."""

    def shell(self, script: str) -> str:
        """Runs `script` on the target; returns its stdout."""
        raise NotImplementedError

    def info(self) -> RemoteInfo:
        return parse_info(self.shell(info_script()))

    def hashes(self, paths: list[str]) -> dict[str, str | None]:
        return parse_hashes(self.shell(hashes_script(paths)), paths)


class Interrupts:
    """SIGINT handling during a run: the first Ctrl-C asks the remote side to
    stop cleanly, the second gives up on the connection."""

    def __init__(self):
        self.count = 0
        self.old = None

    def __enter__(self):
        try:
            self.old = signal.signal(signal.SIGINT, self._on)
        except ValueError:          # not the main thread
            self.old = None
        return self

    def _on(self, sig, frame):
        self.count += 1
        if self.count >= 2:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)


class MarkerFilter:
    """Takes `KTAPPID=N` and `KTAPEXIT=N` lines out of a stream, passing the
    rest through as it arrives (a partial line that may be a marker waits)."""

    def __init__(self, sink: Sink):
        self.sink = sink
        self.buf = b""
        self.pid: int | None = None
        self.exit: int | None = None

    def feed(self, data: bytes) -> None:
        self.buf += data
        out = []
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                break
            line, self.buf = self.buf[:nl + 1], self.buf[nl + 1:]
            m = line.rstrip(b"\r\n")
            if m.startswith(b"KTAPPID=") and m[8:].isdigit() and self.pid is None:
                self.pid = int(m[8:])
            elif m.startswith(b"KTAPEXIT=") and m[9:].isdigit():
                self.exit = int(m[9:])
            else:
                out.append(line)
        if self.buf and not (b"KTAPPID=".startswith(self.buf[:8]) or
                             b"KTAPEXIT=".startswith(self.buf[:9])):
            out.append(self.buf)
            self.buf = b""
        if out:
            self.sink(b"".join(out))

    def finish(self) -> None:
        if self.buf:
            self.sink(self.buf)
            self.buf = b""


def pump_process(proc: subprocess.Popen, out: Sink, err: Sink, on_interrupt,
                  tick=None) -> int:
    """Streams a child's stdout/stderr until it exits; Ctrl-C calls on_interrupt()."""
    streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    with Interrupts() as ints:
        asked = 0
        try:
            while streams:
                if ints.count > asked:
                    asked = ints.count
                    on_interrupt()
                try:
                    ready, _, _ = select.select(list(streams), [], [], 0.5)
                except InterruptedError:
                    continue
                for fd in ready:
                    data = os.read(fd, 65536)
                    if data:
                        streams[fd](data)
                    else:
                        del streams[fd]
                if tick:
                    tick()
            return proc.wait()
        except KeyboardInterrupt:
            proc.kill()
            proc.wait()
            raise
