"""Differential and corpus tests of ktapvm's C core (kmod/) against the Python
reference: the verifier must accept and refuse the same images for the same
reason, and sessions must print the same text and end with the same status as
`ktap sim`. The C side is built per target with the system cc, with
AddressSanitizer and UBSan when they link here."""

from __future__ import annotations

import copy
import json
import random
import subprocess
from pathlib import Path

import pytest

from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.backends.kbc import opcodes
from ktap.backends.kbc.verifier import verify
from ktap.build.render import CORE_SOURCES, render
from ktap.core import tools
from ktap.core.diagnostics import ImageError, Source, VerifyError
from ktap.core.paths import KMOD_DIR
from ktap.events import kinds
from ktap.frontend import builtins, program
from ktap.refvm.sim import parse_events
from ktapdev import harness as cvm


TARGETS = ["arm", "mips", "x86_64"]       # little/big endian, 32/64-bit words

pytestmark = pytest.mark.skipif(tools.find_cc() is None,
                                reason="no C compiler (cc/gcc/clang) to build the C core")


@pytest.fixture(scope="session")
def harness(tmp_path_factory):
    build = tmp_path_factory.mktemp("kmod")
    built = {}

    def get(target: str) -> Path:
        if target not in built:
            built[target] = cvm.build_harness(target, build, sanitize=True)
        return built[target]
    return get


