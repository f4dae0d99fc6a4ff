"""The language's built-in functions and variables, with the ids every backend
uses for them (KBC's CALLB/LOADVAR operands, the kernel module's C tables). The
ids are part of the image format: append, never renumber."""
from __future__ import annotations

from dataclasses import dataclass

# Built-in functions called through CALLB. (name, min args, max args, doc)
_BUILTINS = [
    ("print",            0, 16, "emit the arguments, separated by spaces; a lone table is dumped"),
    ("exit",             0, 1,  "stop the session after this handler with the given status"),
    ("count",            1, 1,  "number of values fed to an aggregate"),
    ("sum",              1, 1,  "sum of the values fed to an aggregate"),
    ("min",              1, 1,  "smallest value fed to an aggregate"),
    ("max",              1, 1,  "largest value fed to an aggregate"),
    ("avg",              1, 1,  "sum / count of an aggregate (truncated)"),
    ("hist",             1, 1,  "emit log2 histograms of an aggregate table"),
    ("lhist",            1, 1,  "emit linear histograms of an aggregate table (bounds in the descriptor)"),
    ("print_hist",       1, 2,  "emit the top N keys of a table with bars"),
    ("gettimeofday_ns",  0, 0,  "wall-clock time in nanoseconds"),
    ("gettimeofday_us",  0, 0,  "wall-clock time in microseconds"),
    ("gettimeofday_ms",  0, 0,  "wall-clock time in milliseconds"),
    ("gettimeofday_s",   0, 0,  "wall-clock time in seconds"),
    ("kernel_string",    1, 1,  "copy a NUL-terminated string from a kernel address; nil if unreadable"),
    ("user_string",      1, 1,  "copy a NUL-terminated string from a user address; nil if unreadable"),
    ("stack",            0, 1,  "the kernel stack of the current event as a value (default depth 16)"),
    ("zero",             1, 1,  "set every entry of a table to 0, or an empty aggregate; the keys stay"),
    ("stats",            1, 1,  "emit count, sum, min, max and avg of each entry of an aggregate table"),
    ("ksym",             1, 1,  "a kernel address as a value that prints as its symbol (symbolized in user space)"),
    ("ustack",           0, 1,  "the current task's user stack as a string, a PATH+0xOFFSET line per frame (default depth 16; the host symbolizes it)"),
    ("strftime",         2, 2,  "a time that prints as strftime(3) FORMAT of NS nanoseconds since the epoch (walltime), formatted in user space in local time"),
]
# Built-ins that take a whole table first: on the eBPF backend a handler's
# call is a CALL record that ktaprun runs on the map's contents (docs/ebpf.md)
TABLE_CALLS = ("print", "hist", "lhist", "print_hist", "zero", "stats")


@dataclass(frozen=True)
class Builtin:
    id: int
    name: str
    min_args: int
    max_args: int
    doc: str


BUILTINS: list[Builtin] = [Builtin(i, *row) for i, row in enumerate(_BUILTINS)]
BUILTIN_BY_NAME = {b.name: b for b in BUILTINS}

# Built-in variables read through LOADVAR. (name, doc)
_VARIABLES = [
    ("pid",       "process id (thread group id) of the current task"),
    ("tid",       "thread id of the current task"),
    ("uid",       "user id of the current task"),
    ("cpu",       "CPU the event fired on"),
    ("execname",  "command name of the current task"),
    ("probename", "name of the probe that fired"),
    ("retval",    "return value (kretprobes)"),
    ("nsecs",     "monotonic clock in nanoseconds (CLOCK_MONOTONIC; no NTP steps): for latencies"),
    ("walltime",  "wall-clock time in nanoseconds since the epoch (CLOCK_REALTIME)"),
]


@dataclass(frozen=True)
class Variable:
    id: int
    name: str
    doc: str


VARIABLES: list[Variable] = [Variable(i, *row) for i, row in enumerate(_VARIABLES)]
VARIABLE_BY_NAME = {v.name: v for v in VARIABLES}
# variables that have a value outside handlers too (setup code, trace_end)
CLOCK_VARIABLES = frozenset({"nsecs", "walltime"})
MAX_ARGS = 9
STACK_DEFAULT_DEPTH = 16
STACK_MAX_DEPTH = 64
