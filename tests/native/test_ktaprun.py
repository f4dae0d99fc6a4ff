"""ktaprun on the host: a native build of its formatter turns record streams from
the C harness into text, byte for byte what refvm's formatter prints, on a
little-endian (arm) and a big-endian (mips) target; the attach table from a
tracefs tree; the static cross builds. tests/board/test_ktaprun_board.py runs
it in the guests."""

from __future__ import annotations

import bisect
import json
import subprocess
from pathlib import Path

import pytest

from conftest import compile_to, cross_build
from ktap.backends.kbc import bytecode as bc
from ktap.build import ktaprun as runner
from ktap.core import tools
from ktap.core.targets import target_names
from ktap.backends.kbc.records import STATE
from ktap.refvm.jsonout import JsonFormatter
from ktap.refvm.output import Formatter
from ktap.refvm.records import decode_records
from ktap.core.diagnostics import RuntimeErr
from ktap.refvm.sim import parse_events, run_sim
from ktapdev import harness as cvm


FORMAT_TARGETS = ["arm", "mips"]          # little and big endian records
BOARD_TARGETS = target_names()        # every targets/*/target.toml
EV = "probe:vfs_write"
needs_cc = pytest.mark.skipif(tools.find_cc() is None, reason="no host C compiler")


# name: (script, events)
SCRIPTS = {
    "printf": ("""
trace_end {
  printf("%5d|%-5d|%x|%X|%#x|%#o|%o|%u|%c|%s|%05d|%+d|% d|%.3d|%8.3x|%-8s|\\n",
         42, -42, 255, 255, 255, 8, 0, -1, 65, "str", 7, 3, 4, 5, 6, "ab")
  printf("%d %i %s %5s %-6s| %.2s %c %d %x\\n", -9223372036854775807 - 1, 0, nil, true,
         false, "abcdef", "zz", "text", "notnum")
  printf("%p %20p %-20p| %#o %#x %+5d %-+5d| %05s|\\n", 4096, -1, 255, 0, 0, -3, 3, "x")
  printf("%s %5s|%-4s|%.1s|%c%c\\n", "h\u00e9llo", "\u00e9", "\udcff\udcc3", "\u00e9x",
         233, 10)
  printf("100%% %d%%\\n", 5)
}
""", []),
    "print_and_dump": ("""
var t = {}
var a = {}
trace probe:vfs_write {
  t[execname] += 1
  t[arg1] = "n" .. arg1
  a["all"] <<< arg1
}
trace_end {
  print(1, "two", nil, true, false, -5, t)
  print(t)
  print(a["all"])
  print(a)
  print()
}
""", [{"probe": EV, "execname": "sh", "args": [3]},
      {"probe": EV, "execname": "ls", "args": [-7], "repeat": 2}]),
    "hist": ("""
var h = {}
trace probe:vfs_write {
  h[execname] <<< arg1
}
trace_end {
  hist(h)
}
""", [{"probe": EV, "execname": "sh", "args": [1]},
      {"probe": EV, "execname": "sh", "args": [1000], "repeat": 7},
      {"probe": EV, "execname": "sh", "args": [0], "repeat": 2},
      {"probe": EV, "execname": "neg", "args": [-3]},
      {"probe": EV, "execname": "neg", "args": [-70000], "repeat": 3},
      {"probe": EV, "execname": "big", "args": [4611686018427387904]},
      {"probe": EV, "execname": "min", "args": [-9223372036854775807]}]),
    "lhist": ("""
var l = {}
var m = {}
trace probe:vfs_write {
  l[execname] <<< arg1
  m["x"] <<< arg2
}
trace_end {
  lhist(l, 0, 100, 10)
  lhist(m, -50, 55, 20)
}
""", [{"probe": EV, "execname": "sh", "args": [5, -100]},
      {"probe": EV, "execname": "sh", "args": [55, 54], "repeat": 4},
      {"probe": EV, "execname": "ls", "args": [-1, 0]},
      {"probe": EV, "execname": "ls", "args": [1000, 7], "repeat": 30}]),
    "print_hist": ("""
var c = {}
var s = {}
var v = {}
trace probe:vfs_write {
  c[execname] += 1
  s[stack(3)] += 1
  v[execname] <<< arg1
}
trace_end {
  print_hist(c)
  print_hist(c, 2)
  print_hist(c, 0)
  print_hist(s)
  print_hist(v)
  print(s)
}
""", [{"probe": EV, "execname": "sh", "stack": [3221225472, 3221225600, 16]},
      {"probe": EV, "execname": "cat", "repeat": 5, "stack": [3221225480, 3221225700]},
      {"probe": EV, "execname": "a-very-long-command-name-beyond-32", "repeat": 5},
      {"probe": EV, "execname": "dd", "repeat": 2, "stack": [4294967295]}]),
    "runtime_error": ("""
trace probe:vfs_write {
  print("before", arg1)
  print(10 / arg1)
}
""", [{"probe": EV, "args": [5]}, {"probe": EV, "args": [0]}, {"probe": EV, "args": [2]}]),
    "drops": ("""
limit table_entries = 2
var t = {}
trace probe:vfs_write {
  t[arg1] = 1
}
trace_end {
  print(len(t))
}
""", [{"probe": EV, "args": [i]} for i in range(6)]),
    "exit": ("""
var n = 0
trace probe:vfs_write {
  n += 1
  if (n == 3) { exit(7) }
}
trace_end {
  printf("n=%d\\n", n)
}
""", [{"probe": EV, "repeat": 10}]),
    "exit_in_trace_end": ("""
var n = 0
trace probe:vfs_write {
  n += 1
}
trace_end {
  printf("n=%d\\n", n)
  exit(n + 1)
}
""", [{"probe": EV, "repeat": 4}]),
}
KALLSYMS = """\
c0000000 T _stext
c0000010 t helper_one
c0000100 T vfs_write
c0000200 D some_data
c0000300 T ksys_write
00001000 T low_text
"""


