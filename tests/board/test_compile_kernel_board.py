"""`ktap compile/check --vmlinux/--system-map/--profile`: probes checked against
one kernel offline, errors at the probe's location, globs expanded."""

import pytest

from conftest import board_vmlinux, compile_with
from ktap.boards.profile import board_profile
from ktap.core.diagnostics import KtapError


@pytest.mark.board
def test_missing_tracepoint_field_with_profile():
    board_vmlinux()
    p = board_profile("arm")       # recorded from the board once, then cached
    with pytest.raises(KtapError, match="has no field 'cnt'"):
        compile_with("trace syscalls:sys_enter_write { print(args.cnt) }", profile=str(p.path))
    compile_with("trace syscalls:sys_enter_write { print(args.count) }", profile=str(p.path))
