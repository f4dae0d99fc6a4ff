"""Transports (toolchain/ktap/deploy/) on the host: the serial agent's
frames against the real C agent (a host build of `ktaprun --serve -` on a
socketpair, running host commands only; it never loads a module), marker
filtering, and the errors users meet with the real ssh and adb clients.
The boards are in test_deploy.py."""

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from ktap.build import ktaprun as runner
from ktap.core import tools
from ktap.deploy import transport as tr
from ktap.deploy.frame_codec import FrameReader, encode_frame
from ktap.deploy.serial import SerialTransport, agent_error
from ktap.deploy.ssh import SshTransport


needs_cc = pytest.mark.skipif(tools.find_cc() is None, reason="no host C compiler")


# ---------------------------------------------------------------- frames

def test_frames_round_trip_with_noise_and_damage():
    good = [encode_frame("Y", b"abc"), encode_frame("1", bytes(range(256)) * 10)]
    damaged = bytearray(encode_frame("2", b"lost"))
    damaged[9] ^= 0xFF
    stream = b"noise kT\x00" + good[0] + bytes(damaged) + b"\r\n" + good[1]
    r = FrameReader()
    frames = []
    for i in range(0, len(stream), 7):          # arbitrary splits
        frames += r.feed(stream[i:i + 7])
    assert frames == [("Y", b"abc"), ("1", bytes(range(256)) * 10)]
    assert r.skipped > 0


def test_marker_filter_takes_out_pid_and_exit_lines():
    got = []
    f = tr.MarkerFilter(got.append)
    for piece in (b"KTAPPID=4", b"2\nhello\nKTAP", b"EXIT=3\n", b"par", b"tial"):
        f.feed(piece)
    f.finish()
    assert (f.pid, f.exit) == (42, 3)
    assert b"".join(got) == b"hello\npartial"


def test_push_errors_are_classified():
    e = tr.classify_push_error("cat: write error: No space left on device", "/tmp/ktap/x")
    assert e.kind == tr.NO_SPACE and "--remote-dir" in e.hint
    assert "read-only" in tr.classify_push_error("Read-only file system", "/x/y").cause
    assert agent_error("ENOSPC: /tmp/x: No space left on device", "/tmp/x").kind == tr.NO_SPACE


def test_parse_info_and_hashes():
    info = tr.parse_info("release=6.1.0\r\nmachine=armv7l\nuid=0\nkprobes=no\nmodules=yes\n")
    assert (info.release, info.machine, info.uid, info.kprobes, info.modules) == \
        ("6.1.0", "armv7l", 0, False, True)
    assert tr.parse_info("release=6.1.0\nmodules=no\n").modules is False
    assert tr.parse_info("release=6.1.0\n").modules is None
    with pytest.raises(tr.TransportError):
        tr.parse_info("sh: uname: not found\n")
    h = "a" * 64
    assert tr.parse_hashes(f"{h}  /d/a\n- /d/b\n", ["/d/a", "/d/b"]) == {"/d/a": h, "/d/b": None}


# ---------------------------------------------------------------- the C agent on the host

@pytest.fixture(scope="module")
def agent_exe():
    if tools.find_cc() is None:
        pytest.skip("no host C compiler")
    return runner.build_ktaprun("x86_64", host=True)


@pytest.fixture
def agent(agent_exe):
    a, b = socket.socketpair()
    proc = subprocess.Popen([str(agent_exe), "--serve", "-"], stdin=b.fileno(),
                            stdout=b.fileno())
    b.close()
    t = SerialTransport.from_fd(a.detach(), "socketpair", timeout=5)
    yield t
    t.close()
    proc.wait(timeout=10)
    assert proc.returncode == 0


def test_agent_info_push_and_hash(agent, tmp_path):
    info = agent.info()
    assert info.extra["protocol"] == "1" and info.extra["target"] == "x86_64"
    assert info.release == os.uname().release and info.uid == os.geteuid()
    src = tmp_path / "blob"
    src.write_bytes(os.urandom(100_000))          # several 16 KiB chunks
    dest = str(tmp_path / "remote" / "sub" / "blob")
    assert agent.hashes([dest]) == {dest: None}
    agent.push(src, dest, 0o750)
    assert agent.hashes([dest]) == {dest: hashlib.sha256(src.read_bytes()).hexdigest()}
    assert os.stat(dest).st_mode & 0o777 == 0o750
    assert not os.path.exists(dest + ".ktap-tmp")


