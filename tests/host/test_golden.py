"""Golden disassembly listings of the samples, for every target. A change in
code generation shows up here as a readable diff. After an intended change,
regenerate with: KTAP_UPDATE_GOLDEN=1 pytest tests/test_golden.py"""

import os
from pathlib import Path

import pytest

from conftest import ROOT
from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.backends.kbc.disasm import disassemble
from ktap.core.targets import get_target, target_names


TARGETS = target_names()        # every targets/*/target.toml


GOLDEN = Path(__file__).parent / "golden"
SAMPLES = sorted((ROOT / "samples").glob("*.kp"))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_golden_disassembly(sample, target):
    img = api.compile_file(str(sample.relative_to(ROOT)), target)
    listing = disassemble(bc.load(bc.dump(img)))
    path = GOLDEN / f"{sample.stem}.{target}.dis"
    if os.environ.get("KTAP_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(listing)
    assert path.exists(), f"no golden listing {path.name}; run with KTAP_UPDATE_GOLDEN=1"
    assert listing == path.read_text()


def test_listings_differ_only_in_header_between_same_word_size_targets():
    for size in (4, 8):
        same = [t for t in TARGETS if get_target(t).word_size == size]
        assert len(same) >= 2, size
        for sample in SAMPLES:
            bodies = {t: (GOLDEN / f"{sample.stem}.{t}.dis").read_text().splitlines()[1:]
                      for t in same}
            assert all(b == bodies[same[0]] for b in bodies.values()), (sample.name, same)


def test_bytecode_doc_has_the_generated_opcode_table():
    from ktap.backends.kbc import opcodes
    assert opcodes.markdown_table() in (ROOT / "docs" / "bytecode.md").read_text()
