"""The batch protocol between the host and guest/init.c.

Host to guest: the commands file (COMMANDS_FILE in the initramfs), one line
per command, each argument hex-encoded so any byte survives. Guest to host:
one frame per console line, `@@KTAP:<seq>:<tag>:<fields...>:<crc32 hex>`
(described in guest/init.c); kernel messages may land between or inside
frames, so a damaged frame is reported, never guessed at.
"""
from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass, field

from ktap.boards.errors import BoardError

COMMANDS_FILE = "etc/ktap/commands"
PROTOCOL_VERSION = 1


def encode_commands(commands: list[list[str]]) -> bytes:
    """The commands file guest/init.c reads: a line per command, hex arguments."""
    lines = []
    for argv in commands:
        if not argv:
            raise BoardError("empty command")
        lines.append(" ".join(a.encode().hex() for a in argv))
    return ("\n".join(lines) + "\n").encode()


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
