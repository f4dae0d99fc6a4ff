"""A device-side adb protocol peer for tests: the real `adb` client connects
to it (`adb connect 127.0.0.1:PORT`) and it speaks the wire protocol
(CNXN/OPEN/OKAY/WRTE/CLSE; no AUTH, no shell_v2) with the `shell:` and `sync:`
services (STAT/SEND/DATA/DONE/RECV/QUIT).

Behind it there is no host sandbox: every shell command and file goes to a
QEMU board over ssh (dropbear + busybox on the x86_64 board), so modules are
only ever loaded in the guest. When the adb client closes a shell stream
(killed, cable pulled), the peer drops that ssh connection, which is what a
real adbd does to the pty/pipes of the command.

This stands in for adbd in tests; `ktap run --adb` has not been tried on a
physical device.
"""

from __future__ import annotations

import shlex
import socket
import struct
import subprocess
import threading

A_CNXN, A_OPEN, A_OKAY = 0x4E584E43, 0x4E45504F, 0x59414B4F
A_WRTE, A_CLSE, A_AUTH = 0x45545257, 0x45534C43, 0x48545541
VERSION = 0x01000000
MAXDATA = 256 * 1024
BANNER = b"device::ro.product.name=ktapboard;ro.product.model=qemu;ro.product.device=ktap;features=\0"


def packet(cmd: int, a0: int, a1: int, data: bytes = b"") -> bytes:
    return struct.pack("<6I", cmd, a0, a1, len(data), sum(data) & 0xFFFFFFFF,
                       cmd ^ 0xFFFFFFFF) + data


class AdbPeer:
    def __init__(self, ssh_command: list[str]):
        """ssh_command: argv prefix that runs a shell command on the board."""
        self.ssh = list(ssh_command)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.serial = f"127.0.0.1:{self.port}"
        self.log: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.sock.close()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=Connection(self, conn).serve, daemon=True).start()


