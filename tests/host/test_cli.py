"""The `ktap` command as a user runs it: exit codes, messages, no tracebacks."""

import argparse
import importlib
import json
import subprocess
import sys

import pytest

from ktap import api

from conftest import ROOT
from ktap.cli import main


KTAP = [sys.executable, "-m", "ktap.cli"]


def run(*args, cwd=None, input=None):
    return subprocess.run(KTAP + list(args), capture_output=True, text=True, cwd=cwd, input=input)


def test_help_lists_commands():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("compile", "check", "disasm", "sim", "targets"):
        assert cmd in r.stdout


def test_compile_disasm_roundtrip(tmp_path):
    out = tmp_path / "c.kbc"
    r = run("compile", "-t", "powerpc", str(ROOT / "samples" / "count_writes.kp"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    r = run("disasm", "--verify", str(out))
    assert r.returncode == 0
    assert "powerpc (big-endian, 32-bit)" in r.stdout and "TADDI" in r.stdout
    assert "; verifier: ok" in r.stdout


def test_compile_inline_program(tmp_path):
    out = tmp_path / "e.kbc"
    r = run("compile", "-t", "arm", "-e", "trace probe:vfs_write { print(arg3) }", "-o", str(out))
    assert r.returncode == 0 and out.stat().st_size > 40


def test_syntax_error_exit_1_with_location(tmp_path):
    bad = tmp_path / "bad.kp"
    bad.write_text("var x = 1\ntrace probe:f {\n  x = = 2\n}\n")
    r = run("check", str(bad))
    assert r.returncode == 1
    assert r.stderr.startswith(f"{bad}:3:7: error: expected an expression")
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines()[-1] == "      ^"


def test_usage_errors_exit_2(tmp_path):
    assert run("compile").returncode == 2
    assert run("compile", "-t", "sparc", "-e", "var x").returncode == 2
    assert run("nonsense").returncode == 2
    r = run("check", "-e", "var x", "--limit", "budget=lots")
    assert r.returncode == 2 and "integer" in r.stderr
    r = run("check", "-e", "var x", "--limit", "speed=1")
    assert r.returncode == 2 and "unknown limit" in r.stderr


def test_missing_files_are_clean_errors(tmp_path):
    r = run("check", str(tmp_path / "nope.kp"))
    assert r.returncode == 1 and "cannot read script" in r.stderr and "Traceback" not in r.stderr
    r = run("disasm", str(tmp_path / "nope.kbc"))
    assert r.returncode == 1 and "cannot read image" in r.stderr


def test_disasm_of_garbage(tmp_path):
    g = tmp_path / "g.kbc"
    g.write_bytes(b"\x1bKBC\x01\x02\x00\x04garbage")
    r = run("disasm", str(g))
    assert r.returncode == 1 and "bad image" in r.stderr and "Traceback" not in r.stderr


def test_sim_runtime_error_exit_3():
    r = run("sim", "-e", "var x = 0\nprint(1 / x)")
    assert r.returncode == 3
    assert r.stderr.startswith("<command line>:2:9: runtime error: division by zero")


def test_sim_exit_code_and_events(tmp_path):
    ev = tmp_path / "e.jsonl"
    ev.write_text('{"probe": "probe:f", "repeat": 3}\n')
    r = run("sim", "-e", "var n = 0\ntrace probe:f { n += 1 }\ntrace_end { print(n)\n exit(n) }",
            "--events", str(ev))
    assert (r.returncode, r.stdout) == (3, "3\n")


def test_sim_bad_events_file(tmp_path):
    ev = tmp_path / "e.jsonl"
    ev.write_text('{"probe": "probe:f"}\n{"probe": 5}\n')
    r = run("sim", "-e", "trace probe:f { }", "--events", str(ev))
    assert r.returncode == 1 and f"{ev}:2" in r.stderr and "probe" in r.stderr


def test_sim_runs_a_compiled_image(tmp_path):
    out = tmp_path / "h.kbc"
    assert run("compile", "-t", "mips", str(ROOT / "samples" / "hello.kp"), "-o", str(out)).returncode == 0
    r = run("sim", str(out))
    assert (r.returncode, r.stdout) == (0, "hello from ktap\n")


def test_drops_reported_at_exit():
    r = run("sim", "-e", "var t = {}\ntrace probe:f { t[arg1] = 1 }", "--limit", "table_entries=1",
            "--events", "/dev/stdin", input='{"probe": "probe:f", "args": [1]}\n{"probe": "probe:f", "args": [2]}\n')
    assert r.returncode == 0 and "ktap: 1 events dropped (table full)" in r.stderr


def test_targets_lists_every_target():
    r = run("targets")
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert names == sorted(["x86_64", "arm", "mips", "powerpc", "arm64"])
    assert "big-endian" in r.stdout
    assert "arm64    little-endian 64-bit  ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-" in r.stdout


def test_help_imports_no_command_module():
    """`ktap --help` must stay cheap: no compiler, QEMU, symbol or transport code."""
    code = ("import sys; from ktap.cli.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('ktap.') and m not in "
            "('ktap.cli', 'ktap.cli.main', 'ktap.core', 'ktap.core.diagnostics')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("command", ["compile", "board", "symbols", "target", "run"])
def test_command_table_matches_the_module_that_registers_it(command):
    """The help line `ktap --help` shows (main.COMMANDS) is the module's own."""
    module, help_line = next((m, h) for c, m, h in main.COMMANDS if c == command)
    sub = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(module).register(sub)
    shown = {a.dest: a.help for a in sub._choices_actions}
    assert shown[command] == help_line
    assert set(shown) == {c for c, m, _ in main.COMMANDS if m == module}


def test_sim_json_lines_end_with_the_status(tmp_path):
    events = tmp_path / "ev.jsonl"
    events.write_text('{"probe": "probe:vfs_write", "args": [4], "execname": "sh"}\n'
                      '{"probe": "probe:vfs_write", "args": [0]}\n')
    r = run("sim", "--format", "json", "--events", str(events), "-e",
            'var t = {}\ntrace probe:vfs_write { t[execname] = 10 / arg1 }\n'
            'trace_end { print(t) }')
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    # the runtime error: no trace_end output, the status says where, stderr too
    assert lines == [{"type": "status", "state": "error", "exit_code": 0, "drops": {},
                      "error": {"message": "division by zero", "line": 2, "col": 42}}]
    assert r.returncode == 3 and "runtime error: division by zero" in r.stderr
    # exit() in the setup code: trace_end still runs, and ends the session ("ran")
    r = run("sim", "--format", "json", "-e", 'print("a\\tb", 3)\nexit(4)')
    assert [json.loads(x) for x in r.stdout.splitlines()] == [
        {"type": "print", "values": ["a\tb", 3]},
        {"type": "status", "state": "ran", "exit_code": 4, "drops": {}}]
    assert r.returncode == 4
    r = run("sim", "--format", "json", "-e", "trace_end { exit(2) }")
    assert json.loads(r.stdout) == {"type": "status", "state": "exit", "exit_code": 2,
                                    "drops": {}}
    r = run("sim", "--format", "yaml", "-e", "print(1)")
    assert r.returncode == 2 and "invalid choice: 'yaml'" in r.stderr


def test_run_commands_leave_the_probe_check_to_the_board():
    heard = []
    text = "trace probe:vfs_write { }"
    api.compile_source(api.Source("t.kp", text), "arm", warn=heard.append, checked_later=True)
    assert heard == []
    api.compile_source(api.Source("t.kp", text), "arm", warn=heard.append)
    assert heard and "not checked against a kernel" in heard[0]