def test_agent_refuses_a_damaged_file(agent, tmp_path):
    dest = str(tmp_path / "f")
    agent.send("P", f"644 {dest}".encode())
    agent._ack(dest)
    agent.send("D", b"data")
    agent._ack(dest)
    agent.send("C", b"0" * 64)
    with pytest.raises(tr.TransportError, match="damaged"):
        agent._ack(dest)
    assert not os.path.exists(dest) and not os.path.exists(dest + ".ktap-tmp")


def test_agent_push_error_names_the_cause(agent, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:
        # root writes anyway: use a path below a file instead
        (tmp_path / "file").write_text("x")
        with pytest.raises(tr.TransportError, match="Not a directory"):
            agent.push(tmp_path / "file", str(tmp_path / "file" / "x"))
    else:
        with pytest.raises(tr.TransportError, match="permission|Permission"):
            agent.push(tmp_path / "ro", str(ro / "x"))


def test_agent_runs_commands_with_status_and_streams(agent):
    out, err = [], []
    status = agent.run(["sh", "-c", "echo out; echo err >&2; exit 7"], out.append, err.append)
    assert (status, b"".join(out), b"".join(err)) == (7, b"out\n", b"err\n")
    assert agent.run(["/no/such/program"], out.append, err.append) == 127


def test_agent_interrupt_reaches_the_command(agent):
    """What Ctrl-C does: SIGINT to the remote command, output still arrives."""
    out = []
    agent.send("R", b"5\0sh\0-c\0trap 'echo stopped; exit 5' INT; echo ready; "
                    b"while :; do sleep 0.05; done")
    while True:
        kind, data = agent._expect("12Z", "run")
        if kind == "1":
            out.append(data)
            if b"ready" in b"".join(out):
                agent.send("K", str(int(signal.SIGINT)).encode())
        elif kind == "Z":
            break
    assert b"stopped" in b"".join(out) and int(data) == 5


def test_agent_hangs_up_a_command_when_the_host_goes_silent(agent, tmp_path):
    """No keepalive for KEEPALIVE seconds: the command gets SIGHUP, the agent
    waits for the next host."""
    marker = tmp_path / "hup"
    agent.send("R", b"1\0sh\0-c\0trap 'echo x > " + str(marker).encode() +
               b"; exit 0' HUP; while :; do sleep 0.05; done")
    time.sleep(2.5)                                # no pings
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not marker.exists():
        time.sleep(0.1)
    assert marker.exists()
    assert agent.hello()["session"] == "idle"


def test_agent_busy_and_sha256_option(agent, agent_exe, tmp_path):
    agent.send("R", b"0\0sleep\0" + b"2")
    agent.send("R", b"0\0true")
    kind, data = agent._expect("X", "busy")
    assert data.startswith(b"EBUSY")
    assert agent._expect("Z", "end", timeout=10)[1] == b"0"
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    r = subprocess.run([str(agent_exe), "--sha256", str(f), str(tmp_path / "none")],
                       capture_output=True, text=True)
    assert r.stdout.splitlines()[0] == f"{hashlib.sha256(b'abc').hexdigest()} 3 {f}"
    assert r.stdout.splitlines()[1].startswith("missing") and r.returncode == 1


# ---------------------------------------------------------------- real clients, no target

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("ssh") is None, reason="openssh-client not installed")
def test_ssh_unreachable_host():
    t = SshTransport(f"root@127.0.0.1:{_closed_port()}", connect_timeout=3,
                        options=["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null"])
    with pytest.raises(tr.TransportError) as e:
        t.info()
    assert e.value.kind == tr.UNREACHABLE and "cannot reach" in e.value.cause


def test_serial_missing_device_and_socket(tmp_path):
    with pytest.raises(tr.TransportError) as e:
        SerialTransport(str(tmp_path / "ttyUSB9"))
    assert e.value.kind == tr.UNREACHABLE and "device name" in e.value.hint
    with pytest.raises(tr.TransportError) as e:
        SerialTransport(f"unix:{tmp_path / 'none.sock'}")
    assert e.value.kind == tr.UNREACHABLE
    with pytest.raises(tr.TransportError, match="baud"):
        SerialTransport(f"{tmp_path / 'x'}:12345")


def test_serial_silent_peer_is_reported(tmp_path):
    a, b = socket.socketpair()
    t = SerialTransport.from_fd(a.detach(), "silent", timeout=0.5)
    try:
        with pytest.raises(tr.TransportError, match="no answer") as e:
            t.hello(attempts=1, wait=0.3)
        assert "ktaprun --serve" in e.value.hint
    finally:
        t.close()
        b.close()
