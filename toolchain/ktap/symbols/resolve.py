"""Probes against one kernel, offline: glob expansion over a symbol table, and
resolve_events(), which checks a compiled image's events against a vmlinux,
System.map or profile before anything reaches the board.

What each kind of event needs is read from the event-kinds table
(ktap.events.kinds): kinds named by a kernel symbol resolve against the symbol
table, kinds that read record fields by name against the profile's tracepoint
formats, and a row's feature, options and kernel symbol say what the kernel
must have.
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from dataclasses import dataclass, field

from ktap.core.targets import Target, get_target
from ktap.events import kinds
from ktap.events.kinds import EventKind
from ktap.symbols import profiles
from ktap.symbols.codecheck import CodeReader, check_probe_point
from ktap.symbols.readers import load_system_map, load_vmlinux
from ktap.symbols.table import Refusal, SymbolError, SymbolTable, did_you_mean


# ---------------------------------------------------------------- globs

@dataclass
class Expansion:
    pattern: str
    names: list[str] = field(default_factory=list)          # probeable, sorted
    refused: list[Refusal] = field(default_factory=list)
    ambiguous: dict[str, int] = field(default_factory=dict)  # name -> how many functions


def is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")


def expand_symbols(pattern: str, symbols: SymbolTable) -> Expansion:
    """Functions matching a symbol name or glob, split into probeable and refused."""
    exp = Expansion(pattern)
    if is_glob(pattern):
        # Data symbols are matched too, so listings can say why they are out.
        names = sorted(n for n in symbols.by_name if fnmatch.fnmatchcase(n, pattern))
    else:
        names = [pattern]
    for name in names:
        _classify(name, symbols, exp)
    return exp


def _classify(name: str, symbols: SymbolTable, exp: Expansion) -> None:
    sym = symbols.function(name)
    if sym is None:
        others = symbols.lookup(name)
        if others:
            exp.refused.append(Refusal(others[0], "not-function"))
        return
    why = symbols.refusal(sym)
    if why:
        exp.refused.append(why)
        return
    exp.names.append(name)
    count = sum(1 for s in symbols.lookup(name) if s.func)
    if count > 1:
        exp.ambiguous[name] = count


def expand_probe(spec_name: str, symbols: SymbolTable) -> list[str]:
    """Expands a kprobe symbol or glob (`vfs_*`), or a whole spec
    (`probe:*_write%return`, `probe:vfs_read+0x4`), into the concrete names or
    specs, in the form given. Globs skip refused symbols quietly; a single
    name that is missing or refused raises SymbolError with the reason."""
    prefix, sym, suffix = split_spec(spec_name)
    exp = expand_symbols(sym, symbols)
    if not is_glob(sym):
        if exp.refused:
            raise SymbolError(f"cannot probe {exp.refused[0].message}")
        if not exp.names:
            raise SymbolError(symbols.missing_message(sym))
    elif not exp.names:
        raise SymbolError(empty_glob_message(exp, symbols))
    return [f"{prefix}{n}{suffix}" for n in exp.names]


def split_spec(spec_name: str) -> tuple[str, str, str]:
    prefix = ""
    if ":" in spec_name:
        head, rest = spec_name.split(":", 1)
        prefix, spec_name = head + ":", rest
    for tail in ("%return",):
        if spec_name.endswith(tail):
            return prefix, spec_name[: -len(tail)], tail
    if "+" in spec_name:
        sym, off = spec_name.split("+", 1)
        return prefix, sym, "+" + off
    return prefix, spec_name, ""


def empty_glob_message(exp: Expansion, symbols: SymbolTable) -> str:
    if not exp.refused:
        return f"'{exp.pattern}' matches no function in {symbols.describe()}"
    counts: dict[str, int] = {}
    for r in exp.refused:
        counts[r.code] = counts.get(r.code, 0) + 1
    why = ", ".join(f"{n} {code}" for code, n in sorted(counts.items()))
    return f"'{exp.pattern}' matches only functions that cannot be probed ({why})"


# ---------------------------------------------------------------- compile-time resolution

@dataclass(frozen=True)
class Problem:
    severity: str        # "error", "warning" or "notice"
    message: str
    spec: str = ""       # the probe as written in the script, when one is concerned

    def render(self, filename: str = "ktap") -> str:
        where = f" probe '{self.spec}':" if self.spec else ""
        return f"{filename}: {self.severity}:{where} {self.message}"


@dataclass
class Resolution:
    """resolve_events() output: the events to put in the image (globs
    expanded to one event per function or tracepoint), the problems found,
    and the record layouts of the tracepoint fields scripts read."""
    events: list = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    layouts: dict[str, dict] = field(default_factory=dict)   # "subsys:event" -> {name: Field}

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_errors(self, filename: str | None = None) -> None:
        lines = [(f"probe '{p.spec}': " if p.spec else "") + p.message for p in self.errors]
        if lines:
            raise SymbolError("\n".join(lines), filename=filename)


@dataclass
class _Context:
    target: Target
    symbols: SymbolTable | None
    reader: CodeReader | None
    profile: profiles.Profile | None
    out: Resolution


def resolve_events(image_events: list, target: Target | str, vmlinux=None, system_map=None,
                   profile=None) -> Resolution:
    """Checks an image's events against one kernel, offline.

    image_events: bytecode.Event list (image.events). target: Target or name.
    vmlinux / system_map: paths; profile: a directory or a profiles.Profile.
    Symbols come from vmlinux, else System.map, else the profile's kallsyms.
    Nothing given means nothing can be checked, and notices say so.
    """
    target = get_target(target)
    if profile is not None and not isinstance(profile, profiles.Profile):
        profile = profiles.load(profile)
    ctx = _Context(target, _pick_symbols(target, vmlinux, system_map, profile),
                   CodeReader(vmlinux) if vmlinux else None, profile, Resolution())
    try:
        _check_machine(ctx)
        _check_same_kernel(ctx)
        _check_features(ctx, image_events)
        for ev in image_events:
            _resolve_one(ctx, ev)
    finally:
        if ctx.reader:
            ctx.reader.close()
    return ctx.out


def _pick_symbols(target: Target, vmlinux, system_map,
                  profile: profiles.Profile | None) -> SymbolTable | None:
    if vmlinux:
        return load_vmlinux(vmlinux)
    if system_map:
        return load_system_map(system_map, word_size=target.word_size)
    if profile is not None and (profile.path / "kallsyms.gz").exists():
        return profile.symbols
    return None


def _problem(ctx: _Context, severity: str, message: str, spec: str = "") -> None:
    p = Problem(severity, message, spec)
    if p not in ctx.out.problems:
        ctx.out.problems.append(p)


def _check_machine(ctx: _Context) -> None:
    s = ctx.symbols
    if s is not None and s.machine and s.machine != ctx.target.name:
        _problem(ctx, "error", f"{s.path} is a {s.machine} kernel, not {ctx.target.name}")
    if ctx.profile is not None and ctx.profile.target and ctx.profile.target != ctx.target.name:
        _problem(ctx, "error", f"{ctx.profile.describe()} is for {ctx.profile.target}, "
                               f"not {ctx.target.name}")


def _check_same_kernel(ctx: _Context) -> None:
    """A vmlinux or System.map from another build than the profiled kernel
    would make every later check wrong; compare their function names."""
    if ctx.symbols is None or ctx.profile is None or ctx.symbols.source == "kallsyms":
        return
    if not (ctx.profile.path / "kallsyms.gz").exists():
        return
    theirs = {s.name for s in ctx.profile.symbols.functions() if not s.module}
    ours = {s.name for s in ctx.symbols.functions()}
    missing = len(theirs - ours)
    if theirs and missing > len(theirs) // 100:
        _problem(ctx, "warning", f"{ctx.symbols.describe()} does not look like the kernel of "
                                 f"{ctx.profile.describe()}: {missing} of its {len(theirs)} "
                                 f"functions are missing")


# ---------------------------------------------------------------- kernel features

# The rows naming a feature the kernel may lack (kprobes, kretprobes).
_FEATURE_KINDS = tuple(k for k in kinds.KINDS if k.feature)


def _needed_features(kind_ids: set[int]) -> list[EventKind]:
    """The feature rows the script's kinds depend on, in table order. A kind
    needing every option of a feature row needs that feature too: kretprobes
    are built on kprobes (the row lists CONFIG_KPROBES), so a kernel without
    kprobes is reported as such, not only as lacking kretprobes."""
    used = [set(kinds.kind(i).config) for i in kind_ids]
    return [f for f in _FEATURE_KINDS if any(set(f.config) <= options for options in used)]


def _own_options(row: EventKind) -> list[str]:
    """The options a feature row adds to the features it builds on: what the
    profile's feature records, and what to enable when it is missing."""
    base = {o for f in _FEATURE_KINDS if set(f.config) < set(row.config) for o in f.config}
    return [o for o in row.config if o not in base]


