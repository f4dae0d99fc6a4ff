"""ktaprun, the on-target runner: builds kmod/ktaprun/*.c per target.

ktaprun reads images with kmod's rendered loader (ktap_load.c) and takes the
target facts (byte order, word size, target id) from the rendered
ktap_opcodes.h, so it is built per target: statically with the target's cross
compiler for a board, or natively with `host=True` for tests. The host build
defines KTAPRUN_FORMAT_ONLY: it only formats saved record streams
(`--format-records`) and has no code that could load a module on the host.

    from ktap.build import ktaprun as runner
    exe = runner.build_ktaprun("mips")              # static, for the board
    fmt = runner.build_ktaprun("mips", host=True)   # native, formats mips records

Builds are cached under build_dir/<target>/ by a hash of the sources, the
compiler and the flags.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import jinja2

from ktap.build import kmod
from ktap.core.tools import require_cross_gcc
from ktap.core.targets import Target, get_target
from ktap.core.paths import BUILD_DIR
from ktap.core import tools

RUNNER_DIR = kmod.KMOD_DIR / "ktaprun"
DEFAULT_BUILD_DIR = BUILD_DIR / "ktaprun"
# Only the core pieces the runner links: rendering the module's own templates
# here would tie this build to files being edited for the kernel side.
CORE_TEMPLATES = ("ktap_opcodes.h.j2", "ktap_load.c.j2")
CORE_HEADERS = ("ktap_vm.h", "ktap_shim_user.h", "ktap_shim_kernel.h", "ktap_abi.h")
CFLAGS = ["-std=gnu11", "-Os", "-Wall", "-Wextra", "-Wno-unused-parameter",
          "-Werror=implicit-function-declaration", "-ffunction-sections", "-fdata-sections"]
TARGET_FLAGS = ["-static", "-s", "-Wl,--gc-sections"]
HOST_FLAGS = ["-g", "-DKTAPRUN_FORMAT_ONLY"]


class RunnerError(Exception):
    pass


def render_core(target: Target, out: Path) -> list[Path]:
    """Writes the rendered loader and headers ktaprun compiles against."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(kmod.KMOD_DIR)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    ctx = kmod.template_context(target)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in CORE_TEMPLATES:
        dest = out / name[:-3]
        text = env.get_template(name).render(ctx)
        if not dest.exists() or dest.read_text() != text:
            dest.write_text(text)
        written.append(dest)
    for name in CORE_HEADERS:
        dest = out / name
        if not dest.exists() or dest.read_bytes() != (kmod.KMOD_DIR / name).read_bytes():
            shutil.copy(kmod.KMOD_DIR / name, dest)
        written.append(dest)
    return written


def sources() -> list[Path]:
    return sorted(RUNNER_DIR.glob("*.c"))


def _compiler(target: Target, host: bool, cc: str | None) -> str:
    if cc:
        return cc
    if host:
        found = tools.find_cc()
        if not found:
            raise RunnerError("no host C compiler (cc, gcc or clang) found")
        return found
    return require_cross_gcc(target)


def _compiler_identity(cc: str) -> str:
    r = subprocess.run([cc, "--version"], capture_output=True, text=True)
    return cc + "\n" + r.stdout


def build_ktaprun(target: Target | str, build_dir: Path = DEFAULT_BUILD_DIR, *,
                  host: bool = False, cc: str | None = None) -> Path:
    """Builds ktaprun for `target`; returns the executable's path.

    host=False: static and stripped, with the target's cross compiler
    (raises tools.MissingTool if it is not installed). host=True: a native
    formatter-only build for tests. Rebuilds only when a source, the
    compiler or the flags change."""
    if isinstance(target, str):
        target = get_target(target)
    cc = _compiler(target, host, cc)
    kind = "host" if host else "static"
    out = Path(build_dir) / target.name
    core = render_core(target, out / "src")
    srcs = sources() + [out / "src" / "ktap_load.c"]
    flags = CFLAGS + (HOST_FLAGS if host else TARGET_FLAGS)
    digest = hashlib.sha256((_compiler_identity(cc) + " ".join(flags)).encode())
    for f in sorted(set(core + srcs + sorted(RUNNER_DIR.glob("*.h")))):
        digest.update(f.name.encode() + f.read_bytes())
    exe = out / f"ktaprun-{kind}-{digest.hexdigest()[:16]}"
    if exe.exists():
        return exe
    tmp = exe.with_suffix(".tmp")
    r = subprocess.run([cc, *flags, "-I", str(RUNNER_DIR), "-I", str(out / "src"),
                        *map(str, srcs), "-o", str(tmp)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RunnerError(f"building ktaprun for {target.name} ({kind}) failed:\n{r.stderr}")
    tmp.replace(exe)     # atomic: a concurrent build never sees half a binary
    return exe


def stripped_size(exe: Path) -> int:
    return exe.stat().st_size
