"""`--format json` as a user runs it: `ktap board run` on the big-endian mips
board, on both backends, prints the same JSON lines as `ktap sim` does for the
same events (the host's formatter and ktaprun's agree byte for byte)."""

import json
import shutil
import subprocess
import sys

import pytest

SCRIPT = """var t = {}
var h = {}
trace syscalls:sys_enter_getpid /execname == "ktapw"/ {
  t[execname] += 1
  h["n"] <<< 5
}
trace_end {
  print(t)
  hist(h)
  printf("%s \\"%d\\"\\n", "done", 4)
  print(1, nil, true, "tab\\there")
}
"""
EVENTS = '{"probe": "syscalls:sys_enter_getpid", "execname": "ktapw", "repeat": 4}\n'


def ktap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ktap.cli", *args], capture_output=True,
                          text=True, timeout=900)


@pytest.mark.board
@pytest.mark.parametrize("backend", ["ktapvm", "ebpf"])
def test_board_json_lines_equal_the_simulators(backend, tmp_path):
    if shutil.which("qemu-system-mips") is None:
        pytest.skip("qemu-system-mips is not installed (scripts/setup.sh)")
    script = tmp_path / "j.kp"
    script.write_text(SCRIPT)
    events = tmp_path / "events.jsonl"
    events.write_text(EVENTS)
    sim = ktap("sim", "-t", "mips", "--format", "json", "--events", str(events), str(script))
    assert sim.returncode == 0, sim.stderr
    lines = [json.loads(x) for x in sim.stdout.splitlines()]
    assert lines[0] == {"type": "table", "entries": [{"key": "ktapw", "value": 4}]}
    assert lines[1]["entries"][0]["value"]["log2"] == [[4, 4]]
    assert lines[-1] == {"type": "status", "state": "ran", "exit_code": 0, "drops": {}}
    board = ktap("board", "-t", "mips", "run", "--backend", backend, "--format", "json",
                 str(script), "--", "ktapw", "getpid", "4")
    assert (board.returncode, board.stdout) == (0, sim.stdout), board.stderr
