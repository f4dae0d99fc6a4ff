"""What the kernel a module is built against offers, read from its kbuild dir
before kbuild runs, and turned into one generated header (ktap_features.h,
from kmod/gen/kernel/ktap_features.h.j2) that kmod/ reads instead of
comparing version numbers.

The facts come from the build dir itself: include/generated/uapi/linux/version.h
(LINUX_VERSION_CODE), include/config/kernel.release, .config, and the kernel
headers (kdir/include, kdir/source/include for a build made with O=, or the
tree the build dir's Makefile includes, as in Debian's linux-headers-*), so a
backported API is found where a version check would miss it. The header's
text is part of the module's content key (build/kmod.py), so a kernel with
other features gets its own module.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from ktap.build.kbuild import KmodError
from ktap.core.paths import KMOD_DIR

TEMPLATE = KMOD_DIR / "gen" / "kernel" / "ktap_features.h.j2"
HEADER_NAME = "ktap_features.h"

# Options without which ktapvm cannot work on a kernel, and why.
REQUIRED_OPTIONS = {
    "CONFIG_MODULES": "ktapvm is a loadable module",
    "CONFIG_KPROBES": "kprobe events (register_kprobe)",
    "CONFIG_KRETPROBES": "kretprobe events (register_kretprobe)",
    "CONFIG_PERF_EVENTS": "tracepoint events (perf_event_create_kernel_counter)",
    "CONFIG_TRACEPOINTS": "tracepoint events",
    "CONFIG_EVENT_TRACING": "tracepoint ids for perf (PERF_TYPE_TRACEPOINT)",
    "CONFIG_KALLSYMS": "probes by symbol name and symbolized stacks",
}


class FeatureError(KmodError):
    """The kernel build dir cannot take ktapvm (one line: cause and hint)."""


@dataclass(frozen=True)
class Probe:
    """One C API fact: `macro` is 1 when `pattern` matches in `header`
    (or, with pattern None, when the header exists)."""
    macro: str
    header: str
    pattern: str | None
    why: str


# Each row is an API that changed between the kernels ktap supports
# (5.10, 6.1, 6.12) or that a kernel may lack.
PROBES = (
    Probe("KTAP_HAVE__PRINTK", "linux/printk.h", r"\b_printk\s*\(",
          "printk became a macro over _printk in 5.15; the module takes its address"),
    Probe("KTAP_HAVE_GET_KRETPROBE", "linux/kprobes.h", r"\bget_kretprobe\s*\(",
          "5.11 hid kretprobe_instance.rp behind get_kretprobe()"),
    Probe("KTAP_HAVE_NO_LLSEEK", "linux/fs.h", r"\bno_llseek\b",
          "6.12 removed no_llseek: a NULL .llseek is unseekable"),
    Probe("KTAP_HAVE_LINUX_UNALIGNED_H", "linux/unaligned.h", None,
          "6.12 moved asm/unaligned.h to linux/unaligned.h"),
    Probe("KTAP_HAVE_PERF_SAMPLE_FLAGS", "linux/perf_event.h", r"\bsample_flags\b",
          "6.1+ fills perf_sample_data.raw only when sample_flags has PERF_SAMPLE_RAW"),
    Probe("KTAP_HAVE_HRTIMER_SETUP", "linux/hrtimer.h", r"\bhrtimer_setup\s*\(",
          "6.13 added hrtimer_setup(); hrtimer_init() is going away"),
    Probe("KTAP_HAVE_COPY_FROM_KERNEL_NOFAULT", "linux/uaccess.h",
          r"\bcopy_from_kernel_nofault\s*\(",
          "5.8 renamed probe_kernel_read() to copy_from_kernel_nofault()"),
)


@dataclass
class KernelFeatures:
    kdir: Path
    release: str
    version_code: int
    config: dict[str, str]
    have: dict[str, bool] = field(default_factory=dict)
    c_std: str = "gnu11"

    @property
    def version(self) -> tuple[int, int, int]:
        v = self.version_code
        return (v >> 16, (v >> 8) & 0xff, v & 0xff)


def read_config(path: Path) -> dict[str, str]:
    """CONFIG_FOO -> value for the options set in a .config ('n' ones are absent)."""
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
    return out


def header_roots(kdir: Path) -> list[Path]:
    """Where the kernel's include/ trees are: the build dir itself, the source
    tree of an O= build (kdir/source), and a tree the build dir's Makefile
    includes by absolute path (Debian's linux-headers-*-common)."""
    roots = [kdir]
    if (kdir / "source").is_dir():
        roots.append((kdir / "source").resolve())
    makefile = kdir / "Makefile"
    if makefile.exists():
        for m in re.finditer(r"^include\s+(\S+)/Makefile\s*$", makefile.read_text(errors="replace"),
                             re.MULTILINE):
            other = Path(m.group(1).replace("$(srctree)", str(kdir)))
            if other.is_dir() and other.resolve() not in roots:
                roots.append(other.resolve())
    return roots


def find_header(roots: list[Path], name: str) -> Path | None:
    for root in roots:
        p = root / "include" / name
        if p.exists():
            return p
    return None


def read_version_code(kdir: Path) -> int:
    for rel in ("include/generated/uapi/linux/version.h", "include/linux/version.h"):
        p = kdir / rel
        if p.exists():
            m = re.search(r"#define\s+LINUX_VERSION_CODE\s+(\d+)", p.read_text())
            if m:
                return int(m.group(1))
    raise FeatureError(f"{kdir}: no include/generated/uapi/linux/version.h; hint: the kernel "
                       f"build dir is not prepared (run `make modules_prepare` in it)")


def read_release(kdir: Path) -> str:
    p = kdir / "include" / "config" / "kernel.release"
    if not p.exists():
        raise FeatureError(f"{kdir}: no include/config/kernel.release; hint: the kernel build "
                           f"dir is not prepared (run `make modules_prepare` in it)")
    return p.read_text().strip()


def c_standard(roots: list[Path], version_code: int) -> str:
    """The -std= the kernel compiles with: gnu89 before 5.18, gnu11 since."""
    for root in roots:
        mk = root / "Makefile"
        if mk.exists():
            m = re.search(r"-std=(gnu\d+)", mk.read_text(errors="replace"))
            if m:
                return m.group(1)
    return "gnu11" if version_code >= (5 << 16 | 18 << 8) else "gnu89"


def detect(kdir: Path) -> KernelFeatures:
    """The features of the kernel whose build dir is `kdir`. Raises
    FeatureError when .config is missing or an option ktapvm needs is off."""
    kdir = Path(kdir).resolve()
    config_path = kdir / ".config"
    if not config_path.exists():
        raise FeatureError(f"{kdir} has no .config; hint: pass a configured kernel build dir "
                           f"(the O= dir of the kernel build, or /lib/modules/$(uname -r)/build)")
    config = read_config(config_path)
    for option, why in REQUIRED_OPTIONS.items():
        if config.get(option) not in ("y", "m"):
            raise FeatureError(f"{option} is not set in {config_path}, and ktapvm needs it for "
                               f"{why}; hint: enable it in the kernel config or use a kernel "
                               f"built with it")
    roots = header_roots(kdir)
    code = read_version_code(kdir)
    have = {}
    for probe in PROBES:
        header = find_header(roots, probe.header)
        if probe.pattern is None:
            have[probe.macro] = header is not None
        else:
            have[probe.macro] = bool(header and re.search(probe.pattern,
                                                          header.read_text(errors="replace")))
    return KernelFeatures(kdir, read_release(kdir), code, config, have, c_standard(roots, code))


def header_text(features: KernelFeatures) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template(TEMPLATE.name).render(
        f=features, probes=PROBES, required=REQUIRED_OPTIONS,
        version=".".join(map(str, features.version)))
