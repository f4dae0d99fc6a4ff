"""ktaprun, the on-target runner: builds kmod/ktaprun/*.c per target.

ktaprun reads images with kmod's own loader (ktap_load.c), runs the setup code
and trace_end of ebpf images with kmod's interpreter (docs/ebpf.md), and takes
the target facts (byte order, word size, target id), the event kinds and the
record codes from the generated headers (build/render.py), so it is built per
target:
statically with the target's cross compiler for a board, or natively with
`host=True` for tests. The host build defines KTAPRUN_FORMAT_ONLY: it only
formats saved record streams (`--format-records`) and has no code that could
load a module or a BPF program on the host.

    from ktap.build import ktaprun as runner
    exe = runner.build_ktaprun("mips")              # static, for the board
    fmt = runner.build_ktaprun("mips", host=True)   # native, formats mips records

Builds are cached under build_dir/<target>/ by a hash of the sources, the
headers, the compiler and the flags.
"""
from __future__ import annotations

from pathlib import Path

from ktap.build import render as gen
from ktap.build.program import build_program
from ktap.core.paths import BUILD_DIR, KMOD_DIR
from ktap.core.targets import Target, get_target
from ktap.core.tools import find_cc, require_cross_gcc

RUNNER_DIR = KMOD_DIR / "ktaprun"
DEFAULT_BUILD_DIR = BUILD_DIR / "ktaprun"
# The loader: all the core the host build (a formatter) links.
LOADER = KMOD_DIR / "ktap_load.c"
# The board build runs ebpf images (docs/ebpf.md) itself: the setup code and
# trace_end in kmod's interpreter, in user space, and ktap_sync.c to copy
# globals and tables between the interpreter and the BPF maps.
SYNC = KMOD_DIR / "ktap_sync.c"
# The eBPF runtime: bpf(2), perf events and maps. The host build leaves it out
# (ebpf.c keeps a stub), so a test can never load a BPF program on the host.
EBPF_RUNTIME = ("bpf.c", "perfbuf.c", "ebpf_maps.c", "ebpf_progs.c")
CFLAGS = ["-std=gnu11", "-Os", "-Wall", "-Wextra", "-Wno-unused-parameter",
          "-Werror=implicit-function-declaration", "-ffunction-sections", "-fdata-sections"]
TARGET_FLAGS = ["-static", "-s", "-Wl,--gc-sections"]
HOST_FLAGS = ["-g", "-DKTAPRUN_FORMAT_ONLY"]


class RunnerError(Exception):
    pass


def sources(host: bool = False) -> list[Path]:
    """ktaprun's own files, and the core it links: the loader only for the
    host formatter, the whole core (gen.core_sources()) plus ktap_sync.c for
    a board."""
    own = sorted(RUNNER_DIR.glob("*.c"))
    if host:
        return [*(f for f in own if f.name not in EBPF_RUNTIME), LOADER]
    return [*own, *gen.core_sources(), SYNC]


def _compiler(target: Target, host: bool, cc: str | None) -> str:
    if cc:
        return cc
    if host:
        found = find_cc()
        if not found:
            raise RunnerError("no host C compiler (cc, gcc or clang) found")
        return found
    return require_cross_gcc(target)


def build_ktaprun(target: Target | str, build_dir: Path = DEFAULT_BUILD_DIR, *,
                  host: bool = False, cc: str | None = None) -> Path:
    """Builds ktaprun for `target`; returns the executable's path.

    host=False: static and stripped, with the target's cross compiler
    (raises tools.MissingTool if it is not installed). host=True: a native
    formatter-only build for tests. Rebuilds only when a source, a header,
    the compiler or the flags change."""
    target = get_target(target)
    cc = _compiler(target, host, cc)
    kind = "host" if host else "static"
    out = Path(build_dir) / target.name
    headers = gen.gen_dir(target, out)
    flags = [*CFLAGS, *(HOST_FLAGS if host else TARGET_FLAGS), "-I", str(RUNNER_DIR),
             *gen.include_flags(headers)]
    return build_program(
        cc, flags, sources(host),
        [*RUNNER_DIR.glob("*.h"), *gen.all_headers(headers)], out, f"ktaprun-{kind}",
        lambda err: RunnerError(f"building ktaprun for {target.name} ({kind}) failed:\n{err}"))


def stripped_size(exe: Path) -> int:
    return exe.stat().st_size
