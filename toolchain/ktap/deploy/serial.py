"""serial: `ktaprun --serve` on the board (kmod/ktaprun/serve.c), spoken to
in frames (frame_codec.py) over a tty (`/dev/ttyUSB0[:BAUD]`), a unix socket
(`unix:PATH`) or TCP (`tcp:HOST:PORT`). The host pings once a second; the
agent stops a session whose host has been silent for `keepalive` seconds."""
from __future__ import annotations

import errno
import hashlib
import os
import secrets
import select
import signal
import socket
import termios
import time
import tty
from pathlib import Path

from ktap.deploy.frame_codec import FrameReader, encode_frame
from ktap.deploy.transport import (NO_SPACE, UNREACHABLE, Interrupts, RemoteInfo, Sink, Transport,
                                     TransportError, yes_no)

# Acknowledged one by one, so a slow line never holds more than this unconfirmed.
CHUNK = 16 * 1024
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
        tty.setraw(fd)
        attrs = termios.tcgetattr(fd)
        speed = getattr(termios, f"B{baud}")
        attrs[4] = attrs[5] = speed
        attrs[2] |= termios.CLOCAL | termios.CREAD
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        termios.tcflush(fd, termios.TCIOFLUSH)
    return fd


def agent_error(text: str, what: str) -> TransportError:
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
        return RemoteInfo(kv.get("release", ""), kv.get("machine", ""),
                          int(uid) if uid.isdigit() else None,
                          yes_no(kv.get("kprobes")), kv, modules=yes_no(kv.get("modules")))

    def hashes(self, paths: list[str]) -> dict[str, str | None]:
        out = {}
        for p in paths:
            self.send("S", p.encode())
            kind, data = self._expect("YX", f"stat {p}")
            text = data.decode(errors="replace")
            if kind == "X":
                raise agent_error(text, p)
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
            raise agent_error(data.decode(errors="replace"), what)

    def run(self, argv: list[str], out: Sink, err: Sink, keepalive: int = 5) -> int:
        payload = b"\0".join([str(keepalive).encode()] + [a.encode() for a in argv])
        self.send("R", payload)
        last_ping = time.monotonic()
        with Interrupts() as ints:
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
                    raise agent_error(data.decode(errors="replace"), argv[0])
