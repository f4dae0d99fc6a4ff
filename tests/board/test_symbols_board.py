"""ktap.symbols: symbol tables against nm and the board's kallsyms, refusal
reasons, glob expansion, capstone probe-point checks, symbolization, and
resolve_events().

Tests on real kernels use the cached board kernels (built by `ktap board -t
ARCH kernel`) and skip with the reason when one is missing; they never build
one. Tests marked `board` boot QEMU once per target (through the cached
board profile, see test_profiles.py).
"""

from __future__ import annotations

import gzip

import pytest

from conftest import build_dir, compile_text
from ktap.boards.profile import board_profile
from ktap.core.targets import get_target, target_names
from ktap.symbols import profiles, readers, resolve, symbolize


def events(text: str, target: str = "arm"):
    return compile_text(text, target).events


@pytest.mark.board
@pytest.mark.parametrize("arch", target_names())
def test_vmlinux_addresses_match_board_kallsyms(arch):
    """The boards boot without KASLR: static addresses are runtime addresses."""
    d = build_dir(arch)
    target = get_target(arch)
    prof = board_profile(arch)         # one boot per target, then cached
    config = profiles.parse_config((d / ".config").read_text())
    assert config.get("CONFIG_RANDOMIZE_BASE", "n") == "n" and "kaslr" not in prof.meta["cmdline"]
    kallsyms = gzip.decompress((prof.path / "kallsyms.gz").read_bytes()).decode()
    runtime = readers.parse_map_text(kallsyms, "kallsyms", word_size=target.word_size)
    table = readers.load_vmlinux(d / "vmlinux")
    unique = [s for s in table.functions() if len(table.lookup(s.name)) == 1
              and len(runtime.lookup(s.name)) == 1]
    assert len(unique) > 10_000
    wrong = [s.name for s in unique if runtime.lookup(s.name)[0].addr != s.addr]
    assert wrong == []
    anchored = symbolize.Symbolizer(table, "_printk", runtime.address_of("_printk"))
    assert anchored.slide == 0
    assert anchored(runtime.address_of("vfs_read") + 4) == "vfs_read+0x4"


@pytest.mark.board
def test_resolve_with_board_profile_and_vmlinux():
    d = build_dir("arm")
    prof = board_profile("arm")
    r = resolve.resolve_events(events("trace probe:vfs_read+4 { }\n"
                                      "trace syscalls:sys_enter_write { print(args.count) }"),
                               "arm", vmlinux=d / "vmlinux", profile=prof)
    assert r.problems == []
    assert r.layouts["syscalls:sys_enter_write"]["count"].size == 4
