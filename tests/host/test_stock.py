"""boards/stock.py without the network or QEMU: which Debian ABI is taken, the
headers Makefile made self-contained, the boot modules' load order, and the
initramfs entries that make init load them."""
from __future__ import annotations

import gzip
import lzma
from pathlib import Path

import pytest

from ktap.boards import initramfs, stock
from ktap.boards.kernels import KernelError
from ktap.core.targets import get_target

ARMMP = stock.STOCK["arm", "debian"]
RT = stock.STOCK["arm", "debian-rt"]
AMD64 = stock.STOCK["x86_64", "debian"]


def ge(a: str, b: str) -> bool:
    """Enough of Debian's order for these versions: 6.1.<n>-<m>."""
    def key(v):
        return tuple(int(x) for x in v.replace("-", ".").split("."))
    return key(a) >= key(b)


def test_abis_sort_numerically_not_as_text():
    assert stock.abi_key("6.1.0-9") < stock.abi_key("6.1.0-50")
    names = ["linux-image-6.1.0-9-armmp", "linux-image-6.1.0-50-armmp",
             "linux-image-6.1.0-10-armmp", "linux-image-6.1.0-50-rt-armmp",
             "linux-image-6.1.0-60-armmp-dbg", "linux-headers-6.1.0-70-armmp"]
    assert stock.image_abis(names, "armmp") == ["6.1.0-50", "6.1.0-10", "6.1.0-9"]
    assert stock.image_abis(names, "rt-armmp") == ["6.1.0-50"]


def fake_index(packages: dict[str, list[str]]):
    return lambda name: packages.get(name, [])


def test_newest_complete_abi_is_taken():
    index = fake_index({
        # 57: the image is there but its headers are not (a mirror mid-sync)
        "linux-image-6.1.0-57-armmp": ["6.1.192-3"],
        "linux-headers-6.1.0-57-common": ["6.1.192-3"],
        "linux-image-6.1.0-50-armmp": ["6.1.176-1"],
        "linux-headers-6.1.0-50-armmp": ["6.1.176-1"],
        "linux-headers-6.1.0-50-common": ["6.1.176-1"],
        "linux-image-6.1.0-9-armmp": ["6.1.27-1"],
        "linux-headers-6.1.0-9-armmp": ["6.1.27-1"],
        "linux-headers-6.1.0-9-common": ["6.1.27-1"],
    })
    rel = stock.choose_release(ARMMP, ["6.1.0-9", "6.1.0-57", "6.1.0-50"], index,
                               ["6.1.192-3", "6.1.176-1"], ge)
    assert (rel.abi, rel.version, rel.kbuild_version) == ("6.1.0-50", "6.1.176-1", "6.1.176-1")
    assert rel.image == "linux-image-6.1.0-50-armmp" and rel.release(ARMMP) == "6.1.0-50-armmp"


def test_unsigned_image_preferred_and_rt_uses_common_rt():
    index = fake_index({
        "linux-image-6.1.0-57-amd64": ["6.1.192-3"],
        "linux-image-6.1.0-57-amd64-unsigned": ["6.1.192-3"],
        "linux-headers-6.1.0-57-amd64": ["6.1.192-3"],
        "linux-headers-6.1.0-57-common": ["6.1.192-3"],
        "linux-image-6.1.0-57-rt-armmp": ["6.1.192-3"],
        "linux-headers-6.1.0-57-rt-armmp": ["6.1.192-3"],
        "linux-headers-6.1.0-57-common-rt": ["6.1.192-3"],
    })
    assert stock.choose_release(AMD64, ["6.1.0-57"], index, ["6.1.192-3"], ge).image == \
        "linux-image-6.1.0-57-amd64-unsigned"
    rel = stock.choose_release(RT, ["6.1.0-57"], index, ["6.1.192-3"], ge)
    assert rel.common == "linux-headers-6.1.0-57-common-rt"