class Stream:
    def __init__(self, conn: "Connection", local: int, remote: int):
        self.conn, self.local, self.remote = conn, local, remote
        self.acked = threading.Event()
        self.acked.set()
        self.closed = False
        self.proc: subprocess.Popen | None = None
        self.buf = b""

    def write(self, data: bytes) -> None:
        for i in range(0, len(data), MAXDATA // 2):
            self.acked.wait()
            if self.closed:
                return
            self.acked.clear()
            self.conn.send(A_WRTE, self.local, self.remote, data[i:i + MAXDATA // 2])

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.acked.set()
            self.conn.send(A_CLSE, self.local, self.remote)


class Connection:
    def __init__(self, peer: AdbPeer, sock: socket.socket):
        self.peer, self.sock = peer, sock
        self.lock = threading.Lock()
        self.streams: dict[int, Stream] = {}
        self.next_id = 1

    def send(self, cmd, a0, a1, data=b""):
        with self.lock:
            try:
                self.sock.sendall(packet(cmd, a0, a1, data))
            except OSError:
                pass

    def recv_exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise EOFError
            out += chunk
        return out

    def serve(self):
        try:
            while True:
                cmd, a0, a1, n, _, _ = struct.unpack("<6I", self.recv_exact(24))
                data = self.recv_exact(n) if n else b""
                self.handle(cmd, a0, a1, data)
        except (EOFError, OSError):
            for s in list(self.streams.values()):
                self._kill(s)

    def handle(self, cmd, a0, a1, data):
        if cmd == A_CNXN:
            self.send(A_CNXN, VERSION, MAXDATA, BANNER)
        elif cmd == A_OPEN:
            service = data.rstrip(b"\0").decode()
            local = self.next_id
            self.next_id += 1
            s = Stream(self, local, a0)
            self.streams[local] = s
            self.peer.log.append(service)
            self.send(A_OKAY, local, a0)
            if service.startswith("shell:"):
                threading.Thread(target=self.shell, args=(s, service[6:]), daemon=True).start()
            elif service.startswith("sync:"):
                pass
            else:
                s.close()
        elif cmd == A_OKAY:
            s = self.streams.get(a1)
            if s:
                s.acked.set()
        elif cmd == A_WRTE:
            s = self.streams.get(a1)
            self.send(A_OKAY, a1, a0)
            if s:
                s.buf += data
                self.sync(s)
        elif cmd == A_CLSE:
            s = self.streams.pop(a1, None)
            if s:
                self._kill(s)
                if not s.closed:
                    s.closed = True
                    self.send(A_CLSE, s.local, s.remote)

    @staticmethod
    def _kill(s: Stream):
        s.closed = True
        s.acked.set()
        if s.proc and s.proc.poll() is None:
            s.proc.kill()           # drops the ssh connection: the board sees a hang-up

    # -- shell: the command runs on the board, stdout+stderr merged (no shell_v2)
    def shell(self, s: Stream, command: str):
        s.proc = subprocess.Popen(self.peer.ssh + [command or "true"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        while not s.closed:
            chunk = s.proc.stdout.read1(65536)
            if not chunk:
                break
            s.write(chunk)
        s.proc.wait()
        s.close()

    # -- sync: requests are a byte stream across WRTE packets
    def sync(self, s: Stream):
        while len(s.buf) >= 8:
            cmd, n = s.buf[:4], struct.unpack("<I", s.buf[4:8])[0]
            if cmd == b"DATA" or cmd == b"DONE":
                if cmd == b"DATA":
                    if len(s.buf) < 8 + n:
                        return
                    s.upload += s.buf[8:8 + n]
                    s.buf = s.buf[8 + n:]
                    continue
                s.buf = s.buf[8:]
                self.finish_send(s)
                continue
            if cmd == b"QUIT":
                s.buf = b""
                s.close()
                return
            if len(s.buf) < 8 + n:
                return
            arg = s.buf[8:8 + n].decode()
            s.buf = s.buf[8 + n:]
            if cmd == b"STAT":
                r = subprocess.run(self.peer.ssh + [f"stat -c '%f %s %Y' {shlex.quote(arg)}"],
                                   capture_output=True, text=True)
                mode = size = mtime = 0
                if r.returncode == 0 and r.stdout.split():
                    f = r.stdout.split()
                    mode, size, mtime = int(f[0], 16), int(f[1]), int(f[2])
                s.write(b"STAT" + struct.pack("<III", mode, size, mtime))
            elif cmd == b"SEND":
                path, _, mode = arg.rpartition(",")
                s.send_path, s.send_mode, s.upload = path, int(mode) & 0o7777, b""
            elif cmd == b"RECV":
                r = subprocess.run(self.peer.ssh + [f"cat {shlex.quote(arg)}"], capture_output=True)
                if r.returncode:
                    msg = r.stderr or b"cannot read"
                    s.write(b"FAIL" + struct.pack("<I", len(msg)) + msg)
                else:
                    for i in range(0, len(r.stdout), 64 * 1024):
                        part = r.stdout[i:i + 64 * 1024]
                        s.write(b"DATA" + struct.pack("<I", len(part)) + part)
                    s.write(b"DONE" + struct.pack("<I", 0))
            else:
                msg = f"unknown sync request {cmd!r}".encode()
                s.write(b"FAIL" + struct.pack("<I", len(msg)) + msg)

    def finish_send(self, s: Stream):
        path, tmp = shlex.quote(s.send_path), shlex.quote(s.send_path + ".adb-tmp")
        d = shlex.quote(s.send_path.rpartition("/")[0] or "/")
        r = subprocess.run(self.peer.ssh + [f"mkdir -p {d} && cat > {tmp} && chmod {s.send_mode:o} {tmp} && "
                                            f"mv -f {tmp} {path} || {{ rm -f {tmp}; exit 1; }}"],
                           input=s.upload, capture_output=True)
        if r.returncode:
            msg = r.stderr.strip() or b"write failed"
            s.write(b"FAIL" + struct.pack("<I", len(msg)) + msg)
        else:
            s.write(b"OKAY" + struct.pack("<I", 0))
