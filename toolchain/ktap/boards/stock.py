"""Debian 12's stock kernels booted unchanged on the QEMU boards, with ktapvm.ko
built against the headers packages alone, as a user of a distribution kernel does.

Flavours (STOCK): ``debian`` is linux-image-6.1.0-N-armmp (arm), -amd64 (x86_64)
and -arm64 (arm64); ``debian-rt`` is -rt-armmp (arm, PREEMPT_RT). The newest ABI N
whose image, arch headers, -common headers and linux-kbuild-6.1 all exist at one
Debian version is taken (choose_release).

Cache layout (``$KTAP_CACHE/stock/<target>-<flavour>-<release>-r<recipe>/``)::

    root/usr/src/linux-headers-<release>/          the kbuild dir modules build against
    root/usr/src/linux-headers-<abi>-common[-rt]/  what its Makefile includes
    root/usr/lib/linux-kbuild-6.1/                 scripts and host tools (fixdep, modpost)
    boot/vmlinuz-<release>, config-<release>       from the image package (nothing else of it)
    boot-modules/<name>.ko                         virtio, e1000...: init loads them in
                                                   ktap-stock.json's order
    ktap-stock.json                                written last: packages, sizes, seconds

Nothing is installed under /usr on the host. The ABI chosen is kept in
``stock/<target>-<flavour>-newest.choice.json`` until apt's index is refreshed.

Symbols: the image package's /boot/System.map is a one-line stub naming the
-dbg package (620 MB armhf, 860 MB amd64 to download), so KernelBuild.system_map
is None unless debug_symbols=True fetches that package and keeps its
System.map and vmlinux (``stock/<release>-dbg-<version>/``). Without it,
symbols come from the booted board: probes attach by name and ktaprun
symbolizes stacks from /proc/kallsyms on the target, which KASLR cannot put
out of step; a host-side table is a board profile (boards/profile.py)
rebased through the module's _printk anchor.

Making the headers self-contained: the three packages are unpacked into one
``root``, so their relative symlinks (``scripts -> ../../lib/linux-kbuild-6.1/scripts``)
resolve inside it; the one absolute path, the arch Makefile's
``include /usr/src/linux-headers-<abi>-common/Makefile``, is rewritten to the
cached copy (rewrite_makefile).

Host tools for cross builds: linux-kbuild-6.1's scripts/basic/fixdep,
scripts/mod/modpost, genksyms, recordmcount and tools/objtool are binaries of
the package's own architecture, so an armhf or arm64 kbuild package cannot run
here. They are target-independent (modpost reads either byte order and word
size; objtool is used for x86 only), so the kbuild package of the *host's*
architecture is the one unpacked, for every target: at the headers' exact
version, or, once the archive has dropped that one, the oldest later one, as
the headers' own ``Depends: linux-kbuild-6.1 (>= version)`` allows.
The arch headers' .kernelvariables names ``$(CROSS_COMPILE)gcc-12``, which
Debian 12's gcc-12-<triple> cross packages provide.

Debian 12 ships its modules uncompressed (MODULE_COMPRESS_NONE); a .ko.xz or
.ko.gz is decompressed on the host anyway, so init never needs the kernel's
in-kernel decompression.
"""
from __future__ import annotations

import gzip
import json
import lzma
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ktap.boards.debs import AptIndex, DebError
from ktap.boards.kernels import KernelBuild, KernelError
from ktap.core.cache import cache_root, cached_dir, locked
from ktap.core.targets import Target, get_target
from ktap.core.tools import require_tool

STOCK_KERNELS = ("debian", "debian-rt")
KBUILD_PACKAGE = "linux-kbuild-6.1"
ABI_PREFIX = "6.1.0-"
# Bump when the cache layout below changes.
STOCK_RECIPE_VERSION = 2


