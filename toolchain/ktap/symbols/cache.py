"""The symbol index cache: a SymbolTable pickled under $KTAP_CACHE/symbols/.

Indexing a vmlinux costs a few tenths of a second and every compile against a
kernel needs it, so the index is kept. It is keyed by the file's path, size
and mtime rather than by its content: hashing a 5 MB vmlinux would cost as
much as indexing it, and a rebuilt kernel changes size or mtime anyway.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable

from ktap.core.cache import ContentKey, cache_root, cached_file
from ktap.symbols.table import SymbolError, SymbolTable

# Bump when the cached index layout or the symbol rules change.
INDEX_VERSION = 3

# What an index that cannot be used raises on load: then it is built again.
_UNREADABLE = (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError)


def index_cache_dir() -> Path:
    return cache_root() / "symbols"


def index_file(path: Path, kind: str) -> Path:
    """`kind` separates indexes built differently from one file (a map read with
    another word size)."""
    try:
        st = path.stat()
        where = path.resolve()
    except OSError as e:
        raise SymbolError(f"{path}: {e.strerror}") from None
    key = ContentKey(f"v{INDEX_VERSION}", kind, str(where), str(st.st_size), str(st.st_mtime_ns))
    return index_cache_dir() / f"{key.hex(24)}.pickle"


def cached_table(path: Path, kind: str, build: Callable[[Path], SymbolTable],
                 use_cache: bool = True) -> SymbolTable:
    """build(path), or the index it made last time for this file."""
    if not use_cache:
        return build(path)
    cache_file = index_file(path, kind)
    try:
        with open(cache_file, "rb") as f:
            return SymbolTable.from_columns(pickle.load(f))
    except _UNREADABLE:
        pass
    table = build(path)
    _store(cache_file, table)
    return table


def _store(cache_file: Path, table: SymbolTable) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            pickle.dump(table.to_columns(), f, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        cache_file.unlink(missing_ok=True)    # a damaged index would shadow the new one
        cached_file(cache_file, write)
    except OSError:
        pass                                  # a read-only cache only costs speed