# -- differential sessions ----------------------------------------------------
EV = "probe:vfs_write"
SCRIPTS = {
    "arith": ("""
trace_end {
  var a = 9223372036854775807
  var m = -9223372036854775807 - 1
  print(a + 1, a * 2, -a - 2, 7 / -2, -7 / 2, 7 % -3, -7 % 3, 6 * -7)
  print(m / -1, m % -1, -m, m - 1, 123456789012 * 1000003)
  print(1 < 2, "a" < "b", "ab" <= "a", 3 == 3, "x" != "x", nil == nil, !nil, !0)
  printf("%5d|%-5d|%x|%o|%u|%c|%s|%05d|%+d\\n", 42, -42, 255, 8, -1, 65, "str", 7, 3)
}
""", []),
    "strings": ("""
limit string_size = 16
trace_end {
  var s = "0123456789"
  var t = s .. s .. s
  print(t, len(t), len(s .. 7), "n=" .. -42)
  var u = ""
  for (i = 1, 30) { u = u .. "x" }
  print(u, len(u), u == "xxxxxxxxxxxxxxxx")
}
""", []),
    "tables": ("""
var t = {}
trace_end {
  t["a"] = 1
  t["b"] = 2
  t["c"] = 3
  t["d"] = 4
  delete(t, "b")
  delete(t, "d")
  t["e"] = 5
  t[7] = "seven"
  t["f"] = 6
  for (k, v in pairs(t)) { print(k, v) }
  print(len(t), t["a"], t["zz"])
  t["a"] = nil
  t[8] = 8
  print(t)
  delete(t)
  t["y"] = 1
  t["z"] = 2
  print(t)
}
""", []),
    "functions": ("""
function add(a, b) { return a + b }
function fact(n, acc) { if (n <= 1) { return acc } return acc * n }
function twice(x) { return add(x, x) }
function tail(x) { return twice(x) }
trace_end {
  var s = 0
  for (i = 1, 10) { s = add(s, i) }
  print(s, fact(5, 2), tail(21))
  var n = 0
  while (n < 5) { n += 1 }
  print(n)
}
""", []),
    "stats": ("""
var h = {}
var c = {}
var l = {}
trace probe:vfs_write {
  h[execname] <<< arg1
  c[execname] += 1
  l["all"] <<< arg2
}
trace_end {
  print(count(h["sh"]), sum(h["sh"]), min(h["sh"]), max(h["sh"]), avg(h["sh"]))
  print(count(h["none"]), sum(h["none"]), min(h["none"]), avg(h["none"]))
  hist(h)
  lhist(l, 0, 100, 10)
  print_hist(c)
  print_hist(c, 1)
  print(c)
  print(h["sh"])
}
""", [
        {"probe": EV, "execname": "sh", "args": [1, 5]},
        {"probe": EV, "execname": "sh", "args": [1000, 55]},
        {"probe": EV, "execname": "sh", "args": [-3, 250], "repeat": 3},
        {"probe": EV, "execname": "ls", "args": [0, -1]},
        {"probe": EV, "execname": "cat", "args": [70000, 99], "repeat": 2},
    ]),
    # the C core keeps a shard per CPU (4 in the harness, cpu mod 4) and merges
    # on read: minima, maxima, sums and buckets from different CPUs, an
    # entry made on one CPU and fed on others, and the setup chunk's shard
    "percpu": ("""
var a = {}
var l = {}
a["setup"] <<< 7
trace probe:vfs_write {
  a[execname] <<< arg1
  a["setup"] <<< arg1
  l[cpu % 2] <<< arg2
}
trace_end {
  a["setup"] <<< -1
  print(count(a["sh"]), sum(a["sh"]), min(a["sh"]), max(a["sh"]), avg(a["sh"]))
  print(count(a["setup"]), min(a["setup"]), max(a["setup"]))
  hist(a)
  lhist(l, 0, 100, 10)
  print(a)
}
""", [
        {"probe": EV, "execname": "sh", "cpu": 3, "args": [5, 10]},
        {"probe": EV, "execname": "sh", "cpu": 1, "args": [-40, 20]},
        {"probe": EV, "execname": "sh", "cpu": 6, "args": [1000, 95], "repeat": 2},
        {"probe": EV, "execname": "ls", "cpu": 0, "args": [3, 150]},
        {"probe": EV, "execname": "sh", "cpu": 2, "args": [-9000, -5]},
        {"probe": EV, "execname": "ls", "cpu": 7, "args": [2, 55], "repeat": 3},
    ]),
    "context": ("""
trace probe:vfs_write {
  printf("%d %d %d %d %s %s %d %d\\n", pid, tid, uid, cpu, execname, probename, arg1, arg3)
  print(kernel_string(arg2), user_string(arg2), gettimeofday_us())
  print(stack(2))
}
trace probe:vfs_write%return {
  print("ret", retval)
}
trace sched:sched_switch {
  print(args.prev_comm, args.next_pid, arg1, arg2, arg5)
}
""", [
        {"memory": {"4096": "kernel text"}, "user_memory": {"4096": "user text"}},
        {"probe": EV, "pid": 10, "tid": 11, "uid": 1000, "cpu": 1, "execname": "bash",
         "args": [5, 4096], "stack": [4294967295, 16, 32], "time_ns": 5000000},
        {"probe": EV, "args": [1, 8]},
        {"probe": "probe:vfs_write%return", "retval": -14},
        {"probe": "sched:sched_switch", "fields": {"prev_comm": "swapper", "next_pid": 42}},
    ]),
    "budget": ("""
limit budget = 500
trace probe:vfs_write {
  var i = 0
  while (1) { i += 1 }
}
""", [{"probe": EV}]),
    "divzero": ("""
trace probe:vfs_write {
  print("before")
  print(10 / arg1)
}
""", [{"probe": EV, "args": [5]}, {"probe": EV, "args": [0]}, {"probe": EV, "args": [2]}]),
    "modzero": ("""
trace_end { print(7 % (1 - 1)) }
""", []),
    "typeerror": ("""
trace_end { print("x" + 1) }
""", []),
    "tablefull": ("""
limit table_entries = 4
var s = {}
trace probe:vfs_write { s[arg1] = arg1 * 10 }
trace_end { print(len(s)); print(s) }
""", [{"probe": EV, "args": [i % 7]} for i in range(12)]),
    "exit": ("""
var n = 0
trace probe:vfs_write { n += 1; if (n == 3) { exit(7) } }
trace_end { print("end", n) }
""", [{"probe": EV, "repeat": 10}]),
    "loopcalls": ("""
limit budget = 2000
function f(x) { return x + 1 }
trace_end {
  var s = 0
  for (i = 1, 1000) { s = f(s) }
  print(s)
}
""", []),
}


def _session(name: str, target: str, harness, tmp_path):
    text, events = SCRIPTS[name]
    src = Source(f"{name}.kp", text)
    image = api.compile_source(src, target)
    ev = parse_events("\n".join(json.dumps(e) for e in events), f"{name}.events")
    path = tmp_path / f"{name}.kbc"
    path.write_bytes(bc.dump(image))
    records, status = cvm.c_run(harness(target), path, cvm.encode_events(image, ev), tmp_path)
    return (cvm.session_text(image, records, status, src),
            cvm.reference_text(image, ev, src), records)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_session_matches_reference_vm(name, target, harness, tmp_path):
    c, ref, _ = _session(name, target, harness, tmp_path)
    assert c == ref


