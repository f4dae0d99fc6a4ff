"""No input produces a Python traceback: random and mutated scripts through the
compiler, random and mutated KBC through the loader, the verifier and the VM."""

import io
import os
import struct
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT
from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.backends.kbc.verifier import verify
from ktap.core.diagnostics import KtapError, Source
from ktap.core.targets import target_names
from ktap.refvm.sim import Session, parse_events


TARGETS = target_names()        # every targets/*/target.toml


SAMPLES = [p.read_text() for p in sorted((ROOT / "samples").glob("*.kp"))]
EVENTS = parse_events("\n".join([
    '{"probe": "probe:vfs_write", "execname": "a", "args": [1, 2, 3], "stack": [1, 2]}',
    '{"probe": "probe:vfs_write%return", "retval": 3}',
    '{"probe": "raw_syscalls:sys_enter", "fields": {"id": 1, "args": 2}}',
    '{"probe": "tick-1s"}', '{"probe": "profile-1ms", "stack": [5]}',
]), "fuzz")
FUZZ = settings(max_examples=int(os.environ.get("KTAP_FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=list(HealthCheck))

TOKENS = ["var", "x", "y", "t", "=", "+=", "<<<", "{", "}", "(", ")", "[", "]", ",", ";",
          "if", "else", "while", "for", "in", "pairs", "break", "return", "function", "f",
          "trace", "probe:vfs_write", "%return", "/", "*", "-", "..", "==", "&&", "||", "!",
          "1", "0x10", "'s'", "\"%d\\n\"", "printf", "print", "hist", "count", "arg1",
          "execname", "args.id", "tick-1s", "trace_end", "nil", "true", "\n", "#c\n", "."]


def run_script(text: str, target: str = "x86_64") -> None:
    src = Source("fuzz.kp", text)
    try:
        img = api.compile_source(src, target, {"budget": 2000})
        Session(img, io.StringIO().write, src, EVENTS).run()
    except KtapError as e:
        assert e.render()


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join))
def test_token_soup_scripts(text):
    run_script(text)


@FUZZ
@given(st.text(max_size=200))
def test_random_text_scripts(text):
    run_script(text)


@FUZZ
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_samples(text, data):
    pos = data.draw(st.integers(0, len(text)))
    cut = data.draw(st.integers(0, 8))
    insert = data.draw(st.sampled_from(TOKENS + ["", "(", "}", "\"", "'"]))
    run_script(text[:pos] + insert + text[pos + cut:])


def refresh_crc(data: bytearray, word_size: int, order: str) -> bytes:
    p = "<" if order == "little" else ">"
    crc_off = 4 + 8 + 8 + word_size * 2
    if len(data) >= crc_off + 4:
        data[crc_off:crc_off + 4] = struct.pack(p + "I", zlib.crc32(bytes(data[crc_off + 4:])))
    return bytes(data)


def run_image(data: bytes) -> None:
    try:
        img = bc.load(data)
        verify(img)
        Session(img, io.StringIO().write, None, EVENTS).run()
    except KtapError as e:
        assert e.render()


COMPILED = {(t, i): bc.dump(api.compile_source(Source("s.kp", s), t))
            for t in TARGETS for i, s in enumerate(SAMPLES)}


@FUZZ
@given(st.sampled_from(sorted(COMPILED)), st.data())
def test_mutated_images(key, data):
    from ktap.core.targets import get_target
    t = get_target(key[0])
    image = bytearray(COMPILED[key])
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(24, len(image) - 1))
        image[pos] = data.draw(st.integers(0, 255))
    run_image(refresh_crc(image, t.word_size, t.byte_order))


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_as_images(blob):
    run_image(b"\x1bKBC\x01\x01\x00\x08" + blob)
    run_image(blob)


@FUZZ
@given(st.sampled_from(sorted(COMPILED)), st.data())
def test_mutated_instructions_in_verified_images(key, data):
    """Instruction-level mutations that keep the container valid: the verifier
    refuses, or the VM runs them within the budget and fails cleanly."""
    img = bc.load(COMPILED[key])
    img.limits.budget = 2000
    p = img.protos[data.draw(st.integers(0, len(img.protos) - 1))]
    i = data.draw(st.integers(0, len(p.code) - 1))
    p.code[i] = data.draw(st.integers(0, 0xFFFFFFFF))
    run_image(bc.dump(img))
