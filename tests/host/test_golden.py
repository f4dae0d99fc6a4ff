"""Golden disassembly listings of the samples, for every target. A change in
code generation shows up here as a readable diff. After an intended change,
regenerate with: KTAP_UPDATE_GOLDEN=1 pytest tests/test_golden.py"""

import os
from pathlib import Path

import pytest

from conftest import ROOT, TARGETS
from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.backends.kbc.disasm import disassemble


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
    for sample in SAMPLES:
        arm = (GOLDEN / f"{sample.stem}.arm.dis").read_text().splitlines()[1:]
        mips = (GOLDEN / f"{sample.stem}.mips.dis").read_text().splitlines()[1:]
        assert arm == mips, sample.name


def test_bytecode_doc_has_the_generated_opcode_table():
    from ktap.backends.kbc import opcodes
    assert opcodes.markdown_table() in (ROOT / "docs" / "bytecode.md").read_text()
