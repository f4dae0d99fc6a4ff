"""What a script declares beyond its code: session limits, table descriptors and
function kinds. Sema fills them in, the IR carries them, and each backend encodes
them (KBC writes them into the image header)."""
from __future__ import annotations

from dataclasses import dataclass

# Function kinds
SETUP, FUNCTION, HANDLER = 0, 1, 2
KIND_NAMES = {SETUP: "setup", FUNCTION: "function", HANDLER: "handler"}

# Table descriptor flags: which histogram buckets `<<<` maintains.
TABLE_LOG2, TABLE_LINEAR = 1, 2


@dataclass
class Limits:
    """Session limits written into the image. Defaults are documented in
    docs/language.md; `limit NAME = N` in a script or --limit on the CLI override."""
    budget: int = 20000            # instructions a handler may run in loops and calls
    table_entries: int = 4096      # entries per table
    string_size: int = 256         # bytes per string, NUL excluded
    outbuf_size: int = 256 * 1024  # bytes of output buffer per session
    max_stack: int = 1024          # registers across the deepest call chain

    FIELDS = ("budget", "table_entries", "string_size", "outbuf_size", "max_stack")
    MAXIMUM = {"budget": 10_000_000, "table_entries": 1 << 20, "string_size": 4096,
               "outbuf_size": 64 << 20, "max_stack": 16384}


@dataclass
class TableDesc:
    flags: int = 0
    lmin: int = 0
    lmax: int = 0
    lstep: int = 0
