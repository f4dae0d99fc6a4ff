"""The parts of a QEMU board, without booting one: the framed results parser,
the commands file, newc cpio and gzip, QEMU command lines from the target
descriptors, missing-tool messages, a hung or early-exiting QEMU (a stand-in
binary), and ktapw built for the host. tests/board/test_board.py boots them."""

from __future__ import annotations

import base64
import gzip
import stat
import subprocess
import zlib
from pathlib import Path

import pytest

from ktap.boards.batch import drive
from ktap.boards.check import parse_key_values
from ktap.boards.errors import BoardError, BoardTimeout
from ktap.boards.frames import COMMANDS_FILE, FrameParser, encode_commands
from ktap.boards.initramfs import CpioEntry, compile_ktapw, gzip_bytes, newc_archive, run_archive
from ktap.boards.qemu import qemu_command, require_qemu
from ktap.core import tools
from ktap.core.targets import get_target, target_names


def frame(seq: int, body: str) -> str:
    text = f"{seq}:{body}"
    return f"@@KTAP:{text}:{zlib.crc32(text.encode()):08x}"


def read_newc(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """Minimal newc reader, written from the format description, to check the writer."""
    out, pos = {}, 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        name = data[pos + 110: pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        body = data[pos: pos + size]
        pos = (pos + size + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body, (rmaj, rmin))


def test_parser_collects_output_and_status():
    p = FrameParser([["ktapw", "uname"], ["false"]])
    lines = [
        "Booting Linux...",
        frame(0, "HELLO:1:armv7l:6.1.0:0.5"),
        frame(1, "BEGIN:0:6b74617077"),
        frame(2, "O:0:" + base64.b64encode(b"Linux x\n").decode()),
        frame(3, "E:0:" + base64.b64encode(b"warn\n").decode()),
        frame(4, "END:0:0:0.01"),
        frame(5, "BEGIN:1:66616c7365"),
        frame(6, "END:1:1:0.002"),
        frame(7, "DONE:2"),
    ]
    tags = [p.feed_line(l + "\r\n") for l in lines]
    assert tags == [None, "HELLO", "BEGIN", "O", "E", "END", "BEGIN", "END", "DONE"]
    p.finish()
    assert p.done and p.errors == [] and p.hello_count == 1
    first, second = p.results
    assert (first.status, first.stdout, first.stderr, first.output) == (0, b"Linux x\n", b"warn\n",
                                                                         "Linux x\nwarn\n")
    assert first.ok and second.status == 1 and not second.ok


def test_parser_finds_a_frame_after_kernel_text_on_the_same_line():
    p = FrameParser([["x"]])
    assert p.feed_line("[  1.2] random: crng init done" + frame(0, "HELLO:1:m:r:0.1")) == "HELLO"


def test_parser_rejects_a_frame_with_kernel_text_inside():
    p = FrameParser([["x"]])
    good = frame(0, "O:0:" + base64.b64encode(b"abcdef").decode())
    damaged = good[:20] + "[ 3.1] kprobe hit" + good[20:]
    assert p.feed_line(damaged) is None
    p.finish()
    assert p.errors and "corrupted" in p.errors[0]
    assert p.results[0].errors      # the damage is reported on the result, never hidden


def test_parser_notices_a_lost_frame():
    p = FrameParser([["x"]])
    p.feed_line(frame(0, "HELLO:1:m:r:0.1"))
    p.feed_line(frame(2, "END:0:0:0.1"))
    assert p.errors == ["lost frames 1..1"]


def test_parser_reports_commands_without_status():
    p = FrameParser([["a"], ["b"]])
    p.feed_line(frame(0, "END:0:0:0.1"))
    p.finish()
    assert p.results[0].ok and p.results[1].errors == ["no exit status received"]


def test_commands_file_is_hex_per_argument():
    data = encode_commands([["ktapw", "open", "/a b\nc", "3"], ["x"]])
    assert data == b"6b74617077 6f70656e 2f6120620a63 33\n78\n"
    with pytest.raises(BoardError):
        encode_commands([[]])


def test_newc_archive_round_trips_files_dirs_and_devices():
    entries = [CpioEntry("dev", stat.S_IFDIR | 0o755),
               CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
               CpioEntry("init", stat.S_IFREG | 0o755, b"\x7fELF" + bytes(range(7)))]
    got = read_newc(newc_archive(entries))
    assert got["dev/console"] == (stat.S_IFCHR | 0o600, b"", (5, 1))
    assert got["init"][1] == b"\x7fELF" + bytes(range(7))
    assert stat.S_ISDIR(got["dev"][0])


def test_run_archive_adds_parent_dirs_commands_and_keeps_exec_bits(tmp_path):
    module = tmp_path / "m.ko"
    module.write_bytes(b"module")
    runner = tmp_path / "runner"
    runner.write_bytes(b"#!")
    runner.chmod(0o755)
    archive = run_archive([["ktapw", "arch"]],
                          {"/lib/modules/m.ko": module, "/usr/bin/runner": runner})
    got = read_newc(gzip.decompress(archive))
    assert {"lib", "lib/modules", "usr", "usr/bin"} <= set(got)
    assert got["lib/modules/m.ko"][0] == stat.S_IFREG | 0o644
    assert got["usr/bin/runner"][0] == stat.S_IFREG | 0o755
    assert got[COMMANDS_FILE][1] == b"6b74617077 61726368\n"


def test_gzip_output_is_reproducible():
    assert gzip_bytes(b"x" * 100) == gzip_bytes(b"x" * 100)


def test_qemu_command_lines_come_from_the_descriptors():
    for name in target_names():
        t = get_target(name)
        cmd = qemu_command(t, Path("/k/img"), Path("/k/initrd"))
        assert cmd[0] == t.qemu["binary"]
        assert cmd[cmd.index("-M") + 1] == t.qemu["machine"]
        assert cmd[cmd.index("-kernel") + 1] == "/k/img"
        assert cmd[cmd.index("-initrd") + 1] == "/k/initrd"
        append = cmd[cmd.index("-append") + 1]
        assert f"console={t.qemu['console']}" in append and "rdinit=/init" in append
        assert "-no-reboot" in cmd and "-nographic" not in cmd


def test_qemu_command_for_the_documented_boards():
    arm = qemu_command(get_target("arm"), Path("z"), Path("i"))
    assert arm[:5] == ["qemu-system-arm", "-M", "virt", "-cpu", "cortex-a15"]
    assert "console=ttyAMA0" in arm[arm.index("-append") + 1]
    assert qemu_command(get_target("mips"), Path("z"), Path("i"))[:3] == \
        ["qemu-system-mips", "-M", "malta"]
    assert qemu_command(get_target("powerpc"), Path("z"), Path("i"))[:3] == \
        ["qemu-system-ppc", "-M", "ppce500"]
    assert qemu_command(get_target("x86_64"), Path("z"), Path("i"))[:3] == \
        ["qemu-system-x86_64", "-M", "pc"]
    arm64 = qemu_command(get_target("arm64"), Path("z"), Path("i"))
    assert arm64[:5] == ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57"]
    assert "console=ttyAMA0" in arm64[arm64.index("-append") + 1]


def test_interactive_and_deterministic_variants():
    t = get_target("mips")
    shell = qemu_command(t, Path("z"), Path("i"), interactive=True, append=["ktap.shell"])
    assert "-nographic" in shell and shell[shell.index("-append") + 1].endswith("ktap.shell")
    det = qemu_command(t, Path("z"), Path("i"), deterministic=True)
    assert "-icount" in det and "clock=vm" in det   # mips clock calibration needs a vm rtc


def test_missing_qemu_names_the_debian_package(monkeypatch):
    monkeypatch.setattr(tools.shutil, "which", lambda name: None)
    with pytest.raises(tools.MissingTool) as e:
        require_qemu(get_target("x86_64"))
    assert e.value.package == "qemu-system-x86"
    assert "qemu-system-x86_64 not found" in str(e.value)
    with pytest.raises(tools.MissingTool) as e:
        require_qemu(get_target("arm"))
    assert e.value.package == "qemu-system-arm"
    with pytest.raises(tools.MissingTool) as e:
        require_qemu(get_target("arm64"))    # qemu-system-aarch64 comes with qemu-system-arm
    assert e.value.package == "qemu-system-arm"


def test_hung_board_is_killed_with_the_last_console_lines():
    # A stand-in for QEMU that prints a boot log and then hangs.
    script = "import time\nfor i in range(30): print('boot line', i, flush=True)\ntime.sleep(60)\n"
    cmd = [subprocess.sys.executable, "-c", script]
    with pytest.raises(BoardTimeout) as e:
        drive(get_target("arm"), cmd, [["x"]], timeout=1.5)
    msg = str(e.value)
    assert "boot line 29" in msg and "boot line 10" in msg and "boot line 9\n" not in msg


def test_qemu_exiting_early_is_an_error_with_console_tail():
    cmd = [subprocess.sys.executable, "-c", "print('Kernel panic - not syncing: no init')"]
    with pytest.raises(BoardError) as e:
        drive(get_target("arm"), cmd, [["x"]], timeout=10)
    assert "Kernel panic" in str(e.value) and not isinstance(e.value, BoardTimeout)


@pytest.fixture(scope="module")
def host_ktapw(tmp_path_factory):
    """The x86_64 guest program also runs on the (x86_64) host: a fast sanity check."""
    t = get_target("x86_64")
    try:
        tools.require_cross_gcc(t)
    except tools.MissingTool as e:
        pytest.skip(str(e))
    import platform
    if platform.machine() != "x86_64":
        pytest.skip("host is not x86_64")
    out = tmp_path_factory.mktemp("ktapw") / "ktapw"
    compile_ktapw(t, out)
    return out


def test_host_ktapw_arch_and_usage(host_ktapw):
    r = subprocess.run([host_ktapw, "arch"], capture_output=True, text=True)
    assert r.returncode == 0
    assert parse_key_values(r.stdout)["byte_order"] == "little"
    assert parse_key_values(r.stdout)["word_size"] == "8"
    assert subprocess.run([host_ktapw, "getpid", "10"]).returncode == 0
    for bad in (["nope"], ["getpid"], ["getpid", "ten"], ["getpid", "-1"], []):
        assert subprocess.run([host_ktapw, *bad], capture_output=True).returncode == 2


def test_host_ktapw_sleep_waits(host_ktapw):
    import time
    t0 = time.monotonic()
    assert subprocess.run([host_ktapw, "sleep", "120"]).returncode == 0
    assert time.monotonic() - t0 >= 0.11