def _check_features(ctx: _Context, events: list) -> None:
    for row in _needed_features({ev.kind for ev in events}):
        present, evidence = _feature_present(ctx, row)
        if present is False:
            enable = " ".join(f"{o}=y" for o in _own_options(row))
            _problem(ctx, "error", f"this script needs {row.feature}, but the kernel lacks them "
                                   f"({evidence}); enable {enable}")


def _feature_present(ctx: _Context, row: EventKind) -> tuple[bool | None, str]:
    if ctx.profile is not None and ctx.profile.features.get(row.feature) is not None:
        options = " ".join(_own_options(row))
        return ctx.profile.features[row.feature], f"{options} in {ctx.profile.describe()}"
    if ctx.symbols is not None and ctx.symbols.source != "module":
        symbol = row.kernel_symbol
        return bool(ctx.symbols.lookup(symbol)), f"no {symbol} in {ctx.symbols.describe()}"
    return None, ""


# ---------------------------------------------------------------- events

def _resolve_one(ctx: _Context, ev) -> None:
    row = kinds.kind(ev.kind)
    if row.symbol:
        _resolve_symbol(ctx, ev)
    elif row.fields:
        # Handlers read such a record's fields by name: the event is a tracepoint
        # whose layout the profile's format files give.
        _resolve_tracepoint(ctx, ev)
    else:
        ctx.out.events.append(ev)


