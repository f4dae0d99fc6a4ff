"""Opening the transport a command line names (`ktap run`, `ktap target sync`)."""
from __future__ import annotations

from ktap.deploy.adb import AdbTransport
from ktap.deploy.serial import SerialTransport
from ktap.deploy.ssh import SshTransport
from ktap.deploy.transport import Transport, TransportError


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