@pytest.fixture(scope="session")
def builds(tmp_path_factory):
    """(harness, host ktaprun) per target, built once."""
    work = tmp_path_factory.mktemp("ktaprun")
    made = {}

    def get(target: str):
        if target not in made:
            made[target] = (cvm.build_harness(target, work / "kmod", sanitize=False),
                            runner.build_ktaprun(target, work / "runner", host=True))
        return made[target]
    return get


def harness_stream(harness: Path, image: bc.Image, image_path: Path, events: list,
                   tmp: Path) -> bytes:
    """The raw record stream kmod's C core produces for these sim events."""
    ev = parse_events("\n".join(json.dumps(e) for e in events), "ev")
    stream = tmp / "events.stream"
    stream.write_text(cvm.encode_events(image, ev))
    r = subprocess.run([str(harness), "run", str(image_path), str(stream)],
                       capture_output=True, timeout=60)
    assert r.returncode == 0 and not r.stderr, r.stderr
    return r.stdout


def python_symbolizer(text: str):
    """The same rule as kmod/ktaprun/symbols.c, written independently."""
    syms = []
    for line in text.splitlines():
        addr, kind, name = line.split()[:3]
        if kind in "tT" and int(addr, 16):
            syms.append((int(addr, 16), name))
    syms.sort()
    addrs = [a for a, _ in syms]

    def symbolize(addr: int):
        i = bisect.bisect_right(addrs, addr) - 1
        if i < 0:
            return None
        return f"{syms[i][1]}+{addr - syms[i][0]:#x}"
    return symbolize


def expected_text(image: bc.Image, data: bytes, symbolize=None) -> tuple[bytes, bytes, int]:
    records, status = decode_records(data, image.target)
    fmt = Formatter(image, symbolize)
    out = "".join(fmt.render(r) for r in records)
    _, code, err = cvm.session_text(image, records, status)
    return (out.encode("utf-8", "surrogateescape"),
            "".join(line + "\n" for line in err).encode("utf-8", "surrogateescape"), code)


