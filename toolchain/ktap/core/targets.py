"""Target registry. Targets are data: targets/<name>/target.toml.

This module is the only place that turns a descriptor's byte order into a
struct prefix; everything else asks the Target object.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ktap.core.diagnostics import TargetError  # noqa: F401  (raised here; callers catch it from either)
from ktap.core.paths import TARGETS_DIR


@dataclass(frozen=True)
class Abi:
    args: tuple[str, ...]
    stack_args_offset: int
    retval: str
    pc: str
    sp: str
    # The argument and return registers as byte offsets in struct pt_regs, the
    # context an eBPF kprobe program reads (the backend bakes them in).
    pt_regs_args: tuple[int, ...] = ()
    pt_regs_retval: int = 0


@dataclass(frozen=True)
class UserAbi:
    """User space: uprobe_events' names for the argument registers, the USDT
    operand syntax (symbols/usdt.py) and extra flags for the guest programs."""
    args: tuple[str, ...] = ()
    usdt_syntax: str = ""
    guest_cflags: tuple[str, ...] = ()
    # ustack(): "fp" (a frame-pointer chain), "backchain" (powerpc's ABI
    # chain through the stack pointer) or "mips" (prologue scanning); the
    # pt_regs fields of the frame pointer and of the return address at a
    # function's entry; where a frame holds the next frame pointer and the
    # return address
    unwind: str = ""
    fp: str = ""
    link: str = ""
    fp_next: int = 0
    fp_ret: int = 0


USDT_SYNTAXES = ("att", "arm", "arm64", "mips", "powerpc")
UNWINDERS = ("fp", "backchain", "mips")


@dataclass(frozen=True)
class Packages:
    """The Debian packages behind a target's host tools, named when one is missing."""
    gcc: str                 # provides <cross_compile>gcc
    libc: str                # the static libc the guest programs and ktaprun link
    qemu: str                # provides the [qemu] binary


@dataclass(frozen=True)
class AgentLine:
    """The guest's second serial line, where `ktaprun --serve` listens."""
    kind: str                # "uart": a second UART; "virtio": a virtio console
    device: str              # its /dev node in the guest


AGENT_KINDS = ("uart", "virtio")
# Instructions some eBPF JITs cannot compile: what [bpf_jit] lacks may name
BPF_JIT_GAPS = ("atomic64", "div64")


@dataclass(frozen=True)
class Target:
    name: str
    id: int
    kernel_arch: str
    cross_compile: str
    byte_order: str          # "little" or "big"
    word_size: int           # 4 or 8
    abi: Abi
    elf_machine: str         # e_machine of its vmlinux and modules, as pyelftools names it
    packages: Packages
    agent: AgentLine
    # `uname -m` of a kernel of this target; empty: not checked (arm's varies:
    # armv7l, armv8l, ...)
    uname_machines: tuple[str, ...] = ()
    # The ELF ABI marks code and data runs with local symbols ($a $t $x $d)
    # that name nothing; symbol readers drop them, as nm does.
    mapping_symbols: bool = False
    capstone: dict = field(default_factory=dict)
    qemu: dict = field(default_factory=dict)
    # What the arch's eBPF JIT cannot compile, of BPF_JIT_GAPS
    bpf_jit_lacks: tuple[str, ...] = ()
    user: UserAbi = field(default_factory=UserAbi)
    directory: Path = TARGETS_DIR

    @property
    def struct_prefix(self) -> str:
        return "<" if self.byte_order == "little" else ">"

    @property
    def word_format(self) -> str:
        return "I" if self.word_size == 4 else "Q"

    @property
    def config_fragment(self) -> Path:
        return self.directory / "config"


