"""`ktap run`: deploy a script to a real board and run it there.

    bundle  = ktapvm.ko (built for the board's kernel: --kdir, default the
              QEMU board kernel from the cache), ktaprun for the target, the
              compiled image
    sync    = ask the target for the SHA-256 of each piece in the remote
              directory; push only what is missing or different
    preflight (before anything is loaded): the target's `uname -r` must be
              the release in the module's vermagic; root; kprobes
    run     = `ktaprun -m DIR/ktapvm.ko DIR/IMAGE.kbc [-- CMD]` through the
              transport, output streamed live, exit status = the script's

The transports are in transport.py. Errors users meet are DeployError /
TransportError: a one-line cause plus a hint.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ktap.core.targets import Target, get_target
from ktap.deploy.transport import Transport, TransportError

DEFAULT_REMOTE_DIR = "/tmp/ktap"
MODULE_NAME = "ktapvm.ko"
RUNNER_NAME = "ktaprun"


class DeployError(TransportError):
    pass


@dataclass
class BundleFile:
    name: str            # file name in the remote directory
    local: Path
    mode: int
    sha256: str

    @classmethod
    def of(cls, name: str, local: Path, mode: int) -> "BundleFile":
        return cls(name, Path(local), mode, hashlib.sha256(Path(local).read_bytes()).hexdigest())


@dataclass
class Bundle:
    target: str
    files: list[BundleFile]
    module_release: str
    image_name: str
    kdir: Path | None = None

    def remote(self, remote_dir: str, name: str) -> str:
        return f"{remote_dir.rstrip('/')}/{name}"


# ---------------------------------------------------------------- the module's vermagic

def module_vermagic(ko: Path) -> str:
    """The `vermagic=` string of a .ko's .modinfo section (pyelftools)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    try:
        with open(ko, "rb") as f:
            sec = ELFFile(f).get_section_by_name(".modinfo")
            data = sec.data() if sec is not None else b""
    except (ELFError, OSError) as e:
        raise DeployError(f"{ko}: not a readable kernel module ({e})") from None
    for item in data.split(b"\0"):
        if item.startswith(b"vermagic="):
            return item[9:].decode(errors="replace")
    raise DeployError(f"{ko}: no vermagic in .modinfo (not a kernel module?)")


def module_release(ko: Path) -> str:
    """The kernel release a module was built for: vermagic's first word."""
    return module_vermagic(ko).split()[0]


def kdir_has_kprobes(kdir: Path) -> bool | None:
    config = Path(kdir) / ".config"
    if not config.exists():
        return None
    return re.search(r"^CONFIG_KPROBES=y$", config.read_text(errors="replace"), re.M) is not None


# ---------------------------------------------------------------- bundle

def make_bundle(target: Target | str, image: bytes, image_name: str = "script.kbc",
                kdir: Path | None = None, workdir: Path | None = None,
                module: Path | None = None, runner_bin: Path | None = None) -> Bundle:
    """Builds (or takes from the caches) the three pieces for `target`."""
    from ktap.build import kmod, ktaprun as runner
    if isinstance(target, str):
        target = get_target(target)
    if kdir is not None:
        kdir = Path(kdir)
        if kdir_has_kprobes(kdir) is False:
            raise DeployError(f"the kernel in {kdir} is built without CONFIG_KPROBES",
                              "rebuild the board's kernel with CONFIG_KPROBES=y (and "
                              "CONFIG_KRETPROBES, CONFIG_MODULES); see docs/targets.md")
    if module is None:
        try:
            module = kmod.build_module(target, kdir=kdir)
        except kmod.KmodError as e:
            raise DeployError(f"building ktapvm.ko failed: {str(e).splitlines()[0]}",
                              "--kdir must be the board kernel's build tree (with .config and "
                              "Module.symvers, after `make modules`)") from None
    if runner_bin is None:
        runner_bin = runner.build_ktaprun(target)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="ktap-run-"))
    workdir.mkdir(parents=True, exist_ok=True)
    img = workdir / image_name
    img.write_bytes(image)
    files = [BundleFile.of(RUNNER_NAME, runner_bin, 0o755),
             BundleFile.of(MODULE_NAME, module, 0o644),
             BundleFile.of(image_name, img, 0o644)]
    return Bundle(target.name, files, module_release(module), image_name, kdir)


def sync_bundle(transport: Transport, bundle: Bundle, remote_dir: str = DEFAULT_REMOTE_DIR,
                log: Callable[[str], None] | None = None) -> list[str]:
    """Pushes each piece the target lacks or holds with another SHA-256;
    returns the names pushed."""
    paths = {f.name: bundle.remote(remote_dir, f.name) for f in bundle.files}
    have = transport.hashes(list(paths.values()))
    pushed = []
    for f in bundle.files:
        remote = paths[f.name]
        if have.get(remote) == f.sha256:
            continue
        if log:
            log(f"ktap: pushing {f.name} ({f.local.stat().st_size} bytes) to {remote}")
        transport.push(f.local, remote, f.mode)
        pushed.append(f.name)
    return pushed