def test_sessions_produce_what_they_should(harness, tmp_path):
    """The differential test could pass with both sides wrong: pin a few facts."""
    (out, status, err), _, _ = _session("arith", "arm", harness, tmp_path)
    assert out.splitlines()[0].split()[:7] == [
        "-9223372036854775808", "-2", "9223372036854775807", "-3", "-3", "1", "-1"]
    assert out.splitlines()[1].split()[:2] == ["-9223372036854775808", "0"]
    (out, status, err), _, _ = _session("budget", "mips", harness, tmp_path)
    assert status == 3 and "instruction budget of 500 exhausted" in err[0]
    assert err[0].startswith("budget.kp:5:")
    (out, status, err), _, _ = _session("divzero", "x86_64", harness, tmp_path)
    assert out == "before\n2\nbefore\n" and status == 3 and "division by zero" in err[0]
    (out, status, err), _, _ = _session("tablefull", "arm", harness, tmp_path)
    assert out.startswith("4\n") and err == ["ktap: 4 events dropped (table full)"]
    (out, status, err), _, _ = _session("exit", "arm", harness, tmp_path)
    assert status == 7 and out == "end 3\n"
    (out, status, err), _, _ = _session("strings", "mips", harness, tmp_path)
    assert out.splitlines()[0] == "0123456789012345 16 11 n=-42"


def test_records_carry_the_target_byte_order(harness, tmp_path):
    """The same session decodes identically from a little- and a big-endian core."""
    _, _, le = _session("stats", "arm", harness, tmp_path)
    _, _, be = _session("stats", "mips", harness, tmp_path)
    assert repr(le) == repr(be) and len(le) > 5


# -- the shared verifier corpus -------------------------------------------------
def py_reason(image: bc.Image) -> str:
    try:
        verify(image)
    except VerifyError as e:
        return e.reason
    return "ok"


def c_reason(harness, image: bc.Image, tmp_path: Path) -> str:
    path = tmp_path / "corpus.kbc"
    path.write_bytes(bc.dump(image))
    return cvm.c_verify(harness(image.target.name), path).reason


def enc(name, a=0, b=0, c=0):
    return opcodes.encode(opcodes.BY_NAME[name], a, b, c)


def raw_image(target="arm", protos=None, **kw) -> bc.Image:
    """A small raw-KBC writer: a setup chunk, a handler on one kprobe, and
    whatever functions a case needs, without going through the compiler."""
    t = api.get_target(target)
    setup = bc.Proto("(setup)", program.SETUP, 0, 2, enc("LOADNIL", 0) + enc("RET", 0, 0))
    handler = bc.Proto("h", program.HANDLER, 0, 4, enc("RET", 0, 0))
    img = bc.Image(t, "raw.kp", program.Limits(), ["g"], [program.TableDesc()], ["%d\n"],
                   [bc.Event(kinds.EV_KPROBE, "probe:x", "x", handler=1)],
                   [setup, handler] + (protos or []))
    for k, v in kw.items():
        setattr(img, k, v)
    for p in img.protos:
        p.lines = p.lines or [1] * len(p.code)
        p.cols = p.cols or [1] * len(p.code)
    return img


def with_handler(code, frame=4, consts=(), upvals=(), extra=None, fields=None):
    img = raw_image(protos=extra)
    h = img.protos[1]
    h.code, h.frame_size, h.consts, h.upvals = list(code), frame, list(consts), list(upvals)
    h.lines, h.cols = [1] * len(h.code), [1] * len(h.code)
    if fields is not None:
        img.events[0] = bc.Event(kinds.EV_TRACEPOINT, "sched:x", "sched:x", handler=1,
                                 fields=fields)
    return img


def fn(name, nparams, code, frame=4):
    return bc.Proto(name, program.FUNCTION, nparams, frame, list(code),
                    lines=[1] * len(code), cols=[1] * len(code))