def test_kbuild_may_be_newer_never_older():
    index = fake_index({"linux-image-6.1.0-47-armmp": ["6.1.170-3"],
                        "linux-headers-6.1.0-47-armmp": ["6.1.170-3"],
                        "linux-headers-6.1.0-47-common": ["6.1.170-3"]})
    # the archive kept only later kbuild packages: the oldest later one
    rel = stock.choose_release(ARMMP, ["6.1.0-47"], index, ["6.1.192-3", "6.1.176-1"], ge)
    assert rel.kbuild_version == "6.1.176-1"
    with pytest.raises(KernelError, match="ABIs tried: 6.1.0-47"):
        stock.choose_release(ARMMP, ["6.1.0-47"], index, ["6.1.160-1"], ge)


def test_makefile_include_moves_into_the_cache():
    text = "include /usr/src/linux-headers-6.1.0-50-common/Makefile\n"
    out = stock.rewrite_makefile(text, Path("/c/stock/arm-debian/root"))
    assert out == "include /c/stock/arm-debian/root/usr/src/linux-headers-6.1.0-50-common/Makefile\n"
    # a path already under another prefix is left alone
    assert stock.rewrite_makefile("include /opt/usr/src/x\n", Path("/r")) == "include /opt/usr/src/x\n"


def modinfo_blob(**fields: str) -> bytes:
    return b"\x7fELF junk\0" + b"".join(f"{k}={v}\0".encode() for k, v in fields.items()) + b"tail"


def test_modinfo_fields_from_module_bytes():
    info = stock.modinfo(modinfo_blob(license="GPL", depends="virtio,virtio_ring",
                                      vermagic="6.1.0-50-armmp SMP mod_unload "))
    assert info["depends"] == "virtio,virtio_ring"
    assert info["vermagic"] == "6.1.0-50-armmp SMP mod_unload "
    assert stock.modinfo(modinfo_blob(depends=""))["depends"] == ""


def test_dependencies_load_first_and_once():
    deps = {"virtio_console": ["virtio_ring", "virtio"], "virtio_ring": ["virtio"],
            "virtio": [], "e1000": []}
    order = stock.load_order(("virtio_console", "e1000", "virtio"), deps.__getitem__)
    assert order == ["virtio", "virtio_ring", "virtio_console", "e1000"]
    with pytest.raises(KernelError, match="cycle: a -> b -> a"):
        stock.load_order(("a",), {"a": ["b"], "b": ["a"]}.__getitem__)


def test_boot_modules_from_a_modules_tree(tmp_path):
    lib = tmp_path / "lib" / "modules" / "6.1.0-50-armmp"
    (lib / "kernel" / "drivers").mkdir(parents=True)
    (lib / "kernel" / "drivers" / "virtio_mmio.ko").write_bytes(modinfo_blob(depends=""))
    (lib / "kernel" / "drivers" / "virtio_console.ko.xz").write_bytes(
        lzma.compress(modinfo_blob(depends="virtio_mmio")))
    (lib / "modules.builtin").write_text("kernel/drivers/net/e1000.ko\n")
    loads, absent = stock.boot_modules(ARMMP, lib)
    assert [name for name, _ in loads] == ["virtio_mmio", "virtio_console"]
    assert loads[1][1].startswith(b"\x7fELF")           # decompressed on the host
    assert absent == []                                   # e1000 is built in
    (lib / "modules.builtin").write_text("")
    assert stock.boot_modules(ARMMP, lib)[1] == ["e1000"]


def test_debian_stub_system_map_is_recognised(tmp_path):
    stub = tmp_path / "System.map-6.1.0-50-armmp"
    stub.write_text("ffffffff B The real System.map is in the linux-image-<version>-dbg package\n")
    real = tmp_path / "System.map"
    real.write_text("c0008000 T _text\n" * 400)
    assert stock.is_stub_map(stub) and not stock.is_stub_map(real)


def test_unknown_flavour_names_the_known_ones():
    with pytest.raises(KernelError, match="no debian-rt stock kernel for mips"):
        stock.flavour_of(get_target("mips"), "debian-rt")


