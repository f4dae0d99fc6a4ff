"""Errors of the QEMU boards. They carry the console so far: when a boot
fails, its last lines are usually the only explanation."""
from __future__ import annotations


class BoardError(Exception):
    def __init__(self, message: str, console: str = ""):
        self.console = console
        super().__init__(message)


class BoardTimeout(BoardError):
    pass


def console_tail(console: str, lines: int = 20) -> str:
    return "\n".join("  | " + l for l in console.splitlines()[-lines:])
