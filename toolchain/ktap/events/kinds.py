"""The event kinds: one row per kind of probe, read by sema (what a handler may
use), probe resolution (what the kernel must have), the verifier, the reference VM
and, through the generated header kmod/gen/ktap_event_kinds.h, the kernel module and
ktaprun. The numeric ids are part of the KBC format: append, never renumber.

Adding a provider is a row here and one file under kmod/events/. Resolution and
the reference VM go by the row's flags (`symbol`: checked against the kernel's
symbols; `fields`: tracepoint formats; `args`/`retval`: what a handler reads), so
a kind like an existing one needs no new branch there."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EventKind:
    id: int
    name: str            # as printed and as spelled in C (KTAP_EV_<NAME>)
    attaches: bool       # a probe the module registers (trace_end does not)
    symbol: bool         # named by a kernel symbol: resolved against System.map/vmlinux
    args: bool           # argN readable (entry registers; a tracepoint's raw arguments)
    retval: bool         # retval readable
    fields: bool         # tracepoint fields readable by name
    timer: bool          # period-driven (tick-N, profile-N)
    min_period_ns: int   # shortest period allowed, for timers
    config: tuple[str, ...]   # kernel options the provider needs, named in errors
    feature: str         # the profile feature that says the kernel has it ("" if none)
    kernel_symbol: str   # a symbol whose presence in System.map shows the feature
    from_image: bool = False  # attached from the image alone, no attach-table entry
    user: bool = False   # a user-space probe: resolved in the target's ELF files (--sysroot)
    provider: str = ""   # the kmod/events/ provider, when kinds share one ("" = name)

    @property
    def provider_name(self) -> str:
        return self.provider or self.name

    @property
    def c_name(self) -> str:
        """KTAP_EV_<this> in C; trace_end is KTAP_EV_END there."""
        return "END" if self.name == "trace_end" else self.name.upper()


_UPROBE_OPTIONS = ("CONFIG_UPROBES", "CONFIG_UPROBE_EVENTS", "CONFIG_PERF_EVENTS")

KINDS = (
    EventKind(0, "tracepoint", True, False, True, False, True, False, 0,
              ("CONFIG_PERF_EVENTS", "CONFIG_EVENT_TRACING"), "", ""),
    EventKind(1, "kprobe", True, True, True, False, False, False, 0,
              ("CONFIG_KPROBES",), "kprobes", "register_kprobe"),
    EventKind(2, "kretprobe", True, True, False, True, False, False, 0,
              ("CONFIG_KPROBES", "CONFIG_KRETPROBES"), "kretprobes", "register_kretprobe"),
    # Shorter periods would let a timer alone eat the CPU of a small board.
    EventKind(3, "tick", True, False, False, False, False, True, 1_000_000,
              ("CONFIG_HIGH_RES_TIMERS",), "", "", from_image=True),
    EventKind(4, "profile", True, False, False, False, False, True, 100_000,
              ("CONFIG_HIGH_RES_TIMERS",), "", "", from_image=True),
    EventKind(5, "trace_end", False, False, False, False, False, False, 0, (), "", ""),
    # perf:NAME (events/perf.py): period_ns holds the sample period (a count,
    # or nanoseconds for the clocks), offset the sample frequency in Hz instead
    EventKind(6, "perf", True, False, False, False, False, False, 0,
              ("CONFIG_PERF_EVENTS",), "", "", from_image=True),
    # User space: ktaprun defines each as a uprobe_events entry whose fetch
    # arguments (the image event's fields, docs/bytecode.md) carry argN, the
    # USDT operands or $retval; the module attaches it like a tracepoint.
    EventKind(7, "uprobe", True, False, True, False, False, False, 0,
              _UPROBE_OPTIONS, "", "", user=True),
    EventKind(8, "uretprobe", True, False, False, True, False, False, 0,
              _UPROBE_OPTIONS, "", "", user=True, provider="uprobe"),
    EventKind(9, "usdt", True, False, True, False, False, False, 0,
              _UPROBE_OPTIONS, "", "", user=True, provider="uprobe"),
)

BY_ID = {k.id: k for k in KINDS}
BY_NAME = {k.name: k for k in KINDS}
EVENT_KIND_NAMES = {k.id: k.name for k in KINDS}

EV_TRACEPOINT = BY_NAME["tracepoint"].id
EV_KPROBE = BY_NAME["kprobe"].id
EV_KRETPROBE = BY_NAME["kretprobe"].id
EV_TICK = BY_NAME["tick"].id
EV_PROFILE = BY_NAME["profile"].id
EV_END = BY_NAME["trace_end"].id
EV_PERF = BY_NAME["perf"].id
EV_UPROBE = BY_NAME["uprobe"].id
EV_URETPROBE = BY_NAME["uretprobe"].id
EV_USDT = BY_NAME["usdt"].id

TIMER_KINDS = frozenset(k.id for k in KINDS if k.timer)
USER_KINDS = frozenset(k.id for k in KINDS if k.user)


def kind(kind_id: int) -> EventKind:
    return BY_ID[kind_id]


def c_enum() -> str:
    """The C enum for kmod and ktaprun (rendered into kmod/gen/ktap_event_kinds.h)."""
    rows = "\n".join(f"\tKTAP_EV_{k.c_name} = {k.id}," for k in KINDS)
    return ("enum ktap_event_kind {\n" + rows + "\n};\n"
            f"#define KTAP_EV_NKINDS {len(KINDS)}\n"
            "#define KTAP_EV_NAMES { \\\n" + " \\\n".join(
                f'\t[KTAP_EV_{k.c_name}] = "{k.name}",' for k in KINDS) + " \\\n}\n")
