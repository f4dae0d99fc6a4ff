"""Differential fuzzing of the eBPF lowering: random handlers built from what
the backend supports (64-bit arithmetic with division and modulo, globals,
tables with number keys, aggregates, if/else, unrolled for loops, inlined
function calls, printf and print), run on a
board against the reference VM fed the same events. The programs read only
deterministic inputs, so the outputs must match byte for byte, runtime errors
(division by zero, arithmetic on a missing entry) included."""
from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass

from ktap import api
from ktap.core.diagnostics import RuntimeErr, Source
from ktap.refvm.sim import parse_events, run_sim

PROBE = "syscalls:sys_enter_getpid"
CALLS = 4
WORKLOAD = ["ktapw", "getpid", str(CALLS)]
EVENTS = json.dumps({"probe": PROBE, "execname": "ktapw", "pid": 100, "repeat": CALLS})
BIG = (0, 1, 2, 3, 7, -1, -5, 255, 4096, 65535, 2**31 - 1, 2**31, 2**32 + 3, -2**40,
       2**62, 2**63 - 1, -2**63)


@dataclass
class FuzzCase:
    name: str
    script: str


class Generator:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def number(self) -> str:
        v = self.rng.choice(BIG) if self.rng.random() < 0.6 else self.rng.randint(-99, 99)
        return str(v) if v >= 0 else f"({v})"

    def expr(self, depth: int = 0) -> str:
        r = self.rng.random()
        if depth > 2 or r < 0.3:
            return self.number()
        if r < 0.5:
            return self.rng.choice(("g0", "g1", "g2"))
        if r < 0.6:
            return f"t[{self.rng.randint(0, 3)}]"
        if r < 0.65:
            return f"-{self.expr(depth + 1)}"
        if r < 0.7:
            return f"f({self.expr(depth + 1)}, {self.expr(depth + 1)})"
        op = self.rng.choice(("+", "-", "*", "/", "%", "+", "*"))
        return f"({self.expr(depth + 1)} {op} {self.expr(depth + 1)})"

    def cond(self) -> str:
        op = self.rng.choice(("<", "<=", ">", ">=", "==", "!="))
        return f"{self.expr(1)} {op} {self.expr(1)}"

    def stmt(self, depth: int = 0) -> str:
        r = self.rng.random()
        if r < 0.2:
            return f"{self.rng.choice(('g1', 'g2'))} = {self.expr()}"
        if r < 0.35:
            return f"t[{self.rng.randint(0, 3)}] += {self.expr()}"
        if r < 0.45:
            return f"t[{self.expr(2)} % 4] = {self.expr()}"
        if r < 0.55:
            return f'a["k{self.rng.randint(0, 1)}"] <<< {self.expr()}'
        if r < 0.7 and depth < 2:
            other = f" else {{ {self.stmt(depth + 1)} }}" if self.rng.random() < 0.5 else ""
            return f"if ({self.cond()}) {{ {self.stmt(depth + 1)} }}{other}"
        if r < 0.75 and depth < 2:
            lo, hi = self.rng.randint(-2, 2), self.rng.randint(-2, 4)
            step = self.rng.choice(("", ", 2", ", -1"))
            return f"for (i{depth} = {lo}, {hi}{step}) {{ {self.stmt(depth + 1)} }}"
        if r < 0.85:
            return f'printf("%d %d\\n", {self.expr()}, {self.expr()})'
        return f"print({self.expr()}, g0 > 2, nil)"

    def script(self) -> str:
        body = "\n  ".join(self.stmt() for _ in range(self.rng.randint(2, 6)))
        return (f"var g0 = 0\nvar g1 = {self.number()}\nvar g2 = 0\nvar t = {{}}\nvar a = {{}}\n"
                "function f(x, y) {\n  if (x < y) { return x - y }\n  g2 += 1\n"
                "  return x * 2 + y\n}\n"
                f'trace {PROBE} /execname == "ktapw"/ {{\n  g0 += 1\n  {body}\n}}\n'
                "trace_end {\n  print(g0, g1, g2)\n"
                '  for (k, v in pairs(t)) { printf("t[%d]=%d\\n", k, v) }\n'
                '  for (k, v in pairs(a)) { printf("%s %d %d %d %d\\n", k, count(v), sum(v), '
                "min(v), max(v)) }\n}\n")


def cases(seed: int, n: int) -> list[FuzzCase]:
    gen = Generator(seed)
    return [FuzzCase(f"fuzz{seed}_{i}", gen.script()) for i in range(n)]


def reference(case: FuzzCase, target: str) -> tuple[str, int, str]:
    """(stdout, exit status, runtime error line or "") of the reference VM fed
    the workload's events."""
    src = Source(f"{case.name}.kp", case.script)
    img = api.compile_source(src, target)
    out = io.StringIO()
    try:
        status, _ = run_sim(img, out.write, src, parse_events(EVENTS, "events"))
    except RuntimeErr as e:
        return out.getvalue(), e.exit_status, e.render().splitlines()[0]
    return out.getvalue(), status, ""


def board_error(stderr: str) -> str:
    """The runtime error line ktaprun printed, or ""."""
    return next((line for line in stderr.splitlines() if ": runtime error: " in line), "")
