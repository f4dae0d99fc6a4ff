"""`ktap run` on the host: bundle hashing, what a sync pushes, preflight refusals,
hints and usage errors, with a fake transport. tests/board/test_deploy_board.py
runs it end to end over serial, ssh and adb."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from ktap.build.bundle import Bundle
from ktap.deploy import deploy
from ktap.deploy import transport as tr


KTAP = [sys.executable, "-m", "ktap.cli"]


class FakeTransport(tr.Transport):
    """A target as a dict of remote files; counts pushes."""
    name = "fake"

    def __init__(self, release="6.1.0-test", uid=0, kprobes=True, full=False, modules=True):
        self.files: dict[str, bytes] = {}
        self.pushes: list[str] = []
        self.ran: list[list[str]] = []
        self.remote_info = tr.RemoteInfo(release, "x86_64", uid, kprobes, modules=modules)
        self.full = full

    def info(self):
        return self.remote_info

    def hashes(self, paths):
        return {p: hashlib.sha256(self.files[p]).hexdigest() if p in self.files else None
                for p in paths}

    def push(self, local, remote, mode=0o644):
        if self.full:
            raise tr.classify_push_error("No space left on device", remote)
        self.files[remote] = Path(local).read_bytes()
        self.pushes.append(remote)

    def run(self, argv, out, err, keepalive=5):
        self.ran.append(argv)
        out(b"ran\n")
        return 0


def fake_bundle(tmp_path, image=b"image-1", release="6.1.0-test"):
    paths = []
    for name, data in (("local-ktaprun", b"runner"), ("local-ktapvm.ko", b"module"),
                       ("s.kbc", image)):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    return Bundle("x86_64", paths[0], paths[1], paths[2:], release)


def test_second_sync_pushes_nothing(tmp_path):
    t = FakeTransport()
    b = fake_bundle(tmp_path)
    assert deploy.sync_bundle(t, b, "/tmp/ktap") == ["ktaprun", "ktapvm.ko", "s.kbc"]
    assert t.files["/tmp/ktap/ktapvm.ko"] == b"module"
    assert deploy.sync_bundle(t, b, "/tmp/ktap") == []
    assert len(t.pushes) == 3


def test_only_changed_pieces_are_pushed(tmp_path):
    t = FakeTransport()
    deploy.sync_bundle(t, fake_bundle(tmp_path), "/d")
    (tmp_path / "new").mkdir()
    assert deploy.sync_bundle(t, fake_bundle(tmp_path / "new", image=b"image-2"), "/d") == ["s.kbc"]
    t.files["/d/ktapvm.ko"] = b"someone else's module"
    assert deploy.sync_bundle(t, fake_bundle(tmp_path / "new", image=b"image-2"), "/d") == \
        ["ktapvm.ko"]
    assert deploy.sync_bundle(t, fake_bundle(tmp_path), "/other") == \
        ["ktaprun", "ktapvm.ko", "s.kbc"]


def test_preflight_refuses_before_anything_is_pushed_or_loaded(tmp_path):
    b = fake_bundle(tmp_path)
    for t, words in ((FakeTransport(release="5.10.0-vendor"), "ABI mismatch"),
                     (FakeTransport(uid=1000), "not root"),
                     (FakeTransport(kprobes=False), "CONFIG_KPROBES"),
                     (FakeTransport(modules=False), "CONFIG_MODULES")):
        with pytest.raises(deploy.DeployError) as e:
            deploy.deploy_and_run(t, b, ["true"], out=lambda d: None, err=lambda d: None)
        assert words in e.value.cause and e.value.hint
        assert t.pushes == [] and t.ran == []
    e = pytest.raises(deploy.DeployError, deploy.preflight,
                      tr.RemoteInfo("5.10.0-vendor", "x86_64", 0, True), b).value
    assert "6.1.0-test" in e.cause and "5.10.0-vendor" in e.cause and "--kdir" in e.hint


def test_preflight_refuses_a_board_of_another_machine(tmp_path):
    b = fake_bundle(tmp_path)
    arm64 = Bundle("arm64", b.runner, b.module, b.images, b.module_release)
    e = pytest.raises(deploy.DeployError, deploy.preflight,
                      tr.RemoteInfo("6.1.0-test", "armv7l", 0, True), arm64).value
    assert e.cause == "the target is armv7l, the bundle is for arm64" and "-t ARCH" in e.hint
    deploy.preflight(tr.RemoteInfo("6.1.0-test", "aarch64", 0, True), arm64)
    e = pytest.raises(deploy.DeployError, deploy.preflight,
                      tr.RemoteInfo("6.1.0-test", "aarch64", 0, True), b).value
    assert e.cause == "the target is aarch64, the bundle is for x86_64"


def test_no_space_is_reported(tmp_path):
    t = FakeTransport(full=True)
    with pytest.raises(tr.TransportError) as e:
        deploy.deploy_and_run(t, fake_bundle(tmp_path), out=lambda d: None, err=lambda d: None)
    assert e.value.kind == tr.NO_SPACE and "no space" in e.value.cause


def test_run_command_and_hints(tmp_path):
    b = fake_bundle(tmp_path)
    assert b.command("/tmp/ktap", "s.kbc", ["ktapw", "write", "1"]) == \
        ["/tmp/ktap/ktaprun", "-m", "/tmp/ktap/ktapvm.ko", "/tmp/ktap/s.kbc", "--",
         "ktapw", "write", "1"]
    assert "another session" in deploy.hint_for("ktaprun: /dev/ktap is busy (in use by "
                                                "another session)\n")
    assert "root" in deploy.hint_for("ktaprun: need root (CAP_SYS_ADMIN)")
    assert "--kdir" in deploy.hint_for("ktaprun: x.ko: not a module for this kernel (Invalid)")
    assert deploy.hint_for("writes=3") is None


def test_kdir_without_kprobes_is_refused(tmp_path):
    (tmp_path / ".config").write_text("CONFIG_MODULES=y\n# CONFIG_KPROBES is not set\n")
    with pytest.raises(deploy.DeployError, match="CONFIG_KPROBES"):
        deploy.deploy_bundle("x86_64", b"", kdir=tmp_path)


def test_cli_usage_errors():
    r = subprocess.run(KTAP + ["run", "-t", "arm", "-e", "x"], capture_output=True, text=True)
    assert r.returncode == 2 and "--ssh" in r.stderr
    r = subprocess.run(KTAP + ["run", "--serial", "/dev/nonexistent-tty", "-t", "x86_64", "a",
                               "b"], capture_output=True, text=True)
    assert r.returncode == 2 and "one script" in r.stderr
