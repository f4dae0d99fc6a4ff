"""`ktap board check`: one boot that asks the guest what it is (uname, byte
order, word size, kernel features) and compares that with the target
descriptor, so a wrong kernel config or descriptor shows before any script runs."""
from __future__ import annotations

from dataclasses import dataclass

from ktap.boards.batch import DEFAULT_TIMEOUT, BoardRun, run_commands
from ktap.core.targets import Target, get_target

REQUIRED_FEATURES = ("kprobes", "tracepoints")
CHECK_COMMANDS = [["ktapw", "uname"], ["ktapw", "arch"], ["ktapw", "features"]]


def parse_key_values(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_features(text: str) -> dict[str, bool]:
    return {k: v.split(" ", 1)[0] == "yes" for k, v in parse_key_values(text).items()}


@dataclass
class BoardCheck:
    target: str
    uname: str
    arch: dict[str, str]
    features: dict[str, bool]
    problems: list[str]
    run: BoardRun

    @property
    def ok(self) -> bool:
        return not self.problems


def evaluate_check(target: Target, run: BoardRun) -> BoardCheck:
    uname_r, arch_r, feat_r = run.results[:3]
    arch = parse_key_values(arch_r.stdout.decode(errors="replace"))
    features = parse_features(feat_r.stdout.decode(errors="replace"))
    problems = [f"`{' '.join(r.argv)}` failed: status {r.status} {r.errors} {r.output.strip()}"
                for r in run.results[:3] if not r.ok]
    if arch.get("byte_order") != target.byte_order:
        problems.append(f"byte order: guest says {arch.get('byte_order')}, "
                        f"descriptor says {target.byte_order}")
    if arch.get("word_size") != str(target.word_size):
        problems.append(f"word size: guest says {arch.get('word_size')}, "
                        f"descriptor says {target.word_size}")
    problems += [f"kernel lacks {name}" for name in REQUIRED_FEATURES if not features.get(name)]
    return BoardCheck(target.name, uname_r.stdout.decode(errors="replace").strip(), arch,
                      features, problems, run)


def check_board(target: Target | str, timeout: float = DEFAULT_TIMEOUT) -> BoardCheck:
    target = get_target(target)
    return evaluate_check(target, run_commands(target, CHECK_COMMANDS, timeout=timeout))
