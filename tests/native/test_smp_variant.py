"""The "smp" kernel variant without booting it: refused for mips and powerpc,
its config key and fragment, the CPU count on QEMU's command line, and the refusal
of deterministic runs on a QEMU whose -icount livelocks with two CPUs.
tests/board/test_smp_board.py boots the two-CPU boards."""

from __future__ import annotations

import stat

import pytest

from ktap.boards import kernels as kernel
from ktap.boards import qemu
from ktap.boards.batch import run_commands
from ktap.boards.errors import BoardError
from ktap.boards.qemu import (VARIANT_CPUS, check_deterministic, qemu_command, qemu_version,
                              variant_cpus)
from ktap.core.targets import get_target


SMP_TARGETS = ("x86_64", "arm", "arm64")
NO_SMP_TARGETS = ("mips", "powerpc")
REFUSAL = "the smp variant exists for x86_64, arm and arm64"


@pytest.mark.parametrize("name", NO_SMP_TARGETS)
def test_smp_variant_is_refused_for_mips_and_powerpc(name):
    target = get_target(name)
    with pytest.raises(kernel.KernelError, match=REFUSAL):
        kernel.variant_fragment(target, "smp")
    with pytest.raises(kernel.KernelError, match=REFUSAL):
        kernel.config_key(target, "v", "cc", "smp")
    # before any tool or the cache is touched
    with pytest.raises(kernel.KernelError, match=REFUSAL) as e:
        kernel.ensure_kernel_build(name, variant="smp")
    assert name in str(e.value)


def test_unknown_variant_still_lists_the_known_ones():
    with pytest.raises(kernel.KernelError, match="known: debug, rt, smp"):
        kernel.variant_fragment(get_target("arm"), "nosuch")


@pytest.mark.parametrize("name", SMP_TARGETS)
def test_smp_config_key_differs_from_the_default_and_debug_kernels(name):
    t = get_target(name)
    keys = {kernel.config_key(t, "v", "cc"), kernel.config_key(t, "v", "cc", "debug"),
            kernel.config_key(t, "v", "cc", "smp")}
    assert len(keys) == 3
    assert kernel.config_key(t, "v", "cc", None) == kernel.config_key(t, "v", "cc")


def test_smp_fragment_applies_per_target():
    x86 = kernel.parse_fragment(kernel.variant_fragment(get_target("x86_64"), "smp"))
    arm = kernel.parse_fragment(kernel.variant_fragment(get_target("arm"), "smp"))
    for frag in (x86, arm):
        assert frag["CONFIG_SMP"] == "y"
        assert int(frag["CONFIG_NR_CPUS"]) >= VARIANT_CPUS["smp"]
    assert x86["CONFIG_X86_MPPARSE"] == "y" and "CONFIG_ARM_PSCI" not in x86
    assert arm["CONFIG_ARM_PSCI"] == "y" and "CONFIG_X86_MPPARSE" not in arm
    # the board's own fragment and the variant merge; the variant wins
    assert kernel.wanted_options(get_target("arm"), "smp")["CONFIG_THUMB2_KERNEL"] == "n"
    assert kernel.wanted_options(get_target("arm"), "smp")["CONFIG_SMP"] == "y"


def test_qemu_command_gets_the_cpu_count_of_the_variant(tmp_path):
    for name in SMP_TARGETS:
        t = get_target(name)
        cmd = qemu_command(t, tmp_path / "z", tmp_path / "i", kernel_variant="smp")
        assert cmd[cmd.index("-smp") + 1] == "2,sockets=2"
        assert "-smp" not in qemu_command(t, tmp_path / "z", tmp_path / "i")
        assert "-smp" not in qemu_command(t, tmp_path / "z", tmp_path / "i",
                                          kernel_variant="debug")
    assert variant_cpus("smp") == 2 and variant_cpus(None) == 1


def _fake_qemu(tmp_path, version: str):
    q = tmp_path / "qemu-system-fake"
    q.write_text(f"#!/bin/sh\necho 'QEMU emulator version {version} (Debian 1:x)'\n")
    q.chmod(q.stat().st_mode | stat.S_IXUSR)
    return str(q)


def test_qemu_version_is_read_from_the_binary(tmp_path):
    assert qemu_version(_fake_qemu(tmp_path, "7.2.22")) == (7, 2)


def test_deterministic_smp_run_is_refused_on_a_qemu_that_livelocks(tmp_path, monkeypatch):
    old = _fake_qemu(tmp_path, "7.2.22")
    with pytest.raises(BoardError, match=r"QEMU 8\.1 or later.*is 7\.2"):
        check_deterministic(old, "smp")
    check_deterministic(old, None)          # one CPU: -icount is fine
    check_deterministic(old, "debug")
    (tmp_path / "new").mkdir()
    new = _fake_qemu(tmp_path / "new", "8.1.0")
    check_deterministic(new, "smp")
    # run_commands refuses before it builds or boots anything
    monkeypatch.setattr(qemu, "require_qemu", lambda target: old)
    monkeypatch.setattr(qemu, "boot_image", lambda *a: pytest.fail("must not build a kernel"))
    with pytest.raises(BoardError, match="deterministic"):
        run_commands("arm", [["ktapw", "uname"]], deterministic=True, kernel_variant="smp")
