"""Target profiles: what the compiler needs to know about one running kernel.

A profile is a directory recorded once from the board (`ktap target sync`)
and used offline afterwards, so compiling for a board needs neither the
board nor its build tree::

    DIR/profile.json                 release, source, kallsyms digest, what was found
    DIR/config                       /proc/config.gz, or the build tree's .config
    DIR/kallsyms.gz                  /proc/kallsyms as read on the board (root)
    DIR/events/<subsys>/<event>/format   tracepoint record layouts
    DIR/available_filter_functions   only when the kernel has it (ftrace)

This module is the data model: reading a profile, and writing one from what a
recorder collected. The recorders are above it: ktap.boards.profile boots a
QEMU board, and `ktap target sync` (ktap.cli.symbols) reads a live board
through a deploy transport.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ktap.core.diagnostics import KtapError
from ktap.core.targets import Target, get_target
from ktap.symbols.readers import load_kallsyms
from ktap.symbols.table import SymbolTable
from ktap.symbols.userelf import UserElf

PROFILE_VERSION = 1
EVENTS_ROOT = "/sys/kernel/tracing/events"
FILTER_FUNCTIONS = "/sys/kernel/tracing/available_filter_functions"

_FIELD = re.compile(r"field:(?P<decl>[^;]*);\s*offset:(?P<offset>\d+);\s*"
                    r"size:(?P<size>\d+);\s*(signed:(?P<signed>\d+);)?")


class ProfileError(KtapError):
    pass


SYSROOT = "sysroot"


@dataclass(frozen=True)
class Field:
    """One field of a tracepoint record, as the `format` file states it."""
    name: str
    type: str             # C type as written, e.g. "char[16]", "__data_loc char[]"
    offset: int
    size: int
    signed: bool
    array_len: int = 0    # fixed arrays: element count
    dynamic: bool = False  # __data_loc: a (len << 16 | offset) word, data after the record
    common: bool = False   # common_* fields every event carries


def parse_format(text: str) -> list[Field]:
    return [_field(m) for m in _FIELD.finditer(text)]


def _field(m: re.Match) -> Field:
    decl = m.group("decl").strip()
    array = re.search(r"\[(\d*)\]\s*$", decl)
    array_len = int(array.group(1)) if array and array.group(1) else 0
    base = decl[: array.start()].rstrip() if array else decl
    name = re.search(r"(\w+)$", base).group(1)
    ctype = base[: -len(name)].strip() + (array.group(0).strip() if array else "")
    return Field(name, ctype, int(m.group("offset")), int(m.group("size")),
                 m.group("signed") == "1", array_len, "__data_loc" in ctype,
                 name.startswith("common_"))


def parse_config(text: str) -> dict[str, str]:
    """CONFIG_X=value lines; `# CONFIG_X is not set` becomes "n"."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"# (CONFIG_\w+) is not set$", line)
        if m:
            out[m.group(1)] = "n"
        elif line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            out[key] = value.strip('"')
    return out


