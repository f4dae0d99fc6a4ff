"""The perf events `trace perf:NAME` samples: one row each, read by probe
parsing, the eBPF backend's ktaprun and, through the generated header
kmod/gen/ktap_perf_events.h, the kernel module. `type` and `config` are the
kernel's perf_event_attr numbers (include/uapi/linux/perf_event.h).

A software clock's period is in nanoseconds; every other period counts
events. `min_period` keeps a probe from sampling so often that the handler
alone would eat the board; `default_period` is what `perf:NAME` without a
period samples at."""
from __future__ import annotations

from dataclasses import dataclass

PERF_TYPE_HARDWARE, PERF_TYPE_SOFTWARE = 0, 1
MAX_FREQ_HZ = 10_000


@dataclass(frozen=True)
class PerfEvent:
    name: str
    type: int
    config: int
    clock: bool              # the period is nanoseconds of a clock
    default_period: int
    min_period: int
    doc: str


PERF_EVENTS = (
    PerfEvent("cpu-clock", PERF_TYPE_SOFTWARE, 0, True, 10_000_000, 100_000,
              "the CPU clock, per CPU (what profile-N uses)"),
    PerfEvent("task-clock", PERF_TYPE_SOFTWARE, 1, True, 10_000_000, 100_000,
              "the clock of the task running"),
    PerfEvent("page-faults", PERF_TYPE_SOFTWARE, 2, False, 1, 1, "page faults"),
    PerfEvent("context-switches", PERF_TYPE_SOFTWARE, 3, False, 1, 1, "context switches"),
    PerfEvent("cpu-migrations", PERF_TYPE_SOFTWARE, 4, False, 1, 1,
              "tasks moved to another CPU"),
    PerfEvent("minor-faults", PERF_TYPE_SOFTWARE, 5, False, 1, 1,
              "page faults served without I/O"),
    PerfEvent("major-faults", PERF_TYPE_SOFTWARE, 6, False, 1, 1, "page faults that waited for I/O"),
    PerfEvent("cycles", PERF_TYPE_HARDWARE, 0, False, 1_000_000, 10_000, "CPU cycles"),
    PerfEvent("instructions", PERF_TYPE_HARDWARE, 1, False, 1_000_000, 10_000,
              "instructions retired"),
    PerfEvent("cache-references", PERF_TYPE_HARDWARE, 2, False, 100_000, 1_000,
              "last-level cache accesses"),
    PerfEvent("cache-misses", PERF_TYPE_HARDWARE, 3, False, 10_000, 100,
              "last-level cache misses"),
    PerfEvent("branch-instructions", PERF_TYPE_HARDWARE, 4, False, 1_000_000, 10_000,
              "branch instructions retired"),
    PerfEvent("branch-misses", PERF_TYPE_HARDWARE, 5, False, 10_000, 100,
              "mispredicted branches"),
)

BY_NAME = {e.name: e for e in PERF_EVENTS}
