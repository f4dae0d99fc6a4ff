"""User-space probes on the host alone: their spec syntax, the USDT operand
translation of every target's assembler syntax, sysroot path lookup, and
ustack() in the reference VM. Resolution in real ELF files is
tests/native/test_user_resolve.py; the boards run board-tests/user.toml."""

import json

import pytest

from ktap import api
from ktap.core.diagnostics import KtapError, Source
from ktap.core.targets import get_target
from ktap.events.kinds import EV_UPROBE, EV_URETPROBE, EV_USDT
from ktap.events.specs import SpecError, parse_spec
from ktap.refvm.sim import parse_events, run_sim
from ktap.symbols.userelf import in_sysroot
from ktap.symbols.usdt import UsdtError, fetch_args
from ktap.symbols.usymbolize import UserSymbolizer


@pytest.mark.parametrize("text, kind, name, offset", [
    ("probe:/bin/ktapw:ktapw_tick", EV_UPROBE, "/bin/ktapw:ktapw_tick", 0),
    ("uprobe:/lib/libc.so.6:get*", EV_UPROBE, "/lib/libc.so.6:get*", 0),
    ("probe:/bin/a:f+0x10", EV_UPROBE, "/bin/a:f", 16),
    ("probe:/bin/a:0X1F00", EV_UPROBE, "/bin/a:0x1f00", 0),
    ("probe:/bin/a:f%return", EV_URETPROBE, "/bin/a:f", 0),
    ("uretprobe:/bin/a:f", EV_URETPROBE, "/bin/a:f", 0),
    ("sdt:/bin/a:prov:name", EV_USDT, "/bin/a:prov:name", 0),
    ("usdt:/bin/a:prov:name", EV_USDT, "/bin/a:prov:name", 0),
])
def test_user_specs(text, kind, name, offset):
    spec = parse_spec(text)
    assert (spec.kind, spec.name, spec.offset) == (kind, name, offset)
    assert spec.user_path == name.split(":")[0]


