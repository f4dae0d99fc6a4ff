"""Kernel versions and the kernel choice (boards/kernels.py, sources.py,
choice.py) and the module's feature detection (build/features.py), without
building or booting anything."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ktap.boards import choice, kernels, qemu, sources
from ktap.boards.debs import DebError
from ktap.boards.kernels import KernelBuild, KernelError
from ktap.boards.sessions import kernel_trouble
from ktap.build import features, kmod
from ktap.build.kbuild import KmodError, check_kdir, compiler_override
from ktap.core.targets import get_target

ROOT = Path(__file__).resolve().parents[2]


def test_default_kernel_key_is_the_one_warm_caches_use():
    t = get_target("x86_64")
    base = kernels.config_key(t, "v", "cc")
    assert kernels.config_key(t, "v", "cc", None, "6.1") == base
    keys = {base, kernels.config_key(t, "v", "cc", None, "5.10"),
            kernels.config_key(t, "v", "cc", None, "6.12"),
            kernels.config_key(t, "v", "cc", "debug", "5.10")}
    assert len(keys) == 4


def test_build_dir_names_the_version_only_when_not_default(monkeypatch):
    monkeypatch.setattr(kernels, "source_version", lambda kernel="6.1": f"src-{kernel}")
    monkeypatch.setattr(kernels, "compiler_version", lambda target: "12.2.0")
    t = get_target("mips")
    default = kernels.build_dir(t)
    assert default.name == f"mips-{kernels.config_key(t, 'src-6.1', '12.2.0')}"
    assert kernels.build_dir(t, kernel="5.10").name.startswith("mips-5.10-")
    assert kernels.build_dir(t, "debug", "6.12").name.startswith("mips-6.12-debug-")


def test_unknown_kernel_is_refused_naming_the_known_ones():
    with pytest.raises(KernelError) as e:
        choice.check_kernel("4.19")
    for name in ("5.10", "6.1", "6.12", "debian", "debian-rt"):
        assert name in str(e.value)
    with pytest.raises(KernelError, match="unknown kernel version '4.19'"):
        kernels.ensure_kernel_build("x86_64", kernel="4.19")


def test_stock_kernel_takes_no_variant():
    with pytest.raises(KernelError, match="variant exists only for the kernels ktap builds"):
        choice.boot_kernel("x86_64", "debian", "smp")


def test_rt_variant_is_refused_where_mainline_has_no_preempt_rt():
    """PREEMPT_RT is in mainline from 6.12, on x86 and arm64: the rt variant
    is refused before any tool runs for another version or target."""
    with pytest.raises(KernelError, match=r"rt variant exists for kernel 6\.12, not for 6\.1; "
                                          r"hint: add --kernel 6\.12"):
        kernels.ensure_kernel_build("arm64", variant="rt")
    with pytest.raises(KernelError, match="rt variant exists for x86_64 and arm64, not for arm"):
        kernels.ensure_kernel_build("arm", variant="rt", kernel="6.12")


def test_rt_variant_is_two_cpus_with_preempt_rt_and_its_checkers():
    wanted = kernels.wanted_options(get_target("x86_64"), "rt", "6.12")
    for option in ("PREEMPT_RT", "SMP", "PROVE_LOCKING", "DEBUG_ATOMIC_SLEEP", "X86_MPPARSE"):
        assert wanted[f"CONFIG_{option}"] == "y", option
    assert wanted["CONFIG_PREEMPT_NONE"] == "n"
    assert "CONFIG_KASAN" not in wanted
    assert qemu.variant_cpus("rt") == 2
    t = get_target("arm64")
    assert kernels.config_key(t, "v", "cc", "rt", "6.12") != \
        kernels.config_key(t, "v", "cc", "smp", "6.12")


def test_version_fragments_have_a_reason_above_every_option():
    for path in sorted((ROOT / "targets" / "kernels").glob("*.config")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith(("CONFIG_", "# CONFIG_", "#@ make:")):
                above = lines[i - 1] if i else ""
                assert above.startswith("#") and not above.startswith("# CONFIG_"), (path, line)
    assert not (ROOT / "targets" / "kernels" / "6.1.config").exists()


def test_fragment_scoping_and_make_variables():
    text = ("# why\nCONFIG_A=y\n#@ only: mips\n# why mips\nCONFIG_B=y\n# why make\n"
            "#@ make: KCFLAGS=-fno-x\n#@ all\n# why all\nCONFIG_C=y\n")
    mips, x86 = get_target("mips"), get_target("x86_64")
    assert set(kernels.parse_fragment(kernels.fragment_for(mips, text))) == {
        "CONFIG_A", "CONFIG_B", "CONFIG_C"}
    assert set(kernels.parse_fragment(kernels.fragment_for(x86, text))) == {"CONFIG_A", "CONFIG_C"}
    assert "#@ make: KCFLAGS=-fno-x" in kernels.fragment_for(mips, text, keep_make=True)
    assert "#@ make" not in kernels.fragment_for(x86, text, keep_make=True)


def test_qemu_command_takes_the_kernels_cpus_and_memory():
    t = get_target("x86_64")
    cmd = qemu.qemu_command(t, Path("bzImage"), Path("initrd"), cpus=2, memory="1024")
    assert cmd[cmd.index("-smp") + 1] == "2,sockets=2"
    assert cmd[cmd.index("-m") + 1] == "1024"
    plain = qemu.qemu_command(t, Path("bzImage"), Path("initrd"))
    assert "-smp" not in plain and plain[plain.index("-m") + 1] == t.qemu.get("memory", "256")


def test_kernel_build_record_defaults():
    b = KernelBuild("x86_64", Path("d"), Path("d/img"), None, True)
    assert (b.kernel, b.cpus, b.boot_modules) == ("6.1", 1, ())


# ---------------------------------------------------------------- features

CONFIG_OK = "".join(f"{o}=y\n" for o in features.REQUIRED_OPTIONS)


def fake_kdir(tmp: Path, version: int, config: str | None = CONFIG_OK, *,
              printk: str = "int _printk(const char *fmt, ...);",
              kprobes: str = "struct kretprobe *get_kretprobe(struct kretprobe_instance *ri);",
              std: str = "-std=gnu11") -> Path:
    kdir = tmp / "build"
    src = tmp / "src"
    (kdir / "include/generated/uapi/linux").mkdir(parents=True)
    (kdir / "include/config").mkdir(parents=True)
    (src / "include/linux").mkdir(parents=True)
    (kdir / "source").symlink_to(src)
    (kdir / "include/generated/uapi/linux/version.h").write_text(
        f"#define LINUX_VERSION_CODE {version}\n")
    (kdir / "include/config/kernel.release").write_text("9.9.9-test\n")
    if config is not None:
        (kdir / ".config").write_text(config)
    (kdir / "Makefile").write_text(f"include {src}/Makefile\n")
    (src / "Makefile").write_text(f"KBUILD_CFLAGS += {std}\n")
    (src / "include/linux/printk.h").write_text(printk + "\n")
    (src / "include/linux/kprobes.h").write_text(kprobes + "\n")
    (src / "include/linux/fs.h").write_text("loff_t no_llseek(struct file *, loff_t, int);\n")
    return kdir


def test_features_of_an_old_kernel(tmp_path):
    kdir = fake_kdir(tmp_path, (5 << 16) | (10 << 8) | 223, printk="int printk(const char *s, ...);",
                     kprobes="struct kretprobe_instance { struct kretprobe *rp; };",
                     std="-std=gnu89")
    f = features.detect(kdir)
    assert f.version == (5, 10, 223) and f.c_std == "gnu89" and f.release == "9.9.9-test"
    assert not f.have["KTAP_HAVE__PRINTK"] and not f.have["KTAP_HAVE_GET_KRETPROBE"]
    assert f.have["KTAP_HAVE_NO_LLSEEK"] and not f.have["KTAP_HAVE_LINUX_UNALIGNED_H"]
    text = features.header_text(f)
    assert "#define KTAP_HAVE__PRINTK 0" in text and "#define KTAP_HAVE_GET_KRETPROBE 0" in text
    assert '#define KTAP_KERNEL_C_STD "gnu89"' in text


def test_features_of_a_new_kernel(tmp_path):
    kdir = fake_kdir(tmp_path, (6 << 16) | (12 << 8) | 1)
    (tmp_path / "src/include/linux/fs.h").write_text("/* llseek helpers were removed */\n")
    (tmp_path / "src/include/linux/unaligned.h").write_text("\n")
    f = features.detect(kdir)
    assert f.have["KTAP_HAVE__PRINTK"] and f.have["KTAP_HAVE_GET_KRETPROBE"]
    assert not f.have["KTAP_HAVE_NO_LLSEEK"] and f.have["KTAP_HAVE_LINUX_UNALIGNED_H"]
    assert "#define KTAP_HAVE_LINUX_UNALIGNED_H 1" in features.header_text(f)


def test_features_are_part_of_the_module_content(tmp_path):
    old = fake_kdir(tmp_path / "a", (5 << 16) | (10 << 8), printk="int printk(void);")
    new = fake_kdir(tmp_path / "b", (6 << 16) | (12 << 8))
    a = kmod.module_files("x86_64", tmp_path / "out", old)["gen/ktap_features.h"]
    b = kmod.module_files("x86_64", tmp_path / "out", new)["gen/ktap_features.h"]
    assert a != b and "KTAP_HAVE__PRINTK 0" in a and "KTAP_HAVE__PRINTK 1" in b


@pytest.mark.parametrize("option", ["CONFIG_KPROBES", "CONFIG_KRETPROBES", "CONFIG_MODULES",
                                    "CONFIG_PERF_EVENTS", "CONFIG_TRACEPOINTS", "CONFIG_KALLSYMS"])
def test_missing_option_fails_early_with_one_line(tmp_path, option):
    config = CONFIG_OK.replace(f"{option}=y\n", f"# {option} is not set\n")
    kdir = fake_kdir(tmp_path, 6 << 16 | 1 << 8, config)
    with pytest.raises(KmodError) as e:
        kmod.build_module("x86_64", kdir, tmp_path / "out")
    msg = str(e.value)
    assert "\n" not in msg and option in msg and str(kdir / ".config") in msg and "hint:" in msg


def test_kdir_without_config_is_refused(tmp_path):
    kdir = fake_kdir(tmp_path, 6 << 16, None)
    with pytest.raises(KmodError) as e:
        features.detect(kdir)
    assert "has no .config" in str(e.value) and "hint:" in str(e.value)
    with pytest.raises(KmodError, match=r"no \.config\); hint:"):
        check_kdir(kdir)


def test_cli_rejects_unknown_kernel_without_traceback():
    r = subprocess.run([sys.executable, "-m", "ktap.cli", "board", "-t", "x86_64", "--kernel",
                        "4.19", "kernel"], capture_output=True, text=True, cwd=ROOT / "toolchain")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "ktap board: error: unknown kernel '4.19'; known kernels: 5.10, 6.1, 6.12, debian, "
        "debian-rt (default 6.1)"]


def test_source_deb_is_pinned_and_survives_an_unreachable_archive(tmp_path, monkeypatch):
    monkeypatch.setenv("KTAP_CACHE", str(tmp_path))
    deb = tmp_path / "debs" / "linux-source-5.10_5.10.999-1_all.deb"
    deb.parent.mkdir()
    deb.write_bytes(b"")
    asked = []

    def download(self, name):
        asked.append(name)
        return deb
    monkeypatch.setattr(sources.AptIndex, "download", download)
    assert sources.source_version("5.10") == "5.10.999-1"
    assert sources.source_version("5.10") == "5.10.999-1"
    assert asked == ["linux-source-5.10"]          # the second answer came from the pin

    def offline(self, name):
        raise DebError("network unreachable")
    monkeypatch.setattr(sources.AptIndex, "download", offline)
    monkeypatch.setattr(sources, "REPIN_SECONDS", -1)     # the pin is stale
    assert sources.source_deb("5.10") == deb                # stale but present: still used
    (tmp_path / "src" / "linux-source-5.10.pin").unlink()
    with pytest.raises(KernelError, match="cannot fetch linux-source-5.10.*hint:"):
        sources.source_deb("5.10")


def test_a_compiler_the_host_lacks_is_replaced(tmp_path, capsys):
    t = get_target("x86_64")
    (tmp_path / "Makefile").write_text("VERSION = 5\nCC = gcc-0nosuch\n")
    assert compiler_override(t, tmp_path, "/usr/bin/gcc") == ["CC=/usr/bin/gcc"]
    assert "names gcc-0nosuch, which is not installed" in capsys.readouterr().err
    # Debian's linux-headers-5.10: the compiler is in .kernelvariables
    (tmp_path / "Makefile").write_text("include /usr/src/linux-headers-5.10.0-32-common/Makefile\n")
    (tmp_path / ".kernelvariables").write_text(
        "CC = $(if $(DEBIAN_KERNEL_USE_CCACHE),ccache) $(CROSS_COMPILE)gcc-0nosuch\n")
    assert compiler_override(t, tmp_path, "/usr/bin/gcc") == ["CC=/usr/bin/gcc"]
    (tmp_path / ".kernelvariables").unlink()
    (tmp_path / "Makefile").write_text("CC\t= $(CROSS_COMPILE)gcc\n")
    assert compiler_override(t, tmp_path, "/usr/bin/gcc") == []
    (tmp_path / "Makefile").write_text("include /elsewhere/Makefile\n")
    assert compiler_override(t, tmp_path, "/usr/bin/gcc") == []


def test_kernel_trouble_is_capital_bug_not_the_x86_timer_check():
    console = ("..MP-BIOS bug: 8254 timer not connected to IO-APIC\n"
               "BUG: unable to handle page fault for address: 0000\n")
    assert kernel_trouble(console) == ["BUG: unable to handle page fault for address: 0000"]


def test_kernel_trouble_is_a_checkers_report_not_its_boot_banner():
    banner = ("rcu: \tRCU lockdep checking is enabled.\n"
              "... MAX_LOCKDEP_KEYS:        8192\n"
              "kmemleak: Kernel memory leak detector initialized (mem pool available: 39000)\n"
              "kasan: KernelAddressSanitizer initialized (generic)\n")
    assert kernel_trouble(banner) == []
    reports = ["WARNING: possible circular locking dependency detected",
               "kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)",
               "BUG: KASAN: slab-out-of-bounds in ktap_run+0x10/0x40",
               "UBSAN: shift-out-of-bounds in kmod/ktap_interp.c:120:9"]
    assert kernel_trouble(banner + "\n".join(reports)) == reports


def test_an_unsupported_pair_is_refused_with_its_reason():
    with pytest.raises(KernelError) as e:
        kernels.ensure_kernel_build("powerpc", kernel="5.10")
    msg = str(e.value)
    assert "\n" not in msg and "FP-unavailable" in msg and "hint: use --kernel 6.1 or 6.12" in msg