def kallsyms_digest(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


# ---------------------------------------------------------------- reading

class Profile:
    def __init__(self, path: Path, meta: dict):
        self.path = path
        self.meta = meta
        self.release: str = meta.get("release", "")
        self.target: str = meta.get("target", "")

    @property
    def sysroot(self) -> Path | None:
        """The board files `ktap target sync --file` pulled, laid out as on the
        board: where user-space probes resolve without --sysroot."""
        root = self.path / SYSROOT
        return root if root.is_dir() else None

    @cached_property
    def config(self) -> dict[str, str]:
        f = self.path / "config"
        return parse_config(f.read_text(errors="replace")) if f.exists() else {}

    def config_enabled(self, option: str) -> bool | None:
        """True/False from the config; None when the profile has no config."""
        if not self.config:
            return None
        return self.config.get(option, "n") in ("y", "m")

    @cached_property
    def features(self) -> dict[str, bool | None]:
        c = self.config_enabled
        return {
            "kprobes": c("CONFIG_KPROBES"),
            "kretprobes": c("CONFIG_KRETPROBES"),
            "tracepoints": c("CONFIG_TRACEPOINTS") if self.config else bool(self.tracepoints()),
            "ftrace": c("CONFIG_FTRACE"),
            "thumb2_kernel": c("CONFIG_THUMB2_KERNEL"),
            "modules": c("CONFIG_MODULES"),
        }

    @cached_property
    def symbols(self) -> SymbolTable:
        f = self.path / "kallsyms.gz"
        if not f.exists():
            raise ProfileError(f"{self.path}: profile has no kallsyms.gz")
        word = get_target(self.target).word_size if self.target else 0
        return load_kallsyms(f, word_size=word)

    @cached_property
    def filter_functions(self) -> set[str] | None:
        f = self.path / "available_filter_functions"
        if not f.exists():
            return None
        return {line.split()[0] for line in f.read_text(errors="replace").splitlines() if line}

    def has_function(self, name: str) -> bool:
        if (self.path / "kallsyms.gz").exists():
            return self.symbols.function(name) is not None
        return bool(self.filter_functions and name in self.filter_functions)

    @cached_property
    def _events(self) -> dict[str, Path]:
        root = self.path / "events"
        if not root.is_dir():
            return {}
        return {f"{f.parent.parent.name}:{f.parent.name}": f for f in sorted(root.glob("*/*/format"))}

    def tracepoints(self) -> list[str]:
        return list(self._events)

    def has_tracepoint(self, subsys: str, event: str) -> bool:
        return f"{subsys}:{event}" in self._events

    def tracepoint_fields(self, subsys: str, event: str) -> list[Field]:
        f = self._events.get(f"{subsys}:{event}")
        if f is None:
            raise ProfileError(f"no tracepoint {subsys}:{event} in profile {self.path}")
        return parse_format(f.read_text(errors="replace"))

    def describe(self) -> str:
        return f"profile {self.path} ({self.target} {self.release})".strip()


def load(directory: str | Path) -> Profile:
    path = Path(directory)
    meta_file = path / "profile.json"
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{path}: not a target profile (no profile.json); "
                           f"record one with `ktap target sync`") from None
    except (OSError, ValueError) as e:
        raise ProfileError(f"{meta_file}: unreadable: {e}") from None
    if meta.get("version") != PROFILE_VERSION:
        raise ProfileError(f"{path}: profile version {meta.get('version')} "
                           f"(this ktap reads {PROFILE_VERSION}); sync it again")
    return Profile(path, meta)


# ---------------------------------------------------------------- writing

def split_dump(data: bytes) -> dict[str, bytes]:
    """`ktapw dump` output: `@@file PATH LEN\\n` + LEN bytes + `\\n`, repeated."""
    files, pos = {}, 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        header = data[pos:end].decode(errors="replace").split(" ")
        if len(header) != 3 or header[0] != "@@file":
            raise ProfileError(f"damaged dump record at byte {pos}: {header!r}")
        size = int(header[2])
        files[header[1]] = data[end + 1:end + 1 + size]
        pos = end + 1 + size + 1
    return files


@dataclass
class Collected:
    """What a transport read from a running kernel, before it is written out."""
    target: str
    uname: str
    kallsyms: bytes
    formats: dict[str, bytes]           # "subsys/event" -> format file
    config: bytes | None
    config_source: str
    filter_functions: bytes | None
    cmdline: str
    source: str                         # "board:arm", later "ssh:host" ...
    files: dict[str, bytes] = field(default_factory=dict)   # board path -> its bytes