@pytest.mark.parametrize("text, message", [
    ("probe:/bin/a", "names a file and what to probe"),
    ("probe:/bin/a:f%return+4", "cannot have an offset"),
    ("uretprobe:/bin/a:f%return", "already means the return"),
    ("probe:/b*n/a:f", "no globs"),
    ("sdt:/bin/a:prov", "PROVIDER:NAME"),
    ("sdt:/bin/a:pr-ov:x", "bad USDT name"),
    ("uprobe:f", "needs a file path"),
    ("probe:/bin/a:0xZZ", "bad address '0xZZ'"),
    ("probe:/bin/a:f-g", "bad symbol name"),
])
def test_bad_user_specs(text, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(text)


def test_a_filter_still_follows_a_user_spec():
    src = Source("f.kp", "trace probe:/bin/a:f /pid == 1/ { }\n")
    with pytest.raises(KtapError) as e:            # parsed; resolution wants a sysroot
        api.compile_source(src, "arm")
    assert "--sysroot" in e.value.message and e.value.loc.col == 7


@pytest.mark.parametrize("target, operands, fetch", [
    ("x86_64", "-4@%edi 8@%rsi -4@$5 8@-16(%rbp) 2@(%rax)",
     ["%di:s32", "%si:u64", "\\5:s32", "-16(%bp):u64", "+0(%ax):u16"]),
    ("arm", "-4@r0 4@[sp, #12] -4@#-3 4@[r7]", ["%r0:s32", "+12(%sp):u32", "\\-3:s32",
                                                  "+0(%r7):u32"]),
    ("arm64", "-4@x0 8@[sp, 16] -4@w3 8@[x29, -8] 4@7",
     ["%x0:s32", "+16(%sp):u64", "%x3:s32", "-8(%x29):u64", "\\7:u32"]),
    ("mips", "-4@$4 4@16($sp) -4@$a1 4@7", ["%r4:s32", "+16(%r29):u32", "%r5:s32", "\\7:u32"]),
    ("powerpc", "-4@3 4@8(31) -4@%r5 4@i9", ["%r3:s32", "+8(%r31):u32", "%r5:s32", "\\9:u32"]),
])
def test_usdt_operands_become_fetch_arguments(target, operands, fetch):
    assert fetch_args(operands, get_target(target)) == fetch


@pytest.mark.parametrize("target, operand", [
    ("x86_64", "8@(%rax,%rbx,4)"), ("arm", "4@q0"), ("mips", "4@$99"), ("x86_64", "3@%eax"),
])
def test_usdt_operands_nobody_can_read_are_refused(target, operand):
    with pytest.raises(UsdtError):
        fetch_args(operand, get_target(target))


def test_sysroot_lookup_reroots_absolute_links(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "usr" / "lib" / "libc.so.6").write_text("x")
    (tmp_path / "lib" / "libc.so.6").symlink_to("/usr/lib/libc.so.6")
    (tmp_path / "bin").symlink_to("usr/lib")
    assert in_sysroot(tmp_path, "/lib/libc.so.6") == tmp_path / "usr" / "lib" / "libc.so.6"
    assert in_sysroot(tmp_path, "/bin/libc.so.6") == tmp_path / "usr" / "lib" / "libc.so.6"
    (tmp_path / "loop").symlink_to("/loop")
    with pytest.raises(KtapError, match="too many symbolic links"):
        in_sysroot(tmp_path, "/loop/x")


def test_frames_the_sysroot_cannot_name_stay_as_printed(tmp_path):
    text = "/bin/gone+0x10\n0x00000000004011d0\n"
    assert UserSymbolizer(tmp_path, "arm").rewrite(text) == text


def test_ustack_in_the_reference_vm(capsys):
    src = Source("u.kp", "trace probe:/bin/a:f { print(ustack(2)) print(ustack()) }\n")
    image = api.compile_source(src, "mips", resolve_user=False)
    frames = ["/bin/a+0x100", "/bin/a+0x200", "/lib/libc.so.6+0x300"]
    events = parse_events(json.dumps({"probe": "probe:/bin/a:f", "ustack": frames}), "e.jsonl")
    out = []
    status, _ = run_sim(image, out.append, src, events)
    assert status == 0
    assert "".join(out) == "\n".join(frames[:2]) + "\n" + "\n".join(frames) + "\n"


@pytest.mark.parametrize("spec, builtin", [
    ("probe:/bin/a:f", "user_string"), ("sdt:/bin/a:p:n", "user_string"),
    ("probe:vfs_write", "kernel_string"), ("syscalls:sys_enter_openat", "kernel_string"),
])
def test_str_reads_the_memory_of_its_probe(spec, builtin):
    from ktap.backends.kbc.disasm import disassemble
    src = Source("s.kp", f"trace {spec} {{ print(str(arg2)) }}\n")
    text = disassemble(api.compile_source(src, "mips", resolve_user=False))
    assert builtin in text and ({"user_string", "kernel_string"} - {builtin}).pop() not in text


def test_str_outside_a_probe_asks_which_memory():
    src = Source("s.kp", "function f(a) { return str(a) }\ntrace probe:/bin/a:f { f(arg1) }\n")
    with pytest.raises(KtapError, match=r"user_string\(addr\) or kernel_string\(addr\)") as e:
        api.compile_source(src, "mips", resolve_user=False)
    assert (e.value.loc.line, e.value.loc.col) == (1, 24)


def test_fold_reads_stack_keyed_tables_from_output(tmp_path):
    from ktap.symbols.symbolize import fold_output
    text = ("calls=7 sum=56\n"
            "ktapw_tick+0x0 [/bin/ktapw]\nktapw_calls+0x34 [/bin/ktapw]\nmain+0x420 [/bin/ktapw]\t7\n"
            "/bin/ktapw+0x2f70\n/bin/ktapw+0x2fb0\t2\n"
            "vfs_write+0x10\nksys_write+0x4c\n    3\n"
            "hello\tworld\n"
            "ktapw_tick+0x8 [/bin/ktapw]\nktapw_calls+0x34 [/bin/ktapw]\nmain+0x420 [/bin/ktapw]\t1\n")
    assert fold_output(text) == ["/bin/ktapw+0x2fb0;/bin/ktapw+0x2f70 2", "ksys_write;vfs_write 3",
                                 "main;ktapw_calls;ktapw_tick 8"]
    out = tmp_path / "in.txt"
    out.write_text(text)
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "ktap.cli", "fold", str(out)], capture_output=True,
                       text=True)
    assert (r.returncode, r.stdout.splitlines()[-1]) == (0, "main;ktapw_calls;ktapw_tick 8")
    r = subprocess.run([sys.executable, "-m", "ktap.cli", "fold"], input="no stacks\n",
                       capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (1, "")


def test_strftime_is_formatted_where_it_prints(monkeypatch):
    """A time value keeps nanoseconds and format, and prints in local time
    (TZ); as a key, equal nanoseconds and format are one key."""
    import time
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    src = Source("t.kp", 'var t = {}\ntrace tick-1s { t[strftime("%Y", walltime)] += 1 }\n'
                 'trace_end { for (k, v in pairs(t)) { print(k, v) }\n'
                 '  print(strftime("%Y-%m-%d %H:%M:%S", 90123 * 1000000000)) }\n')
    image = api.compile_source(src, "powerpc")
    events = parse_events(json.dumps({"probe": "tick-1s", "repeat": 2,
                                      "time_ns": 1767225600 * 10**9}), "e.jsonl")
    out = []
    assert run_sim(image, out.append, src, events)[0] == 0
    assert "".join(out) == "2026 2\n1970-01-02 01:02:03\n"
    bad = Source("b.kp", 'trace_end { print(strftime(5, 6)) }\n')
    with pytest.raises(KtapError, match="strftime format must be a string, got a number") as e:
        run_sim(api.compile_source(bad, "powerpc"), [].append, bad, parse_events("", "e"))
    assert (e.value.loc.line, e.value.loc.col) == (1, 19)
