"""Targets are data (targets/*/target.toml): the registry's checks, the fields
that replaced per-target tables in Python (packages, agent line, ELF machine),
and arm64's descriptor."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from ktap.boards import qemu
from ktap.core import targets as registry
from ktap.core import tools
from ktap.core.diagnostics import TargetError
from ktap.core.targets import get_target, target_by_elf_machine, target_names
from ktap.symbols import codecheck
from ktap.symbols.readers import _machine_name


ARM64_TOML = (ROOT / "targets" / "arm64" / "target.toml").read_text()


def test_registry_holds_the_five_targets():
    assert target_names() == ["arm", "arm64", "mips", "powerpc", "x86_64"]
    ids = [get_target(n).id for n in target_names()]
    assert len(set(ids)) == len(ids)


def test_arm64_descriptor():
    t = get_target("arm64")
    assert (t.id, t.byte_order, t.word_size, t.kernel_arch) == (5, "little", 8, "arm64")
    assert t.struct_prefix == "<" and t.word_format == "Q"
    # AAPCS64: x0-x7 carry the first eight arguments, the rest start at sp
    assert t.abi.args == tuple(f"regs[{i}]" for i in range(8))
    assert (t.abi.stack_args_offset, t.abi.retval, t.abi.pc, t.abi.sp) == (0, "regs[0]", "pc", "sp")
    assert t.qemu["kernel_image"] == "arch/arm64/boot/Image"
    assert t.agent == registry.AgentLine("virtio", "/dev/hvc0")


@pytest.mark.parametrize("name", target_names())
def test_every_target_names_its_packages_and_agent_line(name):
    t = get_target(name)
    assert t.packages.gcc and t.packages.libc and t.packages.qemu
    assert t.agent.kind in registry.AGENT_KINDS and t.agent.device.startswith("/dev/")
    assert target_by_elf_machine(t.elf_machine) is t
    assert _machine_name(t.elf_machine) == name


def test_unknown_elf_machine_keeps_pyelftools_name():
    assert target_by_elf_machine("EM_RISCV") is None
    assert _machine_name("EM_RISCV") == "EM_RISCV"


def test_missing_tools_name_the_package_from_the_descriptor(monkeypatch):
    monkeypatch.setattr(tools.shutil, "which", lambda name: None)
    t = get_target("arm64")
    with pytest.raises(tools.MissingTool) as e:
        tools.require_cross_gcc(t)
    assert e.value.package == "gcc-aarch64-linux-gnu"
    with pytest.raises(tools.MissingTool) as e:
        qemu.require_qemu(t)
    assert (e.value.tool, e.value.package) == ("qemu-system-aarch64", "qemu-system-arm")


def test_agent_line_comes_from_the_descriptor():
    assert qemu.agent_device("arm64") == "/dev/hvc0"
    assert qemu.agent_device("mips") == "/dev/ttyS1"
    cmd = qemu.qemu_command(get_target("arm64"), Path("k"), Path("i"), agent_socket=Path("s"))
    assert "virtconsole,chardev=ktapagent" in cmd and "chardev:ktapagent" not in cmd
    cmd = qemu.qemu_command(get_target("powerpc"), Path("k"), Path("i"), agent_socket=Path("s"))
    assert "chardev:ktapagent" in cmd and "virtconsole,chardev=ktapagent" not in cmd


def _write(tmp_path: Path, name: str, text: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "target.toml").write_text(text)
    return d / "target.toml"


def test_descriptor_without_packages_is_refused(tmp_path):
    text = re.sub(r"\[packages\]\n(.*\n)*?\n", "", ARM64_TOML)
    assert "[packages]" not in text
    with pytest.raises(TargetError, match="missing 'packages'"):
        registry._load(_write(tmp_path, "a", text))


def test_descriptor_with_unknown_agent_kind_is_refused(tmp_path):
    text = ARM64_TOML.replace('kind = "virtio"', 'kind = "usb"')
    with pytest.raises(TargetError, match="agent.kind"):
        registry._load(_write(tmp_path, "a", text))


def test_two_targets_with_one_id_are_refused(tmp_path, monkeypatch):
    _write(tmp_path, "arm64", ARM64_TOML)
    _write(tmp_path, "other", ARM64_TOML.replace('name = "arm64"', 'name = "other"'))
    monkeypatch.setattr(registry, "TARGETS_DIR", tmp_path)
    registry.all_targets.cache_clear()
    try:
        with pytest.raises(TargetError, match="id 5 is already arm64's"):
            registry.all_targets()
    finally:
        monkeypatch.undo()
        registry.all_targets.cache_clear()
    assert "arm64" in registry.all_targets()


def test_setup_installs_every_targets_packages():
    """scripts/setup.sh reads [packages] from the descriptors: run its reader."""
    script = (ROOT / "scripts" / "setup.sh").read_text()
    reader = re.search(r"<<'PY'\n(.*?)\nPY\n", script, re.S).group(1)
    r = subprocess.run([sys.executable, "-", str(ROOT / "targets")], input=reader,
                       capture_output=True, text=True, check=True)
    listed = set(r.stdout.split())
    for name in target_names():
        p = get_target(name).packages
        assert {p.gcc, p.libc, p.qemu} <= listed, name


def _a64(*words: int) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in words)


LDXR, ADD, STXR, RET = 0x885F7C01, 0x11000421, 0x88027C01, 0xD65F03C0   # w1,[x0] ...


def _arm64_check(offset: int) -> codecheck.ProbeCheck:
    t = get_target("arm64")
    insns = codecheck.decode(t, _a64(ADD, LDXR, ADD, STXR, RET), 0x1000)
    assert [i.mnemonic for i in insns] == ["add", "ldxr", "add", "stxr", "ret"]
    check = codecheck.ProbeCheck("f", offset)
    codecheck._isa_warnings(check, t, insns, offset // 4, False)
    return check


def test_arm64_probe_inside_an_exclusive_sequence_warns():
    assert _arm64_check(0).warnings == []              # before the ldxr
    assert "exclusive load/store sequence (ldxr at 0x1004)" in _arm64_check(8).warnings[0]
    assert "exclusive access 'stxr'" in _arm64_check(12).warnings[0]
    assert _arm64_check(16).warnings == []             # after the stxr
