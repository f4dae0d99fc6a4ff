"""`ktap compile/check --vmlinux/--system-map/--profile` against the cached board
kernel's files: probes checked offline, errors at the probe's location, globs
expanded. The profile case, which boots a board, is in tests/board."""

import pytest

from conftest import board_vmlinux, compile_text, compile_with
from ktap.core.diagnostics import KtapError


def test_without_kernel_info_globs_stay_for_the_target():
    img = compile_text("trace probe:vfs_writ* { }", "arm")
    assert [e.name for e in img.events] == ["vfs_writ*"]


def test_unknown_function_is_an_error_at_the_probe():
    d = board_vmlinux()
    with pytest.raises(KtapError) as exc:
        compile_with("var x = 1\ntrace probe:vfs_wrte { }", vmlinux=str(d / "vmlinux"))
    assert (exc.value.loc.line, exc.value.loc.col) == (2, 7)
    assert "did you mean 'vfs_write'" in exc.value.message


def test_glob_expanded_on_the_host():
    d = board_vmlinux()
    img, _ = compile_with("trace probe:vfs_writ* { }", system_map=str(d / "System.map"))
    names = sorted(e.name for e in img.events)
    assert "vfs_write" in names and all(n.startswith("vfs_writ") for n in names)
    assert len({e.handler for e in img.events}) == 1


def test_mid_instruction_offset_refused_with_vmlinux():
    d = board_vmlinux()
    with pytest.raises(KtapError, match="not an instruction boundary"):
        compile_with("trace probe:vfs_write+2 { }", vmlinux=str(d / "vmlinux"))
    compile_with("trace probe:vfs_write+4 { }", vmlinux=str(d / "vmlinux"))