RET = enc("RET", 0, 0)
BAD_CASES = {
    "ok": with_handler(enc("LOADI", 0, 5) + RET),
    "bad-register": with_handler(enc("MOVE", 4, 0) + RET),
    "bad-register-span": with_handler(enc("NEXT", 2, 0) + RET),
    "bad-constant": with_handler(enc("LOADK", 0, 1) + RET, consts=[1]),
    "bad-upvalue": with_handler(enc("GETUPV", 0, 1) + RET, upvals=[0]),
    "bad-upvalue-global": with_handler(RET, upvals=[3]),
    "jump-into-loadi64": with_handler(enc("JMP", 0, 1) + enc("LOADI64", 0, 1 << 40) + RET),
    "jump-out": with_handler(enc("JMP", 0, 5) + RET),
    "unknown-opcode": with_handler([0xFE] + RET),
    "falls-off-end": with_handler(enc("LOADI", 0, 1)),
    "truncated-loadi64": with_handler(RET + enc("LOADI64", 0, 7)[:2]),
    "bad-operand": with_handler(enc("LOADNIL", 0) [:0] + [opcodes.BY_NAME["LOADNIL"].code | 1 << 16] + RET),
    "recursion": with_handler(enc("CALL", 0, 2, 0) + RET, extra=[
        fn("f1", 0, enc("CALL", 0, 3, 0) + RET), fn("f2", 0, enc("CALL", 0, 2, 0) + RET)]),
    "self-recursion": with_handler(RET, extra=[fn("f", 0, enc("TAILCALL", 0, 2, 0))]),
    "newtable-in-handler": with_handler(enc("CALL", 0, 2, 0) + RET, extra=[
        fn("mk", 0, enc("NEWTABLE", 0, 0) + enc("RET", 0, 1))]),
    "bad-call-arity": with_handler(enc("CALL", 0, 2, 2) + RET, extra=[fn("f", 1, RET)]),
    "call-a-handler": with_handler(enc("CALL", 0, 1, 0) + RET),
    "bad-builtin": with_handler(enc("CALLB", 0, 99, 0) + RET),
    "builtin-arity": with_handler(enc("CALLB", 0, builtins.BUILTIN_BY_NAME["count"].id, 2) + RET),
    "bad-variable": with_handler(enc("LOADVAR", 0, 99) + RET),
    "bad-argument": with_handler(enc("ARG", 0, 10) + RET),
    "bad-argument-0": with_handler(enc("ARG", 0, 0) + RET),
    "bad-field": with_handler(enc("FIELD", 0, 1) + RET, fields=["a"]),
    "good-field": with_handler(enc("FIELD", 0, 0) + RET, fields=["a"]),
    "field-on-kprobe": with_handler(enc("FIELD", 0, 0) + RET),
    "bad-table-index": with_handler(enc("GETUPV", 0, 0) + RET, upvals=[0],
                                    extra=None),
    "bad-format-index": with_handler(enc("PRINTF", 0, 1, 1) + RET),
    "stack-too-deep": with_handler(enc("CALL", 0, 2, 0) + RET, frame=200, extra=[
        fn("a", 0, enc("CALL", 0, 3, 0) + RET, 250), fn("b", 0, enc("CALL", 0, 4, 0) + RET, 250),
        fn("c", 0, enc("CALL", 0, 5, 0) + RET, 250), fn("d", 0, RET, 200)]),
    "frame-zero": with_handler(RET, frame=0),
    "frame-too-big": with_handler(RET, frame=251),
}


def _edit(img, fn_):
    img = copy.deepcopy(img)
    fn_(img)
    return img