# ---------------------------------------------------------------- preflight

def preflight(info, bundle: Bundle) -> None:
    """Stops before loading anything when the module cannot work there."""
    if info.release != bundle.module_release:
        raise DeployError(
            f"module ABI mismatch: ktapvm.ko is built for kernel {bundle.module_release}, "
            f"the target runs {info.release}",
            "pass the target kernel's build tree with --kdir DIR (the tree its running "
            "kernel was built from)")
    if info.uid not in (0, None):
        raise DeployError(f"not root on the target (uid {info.uid}): loading ktapvm.ko needs "
                          "root (CAP_SYS_ADMIN)",
                          "log in as root (ssh root@HOST), or `adb root` on the device")
    if info.kprobes is False:
        raise DeployError("the target's kernel has no kprobes (CONFIG_KPROBES is off)",
                          "rebuild the target kernel with CONFIG_KPROBES=y and CONFIG_KRETPROBES=y")
    if info.machine and bundle.target == "x86_64" and info.machine != "x86_64":
        raise DeployError(f"the target is {info.machine}, the bundle is for x86_64",
                          "choose the target with -t ARCH")


# What ktaprun prints when the session cannot start, mapped to a hint.
RUN_HINTS = [
    (re.compile(r"is busy \(in use by another session\)"),
     "the module already in use by another session: wait for it to end (or stop it with "
     "Ctrl-C), then retry"),
    (re.compile(r"module ktapvm is busy"),
     "the module is being loaded or unloaded by another session: retry in a moment"),
    (re.compile(r"need root"),
     "log in as root on the target (loading ktapvm.ko needs CAP_SYS_ADMIN)"),
    (re.compile(r"not a module for this kernel|was built for kernel"),
     "module ABI mismatch: build ktapvm.ko for the target's kernel with --kdir DIR"),
    (re.compile(r"Unknown symbol|register_kprobe|No such file or directory.*ktapvm"),
     "the kernel may lack CONFIG_KPROBES/CONFIG_MODULES; check `dmesg` on the target"),
    (re.compile(r"No space left on device"),
     "no space on the target: free space, or choose another --remote-dir"),
]


def hint_for(stderr_text: str) -> str | None:
    for pattern, hint in RUN_HINTS:
        if pattern.search(stderr_text):
            return hint
    return None


# ---------------------------------------------------------------- run

@dataclass
class RunResult:
    status: int
    pushed: list[str]
    stderr_tail: str = ""
    hint: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


def runner_command(bundle: Bundle, remote_dir: str, workload: list[str],
                   raw: bool = False) -> list[str]:
    argv = [bundle.remote(remote_dir, RUNNER_NAME), "-m", bundle.remote(remote_dir, MODULE_NAME)]
    if raw:
        argv.append("--raw")
    argv.append(bundle.remote(remote_dir, bundle.image_name))
    return argv + (["--"] + list(workload) if workload else [])


def deploy_and_run(transport: Transport, bundle: Bundle, workload: list[str] = (),
                   remote_dir: str = DEFAULT_REMOTE_DIR, out=None, err=None,
                   log: Callable[[str], None] | None = None, keepalive: int = 5) -> RunResult:
    """info -> preflight -> sync -> run. out/err receive the output as it arrives."""
    import time
    timings = {}
    t0 = time.monotonic()
    info = transport.info()
    timings["info"] = time.monotonic() - t0
    preflight(info, bundle)
    t1 = time.monotonic()
    pushed = sync_bundle(transport, bundle, remote_dir, log)
    timings["sync"] = time.monotonic() - t1
    tail = bytearray()
    out = out or _writer(sys.stdout)
    err_sink = err or _writer(sys.stderr)

    def on_err(data: bytes) -> None:
        tail.extend(data)
        del tail[:-4096]
        err_sink(data)

    t2 = time.monotonic()
    status = transport.run(runner_command(bundle, remote_dir, list(workload)), out, on_err,
                           keepalive=keepalive)
    timings["run"] = time.monotonic() - t2
    text = tail.decode(errors="replace")
    return RunResult(status, pushed, text, hint_for(text) if status == 1 else None, timings)


def _writer(stream):
    buf = getattr(stream, "buffer", None)

    def write(data: bytes) -> None:
        if buf is not None:
            buf.write(data)
        else:
            stream.write(data.decode(errors="replace"))
        stream.flush()
    return write
