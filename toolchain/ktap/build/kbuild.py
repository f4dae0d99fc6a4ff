"""Out-of-tree kernel modules built with kbuild against a kernel build directory
(`make -C KDIR M=DIR ARCH=.. CROSS_COMPILE=.. modules`), cached by content:
build_dir/<target>/<prefix>-<hash>/<name>.ko, where the hash covers the sources,
the kernel dir and its .config and Module.symvers, and the cross compiler."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from ktap.core.cache import ContentKey, cached_dir
from ktap.core.paths import BUILD_DIR
from ktap.core.targets import Target
from ktap.core.tools import compiler_identity, require_cross_gcc


DEFAULT_BUILD_DIR = BUILD_DIR / "kmod"


class KmodError(Exception):
    """Building kernel-module C code failed."""


def _as_mapping(files: list[Path] | dict[str, Path | str]) -> dict[str, Path | str]:
    """A list of paths is copied flat, by name; a mapping gives each file's
    path inside the module directory and its source file or its text."""
    if isinstance(files, dict):
        return dict(files)
    return {Path(f).name: Path(f) for f in files}


def _content(src: Path | str) -> bytes:
    return src.read_bytes() if isinstance(src, Path) else src.encode()


def check_kdir(kdir: Path) -> Path:
    kdir = Path(kdir).resolve()
    if not kdir.is_dir():
        raise KmodError(f"kernel build dir {kdir} does not exist; hint: pass the kernel's "
                        f"build dir (the O= dir, or /lib/modules/<release>/build)")
    for needed in (".config", "Module.symvers", "Makefile"):
        if not (kdir / needed).exists():
            raise KmodError(f"{kdir} is not a kernel build dir for modules (no {needed}); "
                            f"hint: pass a configured and built kernel tree (make "
                            f"olddefconfig, then make modules or modules_prepare)")
    return kdir


def compiler_override(target: Target, kdir: Path, gcc: str) -> list[str]:
    """["CC=<target gcc>"] when the kernel's Makefile names a compiler this
    host lacks, else []. Debian's linux-headers-5.10 name gcc-10, which
    Debian 12 does not ship (in .kernelvariables, which their Makefile
    reads); gcc-12 builds modules for those kernels (kbuild only warns that
    the compiler differs from the kernel's)."""
    text = "".join((kdir / f).read_text(errors="replace") for f in ("Makefile", ".kernelvariables")
                   if (kdir / f).exists())
    m = re.search(r"^\s*(?:export\s+)?CC\s*:?=.*?(?:\$\(CROSS_COMPILE\))?([^\s)]+)\s*$", text,
                  re.MULTILINE)
    if not m or "$" in m.group(1):
        return []
    named = target.cross_compile + m.group(1)
    if shutil.which(named) or shutil.which(m.group(1)):
        return []
    print(f"ktap: warning: {kdir} names {named}, which is not installed; building with "
          f"{gcc} instead", file=sys.stderr, flush=True)
    return [f"CC={gcc}"]


def module_warnings(ko: Path) -> list[str]:
    """The compiler warnings printed when `ko` was built."""
    log = ko.parent / "build.log"
    return [l for l in log.read_text().splitlines() if "warning:" in l] if log.exists() else []


def kbuild(target: Target, files: list[Path] | dict[str, Path | str], name: str, kdir: Path,
           build_dir: Path = DEFAULT_BUILD_DIR, *,
           prefix: str | None = None, warnings_fatal: bool = False) -> Path:
    """Builds NAME.ko from `files` (its sources, headers and Kbuild) with the
    target's cross compiler against the kernel build dir `kdir`. Raises
    KmodError with kbuild's output on failure, or, with warnings_fatal, when
    the compiler printed a warning."""
    kdir = check_kdir(kdir)
    mapping = _as_mapping(files)
    gcc = require_cross_gcc(target)
    key = ContentKey("kbuild", name, str(kdir), compiler_identity(gcc))
    for k in (".config", "Module.symvers"):
        key.add(k, (kdir / k).read_bytes())
    for rel in sorted(mapping):
        key.add(rel, _content(mapping[rel]))
    mdir = Path(build_dir) / target.name / f"{prefix or name}-{key.hex()}"
    ko_name = f"{name}.ko"

    def build(tmp: Path) -> None:
        for rel, src in mapping.items():
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(src, Path):
                shutil.copy2(src, dest)
            else:
                dest.write_text(src)
        cmd = ["make", "-C", str(kdir), f"M={tmp}", f"ARCH={target.kernel_arch}",
               f"CROSS_COMPILE={target.cross_compile}", *compiler_override(target, kdir, gcc),
               "modules"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        log = r.stdout + r.stderr
        (tmp / "build.log").write_text(" ".join(cmd) + "\n" + log)
        if r.returncode != 0 or not (tmp / ko_name).exists():
            raise KmodError(f"building {ko_name} for {target.name} failed:\n{log[-4000:]}")
        if warnings_fatal and "warning:" in log:
            raise KmodError(f"{ko_name} for {target.name} built with warnings:\n{log[-4000:]}")

    ko = cached_dir(mdir, build) / ko_name
    if warnings_fatal and module_warnings(ko):
        raise KmodError(f"{ko_name} for {target.name} was built with warnings:\n"
                          + "\n".join(module_warnings(ko)))
    return ko
