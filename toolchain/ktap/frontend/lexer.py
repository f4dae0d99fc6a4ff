"""Lexer: source text to tokens, scanned on demand so the parser can switch to
probe-spec mode after `trace` (specs such as `syscalls:sys_enter_*` or
`probe:vfs_write%return` are not ordinary tokens)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ktap.core.diagnostics import Loc, Source, SyntaxErr

KEYWORDS = {
    "var", "function", "if", "elseif", "else", "while", "for", "in", "break",
    "return", "trace", "trace_end", "nil", "true", "false", "limit",
}

# Longest first, so that `<<<` wins over `<=` and `<`.
OPERATORS = sorted([
    "<<<", "==", "!=", "<=", ">=", "&&", "||", "..", "+=", "-=",
    "+", "-", "*", "/", "%", "<", ">", "!", "=", "(", ")", "{", "}", "[", "]",
    ",", ".", ";", ":",
], key=len, reverse=True)

ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'", "0": "\0", "r": "\r"}

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"0[xX][0-9A-Fa-f]+|[0-9]+")
_TIMER = re.compile(r"(tick|profile)-([0-9]+)(ns|us|ms|s)?\b")
_SPEC = re.compile(r"[A-Za-z0-9_*?.:+%\[\]-]+")
# A user-space probe names a file: `probe:/lib/libc.so.6:malloc`. Only there
# may a spec hold '/', which elsewhere opens the filter (`trace E /pid == 1/`).
_USER_SPEC = re.compile(r"(?:probe|uprobe|uretprobe|sdt|usdt):/[^\s:{}]*(?::[A-Za-z0-9_*?.:+%$\[\]-]*)?")
# One alternation, longest operator first: a single match instead of a loop of
# startswith() calls per token (the lexer is the compiler's hottest loop).
_OPERATOR = re.compile("|".join(re.escape(op) for op in OPERATORS))
_SPACE = re.compile(r"[ \t\r\f\v]+|#[^\n]*")

INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class Token:
    kind: str          # "name", "number", "string", "op", "kw", "eof", "spec", "timer"
    value: object
    loc: Loc

    def is_op(self, *ops: str) -> bool:
        return self.kind == "op" and self.value in ops

    def is_kw(self, *kws: str) -> bool:
        return self.kind == "kw" and self.value in kws


class Lexer:
    def __init__(self, source: Source):
        self.src = source
        self.text = source.text
        self.pos = 0
        self.line = 1
        self.line_start = 0
        self._peeked: Token | None = None

    # -- positions -------------------------------------------------------
    def _loc(self, pos: int | None = None) -> Loc:
        pos = self.pos if pos is None else pos
        return Loc(self.line, pos - self.line_start + 1)

    def error(self, msg: str, loc: Loc) -> SyntaxErr:
        return SyntaxErr(msg, self.src, loc)

    def _skip_space(self) -> None:
        text, n = self.text, len(self.text)
        while self.pos < n:
            if text[self.pos] == "\n":
                self.pos += 1
                self.line += 1
                self.line_start = self.pos
                continue
            m = _SPACE.match(text, self.pos)
            if m is None:
                return
            self.pos = m.end()

    # -- token stream ----------------------------------------------------
    def peek(self) -> Token:
        if self._peeked is None:
            self._peeked = self._scan()
        return self._peeked

    def next(self) -> Token:
        tok = self.peek()
        self._peeked = None
        return tok

    def _scan(self) -> Token:
        self._skip_space()
        if self.pos >= len(self.text):
            return Token("eof", None, self._loc())
        loc = self._loc()
        c = self.text[self.pos]
        if (c.isascii() and c.isalpha()) or c == "_":
            m = _TIMER.match(self.text, self.pos)
            if m:
                self.pos = m.end()
                return Token("timer", m.group(0), loc)
            m = _NAME.match(self.text, self.pos)
            self.pos = m.end()
            word = m.group(0)
            return Token("kw" if word in KEYWORDS else "name", word, loc)
        if c in "0123456789":
            return self._number(loc)
        if c in "\"'":
            return self._string(loc)
        m = _OPERATOR.match(self.text, self.pos)
        if m:
            self.pos = m.end()
            return Token("op", m.group(0), loc)
        raise self.error(f"unexpected character {c!r}", loc)

    def _number(self, loc: Loc) -> Token:
        m = _NUMBER.match(self.text, self.pos)
        end = m.end()
        if end < len(self.text) and (self.text[end].isascii() and self.text[end].isalnum()
                                     or self.text[end] == "_"):
            raise self.error(f"malformed number '{self.text[self.pos:end + 1]}'", loc)
        self.pos = end
        text = m.group(0)
        value = int(text[2:], 16) if text[:2] in ("0x", "0X") else int(text, 10)
        is_hex = text[:2] in ("0x", "0X")
        if value > (0xFFFFFFFFFFFFFFFF if is_hex else INT64_MAX + 1):
            raise self.error(f"integer literal {m.group(0)} does not fit in 64 bits", loc)
        if is_hex and value > INT64_MAX:
            value -= 1 << 64          # hex literals are 64-bit patterns: 0xff..ff is -1
        # 9223372036854775808 stays out of range here: only unary minus accepts it.
        return Token("number", value, loc)

    def _string(self, loc: Loc) -> Token:
        quote = self.text[self.pos]
        self.pos += 1
        out = []
        n = len(self.text)
        while True:
            if self.pos >= n or self.text[self.pos] == "\n":
                raise self.error("unterminated string", loc)
            c = self.text[self.pos]
            if c == quote:
                self.pos += 1
                return Token("string", "".join(out), loc)
            if c == "\\":
                if self.pos + 1 >= n:
                    raise self.error("unterminated string", loc)
                e = self.text[self.pos + 1]
                if e not in ESCAPES:
                    raise self.error(f"unknown escape sequence '\\{e}'", self._loc())
                out.append(ESCAPES[e])
                self.pos += 2
            else:
                out.append(c)
                self.pos += 1

    # -- probe specs -----------------------------------------------------
    def spec(self) -> Token:
        """Reads a raw probe spec (`subsys:event`, `probe:sym+0x10`, globs)."""
        assert self._peeked is None, "spec() must follow next(), not peek()"
        self._skip_space()
        loc = self._loc()
        m = _USER_SPEC.match(self.text, self.pos) or _SPEC.match(self.text, self.pos)
        if not m:
            raise self.error("expected a probe specification after 'trace'", loc)
        self.pos = m.end()
        return Token("spec", m.group(0), loc)
