"""`ktap board shell`: QEMU attached to this terminal, running init's command
loop."""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from ktap.boards import qemu
from ktap.boards.choice import DEFAULT_KERNEL, boot_kernel
from ktap.boards.initramfs import build_initramfs
from ktap.core.targets import Target, get_target


def interactive_shell(target: Target | str,
                      extra_files: dict[str, str | Path] | None = None, *,
                      kernel_variant: str | None = None, kernel: str = DEFAULT_KERNEL) -> int:
    """QEMU attached to this terminal with init's command loop (Ctrl-A x quits),
    booting `kernel` (choice.KERNEL_CHOICES) with the modules it needs at boot."""
    target = get_target(target)
    build = boot_kernel(target, kernel, kernel_variant)
    with tempfile.TemporaryDirectory(prefix="ktap-shell-") as tmp:
        initrd = build_initramfs(target, extra_files, None, Path(tmp) / "initrd.cpio.gz",
                                 boot_modules=build.boot_modules)
        cmd = qemu.boot_command(target, initrd, interactive=True, append=["ktap.shell"],
                                kernel_variant=kernel_variant, build=build)
        return subprocess.call(cmd)
