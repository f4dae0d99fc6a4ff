"""The single source of truth for KBC instructions, built-in functions and
built-in variables. The encoder, the disassembler, the verifier's operand rules,
docs/bytecode.md's table and the kernel module's C tables all come from here.

Instruction formats (one 32-bit word, in the target's byte order):

    31        24 23        16 15         8 7          0
   +------------+------------+------------+------------+
   |     C      |     B      |     A      |   opcode   |   ABC
   +------------+------------+------------+------------+
   |          Bx (unsigned)  |     A      |   opcode   |   ABx
   +------------+------------+------------+------------+
   |     sBx (two's complement) |   A     |   opcode   |   AsBx
   +------------+------------+------------+------------+

   AX64 is ABC followed by two extension words holding a 64-bit immediate,
   low word first. A jump or the end of a function may never land inside them.

Operand kinds (what the verifier checks for each field):
   R  register: < frame size (A spans `span` registers)
   K  constant index: < number of constants
   U  upvalue index: < number of upvalues
   T  table descriptor index      F  printf format index
   P  function index (a callable, not the setup chunk, arity = C)
   B  built-in function id (argument count C within its bounds)
   V  built-in variable id        N  argument number 1..9
   D  tracepoint field index of the handler's event
   I  immediate (no check)        J  jump: pc + 1 + sBx is an instruction start
   X  register count for the span of A
   -  unused, must be 0
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from ktap.frontend.builtins import BUILTINS, MAX_ARGS, STACK_MAX_DEPTH, TABLE_CALLS, VARIABLES

FORMATS = ("ABC", "ABx", "AsBx", "AX64")


@dataclass(frozen=True)
class Op:
    code: int
    name: str
    fmt: str
    a: str
    b: str
    c: str
    span: str        # registers used from A: "1", "3", "4", or "C" (max(C, 1))
    flags: str       # "J" backward jumps charged to the budget, "C" call, "A" allocates
    doc: str

    @property
    def words(self) -> int:
        return 3 if self.fmt == "AX64" else 1


#   name        fmt     A    B    C    span flags  semantics
_TABLE = [
    ("NOP",       "ABC",  "-", "-", "-", "1", "",  "no operation"),
    ("MOVE",      "ABC",  "R", "R", "-", "1", "",  "R[A] := R[B]"),
    ("LOADK",     "ABx",  "R", "K", "",  "1", "",  "R[A] := K[Bx]"),
    ("LOADI",     "AsBx", "R", "I", "",  "1", "",  "R[A] := sBx"),
    ("LOADI64",   "AX64", "R", "-", "-", "1", "",  "R[A] := the 64-bit immediate in the next two words"),
    ("LOADNIL",   "ABC",  "R", "-", "-", "1", "",  "R[A] := nil"),
    ("LOADBOOL",  "ABC",  "R", "I", "-", "1", "",  "R[A] := (B != 0)"),
    ("GETUPV",    "ABC",  "R", "U", "-", "1", "",  "R[A] := G[U[B]]   (U maps to a global slot)"),
    ("SETUPV",    "ABC",  "R", "U", "-", "1", "",  "G[U[B]] := R[A]"),
    ("NEWTABLE",  "ABx",  "R", "T", "",  "1", "A", "R[A] := new table described by T[Bx] (setup chunk only)"),
    ("GETTABLE",  "ABC",  "R", "R", "R", "1", "",  "R[A] := R[B][R[C]]"),
    ("GETTABLEK", "ABC",  "R", "R", "K", "1", "",  "R[A] := R[B][K[C]]"),
    ("SETTABLE",  "ABC",  "R", "R", "R", "1", "",  "R[A][R[B]] := R[C]   (nil deletes)"),
    ("SETTABLEK", "ABC",  "R", "K", "R", "1", "",  "R[A][K[B]] := R[C]   (nil deletes)"),
    ("TADD",      "ABC",  "R", "R", "R", "1", "",  "R[A][R[B]] += R[C]   (a missing entry counts as 0)"),
    ("TADDI",     "ABC",  "R", "R", "I", "1", "",  "R[A][R[B]] += sC    (C as signed 8-bit; a missing entry counts as 0)"),
    ("AGGR",      "ABC",  "R", "R", "R", "1", "",  "R[A][R[B]] <<< R[C]   (feed the aggregate)"),
    ("DELETE",    "ABC",  "R", "R", "-", "1", "",  "delete R[A][R[B]]"),
    ("CLEAR",     "ABC",  "R", "-", "-", "1", "",  "delete every entry of R[A]"),
    ("LEN",       "ABC",  "R", "R", "-", "1", "",  "R[A] := len(R[B])   (entries of a table, bytes of a string)"),
    ("ADD",       "ABC",  "R", "R", "R", "1", "",  "R[A] := R[B] + R[C]   (64-bit, wrapping)"),
    ("SUB",       "ABC",  "R", "R", "R", "1", "",  "R[A] := R[B] - R[C]"),
    ("MUL",       "ABC",  "R", "R", "R", "1", "",  "R[A] := R[B] * R[C]"),
    ("DIV",       "ABC",  "R", "R", "R", "1", "",  "R[A] := R[B] / R[C]   (truncates; error on 0)"),
    ("MOD",       "ABC",  "R", "R", "R", "1", "",  "R[A] := R[B] % R[C]   (sign of dividend; error on 0)"),
    ("CONCAT",    "ABC",  "R", "R", "R", "1", "",  "R[A] := R[B] .. R[C]   (truncated to the string limit)"),
    ("UNM",       "ABC",  "R", "R", "-", "1", "",  "R[A] := -R[B]"),
    ("NOT",       "ABC",  "R", "R", "-", "1", "",  "R[A] := not R[B]"),
    ("EQ",        "ABC",  "R", "R", "R", "1", "",  "R[A] := R[B] == R[C]"),
    ("NE",        "ABC",  "R", "R", "R", "1", "",  "R[A] := R[B] != R[C]"),
    ("LT",        "ABC",  "R", "R", "R", "1", "",  "R[A] := R[B] < R[C]"),
    ("LE",        "ABC",  "R", "R", "R", "1", "",  "R[A] := R[B] <= R[C]"),
    ("JMP",       "AsBx", "-", "J", "",  "1", "J", "pc += sBx"),
    ("JMPF",      "AsBx", "R", "J", "",  "1", "J", "if not R[A] then pc += sBx"),
    ("JMPT",      "AsBx", "R", "J", "",  "1", "J", "if R[A] then pc += sBx"),
    ("FORPREP",   "AsBx", "R", "J", "",  "4", "J", "check R[A..A+2] are numbers, step != 0; R[A] -= R[A+2]; pc += sBx"),
    ("FORLOOP",   "AsBx", "R", "J", "",  "4", "J", "R[A] += R[A+2]; if R[A] within R[A+1] then R[A+3] := R[A]; pc += sBx"),
    ("NEXT",      "ABC",  "R", "R", "-", "3", "",  "advance cursor R[A] over table R[B]: R[A+1], R[A+2] := key, value; R[A+1] := nil when done"),
    ("CALL",      "ABC",  "R", "P", "X", "C", "C", "R[A] := P[B](R[A..A+C-1])"),
    ("TAILCALL",  "ABC",  "R", "P", "X", "C", "C", "return P[B](R[A..A+C-1]), reusing the frame"),
    ("RET",       "ABC",  "R", "I", "-", "1", "",  "return R[A] if B else nil"),
    ("CALLB",     "ABC",  "R", "B", "X", "C", "",  "R[A] := builtin[B](R[A..A+C-1])"),
    ("PRINTF",    "ABC",  "R", "F", "X", "C", "",  "emit a printf record: format F[B], arguments R[A..A+C-1]"),
    ("LOADVAR",   "ABC",  "R", "V", "-", "1", "",  "R[A] := built-in variable B of the current event"),
    ("ARG",       "ABC",  "R", "N", "-", "1", "",  "R[A] := argument B (1-based) of the current event"),
    ("FIELD",     "ABC",  "R", "D", "-", "1", "",  "R[A] := tracepoint field B of the handler's event"),
]

OPS: list[Op] = [Op(i, *row) for i, row in enumerate(_TABLE)]
BY_NAME: dict[str, Op] = {op.name: op for op in OPS}
NUM_OPS = len(OPS)

# -- encoding -----------------------------------------------------------
def encode(op: Op, a: int = 0, b: int = 0, c: int = 0) -> list[int]:
    """Returns the instruction's words. For ABx/AsBx, `b` is Bx/sBx; for AX64, `b`
    is the 64-bit immediate."""
    if not 0 <= a <= 0xFF:
        raise ValueError(f"{op.name}: operand A={a} out of range")
    if op.fmt == "ABC":
        if not (0 <= b <= 0xFF and -128 <= c <= 0xFF):
            raise ValueError(f"{op.name}: operand out of range (B={b}, C={c})")
        return [op.code | a << 8 | b << 16 | (c & 0xFF) << 24]
    if op.fmt == "ABx":
        if not 0 <= b <= 0xFFFF:
            raise ValueError(f"{op.name}: operand Bx={b} out of range")
        return [op.code | a << 8 | b << 16]
    if op.fmt == "AsBx":
        if not -0x8000 <= b <= 0x7FFF:
            raise ValueError(f"{op.name}: operand sBx={b} out of range")
        return [op.code | a << 8 | (b & 0xFFFF) << 16]
    imm = b & 0xFFFFFFFFFFFFFFFF
    return [op.code | a << 8, imm & 0xFFFFFFFF, imm >> 32]


class Decoded(NamedTuple):
    """One decoded instruction (a tuple: the verifier and VM decode every word)."""
    op: Op
    a: int
    b: int          # B, Bx, sBx or the 64-bit immediate, by format
    c: int          # C (raw 0..255) for ABC


def sign8(v: int) -> int:
    return v - 256 if v >= 128 else v


def sign64(v: int) -> int:
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >= 1 << 63 else v


def decode_word(word: int) -> tuple[int, int, int, int]:
    """Splits a word into (opcode, A, B, C) without interpreting the format."""
    return word & 0xFF, (word >> 8) & 0xFF, (word >> 16) & 0xFF, (word >> 24) & 0xFF


def decode(code: list[int], pc: int) -> Decoded:
    """Decodes the instruction at pc. The caller has checked the opcode exists
    and, for AX64, that both extension words are present."""
    opcode, a, b, c = decode_word(code[pc])
    op = OPS[opcode]
    if op.fmt == "ABx":
        return Decoded(op, a, code[pc] >> 16, 0)
    if op.fmt == "AsBx":
        sbx = code[pc] >> 16
        return Decoded(op, a, sbx - 0x10000 if sbx >= 0x8000 else sbx, 0)
    if op.fmt == "AX64":
        return Decoded(op, a, sign64(code[pc + 1] | code[pc + 2] << 32), 0)
    return Decoded(op, a, b, c)


def c_context() -> dict:
    """The context the kernel module's Jinja templates render the C tables from."""
    return {"ops": OPS, "builtins": BUILTINS, "variables": VARIABLES, "table_calls": TABLE_CALLS,
            "max_args": MAX_ARGS, "stack_max_depth": STACK_MAX_DEPTH}


def markdown_table() -> str:
    """The opcode reference in docs/bytecode.md is this text (a test keeps it in step)."""
    rows = ["| code | name | format | A | B | C | semantics |", "|---|---|---|---|---|---|---|"]
    for op in OPS:
        c = op.c if op.fmt == "ABC" else ""
        rows.append(f"| {op.code} | {op.name} | {op.fmt} | {op.a} | {op.b} | {c or ''} | "
                    f"{op.doc.replace('|', '/')} |")
    rows += ["", "| id | built-in function | arguments | meaning |", "|---|---|---|---|"]
    for b in BUILTINS:
        rows.append(f"| {b.id} | {b.name} | {b.min_args}..{b.max_args} | {b.doc} |")
    rows += ["", "| id | built-in variable | meaning |", "|---|---|---|"]
    for v in VARIABLES:
        rows.append(f"| {v.id} | {v.name} | {v.doc} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
