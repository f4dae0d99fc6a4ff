"""An eBPF session leaves nothing behind: after a normal exit, Ctrl-C
(SIGINT) and `kill -9` of ktaprun, the kernel holds no BPF program or map,
no kprobe event and no ktapvm module. One boot per target runs all of it;
a count taken while a session runs shows the check can see what it looks for."""

import re
import tempfile
from pathlib import Path

import pytest

from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.boards.batch import run_commands
from ktap.boards.sessions import GUEST_DIR, board_bundle, guest_files
from ktap.core.diagnostics import Source
from ktap.core.targets import target_names
from ktap.core.tools import MissingTool

SCRIPT = """
var n = 0
var s = {}
trace probe:vfs_write { n += 1 }
trace syscalls:sys_enter_getpid { s[execname] += 1 }
tick-100ms { n += 1 }
trace_end { printf("n>0=%s\\n", n > 0) }
"""
RUNNER = f"{GUEST_DIR}/ktaprun"
IMAGE = f"{GUEST_DIR}/clean.kbc"
SESSION = [RUNNER, IMAGE, "--", "ktapw", "sleep", "20000"]
CHECKS = [["ktapw", "bpf-objects"], ["ktapw", "cat", "/sys/kernel/tracing/kprobe_events"],
          ["ktapw", "cat", "/proc/modules"]]


def cleanup_run(target: str):
    image = bc.dump(api.compile_source(Source("clean.kp", SCRIPT), target, backend="ebpf"))
    with tempfile.TemporaryDirectory(prefix="ktap-clean-") as tmp:
        bundle = board_bundle(target, {"clean.kbc": image}, Path(tmp))
        commands = [
            ["ktapw", "both", *SESSION, "::", "ktapw", "after", "3000", "ktapw", "bpf-objects"],
            [RUNNER, IMAGE, "--", "ktapw", "write", "5"], *CHECKS,
            ["ktapw", "intafter", "3000", *SESSION], *CHECKS,
            ["ktapw", "killafter", "3000", *SESSION], *CHECKS,
        ]
        return run_commands(target, commands, extra_files=guest_files(bundle), timeout=300)


@pytest.mark.board
@pytest.mark.ebpf_board
@pytest.mark.parametrize("target", target_names())
def test_ebpf_session_leaves_nothing_behind(target):
    try:
        run = cleanup_run(target)
    except MissingTool as e:
        pytest.skip(str(e))
    out = [(r.status, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"))
           for r in run.results]
    during = re.search(r"progs=(\d+) maps=(\d+)", out[0][1])
    assert during and int(during.group(1)) >= 3 and int(during.group(2)) >= 4, out[0]
    normal, interrupted, killed = out[1], out[5], out[9]
    assert normal[:2] == (0, "n>0=true\n"), normal
    assert interrupted[0] == 0 and "n>0=true" in interrupted[1], interrupted
    assert "killed=1 status=137" in killed[1], killed
    for at in (2, 6, 10):
        objects, kprobes, modules = out[at], out[at + 1], out[at + 2]
        assert objects[:2] == (0, "progs=0 maps=0\n"), (at, objects)
        assert kprobes[0] == 0 and kprobes[1].strip() == "", (at, kprobes)
        assert modules[0] == 0 and "ktapvm" not in modules[1], (at, modules)
