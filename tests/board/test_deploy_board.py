"""`ktap run` (deploy/, cli/deploy.py) end to end on QEMU boards that stay up like
real ones (ktapdev/liveboard.py): the serial agent on all four boards, ssh and
adb on x86_64, and `ktap target sync` over them.

Board tests run the real CLI (`ktap run ...`) in a subprocess, so Ctrl-C
(SIGINT to the ktap process) and a dropped connection (SIGKILL of the ktap
process, which closes the link) are what a user does."""

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ktap.boards import sessions as boardrun
from ktap.build import ktaprun as runner
from ktap.core.targets import target_names
from ktap.deploy.serial import SerialTransport
from ktap.deploy.ssh import SshTransport
from ktapdev.liveboard import LiveBoard, wait_agent


ROOT = Path(__file__).resolve().parents[2]
KTAP = [sys.executable, "-m", "ktap.cli"]
TARGETS = target_names()        # every targets/*/target.toml
COUNT = ('var n = 0\ntrace probe:ksys_write { n += 1 }\n'
         'trace_end { printf("writes=%d\\n", n) }\n')


# Runs until stopped: prints when its setup ran, and from trace_end.
FOREVER = ('printf("started\\n")\nvar n = 0\ntrace probe:ksys_write { n += 1 }\n'
           'trace_end { printf("trace_end ran\\n") }\n')


def ktap_run(args, timeout=180, **kw):
    return subprocess.run(KTAP + ["run"] + args, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, **kw)


class Live:
    """A `ktap run` in the background whose stdout is watched."""

    def __init__(self, args):
        self.proc = subprocess.Popen(KTAP + ["run"] + args, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=ROOT)
        self.out = b""

    def wait_for(self, text: bytes, timeout=120):
        deadline = time.monotonic() + timeout
        while text not in self.out:
            left = deadline - time.monotonic()
            assert left > 0 and self.proc.poll() is None, \
                (self.out, self.proc.stderr.read() if self.proc.poll() is not None else b"")
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                self.out += os.read(self.proc.stdout.fileno(), 4096)

    def finish(self, timeout=60):
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, (self.out + out).decode(), err.decode()


def kprobes_listed(control) -> str:
    out = []
    with control() as t:
        t.run(["ktapw", "cat", "/sys/kernel/debug/kprobes/list"], out.append, out.append)
    # the kernel's own kretprobe trampoline is always listed on some arches
    return "".join(line for line in b"".join(out).decode().splitlines(True)
                   if "kretprobe_trampoline" not in line)


def kill_ktap(live):
    """The host side dies (serial: the link closes with it)."""
    live.proc.kill()


def kill_ssh_client(live):
    """The transport dies under a live ktap run: kill its ssh client."""
    kids = subprocess.run(["pgrep", "-P", str(live.proc.pid)], capture_output=True,
                          text=True).stdout.split()
    assert kids, "no transport client (ssh, adb) under ktap run"
    for pid in kids:
        os.kill(int(pid), signal.SIGKILL)