def run_format(exe: Path, records: Path, image_path: Path, *extra: str):
    return subprocess.run([str(exe), *extra, "--format-records", str(records), str(image_path)],
                          capture_output=True, timeout=60)


def script_records(builds, target: str, name: str, tmp_path: Path):
    """A formatter script's records from the C harness, saved to a file:
    (host ktaprun, image, image path, the records, their file)."""
    harness, exe = builds(target)
    text, events = SCRIPTS[name]
    image, image_path = compile_to(tmp_path, name, text, target)
    data = harness_stream(harness, image, image_path, events, tmp_path)
    records = tmp_path / "records.bin"
    records.write_bytes(data)
    return exe, image, image_path, data, records


@needs_cc
@pytest.mark.parametrize("target", FORMAT_TARGETS)
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_formatter_matches_output_py(name, target, builds, tmp_path):
    exe, image, image_path, data, records = script_records(builds, target, name, tmp_path)
    want_out, want_err, want_status = expected_text(image, data)
    r = run_format(exe, records, image_path)
    assert r.stdout == want_out
    assert r.stderr == want_err
    assert r.returncode == want_status


def expected_json(image: bc.Image, data: bytes, symbolize=None) -> bytes:
    records, status = decode_records(data, image.target)
    fmt = JsonFormatter(image, symbolize)
    error = (status.message, status.line, status.col) if status.state == STATE["error"] else None
    out = "".join(fmt.render(r) for r in records) + \
        JsonFormatter.status(status.state, status.exit_code, status.drops, error)
    return out.encode("utf-8", "surrogateescape")


@needs_cc
@pytest.mark.parametrize("target", FORMAT_TARGETS)
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_json_lines_match_jsonout_py(name, target, builds, tmp_path):
    exe, image, image_path, data, records = script_records(builds, target, name, tmp_path)
    want = expected_json(image, data)
    r = run_format(exe, records, image_path, "--format", "json")
    assert r.stdout == want
    _, want_err, want_status = expected_text(image, data)
    assert (r.stderr, r.returncode) == (want_err, want_status)
    lines = [json.loads(line) for line in r.stdout.decode("utf-8", "replace").splitlines()]
    assert lines[-1]["type"] == "status" and all("type" in x for x in lines)


@needs_cc
@pytest.mark.parametrize("name", ["exit", "runtime_error", "exit_in_trace_end", "drops"])
def test_json_status_matches_the_simulators_session(name, builds, tmp_path):
    """The status object's state and exit code come from the session's rules
    (exit() before trace_end still ends "ran"), which sim and kmod's core keep."""
    events = SCRIPTS[name][1]
    exe, image, image_path, _, records = script_records(builds, "arm", name, tmp_path)
    parts = []
    try:
        run_sim(image, parts.append, None, parse_events("\n".join(json.dumps(e) for e in events),
                                                         "ev"), as_json=True)
    except RuntimeErr:
        pass
    r = run_format(exe, records, image_path, "--format", "json")
    assert r.stdout.decode() == "".join(parts)


@needs_cc
@pytest.mark.parametrize("target", FORMAT_TARGETS)
def test_stacks_and_pointers_symbolised_like_output_py(target, builds, tmp_path):
    harness, exe = builds(target)
    text, events = SCRIPTS["print_hist"]
    text = text.replace("print(s)", 'print(s)\n  printf("%p|%30p|%-30p|%p\\n", '
                        "3221225744, 3221226240, 16, 3221226000)")
    image, image_path = compile_to(tmp_path, "syms", text, target)
    data = harness_stream(harness, image, image_path, events, tmp_path)
    (tmp_path / "records.bin").write_bytes(data)
    (tmp_path / "kallsyms").write_text(KALLSYMS)
    want_out, _, _ = expected_text(image, data, python_symbolizer(KALLSYMS))
    assert b"vfs_write+0x10" in want_out and b"_stext+0x" in want_out
    r = run_format(exe, tmp_path / "records.bin", image_path, "-k", str(tmp_path / "kallsyms"))
    assert r.stdout == want_out


