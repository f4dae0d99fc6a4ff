"""ktapvm.ko: kbuild for every target, and the module running scripts in the
four QEMU boards.

Board tests boot once per target (the `session` fixture runs every guest
command the tests look at in that boot): insmod, the smoke client
(kmod/tests/ktap_smoke.c) with several scripts, rmmod, dmesg. A missing QEMU
or cross compiler skips them with the reason; a kernel not yet cached is
built first (minutes).
"""

from __future__ import annotations
import pytest
from ktap.boards import kernels as kernel
from ktap.build import kmod
from ktap.core.targets import get_target, target_names
from ktap.core import tools
TARGETS = target_names()


def test_render_has_the_target_abi(tmp_path):
    kmod.render("mips", tmp_path)
    ev = (tmp_path / "ktap_events.c").read_text()
    assert "regs->regs[4]" in ev and "regs->regs[2]" in ev
    assert "STACK_ARGS_OFFSET 16" in ev
    assert "obj-m := ktapvm.o" in (tmp_path / "Kbuild").read_text()


@pytest.mark.parametrize("target", TARGETS)
def test_module_builds_without_warnings(target):
    t = get_target(target)
    try:
        tools.require_cross_gcc(t)
    except Exception as e:
        pytest.skip(str(e))
    if kernel.cached_kernel(t) is None:
        pytest.skip(f"no cached kernel for {target} (ktap board -t {target} kernel)")
    ko = kmod.build_module(target)
    assert ko.name == "ktapvm.ko" and ko.stat().st_size > 10000
    assert kmod.module_warnings(ko) == []
    assert kmod.build_module(target) == ko      # cached