@dataclass(frozen=True)
class Flavour:
    deb_arch: str                  # Debian architecture of the packages
    suffix: str                    # linux-image-<abi>-<suffix>
    common: str                    # linux-headers-<abi>-<common>
    memory: str                    # QEMU -m: the stock kernels need more than tinyconfig's
    # Modules ktap needs that these configs build as =m, by module name:
    # virtio_mmio + virtio_console carry the agent line on virt boards,
    # e1000 the network of ssh-based tests (qemu.qemu_command's -device e1000).
    boot_modules: tuple[str, ...]


STOCK = {
    ("arm", "debian"): Flavour("armhf", "armmp", "common", "512",
                               ("virtio_mmio", "virtio_console", "e1000")),
    ("arm", "debian-rt"): Flavour("armhf", "rt-armmp", "common-rt", "512",
                                  ("virtio_mmio", "virtio_console", "e1000")),
    ("x86_64", "debian"): Flavour("amd64", "amd64", "common", "1024", ("e1000",)),
    ("arm64", "debian"): Flavour("arm64", "arm64", "common", "1024",
                                 ("virtio_mmio", "virtio_console", "e1000")),
}
STOCK_CPUS = 2


@dataclass(frozen=True)
class Release:
    """One ABI's package set, all at one Debian version."""
    abi: str                       # "6.1.0-50"
    version: str                   # "6.1.176-1"
    image: str                     # the image package (-unsigned when there is one)
    headers: str
    common: str
    kbuild_version: str            # the host's linux-kbuild-6.1 used with it

    def release(self, flavour: Flavour) -> str:
        return f"{self.abi}-{flavour.suffix}"


def flavour_of(target: Target, name: str) -> Flavour:
    found = STOCK.get((target.name, name))
    if found is None:
        known = ", ".join(f"{k} on {t}" for t, k in sorted(STOCK))
        raise KernelError(f"there is no {name} stock kernel for {target.name} (known: {known})")
    return found


def abi_key(abi: str) -> tuple[int, ...]:
    """Numeric order of "6.1.0-9" < "6.1.0-50"."""
    return tuple(int(n) for n in re.findall(r"\d+", abi))


def image_abis(names: list[str], suffix: str) -> list[str]:
    """The ABIs of linux-image-6.1.0-N-<suffix>[-unsigned] in `names`, newest first."""
    rx = re.compile(rf"linux-image-({re.escape(ABI_PREFIX)}\d+)-{re.escape(suffix)}(-unsigned)?")
    abis = {m.group(1) for m in map(rx.fullmatch, names) if m}
    return sorted(abis, key=abi_key, reverse=True)


def choose_release(flavour: Flavour, abis: list[str], versions: Callable[[str], list[str]],
                   kbuild_versions: list[str], at_least: Callable[[str, str], bool]) -> Release:
    """The newest ABI in `abis` whose image, headers and -common headers exist at
    one version, with a host linux-kbuild-6.1 at that version or later (what
    the headers package itself depends on). versions(name) lists a package's
    versions in the target architecture's index, newest first (empty if
    unknown); kbuild_versions the host index's, newest first; at_least(a, b)
    is Debian's a >= b."""
    tried = []
    for abi in sorted(abis, key=abi_key, reverse=True):
        headers = f"linux-headers-{abi}-{flavour.suffix}"
        common = f"linux-headers-{abi}-{flavour.common}"
        have_headers = set(versions(headers)) & set(versions(common))
        for image in (f"linux-image-{abi}-{flavour.suffix}-unsigned",
                      f"linux-image-{abi}-{flavour.suffix}"):
            for version in (v for v in versions(image) if v in have_headers):
                # the exact version first: it is what Debian's own kernel was built with
                kbuild = [k for k in kbuild_versions if k == version] or \
                    [k for k in kbuild_versions if at_least(k, version)]
                if kbuild:
                    return Release(abi, version, image, headers, common, kbuild[-1])
        tried.append(abi)
    raise KernelError(
        f"no Debian {flavour.suffix} kernel ABI has its image, headers and -common headers "
        f"at one version, and {KBUILD_PACKAGE} at least that new, in ktap's package index "
        f"(ABIs tried: {', '.join(tried) or 'none'})")