BAD_CASES.update({
    "bad-limits": _edit(BAD_CASES["ok"], lambda i: setattr(i.limits, "budget", 0)),
    "limit-too-big": _edit(BAD_CASES["ok"], lambda i: setattr(i.limits, "string_size", 4097)),
    "table-flags": _edit(BAD_CASES["ok"], lambda i: setattr(i.tables[0], "flags", 4)),
    "linear-bounds": _edit(BAD_CASES["ok"], lambda i: i.tables.__setitem__(
        0, program.TableDesc(program.TABLE_LINEAR, -(1 << 63), (1 << 63) - 1, 1))),
    "linear-ok": _edit(BAD_CASES["ok"], lambda i: i.tables.__setitem__(
        0, program.TableDesc(program.TABLE_LINEAR, 0, 1000, 1))),
    "linear-1001": _edit(BAD_CASES["ok"], lambda i: i.tables.__setitem__(
        0, program.TableDesc(program.TABLE_LINEAR, 0, 1001, 1))),
    "bad-format": _edit(BAD_CASES["ok"], lambda i: i.formats.__setitem__(0, "%y")),
    "format-width": _edit(BAD_CASES["ok"], lambda i: i.formats.__setitem__(0, "%257d")),
    "format-trailing": _edit(BAD_CASES["ok"], lambda i: i.formats.__setitem__(0, "abc %")),
    "format-newline": _edit(BAD_CASES["ok"], lambda i: i.formats.__setitem__(0, "%\n")),
    "format-good": _edit(BAD_CASES["ok"], lambda i: i.formats.__setitem__(0, "%-+ #08.3x %% %p")),
    "event-kind": _edit(BAD_CASES["ok"], lambda i: setattr(i.events[0], "kind", 9)),
    "event-handler": _edit(BAD_CASES["ok"], lambda i: setattr(i.events[0], "handler", 0)),
    "event-period": _edit(BAD_CASES["ok"], lambda i: i.events.__setitem__(
        0, bc.Event(kinds.EV_TICK, "tick-1ms", "tick-1ms", period_ns=999, handler=1))),
    "event-fields": _edit(BAD_CASES["ok"], lambda i: setattr(i.events[0], "fields", ["a"])),
    "no-setup": _edit(BAD_CASES["ok"], lambda i: setattr(i.protos[0], "kind", program.FUNCTION)),
    "second-setup": _edit(BAD_CASES["ok"], lambda i: setattr(i.protos[1], "kind", program.SETUP)),
    "handler-params": _edit(BAD_CASES["ok"], lambda i: setattr(i.protos[1], "nparams", 1)),
    "line-table": _edit(BAD_CASES["ok"], lambda i: (i.protos[1].lines.append(1), i.protos[1].cols.append(1))),
    "empty-code": _edit(BAD_CASES["ok"], lambda i: (setattr(i.protos[1], "code", []),
                                                     setattr(i.protos[1], "lines", []),
                                                     setattr(i.protos[1], "cols", []))),
    "long-constant": _edit(BAD_CASES["ok"], lambda i: setattr(i.protos[1], "consts", ["x" * 257])),
    "max-stack": _edit(BAD_CASES["ok"], lambda i: setattr(i.limits, "max_stack", 3)),
})


def test_corpus_covers_every_reason():
    reasons = {py_reason(img) for img in BAD_CASES.values()}
    missing = set(__import__("ktap.backends.kbc.verifier", fromlist=["REASONS"]).REASONS) - reasons
    assert not missing, f"no corpus case for {missing}"


@pytest.mark.parametrize("case", sorted(BAD_CASES))
@pytest.mark.parametrize("target", ["arm", "mips"])
def test_verifiers_agree_on_corpus(case, target, harness, tmp_path):
    img = copy.deepcopy(BAD_CASES[case])
    img.target = api.get_target(target)
    assert c_reason(harness, img, tmp_path) == py_reason(img)


def _mutants(img: bc.Image, n: int, seed: int):
    rng = random.Random(seed)
    for _ in range(n):
        m = copy.deepcopy(img)
        p = m.protos[rng.randrange(len(m.protos))]
        choice = rng.randrange(6)
        if choice <= 2 and p.code:
            i = rng.randrange(len(p.code))
            p.code[i] ^= 1 << rng.randrange(32)
        elif choice == 3 and p.code:
            i = rng.randrange(len(p.code))
            p.code[i] = (p.code[i] & ~0xFF) | rng.randrange(256)
        elif choice == 4:
            p.frame_size = rng.choice([0, 1, p.frame_size - 1, 250, 251])
        else:
            p.nparams = rng.randrange(3)
        yield m


@pytest.mark.parametrize("name", ["stats", "functions", "tables", "context"])
def test_verifiers_agree_on_mutants(name, harness, tmp_path):
    image = api.compile_source(Source(name, SCRIPTS[name][0]), "arm")
    seen = {}
    for k, m in enumerate(_mutants(image, 60, seed=hash(name) & 0xFFFF)):
        py, c = py_reason(m), c_reason(harness, m, tmp_path)
        assert c == py, f"mutant {k}"
        seen[py] = seen.get(py, 0) + 1
    assert len(seen) >= 3, seen      # the mutants exercise several checks


