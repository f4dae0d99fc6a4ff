"""The one content-hash build cache. Every built artefact (kernels, modules,
ktaprun, harnesses, fuzzers, guest programs, initramfs images, symbol indexes)
is named by a hash of everything that went into it, and appears under that name
only once it is whole: a build writes beside its final path and renames into
place, so an interrupted or concurrent build never leaves half a file that a
later run would trust."""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable


def cache_root() -> Path:
    """Where artefacts that outlive a checkout go ($KTAP_CACHE, default ~/.cache/ktap)."""
    return Path(os.environ.get("KTAP_CACHE") or Path.home() / ".cache" / "ktap")


class ContentKey:
    """A running sha256 over labelled parts; files contribute name and bytes, so a
    renamed input changes the key as much as an edited one."""

    def __init__(self, *parts: str | bytes):
        self._h = hashlib.sha256()
        self.add(*parts)

    def add(self, *parts: str | bytes) -> "ContentKey":
        for p in parts:
            data = p if isinstance(p, bytes) else str(p).encode()
            self._h.update(len(data).to_bytes(8, "little") + data)
        return self

    def add_files(self, files: Iterable[Path]) -> "ContentKey":
        for f in sorted(Path(f) for f in files):
            self.add(f.name, f.read_bytes())
        return self

    def hex(self, length: int = 16) -> str:
        return self._h.hexdigest()[:length]


def _temp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def cached_file(path: Path, build: Callable[[Path], None]) -> Path:
    """`path` if it exists; otherwise build(tmp) writes the artefact to a temporary
    file beside it, which is then renamed to `path` in one step."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(path)
    try:
        build(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def cached_dir(path: Path, build: Callable[[Path], None]) -> Path:
    """Like cached_file for a directory of outputs: build(tmp) fills a fresh
    directory that is renamed to `path` once complete."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        build(tmp)
        try:
            tmp.rename(path)
        except OSError:
            if not path.exists():      # lost a race to an identical build: keep theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


@contextmanager
def locked(path: Path):
    """An exclusive lock file, for builds too large to repeat (kernels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
