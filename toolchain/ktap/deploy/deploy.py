"""`ktap run`: deploy a script to a real board and run it there.

    bundle  = ktaprun for the target, ktapvm.ko (built for the board's kernel:
              --kdir, default the QEMU board kernel from the cache), the
              compiled image (build/bundle.py)
    sync    = ask the target for the SHA-256 of each piece in the remote
              directory; push only what is missing or different
    preflight (before anything is loaded): the target's `uname -r` must be
              the release in the module's vermagic; root; kprobes
    run     = `ktaprun -m DIR/ktapvm.ko DIR/IMAGE.kbc [-- CMD]` through the
              transport, output streamed live, exit status = the script's

The transports are ssh.py, adb.py and serial.py (connect.py opens one).
Errors users meet are DeployError / TransportError: a one-line cause plus a hint.
"""
from __future__ import annotations

import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ktap.boards.kernels import ensure_kernel
from ktap.build.bundle import Bundle, BundleError
from ktap.build.bundle import is_ebpf, make_bundle
from ktap.build.kbuild import KmodError
from ktap.core.targets import Target, get_target
from ktap.deploy.transport import RemoteInfo, Transport, TransportError

DEFAULT_REMOTE_DIR = "/tmp/ktap"


class DeployError(TransportError):
    pass


def kdir_has_kprobes(kdir: Path) -> bool | None:
    config = Path(kdir) / ".config"
    if not config.exists():
        return None
    return re.search(r"^CONFIG_KPROBES=y$", config.read_text(errors="replace"), re.M) is not None


# ---------------------------------------------------------------- bundle

def deploy_bundle(target: Target | str, image: bytes, image_name: str = "script.kbc",
                  kdir: Path | None = None, workdir: Path | None = None,
                  module: Path | None = None, runner_bin: Path | None = None) -> Bundle:
    """The bundle of one image for `target`, its module built against `kdir`
    (default: the QEMU board's kernel); build failures become DeployErrors."""
    target = get_target(target)
    if is_ebpf(image):
        pass                   # ktaprun runs eBPF images without ktapvm.ko: no kernel tree
    elif kdir is not None:
        kdir = Path(kdir)
        if kdir_has_kprobes(kdir) is False:
            raise DeployError(f"the kernel in {kdir} is built without CONFIG_KPROBES",
                              "rebuild the board's kernel with CONFIG_KPROBES=y (and "
                              "CONFIG_KRETPROBES, CONFIG_MODULES); see docs/targets.md")
    elif module is None:
        kdir = ensure_kernel(target)
    try:
        return make_bundle(target, kdir, {image_name: image},
                            workdir or Path(tempfile.mkdtemp(prefix="ktap-run-")),
                            module=module, runner=runner_bin)
    except KmodError as e:
        raise DeployError(f"building ktapvm.ko failed: {str(e).splitlines()[0]}",
                          "--kdir must be the board kernel's build tree (with .config and "
                          "Module.symvers, after `make modules`)") from None
    except BundleError as e:
        raise DeployError(str(e)) from None


def sync_bundle(transport: Transport, bundle: Bundle, remote_dir: str = DEFAULT_REMOTE_DIR,
                log: Callable[[str], None] | None = None) -> list[str]:
    """Pushes each piece the target lacks or holds with another SHA-256;
    returns the names pushed."""
    files = bundle.files()
    paths = {f.name: bundle.path(remote_dir, f.name) for f in files}
    have = transport.hashes(list(paths.values()))
    pushed = []
    for f in files:
        remote = paths[f.name]
        if have.get(remote) == f.sha256:
            continue
        if log:
            log(f"ktap: pushing {f.name} ({f.local.stat().st_size} bytes) to {remote}")
        transport.push(f.local, remote, f.mode)
        pushed.append(f.name)
    return pushed


# ---------------------------------------------------------------- preflight

def check_machine(info: RemoteInfo, bundle: Bundle) -> None:
    machines = get_target(bundle.target).uname_machines
    if info.machine and machines and info.machine not in machines:
        raise DeployError(f"the target is {info.machine}, the bundle is for {bundle.target}",
                          "choose the target with -t ARCH")


def preflight_ebpf(info: RemoteInfo, bundle: Bundle) -> None:
    """An eBPF session needs root and the target's architecture, not a module."""
    if info.uid not in (0, None):
        raise DeployError(f"not root on the target (uid {info.uid}): loading eBPF programs "
                          "needs root (CAP_SYS_ADMIN)",
                          "log in as root (ssh root@HOST), or `adb root` on the device")
    check_machine(info, bundle)


def preflight(info: RemoteInfo, bundle: Bundle) -> None:
    """Stops before loading anything when the module cannot work there."""
    if bundle.module is None:
        preflight_ebpf(info, bundle)
        return
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
    if info.modules is False:
        raise DeployError("the target's kernel cannot load modules (CONFIG_MODULES is off; "
                          "/proc/modules is missing)",
                          "rebuild the target kernel with CONFIG_MODULES=y and "
                          "CONFIG_MODULE_UNLOAD=y")
    if info.kprobes is False:
        raise DeployError("the target's kernel has no kprobes (CONFIG_KPROBES is off)",
                          "rebuild the target kernel with CONFIG_KPROBES=y and CONFIG_KRETPROBES=y")
    check_machine(info, bundle)


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


def deploy_and_run(transport: Transport, bundle: Bundle, workload: list[str] = (),
                   remote_dir: str = DEFAULT_REMOTE_DIR, out=None, err=None,
                   log: Callable[[str], None] | None = None, keepalive: int = 5,
                   options: list[str] = ()) -> RunResult:
    """info -> preflight -> sync -> run the bundle's image (with more ktaprun
    options). out/err receive the output as it arrives."""
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
    (image,) = bundle.images
    status = transport.run(bundle.command(remote_dir, image.name, list(workload), options),
                           out, on_err, keepalive=keepalive)
    timings["run"] = time.monotonic() - t2
    text = tail.decode(errors="replace")
    return RunResult(status, pushed, text, hint_for(text) if status == 1 else None, timings)


def stdout_writer():
    """The byte sink deploy_and_run() writes the output to by default."""
    return _writer(sys.stdout)


def _writer(stream):
    buf = getattr(stream, "buffer", None)

    def write(data: bytes) -> None:
        if buf is not None:
            buf.write(data)
        else:
            stream.write(data.decode(errors="replace"))
        stream.flush()
    return write
