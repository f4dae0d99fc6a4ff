"""Transports to a real board: ssh, adb and the serial agent (`ktaprun --serve`).

Every transport answers the same few questions (`Transport`): what the target
is (`info()`), which files it already holds (`hashes()`), pushing one file
(`push()`), and running one command with its output streamed live (`run()`).
`deploy.py` builds `ktap run` on top of these.

* ssh: the system's OpenSSH client (the user's ~/.ssh/config, keys and agent
  keep working). The target needs a POSIX shell with `uname`, `id`, `cat`,
  `mkdir`, `mv`, `chmod`, `kill` and (optional, else everything is pushed)
  `sha256sum`: busybox has them all.
* adb: the system's adb client; the target needs the same tools (toybox).
* serial: the framed protocol of kmod/ktaprun/serve.c over a tty
  (`/dev/ttyUSB0[:BAUD]`), a unix socket (`unix:PATH`) or TCP (`tcp:HOST:PORT`).

Ctrl-C during `run()` sends SIGINT to the remote ktaprun (which stops the
session, runs trace_end and exits with the script's status); the output keeps
streaming until then. A second Ctrl-C drops the connection: ktaprun notices
the hang-up and stops by itself.
"""
from __future__ import annotations

import errno
import hashlib
import os
import secrets
import select
import shlex
import signal
import socket
import struct
import subprocess
import time
import zlib
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


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
    # kprobes: the debugfs directory, else the symbol in kallsyms.
    return ("echo release=$(uname -r); echo machine=$(uname -m); echo uid=$(id -u); "
            "if [ -d /sys/kernel/debug/kprobes ] || grep -q ' register_kprobe$' /proc/kallsyms "
            "2>/dev/null; then echo kprobes=yes; else echo kprobes=no; fi")


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
    kp = kv.get("kprobes")
    return RemoteInfo(kv["release"], kv.get("machine", ""), int(uid) if uid.isdigit() else None,
                      None if kp is None else kp == "yes", kv)


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


class _Interrupts:
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


class _MarkerFilter:
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


def _pump_process(proc: subprocess.Popen, out: Sink, err: Sink, on_interrupt,
                  tick=None) -> int:
    """Streams a child's stdout/stderr until it exits; Ctrl-C calls on_interrupt()."""
    streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    with _Interrupts() as ints:
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


# ---------------------------------------------------------------- ssh

SSH_UNREACHABLE = ("connection refused", "no route to host", "could not resolve hostname",
                   "connection timed out", "network is unreachable", "operation timed out",
                   "connection closed by", "connection reset", "name or service not known",
                   "kex_exchange_identification")


