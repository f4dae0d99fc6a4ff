"""Errors users see: `file:line:col: error: message`, the source line and a caret."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    name: str
    text: str

    def line_text(self, line: int) -> str:
        lines = self.text.splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else ""


@dataclass(frozen=True)
class Loc:
    line: int
    col: int


class KtapError(Exception):
    """Every error the toolchain reports to a user. `exit_status` is the CLI's."""

    exit_status = 1
    kind = "error"

    def __init__(self, message: str, source: Source | None = None, loc: Loc | None = None,
                 filename: str | None = None):
        super().__init__(message)
        self.message = message
        self.source = source
        self.loc = loc
        self.filename = filename or (source.name if source else None)

    def render(self) -> str:
        where = self.filename or "ktap"
        if self.loc is not None:
            where += f":{self.loc.line}:{self.loc.col}"
        out = f"{where}: {self.kind}: {self.message}"
        if self.source is not None and self.loc is not None:
            text = self.source.line_text(self.loc.line).expandtabs(1)
            if text:
                out += f"\n{text}\n{' ' * (max(self.loc.col, 1) - 1)}^"
        return out

    def __str__(self) -> str:
        return self.render()


class SyntaxErr(KtapError):
    pass


class SemanticError(KtapError):
    pass


class VerifyError(KtapError):
    """A bytecode image refused by the verifier. `reason` is a stable code
    shared with the kernel's verifier (see docs/bytecode.md)."""

    def __init__(self, reason: str, message: str, proto: str | None = None,
                 pc: int | None = None, **kw):
        self.reason = reason
        self.proto = proto
        self.pc = pc
        where = ""
        if proto is not None:
            where = f"function '{proto}'" + (f" pc {pc}" if pc is not None else "") + ": "
        super().__init__(f"verifier: {reason}: {where}{message}", **kw)


class ImageError(KtapError):
    """A KBC image that cannot be read (bad header, truncated, wrong target)."""


class RuntimeErr(KtapError):
    """A script runtime error: stops the session, never the host or the kernel."""

    exit_status = 3
    kind = "runtime error"


class UsageError(KtapError):
    exit_status = 2


class TargetError(Exception):
    """An unknown target or a malformed targets/<name>/target.toml (a usage error)."""
