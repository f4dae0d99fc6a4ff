"""C programs built from kmod's sources (the host harness, the fuzzer, ktaprun,
the smoke client), cached by content: the executable is named by a hash of the
compiler's identity, the flags and every source and header that goes in, and
appears only once it is whole (core/cache.py)."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable, Iterable

from ktap.core.cache import ContentKey, cached_file
from ktap.core.tools import compiler_identity


def build_program(cc: str, flags: Iterable[str], sources: Iterable[Path],
                  inputs: Iterable[Path], exe_dir: Path, stem: str,
                  error: Callable[[str], Exception]) -> Path:
    """Compiles and links `sources` into exe_dir/<stem>-<hash>. `inputs` are the
    headers the sources include (part of the hash only). On failure raises
    error(compiler's stderr)."""
    flags, sources = list(flags), list(sources)
    key = ContentKey(compiler_identity(cc), *flags)
    key.add_files(set(sources) | set(inputs))

    def compile_to(tmp: Path) -> None:
        r = subprocess.run([cc, *flags, *map(str, sources), "-o", str(tmp)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise error(r.stderr)
    return cached_file(Path(exe_dir) / f"{stem}-{key.hex()}", compile_to)
