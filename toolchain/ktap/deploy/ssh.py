"""ssh: the system's OpenSSH client, so the user's ~/.ssh/config, keys and
agent keep working. A remote command's PID comes back on stderr
(`KTAPPID=`), so Ctrl-C can be passed on as a `kill -INT` instead of
killing the connection."""
from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from ktap.deploy.transport import (AUTH, UNREACHABLE, MarkerFilter, ShellTransport, Sink,
                                   TransportError, classify_push_error, pump_process,
                                   push_script)

SSH_UNREACHABLE = ("connection refused", "no route to host", "could not resolve hostname",
                   "connection timed out", "network is unreachable", "operation timed out",
                   "connection closed by", "connection reset", "name or service not known",
                   "kex_exchange_identification")


class SshTransport(ShellTransport):
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

    def shell(self, script: str, input_file: Path | None = None, timeout: float = 120) -> str:
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

    def push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        try:
            self.shell(push_script(remote, mode), input_file=Path(local))
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
        errs = MarkerFilter(err)
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

        status = pump_process(proc, out, on_err, interrupt)
        errs.finish()
        if status == 255 and errs.pid is None:
            raise self._error(errtext.decode(errors="replace"))
        return status


class _RemoteFailed(Exception):
    def __init__(self, status: int, stdout: str, stderr: str):
        self.status, self.stdout, self.stderr = status, stdout, stderr
        super().__init__(f"remote command failed with status {status}: {stderr.strip()[:300]}")
