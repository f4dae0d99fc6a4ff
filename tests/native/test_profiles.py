"""Target profiles on the host: tracepoint format and config parsing, the profile
directory round trip, refusals, and ktapw's dump format. Recording a profile from
a board is in tests/board/test_profiles_board.py."""

from __future__ import annotations

import hashlib
import json

import pytest

from ktap.core import tools
from ktap.core.targets import get_target
from ktap.symbols import profiles


FORMAT = """name: sys_enter_openat
ID: 612
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:const char * filename;\toffset:16;\tsize:8;\tsigned:0;
\tfield:char comm[16];\toffset:24;\tsize:16;\tsigned:0;
\tfield:__data_loc char[] name;\toffset:40;\tsize:4;\tsigned:1;

print fmt: "dfd: 0x%08lx", ((unsigned long)(REC->dfd))
"""


def test_parse_format():
    fields = {f.name: f for f in profiles.parse_format(FORMAT)}
    assert list(fields) == ["common_type", "common_flags", "__syscall_nr", "filename", "comm", "name"]
    assert fields["common_type"].common and not fields["filename"].common
    assert (fields["filename"].type, fields["filename"].offset, fields["filename"].size) == (
        "const char *", 16, 8)
    assert (fields["comm"].type, fields["comm"].array_len) == ("char[16]", 16)
    assert fields["name"].dynamic and fields["name"].type == "__data_loc char[]"
    assert fields["__syscall_nr"].signed and not fields["comm"].signed


def test_parse_config():
    c = profiles.parse_config('CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x y"\nCONFIG_D=0x10\n')
    assert c == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": "x y", "CONFIG_D": "0x10"}


def test_split_dump():
    data = b"@@file /a/x/format 3\nabc\n@@file /b 0\n\n"
    assert profiles.split_dump(data) == {"/a/x/format": b"abc", "/b": b""}
    with pytest.raises(profiles.ProfileError, match="damaged"):
        profiles.split_dump(b"garbage\n")


def collected(**kw):
    base = dict(target="mips", uname="Linux b 6.1.9 #1 mips",
                kallsyms=b"80100000 T _stext\n80100400 T vfs_read\n80100500 t helper\n",
                formats={"syscalls/sys_enter_openat": FORMAT.encode()},
                config=b"CONFIG_KPROBES=y\n# CONFIG_KRETPROBES is not set\n",
                config_source="test", filter_functions=b"vfs_read\nhelper [mod]\n",
                cmdline="console=ttyS0", source="test")
    base.update(kw)
    return profiles.Collected(**base)


def test_profile_round_trip(tmp_path):
    c = collected()
    out = profiles.write_profile(c, tmp_path / "p")
    p = profiles.load(out)
    assert (p.target, p.release) == ("mips", "6.1.9")
    assert p.meta["kallsyms"] == {"sha256": hashlib.sha256(c.kallsyms).hexdigest(),
                                  "lines": 3, "text": 3}
    assert p.features["kprobes"] is True and p.features["kretprobes"] is False
    assert p.tracepoints() == ["syscalls:sys_enter_openat"]
    assert [f.name for f in p.tracepoint_fields("syscalls", "sys_enter_openat")][-1] == "name"
    assert p.has_function("vfs_read") and not p.has_function("_stext")
    assert not p.has_function("nope")
    assert p.filter_functions == {"vfs_read", "helper"}
    with pytest.raises(profiles.ProfileError, match="no tracepoint sched:x"):
        p.tracepoint_fields("sched", "x")
    # Syncing again replaces the directory whole.
    profiles.write_profile(collected(formats={}), out)
    assert profiles.load(out).tracepoints() == []


def test_profile_without_config_has_unknown_features(tmp_path):
    p = profiles.load(profiles.write_profile(collected(config=None), tmp_path / "p"))
    assert p.features["kprobes"] is None and p.features["tracepoints"] is True


def test_load_refuses_non_profiles(tmp_path):
    with pytest.raises(profiles.ProfileError, match="not a target profile"):
        profiles.load(tmp_path)
    (tmp_path / "profile.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(profiles.ProfileError, match="sync it again"):
        profiles.load(tmp_path)


@pytest.fixture(scope="module")
def host_ktapw(tmp_path_factory):
    """The x86_64 guest program runs on an x86_64 host too: cat/dump without a boot."""
    import platform

    from ktap.boards.initramfs import compile_ktapw
    if platform.machine() != "x86_64":
        pytest.skip("host is not x86_64")
    t = get_target("x86_64")
    try:
        tools.require_cross_gcc(t)
    except tools.MissingTool as e:
        pytest.skip(str(e))
    out = tmp_path_factory.mktemp("ktapw") / "ktapw"
    compile_ktapw(t, out)
    return out


def test_ktapw_cat_and_dump(host_ktapw, tmp_path):
    import subprocess
    (tmp_path / "ev" / "sched" / "a").mkdir(parents=True)
    (tmp_path / "ev" / "sched" / "a" / "format").write_bytes(b"x\n@@file fake 9\n")
    (tmp_path / "ev" / "sched" / "a" / "enable").write_bytes(b"0\n")
    (tmp_path / "ev" / "loop").symlink_to(tmp_path / "ev")
    r = subprocess.run([host_ktapw, "cat", "/proc/self/stat", str(tmp_path / "ev/sched/a/enable")],
                       capture_output=True)
    assert r.returncode == 0 and r.stdout.endswith(b"0\n") and r.stdout.split()[1] == b"(ktapw)"
    r = subprocess.run([host_ktapw, "dump", "-n", "format", str(tmp_path / "ev")], capture_output=True)
    assert r.returncode == 0
    assert profiles.split_dump(r.stdout) == {
        str(tmp_path / "ev/sched/a/format"): b"x\n@@file fake 9\n"}
    r = subprocess.run([host_ktapw, "cat", str(tmp_path / "missing")], capture_output=True)
    assert r.returncode == 1 and b"No such file" in r.stderr
    assert subprocess.run([host_ktapw, "dump"], capture_output=True).returncode == 2
