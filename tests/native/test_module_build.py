"""ktapvm.ko built by kbuild against each board kernel: the generated target
header carries the ABI, and the module builds without a warning on every target.
tests/board/test_module.py loads it on the boards."""

from __future__ import annotations

import pytest

from ktap.boards import kernels as kernel
from ktap.build import kmod
from ktap.build.kbuild import module_warnings
from ktap.build.render import render
from ktap.core import tools
from ktap.core.targets import get_target, target_names


TARGETS = target_names()


def test_render_has_the_target_abi(tmp_path):
    render("mips", tmp_path)
    ev = (tmp_path / "ktap_target.h").read_text()
    assert "X(0, regs[4])" in ev and "KTAP_ABI_RETVAL regs[2]" in ev
    assert "STACK_ARGS_OFFSET 16" in ev
    assert "obj-m := ktapvm.o" in kmod.module_files("mips", tmp_path)["Kbuild"]


@pytest.mark.parametrize("target", TARGETS)
def test_module_builds_without_warnings(target):
    t = get_target(target)
    try:
        tools.require_cross_gcc(t)
    except Exception as e:
        pytest.skip(str(e))
    if kernel.cached_kernel(t) is None:
        pytest.skip(f"no cached kernel for {target} (ktap board -t {target} kernel)")
    kdir = kernel.cached_kernel(t).directory
    ko = kmod.build_module(target, kdir)
    assert ko.name == "ktapvm.ko" and ko.stat().st_size > 10000
    assert module_warnings(ko) == []
    assert kmod.build_module(target, kdir) == ko      # cached