def rewrite_makefile(text: str, root: Path) -> str:
    """The arch headers' Makefile with its absolute /usr/src paths moved under `root`."""
    return re.sub(r"(?<![\w/.])/usr/(src|lib)/", lambda m: f"{root}/usr/{m.group(1)}/", text)


# ---------------------------------------------------------------- modules

def modinfo(data: bytes) -> dict[str, str]:
    """The key=value pairs of a .ko's .modinfo (first value of each key)."""
    info: dict[str, str] = {}
    for m in re.finditer(rb"(?:^|\0)(vermagic|depends|name|license)=([^\0]*)", data):
        info.setdefault(m.group(1).decode(), m.group(2).decode(errors="replace"))
    return info


def module_name(path: Path) -> str:
    return path.name.split(".ko")[0].replace("-", "_")


def module_index(modules_dir: Path) -> dict[str, Path]:
    """Module name (with '_') -> file, over a lib/modules/<release> tree."""
    return {module_name(p): p for p in modules_dir.rglob("*.ko*")}


def module_bytes(path: Path) -> bytes:
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes())
    if path.name.endswith(".ko"):
        return path.read_bytes()
    raise KernelError(f"{path}: compressed in a format ktap does not unpack (xz and gzip only)")


def load_order(wanted: tuple[str, ...], depends: Callable[[str], list[str]]) -> list[str]:
    """`wanted` modules after their dependencies (depends(name): .modinfo's
    depends=), each once, in the order finit_module needs them."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise KernelError(f"module dependency cycle: {' -> '.join(path + (name,))}")
        for dep in depends(name):
            visit(dep, path + (name,))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order


def boot_modules(flavour: Flavour, modules_dir: Path) -> tuple[list[tuple[str, bytes]], list[str]]:
    """((name, module bytes) to load at boot, in order; wanted drivers the kernel
    lacks). A wanted driver with no .ko is either built in (modules.builtin) or
    absent; only the ssh network can be absent without breaking a board."""
    index = module_index(modules_dir)
    builtin_file = modules_dir / "modules.builtin"
    builtin = {module_name(Path(line)) for line in builtin_file.read_text().split()} \
        if builtin_file.exists() else set()
    cache: dict[str, bytes] = {}

    def data(name: str) -> bytes:
        if name not in cache:
            if name not in index:
                raise KernelError(f"module {name} is not in {modules_dir}")
            cache[name] = module_bytes(index[name])
        return cache[name]

    def depends(name: str) -> list[str]:
        deps = modinfo(data(name)).get("depends", "")
        return [d.replace("-", "_") for d in deps.split(",") if d]

    wanted = tuple(n for n in flavour.boot_modules if n in index)
    absent = [n for n in flavour.boot_modules if n not in index and n not in builtin]
    return [(name, data(name)) for name in load_order(wanted, depends)], absent


# ---------------------------------------------------------------- the cache

def dpkg_at_least(a: str, b: str) -> bool:
    """Debian version order: a >= b (dpkg --compare-versions)."""
    return subprocess.run([require_tool("dpkg", "dpkg"), "--compare-versions", a, "ge", b]
                          ).returncode == 0


def host_deb_arch() -> str:
    r = subprocess.run([require_tool("dpkg", "dpkg"), "--print-architecture"],
                       capture_output=True, text=True)
    return r.stdout.strip() or "amd64"


def stock_dir(target: Target, flavour_name: str, release: str) -> Path:
    return cache_root() / "stock" / f"{target.name}-{flavour_name}-{release}-r{STOCK_RECIPE_VERSION}"


def _progress(msg: str, enabled: bool) -> None:
    if enabled:
        print(f"ktap: {msg}", file=sys.stderr, flush=True)


def _dpkg_x(deb: Path, dest: Path) -> None:
    r = subprocess.run([require_tool("dpkg-deb", "dpkg"), "-x", str(deb), str(dest)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise KernelError(f"dpkg-deb -x {deb} failed: {r.stderr.strip()}")


def image_tree(tree: Path, release: str) -> tuple[Path, Path | None, Path, Path]:
    """(vmlinuz, System.map or None, config, lib/modules dir) of an unpacked image package."""
    found = (tree / "boot" / f"vmlinuz-{release}", tree / "boot" / f"System.map-{release}",
             tree / "boot" / f"config-{release}", tree / "lib" / "modules" / release)
    for path in found:
        if not path.exists():
            raise KernelError(f"the Debian image package has no {path.relative_to(tree)}")
    vmlinuz, system_map, config, modules = found
    return vmlinuz, (None if is_stub_map(system_map) else system_map), config, modules


def is_stub_map(path: Path) -> bool:
    """Debian's image packages ship a one-line System.map that points to the
    -dbg package (600-860 MB); a symbol table read from it would be empty."""
    with open(path, "rb") as f:
        head = f.read(4096)
    return len(head) < 4096 and b"real System.map is in" in head


def choice_file(target: Target, flavour: str, abi: str | None) -> Path:
    return cache_root() / "stock" / f"{target.name}-{flavour}-{abi or 'newest'}.choice.json"


def find_release(target: Target, flavour: str, fl: Flavour, abi: str | None,
                 index: AptIndex, host: AptIndex) -> Release:
    """choose_release() against the package indexes, kept in a file until
    either index is refreshed: a dozen apt-cache runs take 10-25 s, which every
    board boot would otherwise pay."""
    stamps = [index.updated_at(), host.updated_at()]
    memo = choice_file(target, flavour, abi)
    if memo.exists():
        saved = json.loads(memo.read_text())
        if saved.get("stamps") == stamps and saved.get("recipe") == STOCK_RECIPE_VERSION:
            return Release(**saved["release"])
    abis = [abi] if abi else image_abis(index.names(rf"linux-image-.*-{fl.suffix}.*"), fl.suffix)
    rel = choose_release(fl, abis, index.versions, host.versions(KBUILD_PACKAGE), dpkg_at_least)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps({"stamps": stamps, "recipe": STOCK_RECIPE_VERSION,
                                "release": asdict(rel)}, indent=1) + "\n")
    return rel


def ensure_stock_kernel(target: Target | str, flavour: str, progress: bool = True,
                        abi: str | None = None, debug_symbols: bool = False) -> KernelBuild:
    """Debian's `flavour` kernel for `target`: the newest complete ABI's (or
    `abi`'s, "6.1.0-50", to match a board's kernel) packages downloaded and
    unpacked into the cache (see the module doc). debug_symbols: also fetch
    the -dbg package (620-860 MB) for the real System.map and vmlinux."""
    target = get_target(target)
    fl = flavour_of(target, flavour)
    try:
        index = AptIndex(fl.deb_arch)
        host_arch = host_deb_arch()
        host = index if host_arch == fl.deb_arch else AptIndex(host_arch)
        rel = find_release(target, flavour, fl, abi, index, host)
        release = rel.release(fl)
        directory = stock_dir(target, flavour, release)
        started = time.monotonic()
        cached = (directory / "ktap-stock.json").exists()
        if not cached:
            _progress(f"preparing Debian {release} ({rel.version}) in {directory}", progress)
            debs = [index.download(rel.image, rel.version),
                    index.download(rel.headers, rel.version), index.download(rel.common, rel.version),
                    host.download(KBUILD_PACKAGE, rel.kbuild_version)]
            with locked(directory.parent / f".{directory.name}.lock"):
                cached_dir(directory, lambda tmp: _populate(tmp, directory, fl, rel, release,
                                                            debs, started))
    except DebError as e:
        raise KernelError(f"the Debian {flavour} kernel for {target.name}: {e}") from None
    info = json.loads((directory / "ktap-stock.json").read_text())
    boot = directory / "boot"
    modules = tuple(directory / "boot-modules" / name for name in info["boot_modules"])
    kdir = directory / "root" / "usr" / "src" / f"linux-headers-{release}"
    system_map = boot / f"System.map-{release}"
    if debug_symbols:
        system_map = ensure_debug_symbols(index, rel, release, progress) / system_map.name
    return KernelBuild(target.name, kdir, boot / f"vmlinuz-{release}", info.get("seconds"), cached,
                       kernel=flavour, cpus=STOCK_CPUS, memory=fl.memory, boot_modules=modules,
                       system_map=system_map if system_map.exists() else None,
                       config=boot / f"config-{release}")


def ensure_debug_symbols(index: AptIndex, rel: Release, release: str, progress: bool) -> Path:
    """The directory holding the -dbg package's System.map-<release> and
    vmlinux-<release> (only those two of its gigabytes are unpacked)."""
    directory = cache_root() / "stock" / f"{release}-dbg-{rel.version}"
    if directory.exists():
        return directory
    deb = index.download(f"linux-image-{release}-dbg", rel.version)
    _progress(f"extracting System.map and vmlinux from {deb.name}", progress)
    wanted = [f"./usr/lib/debug/boot/{name}-{release}" for name in ("System.map", "vmlinux")]

    def extract(tmp: Path) -> None:
        tar = subprocess.Popen([require_tool("dpkg-deb", "dpkg"), "--fsys-tarfile", str(deb)],
                               stdout=subprocess.PIPE)
        r = subprocess.run([require_tool("tar", "tar"), "-x", "-C", str(tmp), *wanted],
                           stdin=tar.stdout, capture_output=True, text=True)
        tar.stdout.close()
        tar.wait()
        if r.returncode != 0:
            raise KernelError(f"extracting {', '.join(wanted)} from {deb} failed: {r.stderr.strip()}")
        for path in wanted:
            (tmp / path).rename(tmp / Path(path).name)
        shutil.rmtree(tmp / "usr")

    with locked(directory.parent / f".{directory.name}.lock"):
        return cached_dir(directory, extract)


def _populate(tmp: Path, final: Path, fl: Flavour, rel: Release, release: str,
              debs: list[Path], started: float) -> None:
    """Fills `tmp`, which becomes `final`: paths written into files name `final`.
    debs: the image, the arch headers, the -common headers, the host's kbuild."""
    image, *headers = debs
    root = tmp / "root"
    for deb in headers:
        _dpkg_x(deb, root)
    makefile = root / "usr" / "src" / f"linux-headers-{release}" / "Makefile"
    makefile.write_text(rewrite_makefile(makefile.read_text(), final / "root"))
    # The packages' own /lib/modules/<release>/build symlinks point at /usr/src.
    shutil.rmtree(root / "lib", ignore_errors=True)
    # Of the image's 200-400 MB only the kernel, its config and a few modules
    # are kept: the rest would be most of the cache entry.
    unpacked = tmp / "image"
    _dpkg_x(image, unpacked)
    vmlinuz, system_map, config, modules_dir = image_tree(unpacked, release)
    (tmp / "boot").mkdir()
    for path in (vmlinuz, system_map, config):
        if path is not None:
            shutil.copy2(path, tmp / "boot" / path.name)
    mods = tmp / "boot-modules"
    mods.mkdir()
    names = []
    loads, absent = boot_modules(fl, modules_dir)
    for name, data in loads:
        names.append(f"{name}.ko")
        (mods / names[-1]).write_bytes(data)
    shutil.rmtree(unpacked)
    (tmp / "ktap-stock.json").write_text(json.dumps({
        "release": release, "abi": rel.abi, "version": rel.version,
        "kbuild_version": rel.kbuild_version,
        "packages": {d.name: d.stat().st_size for d in debs},
        "boot_modules": names, "absent_drivers": absent,
        "seconds": round(time.monotonic() - started, 1), "recipe": STOCK_RECIPE_VERSION,
    }, indent=1) + "\n")
