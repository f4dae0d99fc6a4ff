"""Targets whose eBPF JIT lacks instructions (`[bpf_jit] lacks` in
target.toml): a counting script, which the compiler keeps free of them, loads
with the JIT on and counts exactly; a script that needs one is refused with
ktaprun's explanation, which names the sysctl, and then runs with the JIT off.
One boot per such target."""

import tempfile
from pathlib import Path

import pytest

from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.boards.batch import run_commands
from ktap.boards.sessions import GUEST_DIR, board_bundle, guest_files
from ktap.core.diagnostics import Source
from ktap.core.targets import all_targets
from ktap.core.tools import MissingTool
from ktapdev.boardtest import JIT_SYSCTL

GAPPY = [t.name for t in all_targets().values() if t.bpf_jit_lacks]
WRITES = 7
COUNT = """var s = {}
var n = 0
trace syscalls:sys_enter_write /execname == "ktapw"/ { s[execname] += 1
  n += 1 }
trace_end { printf("%d %d\\n", s["ktapw"], n) }
"""
SHARED = """var n = 0
trace syscalls:sys_enter_write /execname == "ktapw"/ { n += 1
  if (n > 1000) { exit() } }
trace_end { printf("%d\\n", n) }
"""


def jit_run(target: str):
    images = {f"{name}.kbc": bc.dump(api.compile_source(Source(f"{name}.kp", text), target,
                                                        backend="ebpf"))
              for name, text in (("count", COUNT), ("shared", SHARED))}
    run = [f"{GUEST_DIR}/ktaprun"]
    write = ["--", "ktapw", "write", str(WRITES)]
    with tempfile.TemporaryDirectory(prefix="ktap-jit-") as tmp:
        bundle = board_bundle(target, images, Path(tmp))
        commands = [["ktapw", "write-file", JIT_SYSCTL, "1"],
                    [*run, f"{GUEST_DIR}/count.kbc", *write],
                    [*run, f"{GUEST_DIR}/shared.kbc", *write],
                    ["ktapw", "write-file", JIT_SYSCTL, "0"],
                    [*run, f"{GUEST_DIR}/shared.kbc", *write]]
        return run_commands(target, commands, extra_files=guest_files(bundle), timeout=300)


@pytest.mark.board
@pytest.mark.parametrize("target", GAPPY)
def test_jit_gaps_are_avoided_or_explained(target):
    try:
        run = jit_run(target)
    except MissingTool as e:
        pytest.skip(str(e))
    out = [(r.status, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"))
           for r in run.results]
    assert len(out) == 5, run.console[-2000:]
    assert out[0][0] == 0, out[0]
    assert out[1][:2] == (0, f"{WRITES} {WRITES}\n"), out[1]
    status, stdout, stderr = out[2]
    assert status != 0 and stdout == "", out[2]
    assert "eBPF JIT could not compile the program" in stderr, stderr
    assert "net.core.bpf_jit_enable" in stderr, stderr
    assert out[4][:2] == (0, f"{WRITES}\n"), out[4]