@needs_cc
def test_records_are_read_in_the_image_byte_order(builds, tmp_path):
    """The same session on mips and arm: different bytes, the same text."""
    text, events = SCRIPTS["hist"]
    outs = {}
    for target in FORMAT_TARGETS:
        harness, exe = builds(target)
        image, image_path = compile_to(tmp_path, "h", text, target)
        data = harness_stream(harness, image, image_path, events, tmp_path)
        (tmp_path / f"{target}.bin").write_bytes(data)
        outs[target] = (data, run_format(exe, tmp_path / f"{target}.bin", image_path).stdout)
    assert outs["arm"][0] != outs["mips"][0]
    assert outs["arm"][1] == outs["mips"][1] and b"Distribution" in outs["arm"][1]


@needs_cc
def test_host_build_refuses_to_run_sessions_and_bad_input(builds, tmp_path):
    _, exe = builds("arm")
    image, image_path = compile_to(tmp_path, "e", SCRIPTS["exit"][0], "arm")
    r = subprocess.run([str(exe), str(image_path)], capture_output=True)
    assert r.returncode == 2 and b"only formats records" in r.stderr
    r = subprocess.run([str(exe), "--bogus"], capture_output=True)
    assert r.returncode == 2 and b"usage:" in r.stderr
    r = subprocess.run([str(exe), str(image_path), "ktapw"], capture_output=True)
    assert r.returncode == 2 and b"'--'" in r.stderr
    (tmp_path / "junk.bin").write_bytes(b"\x00\x00\x00\x09\x01abcd")
    r = run_format(exe, tmp_path / "junk.bin", image_path)
    assert r.returncode == 1 and b"malformed" in r.stderr
    _, mips_image = compile_to(tmp_path, "m", SCRIPTS["exit"][0], "mips")
    r = run_format(exe, tmp_path / "junk.bin", mips_image)
    assert r.returncode == 1 and b"mips" in r.stderr and b"arm" in r.stderr
    r = subprocess.run([str(exe), "--version"], capture_output=True)
    assert r.returncode == 0 and r.stdout.startswith(b"ktaprun ") and b"arm" in r.stdout
SCHED_SWITCH_FORMAT = """\
name: sched_switch
ID: 316
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:unsigned long args[6];\toffset:28;\tsize:24;\tsigned:0;
\tfield:__data_loc char[] name;\toffset:52;\tsize:4;\tsigned:0;
\tfield:const char * ptr;\toffset:56;\tsize:4;\tsigned:0;

print fmt: "prev_comm=%s", REC->prev_comm
"""


def fake_tracefs(root: Path) -> Path:
    for sub, ev, ident in (("sched", "sched_switch", 316), ("sched", "sched_wakeup", 317),
                           ("irq", "irq_handler_entry", 40)):
        d = root / "events" / sub / ev
        d.mkdir(parents=True)
        (d / "id").write_text(f"{ident}\n")
        fmt = SCHED_SWITCH_FORMAT.replace("sched_switch", ev).replace("ID: 316", f"ID: {ident}")
        (d / "format").write_text(fmt)
    (root / "events" / "enable").write_text("0\n")
    (root / "available_filter_functions").write_text(
        "vfs_write\nvfs_read\nvfs_writev [ext4]\nksys_write\nvfs_write\n")
    return root


