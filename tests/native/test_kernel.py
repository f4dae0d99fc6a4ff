"""Kernel builds without building one: config fragments, cache keys, missing
tools and what a cache hit needs. tests/board/test_kernel_board.py checks the
built kernels."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from ktap.boards import kernels as kernel
from ktap.core import cache, tools
from ktap.core.targets import get_target, target_names


def test_parse_fragment_reads_set_and_unset_options():
    text = "# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\nCONFIG_D=n\n\n"
    assert kernel.parse_fragment(text) == {"CONFIG_A": "y", "CONFIG_B": "n",
                                           "CONFIG_C": '"x y"', "CONFIG_D": "n"}


def test_fragment_lines_round_trip():
    wanted = {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_N": "42"}
    assert kernel.parse_fragment(kernel.fragment_lines(wanted)) == wanted


def test_config_mismatches_names_lost_options():
    wanted = {"CONFIG_KPROBES": "y", "CONFIG_THUMB2_KERNEL": "n", "CONFIG_X": "y"}
    config = "CONFIG_KPROBES=y\nCONFIG_THUMB2_KERNEL=y\n"
    bad = kernel.config_mismatches(wanted, config)
    assert bad == ["CONFIG_THUMB2_KERNEL: wanted n, got y", "CONFIG_X: wanted y, got n"]


def test_absent_option_counts_as_unset():
    assert kernel.config_mismatches({"CONFIG_T": "n"}, "CONFIG_OTHER=y\n") == []


@pytest.mark.parametrize("name", target_names())
def test_fragments_ask_for_the_tracing_options(name):
    wanted = kernel.wanted_options(get_target(name))
    for option in ("CONFIG_MODULES", "CONFIG_MODULE_UNLOAD", "CONFIG_KPROBES", "CONFIG_KRETPROBES",
                   "CONFIG_PERF_EVENTS", "CONFIG_FTRACE", "CONFIG_EVENT_TRACING",
                   "CONFIG_HIGH_RES_TIMERS", "CONFIG_DEVTMPFS", "CONFIG_BLK_DEV_INITRD",
                   "CONFIG_DEBUG_FS", "CONFIG_KALLSYMS_ALL", "CONFIG_BPF_SYSCALL",
                   "CONFIG_BPF_EVENTS", "CONFIG_COMPAT_32BIT_TIME", "CONFIG_TMPFS"):
        assert wanted.get(option) == "y", option


def test_board_fragments_carry_the_measured_pitfall_fixes():
    assert kernel.wanted_options(get_target("arm"))["CONFIG_THUMB2_KERNEL"] == "n"
    mips = kernel.wanted_options(get_target("mips"))
    assert mips["CONFIG_CPU_BIG_ENDIAN"] == mips["CONFIG_MIPS_FP_SUPPORT"] == "y"
    ppc = kernel.wanted_options(get_target("powerpc"))
    assert ppc["CONFIG_PHYS_64BIT"] == ppc["CONFIG_MATH_EMULATION"] == "y"
    assert kernel.wanted_options(get_target("x86_64"))["CONFIG_64BIT"] == "y"
    arm64 = kernel.wanted_options(get_target("arm64"))
    # the console on virt's PL011, the agent line on a virtio console
    assert arm64["CONFIG_SERIAL_AMBA_PL011_CONSOLE"] == arm64["CONFIG_VIRTIO_CONSOLE"] == "y"


def _target_with_fragment(tmp_path, text, name="arm"):
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    (d / "config").write_text(text)
    return dataclasses.replace(get_target(name), directory=d)


def test_config_key_is_stable(tmp_path):
    t = _target_with_fragment(tmp_path, "CONFIG_A=y\n")
    assert kernel.config_key(t, "6.1.1-1", "12.2.0") == kernel.config_key(t, "6.1.1-1", "12.2.0")


def test_config_key_changes_with_fragment_source_version_compiler_and_target(tmp_path):
    t = _target_with_fragment(tmp_path, "CONFIG_A=y\n")
    base = kernel.config_key(t, "6.1.1-1", "12.2.0")
    (tmp_path / "other").mkdir()
    t2 = _target_with_fragment(tmp_path / "other", "CONFIG_A=n\n")
    keys = {
        base,
        kernel.config_key(t2, "6.1.1-1", "12.2.0"),
        kernel.config_key(t, "6.1.2-1", "12.2.0"),
        kernel.config_key(t, "6.1.1-1", "12.3.0"),
        kernel.config_key(dataclasses.replace(t, name="mips"), "6.1.1-1", "12.2.0"),
    }
    assert len(keys) == 5


def test_config_key_changes_with_common_fragment(tmp_path, monkeypatch):
    t = _target_with_fragment(tmp_path, "CONFIG_A=y\n")
    before = kernel.config_key(t, "v", "c")
    common = tmp_path / "common.config"
    common.write_text(kernel.COMMON_FRAGMENT.read_text() + "CONFIG_EXTRA=y\n")
    monkeypatch.setattr(kernel, "COMMON_FRAGMENT", common)
    assert kernel.config_key(t, "v", "c") != before


def test_cache_root_follows_ktap_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("KTAP_CACHE", str(tmp_path / "c"))
    assert cache.cache_root() == tmp_path / "c"
    monkeypatch.delenv("KTAP_CACHE")
    assert cache.cache_root() == cache.Path.home() / ".cache" / "ktap"


def test_cache_hit_needs_stamp_and_image(monkeypatch, tmp_path):
    monkeypatch.setenv("KTAP_CACHE", str(tmp_path))
    monkeypatch.setattr(kernel, "source_version", lambda: "6.1.0-test")
    monkeypatch.setattr(kernel, "compiler_version", lambda t: "0.0")
    t = get_target("arm")
    d = kernel.build_dir(t)
    assert str(d).startswith(str(tmp_path / "kernels" / "arm-"))
    assert kernel.cached_kernel(t) is None
    image = d / t.qemu["kernel_image"]
    image.parent.mkdir(parents=True)
    image.write_bytes(b"zImage")
    assert kernel.cached_kernel(t) is None          # half-finished build: no stamp yet
    (d / "ktap-build.json").write_text(json.dumps({"seconds": 200.5}))
    hit = kernel.cached_kernel(t)
    assert hit.cached and hit.image == image and hit.seconds == 200.5
    assert kernel.ensure_kernel(t, progress=False) == d


def test_missing_tool_names_the_debian_package():
    with pytest.raises(tools.MissingTool) as e:
        tools.require_tool("ktap-no-such-tool-xyz", "ktap-pkg")
    assert "ktap-no-such-tool-xyz" in str(e.value)
    assert "apt-get install ktap-pkg" in str(e.value)


def test_missing_cross_compiler_names_gcc_package(monkeypatch):
    monkeypatch.setattr(tools.shutil, "which", lambda name: None)
    with pytest.raises(tools.MissingTool) as e:
        tools.require_cross_gcc(get_target("arm"))
    assert e.value.package == "gcc-arm-linux-gnueabihf"
    with pytest.raises(tools.MissingTool) as e:
        tools.require_cross_gcc(get_target("powerpc"))
    assert e.value.package == "gcc-powerpc-linux-gnu"


def test_powerpc_builds_the_elf_vmlinux_not_a_uimage():
    # A uImage needs u-boot's mkimage, which the host does not have.
    assert kernel.image_goal(get_target("powerpc")) == "vmlinux"
    assert kernel.image_goal(get_target("arm")) == "zImage"


def test_board_kernel_without_the_source_package_is_a_clean_error(tmp_path):
    """What a user without linux-source-6.1 sees: the package to install, exit 1,
    no traceback."""
    env = dict(os.environ, KTAP_LINUX_SOURCE=str(tmp_path / "none.tar.xz"),
               KTAP_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "ktap.cli", "board", "-t", "arm", "kernel"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "install the Debian package 'linux-source-6.1'" in r.stderr
    assert "Traceback" not in r.stderr
