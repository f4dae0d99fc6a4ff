"""Host tools ktap runs (compilers, QEMU, make): found on PATH, or refused with the
Debian package that provides them."""
from __future__ import annotations

import shutil
import subprocess

from ktap.core.targets import Target


class MissingTool(Exception):
    """A host tool is absent; the message names the Debian package to install."""

    def __init__(self, tool: str, package: str):
        self.tool = tool
        self.package = package
        super().__init__(f"{tool} not found: install the Debian package '{package}' "
                         f"(apt-get install {package}, or run scripts/setup.sh)")


def require_tool(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise MissingTool(tool, package)
    return path


def cross_gcc(target: Target) -> str:
    return f"{target.cross_compile}gcc"


def require_cross_gcc(target: Target) -> str:
    gcc = cross_gcc(target)
    return require_tool(gcc, target.packages.gcc)


def find_cc() -> str | None:
    """The host C compiler, for harnesses and host builds of ktaprun."""
    for cc in ("cc", "gcc", "clang"):
        if shutil.which(cc):
            return shutil.which(cc)
    return None


def compiler_identity(cc: str) -> str:
    """What a build cache keys a compiler by: its path and its --version banner."""
    r = subprocess.run([cc, "--version"], capture_output=True, text=True)
    return cc + "\n" + r.stdout