def _resolve_symbol(ctx: _Context, ev) -> None:
    if ctx.symbols is None:
        _problem(ctx, "notice", "probed functions are unchecked: give --vmlinux, "
                                "--system-map or --profile")
        ctx.out.events.append(ev)
        return
    exp = expand_symbols(ev.name, ctx.symbols)
    if not _expansion_ok(ctx, ev, exp):
        return
    for name, count in exp.ambiguous.items():
        _problem(ctx, "warning", f"{count} functions are named {name}; the kernel probes the "
                                 f"first one, at {ctx.symbols.function(name).addr:#x}", ev.spec)
    for name in exp.names:
        ctx.out.events.append(dataclasses.replace(ev, name=name, fields=list(ev.fields)))
        _probe_point(ctx, ev, name)


def _expansion_ok(ctx: _Context, ev, exp: Expansion) -> bool:
    if exp.names:
        return True
    if not is_glob(ev.name) and exp.refused:
        msg = f"cannot probe {exp.refused[0].message}"
    elif is_glob(ev.name):
        msg = empty_glob_message(exp, ctx.symbols)
    else:
        msg = ctx.symbols.missing_message(ev.name)
    _problem(ctx, "error", msg, ev.spec)
    return False


def _probe_point(ctx: _Context, ev, name: str) -> None:
    """Capstone checks need code bytes: only a vmlinux has them."""
    thumb = _thumb_kernel(ctx)
    if ctx.reader is None:
        _problem(ctx, "notice", "probe-point checks (instruction boundary, delay slots, "
                                "ldrex/strex, Thumb-2) skipped: give --vmlinux")
        if thumb:
            _problem(ctx, "warning", "Thumb-2 kernel (CONFIG_THUMB2_KERNEL=y): arm kprobes "
                                     "were seen to oops in t16_emulate_push", ev.spec)
        return
    if ev.offset == 0 and not thumb:
        return                    # a function entry is always a boundary
    check = check_probe_point(ctx.symbols, ctx.reader, ctx.target, name, ev.offset, thumb)
    for sev, msgs in (("error", check.errors), ("warning", check.warnings),
                      ("notice", check.notices)):
        for m in msgs:
            _problem(ctx, sev, m, ev.spec)


def _thumb_kernel(ctx: _Context) -> bool:
    if ctx.target.capstone.get("arch") != "CS_ARCH_ARM":
        return False
    if ctx.profile is not None and ctx.profile.features.get("thumb2_kernel"):
        return True
    return bool(ctx.symbols is not None and ctx.symbols.thumb_functions)


def _resolve_tracepoint(ctx: _Context, ev) -> None:
    if ctx.profile is None:
        _problem(ctx, "notice", "tracepoints and their fields are unchecked: give --profile")
        ctx.out.events.append(ev)
        return
    names = [t for t in ctx.profile.tracepoints() if fnmatch.fnmatchcase(t, ev.name)]
    if not names:
        _problem(ctx, "error", _missing_tracepoint(ctx.profile, ev.name), ev.spec)
        return
    for name in names:
        if _tracepoint_fields(ctx, ev, name):
            ctx.out.events.append(dataclasses.replace(ev, name=name, fields=list(ev.fields)))


def _missing_tracepoint(profile: profiles.Profile, name: str) -> str:
    close = difflib.get_close_matches(name, profile.tracepoints(), n=3, cutoff=0.75)
    return f"no tracepoint {name} in {profile.describe()}" + did_you_mean(close)


def _tracepoint_fields(ctx: _Context, ev, name: str) -> bool:
    subsys, event = name.split(":", 1)
    fields = {f.name: f for f in ctx.profile.tracepoint_fields(subsys, event)}
    missing = [n for n in ev.fields if n not in fields]
    for n in missing:
        known = ", ".join(f for f in fields if not fields[f].common)
        _problem(ctx, "error", f"tracepoint {name} has no field '{n}' (its fields: {known})",
                 ev.spec)
    ctx.out.layouts[name] = {n: fields[n] for n in ev.fields if n in fields}
    return not missing