class SshTransport(Transport):
    name = "ssh"

    def __init__(self, destination: str, key: str | None = None, options: list[str] = (),
                 connect_timeout: int = 10, ssh: str = "ssh"):
        user_host, port = destination, None
        if destination.count(":") == 1 and destination.rsplit(":", 1)[1].isdigit():
            user_host, port = destination.rsplit(":", 1)
        self.destination = user_host
        self.base = [ssh, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
                     "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if port:
            self.base += ["-p", port]
        if key:
            self.base += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
        for opt in options:
            self.base += ["-o", opt]
        self.remote_pid: int | None = None

    def command(self, script: str) -> list[str]:
        return self.base + ["--", self.destination, script]

    def _error(self, stderr: str) -> TransportError:
        low = stderr.lower()
        where = self.destination
        if "permission denied" in low or "too many authentication failures" in low:
            return TransportError(f"ssh: authentication to {where} failed",
                                  "give the key with -i KEY, or check the user name and the "
                                  "target's authorized_keys", AUTH)
        if "host key verification failed" in low or "remote host identification has changed" in low:
            return TransportError(f"ssh: the host key of {where} is unknown or changed",
                                  "connect once by hand with ssh to accept it, or fix "
                                  "~/.ssh/known_hosts", AUTH)
        if any(s in low for s in SSH_UNREACHABLE):
            return TransportError(f"ssh: cannot reach {where}: {stderr.strip().splitlines()[-1]}",
                                  "is the board up and on the network? check the address and "
                                  "port (USER@HOST:PORT)", UNREACHABLE)
        return TransportError(f"ssh to {where} failed: {stderr.strip()[:300]}")

    def _sh(self, script: str, input_file: Path | None = None, timeout: float = 120) -> str:
        stdin = open(input_file, "rb") if input_file else subprocess.DEVNULL
        try:
            r = subprocess.run(self.command(script), stdin=stdin, capture_output=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TransportError(f"ssh: {self.destination} did not answer within {timeout:.0f} s",
                                 "is the board up and on the network?", UNREACHABLE) from None
        except FileNotFoundError:
            raise TransportError("ssh: the ssh client is not installed",
                                 "install the Debian package openssh-client") from None
        finally:
            if input_file:
                stdin.close()
        if r.returncode == 255:
            raise self._error(r.stderr.decode(errors="replace"))
        if r.returncode != 0:
            raise _RemoteFailed(r.returncode, r.stdout.decode(errors="replace"),
                                r.stderr.decode(errors="replace"))
        return r.stdout.decode(errors="replace")

    def info(self) -> RemoteInfo:
        return parse_info(self._sh(info_script()))

    def hashes(self, paths: list[str]) -> dict[str, str | None]:
        return parse_hashes(self._sh(hashes_script(paths)), paths)

    def push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        try:
            self._sh(push_script(remote, mode), input_file=Path(local))
        except _RemoteFailed as e:
            raise classify_push_error(e.stderr + e.stdout, remote) from None

    def run(self, argv: list[str], out: Sink, err: Sink, keepalive: int = 5) -> int:
        script = "echo KTAPPID=$$ >&2; exec " + " ".join(shlex.quote(a) for a in argv)
        # A session of its own: a Ctrl-C on the terminal reaches only us, and
        # we ask the remote ktaprun to stop instead of killing ssh.
        proc = subprocess.Popen(self.command(script), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        self.process = proc
        errs = _MarkerFilter(err)
        errtext = bytearray()

        def on_err(data: bytes) -> None:
            errtext.extend(data[-4096:])
            errs.feed(data)

        def interrupt() -> None:
            if errs.pid:
                subprocess.run(self.command(f"kill -INT {errs.pid}"), stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=30)
            else:
                proc.terminate()

        status = _pump_process(proc, out, on_err, interrupt)
        errs.finish()
        if status == 255 and errs.pid is None:
            raise self._error(errtext.decode(errors="replace"))
        return status


class _RemoteFailed(Exception):
    def __init__(self, status: int, stdout: str, stderr: str):
        self.status, self.stdout, self.stderr = status, stdout, stderr
        super().__init__(f"remote command failed with status {status}: {stderr.strip()[:300]}")


# ---------------------------------------------------------------- adb

class AdbTransport(Transport):
    """adb's legacy shell protocol merges stderr into stdout and drops the exit
    status, so commands print markers (KTAPPID=, KTAPEXIT=) that are taken out."""
    name = "adb"

    def __init__(self, serial: str | None = None, adb: str = "adb"):
        self.base = [adb] + (["-s", serial] if serial else [])
        self.serial = serial

    def _adb(self, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        try:
            r = subprocess.run(self.base + args, stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=timeout)
        except FileNotFoundError:
            raise TransportError("adb: the adb client is not installed",
                                 "install the Debian package adb") from None
        except subprocess.TimeoutExpired:
            raise TransportError(f"adb: no answer within {timeout:.0f} s",
                                 "is the device connected (adb devices)?", UNREACHABLE) from None
        text = (r.stdout + r.stderr).decode(errors="replace")
        low = text.lower()
        if r.returncode != 0 or low.startswith("error:") or "\nerror:" in low:
            if "unauthorized" in low:
                raise TransportError("adb: the device has not authorized this computer",
                                     "accept the RSA key prompt on the device, then retry", AUTH)
            if "no devices" in low or "not found" in low and "device" in low or "offline" in low:
                who = f"device {self.serial}" if self.serial else "a device"
                raise TransportError(f"adb: cannot reach {who}: {text.strip().splitlines()[-1]}",
                                     "check `adb devices`; for a network device `adb connect "
                                     "HOST:PORT`", UNREACHABLE)
            if "more than one device" in low:
                raise TransportError("adb: more than one device is connected",
                                     "choose one with -s SERIAL")
        return r

    def _shell(self, script: str) -> str:
        r = self._adb(["shell", script])
        return r.stdout.decode(errors="replace")

    def info(self) -> RemoteInfo:
        return parse_info(self._shell(info_script()))

    def hashes(self, paths: list[str]) -> dict[str, str | None]:
        return parse_hashes(self._shell(hashes_script(paths)), paths)

    def push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        d = os.path.dirname(remote) or "/"
        self._shell(f"mkdir -p {shlex.quote(d)}")
        os.chmod(local, mode)        # adb push sends the local mode
        r = self._adb(["push", str(local), remote])
        if r.returncode != 0:
            raise classify_push_error((r.stdout + r.stderr).decode(errors="replace"), remote)

    def run(self, argv: list[str], out: Sink, err: Sink, keepalive: int = 5) -> int:
        inner = "echo KTAPPID=$$; exec " + " ".join(shlex.quote(a) for a in argv)
        script = f"sh -c {shlex.quote(inner)}; echo KTAPEXIT=$?"
        proc = subprocess.Popen(self.base + ["shell", script], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        self.process = proc
        outs = _MarkerFilter(out)

        def interrupt() -> None:
            if outs.pid:
                self._adb(["shell", f"kill -INT {outs.pid}"], timeout=30)
            else:
                proc.terminate()

        status = _pump_process(proc, outs.feed, err, interrupt)
        outs.finish()
        if outs.exit is None:
            raise TransportError(f"adb: the connection ended before the command did (status {status})",
                                 "check the cable or network link to the device", UNREACHABLE)
        return outs.exit


# ---------------------------------------------------------------- serial agent

MAGIC = b"kT"
HDR = struct.Struct(">2sBI")
MAX_PAYLOAD = 64 * 1024
CHUNK = 16 * 1024


def encode_frame(kind: str, payload: bytes = b"") -> bytes:
    head = HDR.pack(MAGIC, ord(kind), len(payload))
    return head + payload + struct.pack(">I", zlib.crc32(head[2:] + payload))


class FrameReader:
    """Frames out of a byte stream; noise and damaged frames are skipped."""

    def __init__(self):
        self.buf = bytearray()
        self.skipped = 0

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        self.buf += data
        frames = []
        pos = 0
        buf = self.buf
        while len(buf) - pos >= 2:
            if buf[pos:pos + 2] != MAGIC:
                nxt = buf.find(MAGIC, pos + 1)
                skip = (nxt if nxt >= 0 else len(buf) - 1) - pos
                self.skipped += skip
                pos += skip
                continue
            if len(buf) - pos < HDR.size:
                break
            _, kind, n = HDR.unpack_from(buf, pos)
            if n > MAX_PAYLOAD:
                pos += 1
                self.skipped += 1
                continue
            end = pos + HDR.size + n + 4
            if len(buf) < end:
                break
            (crc,) = struct.unpack_from(">I", buf, end - 4)
            if zlib.crc32(bytes(buf[pos + 2:end - 4])) != crc:
                pos += 1
                self.skipped += 1
                continue
            frames.append((chr(kind), bytes(buf[pos + HDR.size:end - 4])))
            pos = end
        del self.buf[:pos]
        return frames


BAUDS = {9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600}


def open_serial_link(spec: str, timeout: float = 10.0) -> int:
    """A file descriptor for DEV[:BAUD], unix:PATH or tcp:HOST:PORT."""
    if spec.startswith("unix:"):
        path = spec[5:]
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
        except OSError as e:
            s.close()
            raise TransportError(f"serial: cannot connect to {path}: {e.strerror}",
                                 "is the board (QEMU) running with that socket?",
                                 UNREACHABLE) from None
        return s.detach()
    if spec.startswith("tcp:"):
        host, _, port = spec[4:].rpartition(":")
        try:
            s = socket.create_connection((host, int(port)), timeout=timeout)
        except (OSError, ValueError) as e:
            raise TransportError(f"serial: cannot connect to {spec[4:]}: {e}",
                                 "check the host and port of the serial server",
                                 UNREACHABLE) from None
        s.settimeout(None)
        return s.detach()
    dev, baud = spec, 115200
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit():
        dev, baud = head, int(tail)
        if baud not in BAUDS:
            raise TransportError(f"serial: unsupported baud rate {baud}",
                                 f"use one of {', '.join(map(str, sorted(BAUDS)))}")
    try:
        fd = os.open(dev, os.O_RDWR | os.O_NOCTTY)
    except OSError as e:
        hint = ("add yourself to the dialout group" if e.errno == errno.EACCES
                else "check the device name (ls /dev/ttyUSB* /dev/ttyACM*)")
        raise TransportError(f"serial: cannot open {dev}: {e.strerror}", hint,
                             UNREACHABLE) from None
    if os.isatty(fd):
        import termios
        import tty
        tty.setraw(fd)
        attrs = termios.tcgetattr(fd)
        speed = getattr(termios, f"B{baud}")
        attrs[4] = attrs[5] = speed
        attrs[2] |= termios.CLOCAL | termios.CREAD
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        termios.tcflush(fd, termios.TCIOFLUSH)
    return fd


class AgentError(TransportError):
    pass


def _agent_error(text: str, what: str) -> TransportError:
    if text.startswith(("ENOSPC", "EDQUOT")):
        return TransportError(f"no space left on the target while writing {what}",
                              "free space there, or choose another directory with --remote-dir",
                              NO_SPACE)
    if text.startswith("EBUSY"):
        return TransportError("the serial agent is busy with another command",
                              "wait for the other session to end")
    return TransportError(f"serial agent: {what}: {text}")


class SerialTransport(Transport):
    """The host side of `ktaprun --serve` (kmod/ktaprun/serve.c)."""
    name = "serial"

    def __init__(self, spec: str, timeout: float = 10.0):
        self.spec = spec
        self.timeout = timeout
        self.fd = open_serial_link(spec, timeout)
        self.reader = FrameReader()
        self.pending: list[tuple[str, bytes]] = []
        self._info: dict[str, str] | None = None

    @classmethod
    def from_fd(cls, fd: int, name: str = "fd", timeout: float = 10.0) -> "SerialTransport":
        """Over an already open link (a socketpair in tests, a pty...)."""
        self = cls.__new__(cls)
        self.spec, self.timeout, self.fd = name, timeout, fd
        self.reader = FrameReader()
        self.pending = []
        self._info = None
        return self

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def send(self, kind: str, payload: bytes = b"") -> None:
        data = encode_frame(kind, payload)
        while data:
            try:
                n = os.write(self.fd, data)
            except OSError as e:
                raise TransportError(f"serial: the link to {self.spec} failed: {e.strerror}",
                                     "check the cable, or that the agent still runs",
                                     UNREACHABLE) from None
            data = data[n:]

    def recv(self, timeout: float) -> tuple[str, bytes] | None:
        deadline = time.monotonic() + timeout
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                ready, _, _ = select.select([self.fd], [], [], left)
            except InterruptedError:
                continue
            if not ready:
                continue
            data = os.read(self.fd, 65536)
            if not data:
                raise TransportError(f"serial: {self.spec} closed the link",
                                     "is the agent (ktaprun --serve) running on the target?",
                                     UNREACHABLE)
            self.pending += self.reader.feed(data)
        return self.pending.pop(0)

    def _expect(self, kinds: str, what: str, timeout: float | None = None) -> tuple[str, bytes]:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            f = self.recv(max(0.0, deadline - time.monotonic()))
            if f is None:
                raise TransportError(f"serial: no answer from the agent on {self.spec} ({what})",
                                     "start `ktaprun --serve DEV` on the target, and check the "
                                     "baud rate and cable", UNREACHABLE)
            if f[0] in kinds:
                return f
            # anything else is a stale frame from an earlier host

    def hello(self, attempts: int = 3, wait: float = 2.0) -> dict[str, str]:
        for attempt in range(attempts):
            nonce = secrets.token_hex(8).encode()
            self.send("H", nonce)
            try:
                deadline = time.monotonic() + (self.timeout if attempt == 2 else wait)
                while True:
                    f = self.recv(max(0.0, deadline - time.monotonic()))
                    if f is None:
                        raise TimeoutError
                    if f[0] == "I" and f[1].split(b"\n", 1)[0] == nonce:
                        break
            except TimeoutError:
                # A partial frame left by an earlier host is dropped by the
                # agent after a second of silence; then try again.
                if attempts > 1:
                    time.sleep(1.1)
                continue
            kv = {}
            for line in f[1].decode(errors="replace").splitlines()[1:]:
                k, _, v = line.partition("=")
                kv[k] = v
            self._info = kv
            return kv
        raise TransportError(f"serial: no answer from the agent on {self.spec}",
                             "start `ktaprun --serve DEV` on the target, and check the baud "
                             "rate and cable", UNREACHABLE)

    def info(self) -> RemoteInfo:
        kv = self._info or self.hello()
        if kv.get("session") == "running":
            # an earlier host's command still ends (it was hung up on)
            for _ in range(20):
                time.sleep(0.5)
                kv = self.hello()
                if kv.get("session") != "running":
                    break
        uid = kv.get("uid", "")
        kp = kv.get("kprobes")
        return RemoteInfo(kv.get("release", ""), kv.get("machine", ""),
                          int(uid) if uid.isdigit() else None,
                          None if kp is None else kp == "yes", kv)

    def hashes(self, paths: list[str]) -> dict[str, str | None]:
        out = {}
        for p in paths:
            self.send("S", p.encode())
            kind, data = self._expect("YX", f"stat {p}")
            text = data.decode(errors="replace")
            if kind == "X":
                raise _agent_error(text, p)
            out[p] = None if text == "missing" else text.split()[0]
        return out

    def push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        data = Path(local).read_bytes()
        self.send("P", f"{mode:o} {remote}".encode())
        self._ack(remote)
        for off in range(0, len(data), CHUNK):
            self.send("D", data[off:off + CHUNK])
            self._ack(remote)
        self.send("C", hashlib.sha256(data).hexdigest().encode())
        self._ack(remote)

    def _ack(self, what: str) -> None:
        kind, data = self._expect("AX", f"writing {what}", timeout=max(self.timeout, 30))
        if kind == "X":
            raise _agent_error(data.decode(errors="replace"), what)

    def run(self, argv: list[str], out: Sink, err: Sink, keepalive: int = 5) -> int:
        payload = b"\0".join([str(keepalive).encode()] + [a.encode() for a in argv])
        self.send("R", payload)
        last_ping = time.monotonic()
        with _Interrupts() as ints:
            asked = 0
            while True:
                if ints.count > asked:
                    asked = ints.count
                    self.send("K", str(int(signal.SIGINT)).encode())
                now = time.monotonic()
                if now - last_ping >= 1.0:
                    self.send(".")
                    last_ping = now
                try:
                    f = self.recv(0.5)
                except InterruptedError:
                    continue
                if f is None:
                    continue
                kind, data = f
                if kind == "1":
                    out(data)
                elif kind == "2":
                    err(data)
                elif kind == "Z":
                    return int(data)
                elif kind == "X":
                    raise _agent_error(data.decode(errors="replace"), argv[0])


def open_transport(ssh: str | None = None, key: str | None = None, ssh_options=(),
                   adb: bool = False, adb_serial: str | None = None,
                   serial: str | None = None) -> Transport:
    if ssh:
        return SshTransport(ssh, key, list(ssh_options))
    if adb:
        return AdbTransport(adb_serial)
    if serial:
        return SerialTransport(serial)
    raise TransportError("no transport given", "use --ssh USER@HOST, --adb or --serial DEV")