def cpio_names(data: bytes) -> list[str]:
    names, off = [], 0
    while off < len(data):
        header = data[off:off + 110]
        size, namesize = int(header[54:62], 16), int(header[94:102], 16)
        name = data[off + 110:off + 110 + namesize - 1].decode()
        off = (off + 110 + namesize + 3) & ~3
        off = (off + size + 3) & ~3
        if name == "TRAILER!!!":
            break
        names.append(name)
    return names


def test_initramfs_lists_boot_modules_in_order(tmp_path):
    mods = []
    for name in ("virtio_mmio.ko", "e1000.ko"):
        mods.append(tmp_path / name)
        mods[-1].write_bytes(b"\x7fELF" + name.encode())
    files = initramfs.boot_module_files(mods)
    listed = files[initramfs.BOOT_MODULES_FILE][0].decode().splitlines()
    assert listed == ["/lib/ktap-boot/00-virtio_mmio.ko", "/lib/ktap-boot/01-e1000.ko"]
    assert files["lib/ktap-boot/01-e1000.ko"][0] == b"\x7fELFe1000.ko"
    archive = initramfs.newc_archive(initramfs.file_entries(files))
    names = cpio_names(gzip.decompress(initramfs.gzip_bytes(archive)))
    assert names.index("lib/ktap-boot") < names.index("lib/ktap-boot/00-virtio_mmio.ko")
    assert initramfs.BOOT_MODULES_FILE in names
    assert initramfs.boot_module_files([]) == {}


def test_guest_init_reads_the_same_list_file():
    init_c = (Path(initramfs.GUEST_DIR) / "init.c").read_text()
    assert f'"/{initramfs.BOOT_MODULES_FILE}"' in init_c
    assert init_c.index("load_boot_modules();") < init_c.index('frame("HELLO')


class FakeIndex:
    """What find_release() asks of an AptIndex, counting the lookups."""

    def __init__(self, packages: dict[str, list[str]], stamp: float):
        self.packages, self.stamp, self.lookups = packages, stamp, 0

    def updated_at(self) -> float:
        return self.stamp

    def names(self, pattern: str) -> list[str]:
        self.lookups += 1
        return sorted(self.packages)

    def versions(self, name: str) -> list[str]:
        self.lookups += 1
        return self.packages.get(name, [])


def test_release_choice_is_kept_until_the_index_is_refreshed(tmp_path, monkeypatch):
    monkeypatch.setenv("KTAP_CACHE", str(tmp_path))
    monkeypatch.setattr(stock, "dpkg_at_least", ge)
    index = FakeIndex({"linux-image-6.1.0-50-armmp": ["6.1.176-1"],
                       "linux-headers-6.1.0-50-armmp": ["6.1.176-1"],
                       "linux-headers-6.1.0-50-common": ["6.1.176-1"],
                       "linux-kbuild-6.1": ["6.1.176-1"]}, stamp=1.0)
    arm = get_target("arm")
    first = stock.find_release(arm, "debian", ARMMP, None, index, index)
    asked = index.lookups
    assert first.abi == "6.1.0-50" and asked > 0
    assert stock.find_release(arm, "debian", ARMMP, None, index, index) == first
    assert index.lookups == asked                      # answered from the kept choice
    index.packages.update({"linux-image-6.1.0-57-armmp": ["6.1.192-3"],
                           "linux-headers-6.1.0-57-armmp": ["6.1.192-3"],
                           "linux-headers-6.1.0-57-common": ["6.1.192-3"],
                           "linux-kbuild-6.1": ["6.1.192-3", "6.1.176-1"]})
    index.stamp = 2.0                                  # apt-get update ran
    assert stock.find_release(arm, "debian", ARMMP, None, index, index).abi == "6.1.0-57"
    # a pinned ABI is its own choice
    assert stock.find_release(arm, "debian", ARMMP, "6.1.0-50", index, index).abi == "6.1.0-50"
