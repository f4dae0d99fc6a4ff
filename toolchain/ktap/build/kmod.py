"""ktapvm, the kernel module (kmod/), built with kbuild.

The core (loader, verifier, interpreter) is plain C reading headers generated
from the Python tables (build/render.py). Here it builds, with the module's device
and probe providers, as ktapvm.ko with kbuild (build/kbuild.py).

The user-space harness, its events stream and the smoke client are test tools:
ktapdev/harness.py.
"""
from __future__ import annotations

from pathlib import Path

from ktap.build import features as kfeatures
from ktap.build import render as gen
from ktap.build.kbuild import DEFAULT_BUILD_DIR, kbuild
from ktap.build.render import CORE_SOURCES
from ktap.core.paths import KMOD_DIR
from ktap.core.targets import Target, get_target


# -- the kernel module ----------------------------------------------------------
MODULE_NAME = "ktapvm"
MODULE_MAIN = ("ktapvm_main.c", "ktapvm_events.c", "ktapvm_ustack.c")
# Objects that run in probe context get -O2: the board kernels (like most
# embedded ones) build with -Os, which leaves the interpreter's small helpers
# out of line and memset()s every value; handlers cost about a third less at
# -O2 (docs/performance.md). The loader and verifier keep the kernel's flags.
COLD_SOURCES = ("ktap_load.c", "ktap_verify.c")


def module_sources() -> list[str]:
    """The module's C files, relative to kmod/: the core, the device and attach
    code, and one file per event provider (kmod/events/)."""
    providers = sorted(p.relative_to(KMOD_DIR).as_posix() for p in (KMOD_DIR / "events").glob("*.c"))
    return [*MODULE_MAIN, *CORE_SOURCES, *providers]


def kbuild_file(target: Target, sources: list[str]) -> str:
    """The Kbuild of ktapvm.ko for these sources."""
    objs = [s[:-2] + ".o" for s in sources]
    hot = [o for o, s in zip(objs, sources) if s not in COLD_SOURCES]
    return "\n".join([
        f"# Kbuild - GENERATED for {target.name} by toolchain/ktap/build/kmod.py (build_module).",
        f"# make -C <kernel build dir> M=$PWD ARCH={target.kernel_arch} "
        f"CROSS_COMPILE={target.cross_compile} modules",
        f"obj-m := {MODULE_NAME}.o",
        f"{MODULE_NAME}-y := " + " ".join(objs),
        f"ccflags-y := -I$(src) -I$(src)/{gen.GEN_DIR_NAME} -Wno-declaration-after-statement",
        "# -O2 for what runs in probe context (the kernel's own -Os for the rest)",
        *[f"CFLAGS_{o} := -O2" for o in hot], ""])


def module_files(target: Target | str, build_dir: Path = DEFAULT_BUILD_DIR,
                 kdir: Path | None = None) -> dict[str, Path | str]:
    """Everything kbuild needs for ktapvm.ko, by path inside the module dir.
    With `kdir`, that includes gen/ktap_features.h, what the kernel built
    there offers (build/features.py); it raises FeatureError (a KmodError)
    naming an option the kernel lacks, before any compiler runs."""
    target = get_target(target)
    headers = gen.gen_dir(target, build_dir / target.name)
    sources = module_sources()
    files: dict[str, Path | str] = {s: KMOD_DIR / s for s in sources}
    files.update({h.name: h for h in gen.headers()})
    files.update({f"{gen.GEN_DIR_NAME}/{h.name}": h for h in sorted(headers.iterdir())})
    if kdir is not None:
        files[f"{gen.GEN_DIR_NAME}/{kfeatures.HEADER_NAME}"] = kfeatures.header_text(
            kfeatures.detect(kdir))
    files["Kbuild"] = kbuild_file(target, sources)
    return files


def build_module(target: Target | str, kdir: Path, build_dir: Path = DEFAULT_BUILD_DIR, *,
                 warnings_fatal: bool = False) -> Path:
    """ktapvm.ko for `target`, built with kbuild against the kernel build dir
    `kdir` (boards.kernels.ensure_kernel(target) gives the board kernel's):
    build_dir/<target>/module-<hash>/ktapvm.ko, cached by content (the
    kernel's feature header included). Raises KmodError with kbuild's output
    on failure (or, with warnings_fatal, when the compiler printed a
    warning), and a one-line KmodError when the kernel lacks what ktapvm needs."""
    target = get_target(target)
    return kbuild(target, module_files(target, build_dir, kdir), MODULE_NAME, kdir, build_dir,
                  prefix="module", warnings_fatal=warnings_fatal)
