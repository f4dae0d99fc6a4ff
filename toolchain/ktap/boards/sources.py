"""Kernel sources of the board kernels, one per kernel version.

6.1, the default, comes from the host's installed linux-source-6.1 (as it
always has, so warm caches stay valid). 5.10 (bullseye) and 6.12
(bookworm-security) come from Debian's archive through ktap's private apt
state (boards/debs.py): no root, no change to the host's apt. Every version
is extracted once under ``$KTAP_CACHE/src/linux-source-<version>_<debian
version>/`` and built out of tree from there.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ktap.boards.debs import AptIndex, DebError, unpack
from ktap.core.cache import cache_root, cached_dir, locked
from ktap.core.tools import MissingTool

KERNEL_VERSIONS = ("5.10", "6.1", "6.12")
DEFAULT_KERNEL = "6.1"
DEFAULT_SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
SOURCE_PACKAGE = "linux-source-6.1"
# linux-source-* is Architecture: all, so any index finds it; amd64 is the host's.
SOURCE_INDEX_ARCH = "amd64"
# How long the newest version apt named for a source package is trusted
# before apt is asked again (source_deb()).
REPIN_SECONDS = 24 * 3600


class KernelError(Exception):
    pass


def check_version(kernel: str) -> str:
    if kernel not in KERNEL_VERSIONS:
        raise KernelError(f"unknown kernel version {kernel!r} "
                          f"(known: {', '.join(KERNEL_VERSIONS)})")
    return kernel


def package_name(kernel: str = DEFAULT_KERNEL) -> str:
    return f"linux-source-{check_version(kernel)}"


def source_deb(kernel: str) -> Path:
    """The cached .deb of linux-source-<kernel>, downloaded on first use.

    Asking apt which version is newest costs seconds (apt-cache rebuilds
    its cache for the private state), and every cache lookup of a board
    kernel needs the answer; so the answer is pinned in
    ``$KTAP_CACHE/src/<package>.pin`` and asked again once a day. Offline,
    a pinned .deb still serves."""
    name = package_name(kernel)
    pin = cache_root() / "src" / f"{name}.pin"
    pinned = Path(pin.read_text().strip()) if pin.exists() else None
    if pinned and pinned.exists() and time.time() - pin.stat().st_mtime < REPIN_SECONDS:
        return pinned
    try:
        deb = AptIndex(SOURCE_INDEX_ARCH).download(name)
    except DebError as e:
        if pinned and pinned.exists():
            print(f"ktap: warning: cannot ask Debian's archive for a newer {name} ({e}); "
                  f"using {pinned.name}", file=sys.stderr, flush=True)
            return pinned
        raise KernelError(f"cannot fetch {name} from Debian's archive ({e}); hint: check "
                          f"the network, or use the default kernel {DEFAULT_KERNEL}") from None
    pin.parent.mkdir(parents=True, exist_ok=True)
    tmp = pin.with_name(f".{pin.name}.{os.getpid()}")
    tmp.write_text(f"{deb}\n")
    tmp.replace(pin)
    return deb


def source_tarball(kernel: str = DEFAULT_KERNEL) -> Path:
    if check_version(kernel) == DEFAULT_KERNEL:
        return Path(os.environ.get("KTAP_LINUX_SOURCE", DEFAULT_SOURCE_TARBALL))
    tarball = unpack(source_deb(kernel)) / "usr" / "src" / f"{package_name(kernel)}.tar.xz"
    if not tarball.exists():
        raise KernelError(f"{source_deb(kernel)} holds no {tarball.name}")
    return tarball


def source_version(kernel: str = DEFAULT_KERNEL) -> str:
    """Debian version of the source package, so a package upgrade invalidates the cache."""
    if check_version(kernel) != DEFAULT_KERNEL:
        # apt names the file name_version_all.deb, ':' escaped as %3a.
        return source_deb(kernel).stem.split("_")[1].replace("%3a", ":")
    tarball = source_tarball(kernel)
    if not tarball.exists():
        raise MissingTool(str(tarball), SOURCE_PACKAGE)
    if tarball == DEFAULT_SOURCE_TARBALL and shutil.which("dpkg-query"):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", SOURCE_PACKAGE],
                           capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    st = tarball.stat()
    return f"file-{st.st_size}-{int(st.st_mtime)}"


def ensure_source(kernel: str = DEFAULT_KERNEL) -> Path:
    """Extract a version's source once; every target builds out of tree from it."""
    version = source_version(kernel)
    src = cache_root() / "src" / f"{package_name(kernel)}_{version}"
    if src.exists():
        return src
    tarball = source_tarball(kernel)

    def extract(tmp: Path) -> None:
        print(f"ktap: extracting {tarball} into {src}", file=sys.stderr, flush=True)
        r = subprocess.run(["tar", "-C", str(tmp), "--strip-components=1", "-xf",
                            str(tarball)], capture_output=True, text=True)
        if r.returncode != 0:
            raise KernelError(f"extracting {tarball} failed: {r.stderr.strip()}")

    # The lock spares a second process the minute-long extraction, not only the race.
    with locked(src.parent / ".extract.lock"):
        return cached_dir(src, extract)