def session_checks(target, spec_args, remote_dir, control, first_push, keepalive_wait,
                   concurrent=True, drop=kill_ktap):
    """The end-to-end checks every transport passes. control() opens a
    transport to run ktapw on the board; with concurrent=False it cannot be
    used while a session holds the link (one host on a serial line)."""
    base = spec_args + ["-t", target, "--remote-dir", remote_dir, "-v"]
    # 1. a run: bundle pushed, output, status
    r = ktap_run(base + ["-e", COUNT, "--", "ktapw", "write", "100"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == "writes=100\n"
    pushed = re.search(r"pushed (.*);", r.stderr).group(1)
    assert pushed == first_push, r.stderr
    # 2. again: nothing to push
    r = ktap_run(base + ["-e", COUNT, "--", "ktapw", "write", "7"])
    assert (r.returncode, r.stdout) == (0, "writes=7\n"), r.stderr
    assert "pushed nothing" in r.stderr
    # 3. the script's exit status; only the new image is pushed
    r = ktap_run(base + ["-e", 'trace_end { exit(3) }', "--", "ktapw", "write", "1"])
    assert r.returncode == 3, r.stderr
    assert "pushed cmdline.kbc;" in r.stderr
    # 4. Ctrl-C: the session stops cleanly, trace_end output arrives, probes gone
    live = Live(base + ["-e", FOREVER])
    live.wait_for(b"started\n")
    if concurrent:
        assert "ksys_write" in kprobes_listed(control)
    live.proc.send_signal(signal.SIGINT)
    status, out, err = live.finish()
    assert status == 0, err
    assert out == "started\ntrace_end ran\n"
    assert kprobes_listed(control).strip() == ""
    # 5. the connection drops mid-session: the target stops it by itself
    live = Live(base + ["--keepalive", "2", "-e", FOREVER])
    live.wait_for(b"started\n")
    drop(live)
    live.finish()
    time.sleep(keepalive_wait)
    deadline = time.monotonic() + 15
    while kprobes_listed(control).strip() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert kprobes_listed(control).strip() == ""
    r = ktap_run(base + ["-e", COUNT, "--", "ktapw", "write", "5"])
    assert (r.returncode, r.stdout) == (0, "writes=5\n"), r.stderr
    out = []
    with control() as t:
        assert t.run(["ktapw", "rmmod", "ktapvm"], out.append, out.append) == 0, out


@pytest.mark.board
@pytest.mark.parametrize("target", TARGETS)
def test_serial_end_to_end(target):
    """ktap run --serial against `ktaprun --serve` on the board's second serial
    line. The agent's own binary is ktaprun, so it is already in the remote
    directory (as on a real board); the module and the image are pushed."""
    exe = runner.build_ktaprun(target)
    started = time.monotonic()
    with LiveBoard(target, agent_binary=exe,
                   extra_files={"/opt/ktap/ktaprun": exe}) as b:
        with wait_agent(b) as t:
            info = t.info()
        boot = time.monotonic() - started
        assert info.release and info.uid == 0 and info.kprobes
        assert info.extra["target"] == target
        session_checks(target, ["--serial", b.agent_spec], "/opt/ktap",
                       lambda: SerialTransport(b.agent_spec), "ktapvm.ko, cmdline.kbc",
                       keepalive_wait=3, concurrent=False)
        trouble = boardrun.kernel_trouble(b.console_text())
        assert not trouble, trouble
    print(f"{target}: boot to agent {boot:.1f} s, total {time.monotonic() - started:.1f} s")
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR"]


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory):
    d = tmp_path_factory.mktemp("sshkey")
    key = d / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    other = d / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    return key, other


@pytest.fixture(scope="module")
def ssh_board(ssh_key):
    """One x86_64 boot with dropbear for the ssh and adb tests."""
    key, _ = ssh_key
    started = time.monotonic()
    with LiveBoard("x86_64", agent=False,
                   ssh_authorized_keys=Path(f"{key}.pub").read_text()) as b:
        b.wait_ssh()
        print(f"ssh board: boot to sshd {time.monotonic() - started:.1f} s")
        yield b
        trouble = boardrun.kernel_trouble(b.console_text())
        assert not trouble, trouble


def ssh_control(b, key):
    dest = f"root@127.0.0.1:{b.ssh_port}"
    return dest, lambda: SshTransport(dest, str(key), [o for o in SSH_OPTS if o != "-o"])


@pytest.mark.board
def test_ssh_end_to_end(ssh_board, ssh_key):
    """ktap run --ssh with the system's OpenSSH client against dropbear on the
    x86_64 board (QEMU user networking, port 22 forwarded to loopback)."""
    key, other = ssh_key
    started = time.monotonic()
    dest, control = ssh_control(ssh_board, key)
    with control() as t:
        info = t.info()
    assert info.release and info.uid == 0 and info.kprobes and info.machine == "x86_64"
    # authentication failure: one line and a hint
    r = ktap_run(["--ssh", dest, "-i", str(other), *SSH_OPTS, "-t", "x86_64", "-e", COUNT])
    assert r.returncode == 1
    assert "authentication to root@127.0.0.1 failed" in r.stderr and "hint:" in r.stderr
    session_checks("x86_64", ["--ssh", dest, "-i", str(key), *SSH_OPTS], "/tmp/ktap",
                   control, "ktaprun, ktapvm.ko, cmdline.kbc", keepalive_wait=1,
                   drop=kill_ssh_client)
    print(f"ssh: {time.monotonic() - started:.1f} s")


@pytest.mark.board
@pytest.mark.skipif(shutil.which("adb") is None, reason="adb not installed")
def test_adb_end_to_end(ssh_board, ssh_key):
    """ktap run --adb with the system's adb client, connected to tests/adb_peer.py
    (the adb wire protocol on loopback) which relays to the board over ssh."""
    import adb_peer
    key, _ = ssh_key
    started = time.monotonic()
    _, control = ssh_control(ssh_board, key)
    ssh = ["ssh", "-i", str(key), *SSH_OPTS, "-o", "BatchMode=yes", "-p",
           str(ssh_board.ssh_port), "root@127.0.0.1"]
    peer = adb_peer.AdbPeer(ssh)
    r = subprocess.run(["adb", "connect", peer.serial], capture_output=True, text=True,
                       timeout=30)
    assert "connected" in r.stdout, r
    try:
        # an unknown device: one line and a hint
        r = ktap_run(["--adb", "-s", "127.0.0.1:1", "-t", "x86_64", "-e", COUNT])
        assert r.returncode == 1 and "adb: cannot reach" in r.stderr and "hint:" in r.stderr
        session_checks("x86_64", ["--adb", "-s", peer.serial], "/tmp/ktap-adb", control,
                       "ktaprun, ktapvm.ko, cmdline.kbc", keepalive_wait=1,
                       drop=kill_ssh_client)
        assert "sync:" in peer.log and any(s.startswith("shell:") for s in peer.log)
    finally:
        subprocess.run(["adb", "disconnect", peer.serial], capture_output=True, timeout=30)
        subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30)
        peer.close()
    print(f"adb: {time.monotonic() - started:.1f} s")


