"""The serial agent's frames (kmod/ktaprun/serve.c): `kT`, a kind byte, a
big-endian payload length, the payload, and a CRC-32 of kind, length and
payload. A serial line also carries boot messages and line noise, so the
reader resynchronises on the magic and drops what fails the CRC."""
from __future__ import annotations

import struct
import zlib

MAGIC = b"kT"
HDR = struct.Struct(">2sBI")
MAX_PAYLOAD = 64 * 1024


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