def write_profile(c: Collected, out_dir: Path, extra_meta: dict | None = None) -> Path:
    """Writes into a sibling temp dir and renames it, so a profile is whole or absent."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "kallsyms.gz").write_bytes(gzip.compress(c.kallsyms, mtime=0))
    if c.config is not None:
        (tmp / "config").write_bytes(c.config)
    if c.filter_functions is not None:
        (tmp / "available_filter_functions").write_bytes(c.filter_functions)
    for name, data in c.formats.items():
        f = tmp / "events" / name / "format"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
    meta = _meta(c, extra_meta)
    if c.files:
        meta["files"] = _write_files(c, tmp / SYSROOT)
    (tmp / "profile.json").write_text(json.dumps(meta, indent=1) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def _write_files(c: Collected, root: Path) -> dict:
    """The pulled files under root as on the board; their build-ids, which the
    board checks again when a probe in them attaches."""
    out = {}
    target = get_target(c.target)
    for path, data in sorted(c.files.items()):
        host = root / path.lstrip("/")
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_bytes(data)
        build_id = ""
        if data[:4] == b"\x7fELF":
            elf = UserElf(path, host, target)
            build_id = elf.build_id
            elf.close()
        out[path] = {"size": len(data), "build_id": build_id,
                     "sha256": hashlib.sha256(data).hexdigest()}
    return out


def pulled_files(results: list, paths: list[str], source: str) -> dict[str, bytes]:
    """The files of `ktap target sync --file`, one recorder outcome each."""
    files = {}
    for path, r in zip(paths, results):
        if not r.ok:
            raise ProfileError(f"{source}: cannot read {path} on the board: "
                               f"{r.stderr.decode(errors='replace').strip() or r.status}")
        files[path] = r.stdout
    return files


def _meta(c: Collected, extra: dict | None) -> dict:
    uname = c.uname.split()
    lines = c.kallsyms.count(b"\n")
    text = sum(1 for l in c.kallsyms.split(b"\n") if l.split(b" ", 2)[1:2] in ([b"t"], [b"T"]))
    meta = {
        "version": PROFILE_VERSION, "target": c.target, "source": c.source,
        "release": uname[2] if len(uname) > 2 else "", "uname": c.uname.strip(),
        "cmdline": c.cmdline.strip(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config_source": c.config_source,
        "kallsyms": {"sha256": kallsyms_digest(c.kallsyms), "lines": lines, "text": text},
        "tracepoints": len(c.formats),
        "available_filter_functions": c.filter_functions is not None,
    }
    meta.update(extra or {})
    return meta


# ---------------------------------------------------------------- recording

def collect(target: Target, results: list, build: Path | None, source: str) -> Collected:
    """A Collected from what a recorder read on the board, in this order: uname,
    /proc/kallsyms, the EVENTS_ROOT format files framed as `ktapw dump` frames
    them, /proc/config.gz, FILTER_FUNCTIONS, /proc/cmdline. Each outcome has
    argv, ok, status, errors, stdout and stderr. `build` is the kernel's build
    tree, whose .config stands in for a missing /proc/config.gz."""
    uname, kallsyms, formats, config, filters, cmdline = results[:6]
    for r in (uname, kallsyms, formats, cmdline):
        if not r.ok:
            raise ProfileError(f"{target.name}: `{' '.join(r.argv)}` failed on the board: "
                               f"status {r.status} {r.errors} {r.stderr.decode(errors='replace')}")
    events = {_event_name(p): d for p, d in split_dump(formats.stdout).items()}
    if config.ok:
        config_text, config_source = gzip.decompress(config.stdout), "/proc/config.gz"
    else:
        # Board kernels lack IKCONFIG; their build tree is on this host.
        config_text, config_source = (build / ".config").read_bytes(), str(build / ".config")
    return Collected(target.name, uname.stdout.decode(errors="replace"), kallsyms.stdout,
                     events, config_text, config_source,
                     filters.stdout if filters.ok else None,
                     cmdline.stdout.decode(errors="replace"), source)


def _event_name(path: str) -> str:
    parts = path.rstrip("/").split("/")
    return f"{parts[-3]}/{parts[-2]}"