def sync_over_ssh(board, key, out: Path, *more: str) -> subprocess.CompletedProcess:
    """`ktap target sync --ssh` against the board, with the board kernel's tree."""
    from ktap.boards import kernels as kernel
    dest = f"root@127.0.0.1:{board.ssh_port}"
    opts = [a for o in SSH_OPTS if o != "-o" for a in ("--ssh-option", o)]
    kdir = kernel.ensure_kernel("x86_64", progress=False)
    return subprocess.run([sys.executable, "-m", "ktap.cli", "target", "sync", "--ssh", dest,
                           "-i", str(key), *opts, "-t", "x86_64", "--kdir", str(kdir),
                           *more, "-o", str(out)], capture_output=True, text=True, timeout=300)


@pytest.mark.board
def test_target_sync_over_ssh(ssh_board, ssh_key, tmp_path):
    """`ktap target sync --ssh` records a profile through the board's own shell,
    and the profile checks a script offline against that kernel."""
    from ktap.symbols import profiles
    key, _ = ssh_key
    dest = f"root@127.0.0.1:{ssh_board.ssh_port}"
    out = tmp_path / "profile"
    r = sync_over_ssh(ssh_board, key, out)
    assert r.returncode == 0, r.stderr
    p = profiles.load(out)
    assert p.release.startswith("6.1.") and p.has_function("vfs_write")
    assert "count" in [f.name for f in p.tracepoint_fields("syscalls", "sys_enter_write")]
    r = subprocess.run([sys.executable, "-m", "ktap.cli", "check", "-t", "x86_64",
                        "--profile", str(out), "-e",
                        "trace syscalls:sys_enter_write { print(args.cnt) }"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "has no field 'cnt'" in r.stderr
    r = subprocess.run([sys.executable, "-m", "ktap.cli", "target", "sync", "--ssh", dest,
                        "-o", str(tmp_path / "x")], capture_output=True, text=True)
    assert r.returncode == 2 and "needs -t ARCH" in r.stderr


@pytest.mark.board
def test_user_probes_over_ssh(ssh_board, ssh_key, tmp_path):
    """User probes as a user runs them on a real board: the board's library
    pulled with `ktap target sync --file`, then `ktap run --ssh` resolving in
    the unstripped copies (--sysroot), the user stack symbolized on the host
    as it streams, and --folded written."""
    from ktap.boards.initramfs import guest_sysroot
    from ktap.symbols import profiles
    key, _ = ssh_key
    dest = f"root@127.0.0.1:{ssh_board.ssh_port}"
    out = tmp_path / "profile"
    r = sync_over_ssh(ssh_board, key, out, "--file", "/lib/libktapdyn.so")
    assert r.returncode == 0, r.stderr
    pulled = profiles.load(out).meta["files"]["/lib/libktapdyn.so"]
    assert len(pulled["build_id"]) == 40 and "/lib/libktapdyn.so" in r.stdout
    folded = tmp_path / "u.folded"
    script = ("var s = {}\ntrace probe:/lib/libktapdyn.so:ktapdyn_lib_tick { s[ustack(2)] += 1 }\n"
              "trace_end { print(s) }\n")
    r = ktap_run(["--ssh", dest, "-i", str(key), *SSH_OPTS, "-t", "x86_64", "--sysroot",
                  str(guest_sysroot("x86_64")), "--folded", str(folded), "-e", script,
                  "--", "ktapdyn", "lib", "9"])
    assert r.returncode == 0, r.stderr
    assert "ktapdyn_lib_tick+0x0 [/lib/libktapdyn.so]\nmain+0x" in r.stdout, r.stdout
    assert folded.read_text() == "main;ktapdyn_lib_tick 9\n"
