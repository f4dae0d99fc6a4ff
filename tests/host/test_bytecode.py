"""KBC dump/undump: round trips, byte order, header refusals."""

import struct
import zlib

import pytest

from conftest import ROOT, compile_text
from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.core.diagnostics import ImageError
from ktap.core.targets import get_target, target_names


TARGETS = target_names()        # every targets/*/target.toml


SAMPLES = sorted((ROOT / "samples").glob("*.kp"))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_dump_undump_dump_is_identical(target, sample):
    img = api.compile_file(str(sample), target)
    data = bc.dump(img)
    again = bc.load(data)
    assert again.target.name == target
    assert bc.dump(again) == data
    assert again.protos == img.protos and again.events == img.events


@pytest.mark.parametrize("little,big", [("arm", "mips"), ("arm", "powerpc")])
def test_endianness_only_changes_multibyte_field_order(little, big):
    text = (ROOT / "samples" / "write_sizes.kp").read_text()
    le, le_fields = bc.dump_with_fields(compile_text(text, little))
    be, be_fields = bc.dump_with_fields(compile_text(text, big))
    assert len(le) == len(be) and le_fields == be_fields
    # The body checksum is the one multi-byte field whose value (not only its
    # byte order) follows from the bytes it covers; it is checked on its own.
    crc_off = 4 + 8 + 8 + 4 + 4
    assert struct.unpack("<I", le[crc_off:crc_off + 4])[0] == zlib.crc32(le[crc_off + 4:])
    assert struct.unpack(">I", be[crc_off:crc_off + 4])[0] == zlib.crc32(be[crc_off + 4:])
    multi = set(range(crc_off, crc_off + 4))
    for off, size in le_fields:
        if off == crc_off:
            continue
        assert le[off:off + size] == be[off:off + size][::-1], f"field at {off}"
        multi.update(range(off, off + size))
    id_byte = 5
    order_byte = 6
    for i in range(len(le)):
        if i in multi:
            continue
        if i == order_byte:
            assert (le[i], be[i]) == (0, 1)
        elif i == id_byte:
            assert le[i] != be[i]
        else:
            assert le[i] == be[i], f"single byte {i} differs"
    assert le != be


def test_word_size_changes_layout():
    text = "var x = 1"
    assert len(bc.dump(compile_text(text, "x86_64"))) > len(bc.dump(compile_text(text, "arm")))


def test_header_fields():
    data = bc.dump(compile_text("var x = 1", "mips"))
    assert data[:4] == b"\x1bKBC"
    version, tid, order, wsize = data[4:8]
    assert (version, tid, order, wsize) == (bc.VERSION, get_target("mips").id, 1, 4)
    assert struct.unpack(">q", data[12:20])[0] == bc.CHECK_INT


def test_loader_refuses_other_byte_order_naming_both():
    data = bc.dump(compile_text("var x = 1", "mips"))
    with pytest.raises(ImageError) as exc:
        bc.load(data, expect=get_target("arm"))
    msg = exc.value.message
    assert "big-endian 32-bit (mips)" in msg and "little-endian 32-bit (arm)" in msg


def test_loader_refuses_other_word_size_naming_both():
    data = bc.dump(compile_text("var x = 1", "x86_64"))
    with pytest.raises(ImageError) as exc:
        bc.load(data, expect=get_target("arm"))
    assert "64-bit (x86_64)" in exc.value.message and "32-bit (arm)" in exc.value.message


def test_loader_refuses_same_layout_other_target():
    data = bc.dump(compile_text("var x = 1", "mips"))
    with pytest.raises(ImageError, match="for mips, this loader is for powerpc"):
        bc.load(data, expect=get_target("powerpc"))


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: b"XKBC" + d[4:], "bad magic"),
    (lambda d: d[:4] + b"\x09" + d[5:], "format version 9"),
    (lambda d: d[:6] + b"\x00" + d[7:], "header says little-endian"),
    (lambda d: d[:7] + b"\x05" + d[8:], "unsupported sizes"),
    (lambda d: d[:-3], "body is"),
    (lambda d: d[:-1] + bytes([d[-1] ^ 0xFF]), "checksum"),
    (lambda d: d[:12] + bytes(8) + d[20:], "check integer"),
    (lambda d: d[:5] + b"\x63" + d[6:], "unknown target id"),
    (lambda d: d[:10], "truncated"),
])
def test_corrupt_headers_are_refused(mutate, needle):
    data = bc.dump(compile_text("var x = 1", "mips"))
    with pytest.raises(ImageError, match=needle):
        bc.load(mutate(data))


def test_huge_counts_do_not_allocate():
    img = compile_text("var x = 1", "x86_64")
    data = bytearray(bc.dump(img))
    body = bc.Writer(img.target)
    body.body(img)
    # corrupt the first count of the body (source name length) and fix the crc
    hdr = len(data) - len(body.buf)
    data[hdr:hdr + 8] = struct.pack("<Q", 1 << 60)
    data[hdr - 4:hdr] = struct.pack("<I", zlib.crc32(bytes(data[hdr:])))
    with pytest.raises(ImageError, match="exceeds the image size"):
        bc.load(bytes(data))