# -- the loader -----------------------------------------------------------------
def _c_load(harness, target, data: bytes, tmp_path) -> cvm.VerifyResult:
    path = tmp_path / "img.kbc"
    path.write_bytes(data)
    return cvm.c_verify(harness(target), path)


def test_loader_names_both_sides_of_a_layout_mismatch(harness, tmp_path):
    data = bc.dump(BAD_CASES["ok"].__class__(**{**BAD_CASES["ok"].__dict__,
                                                 "target": api.get_target("mips")}))
    r = _c_load(harness, "x86_64", data, tmp_path)
    assert r.reason == "bad-image"
    assert r.message == ("bad image: image is big-endian 32-bit (mips), this loader is "
                         "little-endian 64-bit (x86_64)")
    with pytest.raises(ImageError) as e:
        bc.load(data, api.get_target("x86_64"))
    assert r.message in str(e.value)
    r = _c_load(harness, "mips", bc.dump(copy.deepcopy(BAD_CASES["ok"]).__class__(
        **{**BAD_CASES["ok"].__dict__, "target": api.get_target("powerpc")})), tmp_path)
    assert r.message == "bad image: image is for powerpc, this loader is for mips"


@pytest.mark.parametrize("target", ["arm", "x86_64"])
def test_loader_refuses_every_truncation_and_corruption(target, harness, tmp_path):
    img = copy.deepcopy(BAD_CASES["recursion"])
    img.target = api.get_target(target)
    data = bc.dump(img)
    assert _c_load(harness, target, data, tmp_path).reason == "recursion"
    for n in list(range(0, 40)) + list(range(40, len(data), 7)):
        assert _c_load(harness, target, data[:n], tmp_path).reason == "bad-image"
    bad_crc = bytearray(data)
    bad_crc[-1] ^= 0x40
    r = _c_load(harness, target, bytes(bad_crc), tmp_path)
    assert r.message == "bad image: body checksum mismatch"
    assert _c_load(harness, target, data + b"\0", tmp_path).reason == "bad-image"


def test_loader_bounds_counts_in_a_consistent_body(harness, tmp_path):
    """A body with a huge count and a valid CRC: refused, not allocated."""
    img = copy.deepcopy(BAD_CASES["ok"])
    w = bc.Writer(img.target)
    w.string("raw.kp")
    w.limits(img.limits)
    w.word(0xFFFFFFF0)                 # globals count far beyond the image
    out = bc.Writer(img.target)
    out.header(bytes(w.buf), w.fields)
    r = _c_load(harness, "arm", bytes(out.buf), tmp_path)
    assert r.reason == "bad-image" and "global count" in r.message
    with pytest.raises(ImageError):
        bc.load(bytes(out.buf))


# -- portability of the rendered sources ------------------------------------------
@pytest.mark.parametrize("target", ["arm", "mips", "powerpc"])
def test_core_compiles_for_32bit_cross_compilers(target, tmp_path):
    t = api.get_target(target)
    cc = f"{t.cross_compile}gcc"
    if subprocess.run(["which", cc], capture_output=True).returncode != 0:
        pytest.skip(f"{cc} not installed")
    render(t, tmp_path)
    for src in CORE_SOURCES:
        r = subprocess.run([cc, "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror",
                            "-Wno-unused-parameter", "-I", str(KMOD_DIR), "-I",
                            str(tmp_path), "-c", str(KMOD_DIR / src), "-o",
                            str(tmp_path / (src + ".o"))], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_generated_tables_come_from_opcodes():
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        render("mips", Path(d))
        h = (Path(d) / "ktap_opcodes.h").read_text() + (Path(d) / "ktap_target.h").read_text()
    for op in opcodes.OPS:
        assert f"KTAP_OP_{op.name} = {op.code}," in h
    for b in builtins.BUILTINS:
        table_call = int(b.name in builtins.TABLE_CALLS)
        assert f'{{ "{b.name}", {b.min_args}, {b.max_args}, {table_call} }}' in h
    assert "#define KTAP_BIG_ENDIAN 1" in h and "#define KTAP_WORD_SIZE 4" in h