def _load(path: Path) -> Target:
    with open(path, "rb") as f:
        d = tomllib.load(f)
    if d.get("byte_order") not in ("little", "big"):
        raise TargetError(f"{path}: byte_order must be 'little' or 'big'")
    if d.get("word_size") not in (4, 8):
        raise TargetError(f"{path}: word_size must be 4 or 8")
    agent = d.get("agent", {})
    if agent.get("kind") not in AGENT_KINDS:
        raise TargetError(f"{path}: agent.kind must be one of {', '.join(AGENT_KINDS)}")
    lacks = tuple(d.get("bpf_jit", {}).get("lacks", ()))
    if not set(lacks) <= set(BPF_JIT_GAPS):
        raise TargetError(f"{path}: bpf_jit.lacks may name {', '.join(BPF_JIT_GAPS)}")
    user = d.get("user", {})
    if user.get("usdt_syntax", "att") not in USDT_SYNTAXES:
        raise TargetError(f"{path}: user.usdt_syntax must be one of {', '.join(USDT_SYNTAXES)}")
    if user.get("unwind", "fp") not in UNWINDERS:
        raise TargetError(f"{path}: user.unwind must be one of {', '.join(UNWINDERS)}")
    try:
        abi, packages = d["abi"], d["packages"]
        return Target(
            name=d["name"], id=int(d["id"]), kernel_arch=d["kernel_arch"],
            cross_compile=d.get("cross_compile", ""), byte_order=d["byte_order"],
            word_size=int(d["word_size"]),
            abi=Abi(args=tuple(abi["args"]), stack_args_offset=int(abi["stack_args_offset"]),
                    retval=abi["retval"], pc=abi["pc"], sp=abi["sp"],
                    pt_regs_args=tuple(int(o) for o in abi["pt_regs_args"]),
                    pt_regs_retval=int(abi["pt_regs_retval"])),
            elf_machine=d["elf_machine"],
            packages=Packages(gcc=packages["gcc"], libc=packages["libc"], qemu=packages["qemu"]),
            agent=AgentLine(kind=agent["kind"], device=agent["device"]),
            uname_machines=tuple(d.get("uname_machines", ())),
            mapping_symbols=bool(d.get("mapping_symbols", False)),
            capstone=dict(d.get("capstone", {})), qemu=dict(d.get("qemu", {})),
            bpf_jit_lacks=lacks, directory=path.parent,
            user=UserAbi(args=tuple(user.get("args", ())),
                         usdt_syntax=user.get("usdt_syntax", ""),
                         guest_cflags=tuple(user.get("guest_cflags", ())),
                         unwind=user.get("unwind", ""), fp=user.get("fp", ""),
                         link=user.get("link", ""), fp_next=int(user.get("fp_next", 0)),
                         fp_ret=int(user.get("fp_ret", 0))),
        )
    except KeyError as e:
        raise TargetError(f"{path}: missing {e.args[0]!r}") from None


@cache
def all_targets() -> dict[str, Target]:
    found: dict[str, Target] = {}
    for p in sorted(TARGETS_DIR.glob("*/target.toml")):
        t = _load(p)
        # the id is what a KBC header names its target by
        clash = next((o for o in found.values() if o.id == t.id), None)
        if clash is not None:
            raise TargetError(f"{p}: id {t.id} is already {clash.name}'s")
        found[t.name] = t
    return found


def target_names() -> list[str]:
    return sorted(all_targets())


def get_target(name: "str | Target") -> Target:
    """The target called `name`; a Target passes through, so APIs can take either."""
    if isinstance(name, Target):
        return name
    targets = all_targets()
    if name not in targets:
        raise TargetError(f"unknown target '{name}' (known: {', '.join(sorted(targets))})")
    return targets[name]


def target_by_id(tid: int) -> Target | None:
    for t in all_targets().values():
        if t.id == tid:
            return t
    return None


def target_by_elf_machine(machine: str) -> Target | None:
    """The target whose kernels carry this ELF e_machine ("EM_AARCH64")."""
    for t in all_targets().values():
        if t.elf_machine == machine:
            return t
    return None