@needs_cc
def test_attach_table_from_tracefs(builds, tmp_path):
    """--resolve on a fake tracefs: globs, ids, field layouts, the named map."""
    _, exe = builds("arm")
    root = fake_tracefs(tmp_path / "tracefs")
    script = """
trace sched:sched_sw* { print(args.prev_pid, args.nope, args.name) }
trace probe:vfs_w* { }
trace probe:do_sys_open+8 { }
trace probe:ksys_write%return { }
tick-1s { }
"""
    _, image_path = compile_to(tmp_path, "att", script, "arm")
    env = {"KTAPRUN_TRACEFS": str(root), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([str(exe), "--resolve", str(image_path)], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        # common_* fields and the unsigned long[6] array are left out
        "0 tracepoint sched:sched_switch id=316 fields=8:16:str,24:4:s,52:4:loc,56:4:u "
        "named=1,-1,2",
        "1 kprobe vfs_write",
        "1 kprobe vfs_writev",
        "2 kprobe do_sys_open +0x8",
        "3 kretprobe ksys_write",
    ]
    _, none = compile_to(tmp_path, "none", "trace irq:softirq_* { }\n", "arm")
    r = subprocess.run([str(exe), "--resolve", str(none)], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 1
    assert "probe 'irq:softirq_*' matches no tracepoint" in r.stderr


# -- boards -------------------------------------------------------------------


def _file_type(path: Path) -> str:
    try:
        return subprocess.run(["file", "-b", str(path)], capture_output=True,
                              text=True).stdout
    except FileNotFoundError:
        return ""


@pytest.mark.parametrize("target", BOARD_TARGETS)
def test_cross_build_is_static_and_small(target, tmp_path):
    exe = cross_build(target, tmp_path)
    kind = _file_type(exe)
    if kind:
        assert "statically linked" in kind or "static-pie" in kind, kind
    assert exe.stat().st_size < 1_500_000
    print(f"ktaprun {target}: {exe.stat().st_size} bytes stripped")


@needs_cc
def test_user_probes_check_the_file_and_the_kernel(builds, tmp_path):
    """--resolve with user probes: a file that is not the host copy the probe
    was resolved in is refused with both build-ids, before anything is defined;
    a kernel without uprobe_events gets the options it needs."""
    import shutil

    from ktap import api
    from ktap.backends.kbc import bytecode as bc
    from ktap.boards.initramfs import guest_sysroot
    from ktap.core.diagnostics import Source
    from ktap.core.targets import get_target
    from ktap.symbols.userelf import open_user_elf
    _, exe = builds("x86_64")
    board = tmp_path / "board"                 # the "board's" file, at an absolute path
    board.mkdir()
    shutil.copyfile(guest_sysroot("x86_64") / "bin" / "ktapw", board / "ktapw")
    sysroot = tmp_path / "sysroot"
    host_copy = sysroot / str(board / "ktapw").lstrip("/")
    host_copy.parent.mkdir(parents=True)
    data = (board / "ktapw").read_bytes()
    elf = open_user_elf(sysroot.parent / "board", "/ktapw", get_target("x86_64"))
    bid = bytes.fromhex(elf.build_id)
    elf.close()
    host_copy.write_bytes(data.replace(bid, bytes([bid[0] ^ 1]) + bid[1:]))
    src = Source("u.kp", f"trace probe:{board}/ktapw:ktapw_tick {{ }}\n")
    image = tmp_path / "u.kbc"
    image.write_bytes(bc.dump(api.compile_source(src, "x86_64", sysroot=str(sysroot))))
    root = fake_tracefs(tmp_path / "tracefs")
    env = {"KTAPRUN_TRACEFS": str(root), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([str(exe), "--resolve", str(image)], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 1
    other = (bytes([bid[0] ^ 1]) + bid[1:]).hex()
    assert f"has build-id {bid.hex()}, the host copy's {other}" in r.stderr, r.stderr
    assert not (root / "uprobe_events").exists()   # nothing was defined
    # the same file as the board's: now the kernel lacks uprobe_events
    host_copy.write_bytes(data)
    image.write_bytes(bc.dump(api.compile_source(src, "x86_64", sysroot=str(sysroot))))
    r = subprocess.run([str(exe), "--resolve", str(image)], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 1
    assert "user probes need CONFIG_UPROBES and CONFIG_UPROBE_EVENTS" in r.stderr, r.stderr
