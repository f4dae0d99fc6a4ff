"""adb: the system's adb client; the target needs the same shell tools as
over ssh (toybox has them)."""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from ktap.deploy.transport import (AUTH, UNREACHABLE, MarkerFilter, ShellTransport, Sink,
                                   TransportError, classify_push_error, pump_process)


class AdbTransport(ShellTransport):
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

    def shell(self, script: str) -> str:
        r = self._adb(["shell", script])
        return r.stdout.decode(errors="replace")

    def push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        d = os.path.dirname(remote) or "/"
        self.shell(f"mkdir -p {shlex.quote(d)}")
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
        outs = MarkerFilter(out)

        def interrupt() -> None:
            if outs.pid:
                self._adb(["shell", f"kill -INT {outs.pid}"], timeout=30)
            else:
                proc.terminate()

        status = pump_process(proc, outs.feed, err, interrupt)
        outs.finish()
        if outs.exit is None:
            raise TransportError(f"adb: the connection ended before the command did (status {status})",
                                 "check the cable or network link to the device", UNREACHABLE)
        return outs.exit
