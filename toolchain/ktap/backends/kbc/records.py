"""The output records of ktapvm (docs/kmod.md): record kinds, value tags and the
STATUS record's states, as one table. kmod/gen/ktap_records.h is rendered from it
for the core that writes the records and for ktaprun, and the host's decoder
(ktap.refvm.records) reads its codes from here, so the three never drift.

The codes are part of the record format: append, never renumber."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    name: str       # spelled KTAP_REC_<NAME>, KTAP_VAL_<NAME>, KTAP_STATUS_<NAME> in C
    code: int
    layout: str     # what follows the code, as docs/kmod.md writes it


RECORDS = (
    Code("printf", 1, "u32 format_index, values"),
    Code("print", 2, "values"),
    Code("dump", 3, "entries: print(table)"),
    Code("print_hist", 4, "i64 n, entries"),
    Code("hist", 5, "u32 table_desc, entries"),
    Code("lhist", 6, "u32 table_desc, entries"),
    Code("status", 7, "i64 exit_code, u8 state, u32 line, col, function, message, drops"),
    # eBPF programs only: ktaprun runs the built-in in its interpreter on the
    # table as the maps hold it then (docs/ebpf.md)
    Code("call", 8, "u8 builtin (255: delete(t)), u32 global holding the table, values"),
)
CALL_CLEAR = 255

VALUES = (
    Code("nil", 0, ""),
    Code("false", 1, ""),
    Code("true", 2, ""),
    Code("num", 3, "i64"),
    Code("str", 4, "u32 len, bytes"),
    Code("table", 5, "u32 descriptor index"),
    Code("agg", 6, "i64 count, sum, min, max, log2 and linear (i64, i64) pairs"),
    Code("stack", 7, "u32 n, n x u64 address"),
    Code("time", 8, "i64 nanoseconds since the epoch, u32 len, strftime(3) format bytes"),
)

STATES = (
    Code("ran", 0, "the session ran to its end"),
    Code("exit", 1, "a handler called exit()"),
    Code("error", 2, "a runtime error stopped it"),
)

REC = {c.name: c.code for c in RECORDS}
VAL = {c.name: c.code for c in VALUES}
STATE = {c.name: c.code for c in STATES}


def c_context() -> dict:
    """What kmod/gen/ktap_records.h.j2 renders."""
    return {"records": RECORDS, "values": VALUES, "states": STATES, "call_clear": CALL_CLEAR}
