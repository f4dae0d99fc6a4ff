"""Lexer, parser and semantic errors: every one is FILE:LINE:COL with a caret."""

import pytest

from conftest import ROOT, compile_text
from ktap import api
from ktap.core.diagnostics import KtapError, SemanticError, Source, SyntaxErr
from ktap.frontend import ast as A
from ktap.frontend.parser import parse


def error_of(text: str) -> KtapError:
    with pytest.raises(KtapError) as exc:
        compile_text(text)
    return exc.value


def test_every_sample_parses():
    for path in sorted((ROOT / "samples").glob("*.kp")):
        script = parse(Source(str(path), path.read_text()))
        assert script.body, path


def test_literals_and_escapes():
    s = parse(Source("x", "var a = 0x10\nvar b = 'a\\tb\\n\\\\\\'\"'\nvar c = -9223372036854775808"))
    assert s.body[0].init.value == 16
    assert s.body[1].init.value == "a\tb\n\\'\""
    assert s.body[2].init.value == -(1 << 63)


def test_precedence():
    e = parse(Source("x", "var a = 1 + 2 * 3 .. 4 == 5 && !true || nil")).body[0].init
    assert isinstance(e, A.Binary) and e.op == "||"
    land = e.left
    assert land.op == "&&" and land.left.op == "=="
    concat = land.left.left
    assert concat.op == ".." and concat.left.op == "+" and concat.left.right.op == "*"


def test_filter_slash_is_not_division():
    # inside the filter a bare '/' closes it, so `arg1 / 2` needs parentheses
    s = parse(Source("x", "trace probe:f /arg1/ { }"))
    assert isinstance(s.body[0].filter, A.Name)
    with pytest.raises(SyntaxErr) as exc:
        parse(Source("x", "trace probe:f /arg1 / 2 == 1/ { }"))
    assert "expected '{'" in exc.value.message


def test_filter_parenthesised_division():
    s = parse(Source("x", "trace probe:f /(arg1 / 2) == 1/ { }"))
    assert s.body[0].filter.op == "=="


@pytest.mark.parametrize("text,line,col,needle", [
    ("var x = 1 +\n", 2, 1, "expected an expression"),
    ("var s = 'abc\n", 1, 9, "unterminated string"),
    ("var s = \"a\\q\"", 1, 11, "unknown escape"),
    ("var x = 12ab", 1, 9, "malformed number"),
    ("var x = 99999999999999999999", 1, 9, "does not fit in 64 bits"),
    ("if (1) { var x = 1 ", 1, 20, "unterminated block"),
    ("trace probe:f { function g() {} }", 1, 17, "only allowed at the top level"),
    ("var x = $", 1, 9, "unexpected character"),
    ("x + 1", 1, 1, "expected a statement"),
])
def test_syntax_errors(text, line, col, needle):
    e = error_of(text)
    assert isinstance(e, SyntaxErr)
    assert (e.loc.line, e.loc.col) == (line, col)
    assert needle in e.message
    rendered = e.render()
    assert rendered.startswith(f"t.kp:{line}:{col}: error: ")


def test_render_has_source_line_and_caret():
    e = error_of("var a = 1\nvar b = a +* 2\n")
    lines = e.render().splitlines()
    assert lines[0].startswith("t.kp:2:12: error:")
    assert lines[1] == "var b = a +* 2"
    assert lines[2] == " " * 11 + "^"


@pytest.mark.parametrize("text,needle", [
    ("x = 1", "assignment to undeclared variable 'x'"),
    ("var count2 = 1\ncount3 = 2", "did you mean 'count2'"),
    ("trace probe:f { var t = {} }", "tables can only be created"),
    ("function f() { var t = {} }", "tables can only be created"),
    ("trace probe:f { printf(\"%d\\n\", retval) }", "only available in return probes"),
    ("trace probe:f%return { print(arg1) }", "not available in return probes"),
    ("tick-1s { print(arg1) }", "not available in timer probes"),
    ("trace probe:f { print(args.x) }", "only available in tracepoint probes"),
    ("print(pid)", "has no value in the setup code"),
    ("trace_end { print(execname) }", "has no value in trace_end"),
    ("printf(\"%d %d\\n\", 1)", "2 conversion(s) but 1 argument(s)"),
    ("printf(\"%q\\n\", 1)", "unknown printf conversion"),
    ("var f = \"x\"\nprintf(f)", "format must be a string literal"),
    ("break", "'break' outside a loop"),
    ("return 1", "'return' outside a function"),
    ("prnt(1)", "unknown function 'prnt'; did you mean 'print'"),
    ("function f(a) { }\nf(1, 2)", "'f' takes 1 argument(s), 2 given"),
    ("var pid = 1", "built-in variable"),
    ("function print() { }", "built-in function"),
    ("trace probe:f { pid = 1 }", "cannot assign to built-in variable"),
    ("var t = {}\nlhist(t, 0, x, 1)", "must be integer literals"),
    ("var t = {}\nvar n = 5\nlhist(t, 0, n, 1)", "must be integer literals"),
    ("var t = {}\nlhist(t, 10, 0, 1)", "min < max"),
    ("var t\nhist(t)", "needs a global table declared"),
    ("tick-5 { }", "needs a unit"),
    ("profile-1us { }", "too fast"),
    ("trace probe:f%return+4 { }", "cannot have an offset"),
    ("trace nocolon { }", "unknown probe"),
    ("limit budget = 0", "must be between"),
    ("limit speed = 5", "unknown limit"),
    ("var x = 1\nx <<< 2", "'<<<' feeds a table entry"),
    ("function f() { }\nvar y = f", "not a value"),
    ("function f(a, a) { }", "duplicate parameter"),
    ("var a = 1\nfunction a() { }", "already declared"),
    ("for (i = 1, 10, 0) { }", "for step cannot be zero"),
    ("for (k, v in keys(t)) { }", "expected 'pairs(...)'"),
    ("pairs(1)", "only used in 'for"),
])
def test_semantic_errors(text, needle):
    e = error_of(text)
    assert isinstance(e, (SemanticError, SyntaxErr)), e
    assert needle in e.message, e.message
    assert e.loc is not None and e.render().startswith(f"t.kp:{e.loc.line}:{e.loc.col}: error:")


def test_locals_scope_and_shadowing():
    compile_text("var x = 1\nfunction f(x) { var y = x\n if (y) { var x = 2 } return x }")
    e = error_of("function f() { if (1) { var z = 1 } return z }")
    assert "undeclared variable 'z'" in e.message


def test_limit_directive_and_cli_override():
    img = compile_text("limit budget = 500\nlimit table_entries = 8")
    assert img.limits.budget == 500 and img.limits.table_entries == 8
    img = compile_text("limit budget = 500", budget=900)
    assert img.limits.budget == 900


def test_globs_and_aliases_compile_to_events():
    img = compile_text("trace syscalls:sys_enter_* { }\ntrace kprobe:vfs_* { }\n"
                       "trace kretprobe:do_sys_open { }\ntrace probe:vfs_read+0x10 { }\n"
                       "tick-100ms { }\nprofile-10us { }" .replace("10us", "1ms"))
    kinds = [(e.kind, e.name, e.offset, e.period_ns) for e in img.events]
    assert kinds == [(0, "syscalls:sys_enter_*", 0, 0), (1, "vfs_*", 0, 0),
                     (2, "do_sys_open", 0, 0), (1, "vfs_read", 16, 0),
                     (3, "tick-100ms", 0, 100_000_000), (4, "profile-1ms", 0, 1_000_000)]


@pytest.mark.parametrize("spec", ["hardware:cycles", "ftrace:function", "kfunc:vfs_read",
                                  "fentry:vfs_read", "schd:sched_switch", "nosuch*:x"])
def test_an_unknown_provider_is_an_error_at_the_probe_without_a_kernel(spec):
    with pytest.raises(SemanticError) as e:
        api.compile_source(Source("t.kp", f"var n = 0\ntrace {spec} {{ n += 1 }}"), "mips")
    assert (e.value.loc.line, e.value.loc.col) == (2, 7)
    assert f"unknown probe provider '{spec.split(':')[0]}:'" in e.value.message
    assert "--profile" in e.value.message


def test_known_providers_unchecked_offline_get_one_warning_naming_the_inputs():
    heard = []
    text = ("trace sched:sched_switch { }\ntrace sch*:sched_wak* { }\n"
            "trace probe:vfs_write { }\ntick-1s { }\ntrace syscalls:sys_enter_getpid { }")
    api.compile_source(Source("t.kp", text), "arm", warn=heard.append)
    assert heard == ["t.kp: warning: probes not checked against a kernel: sched:sched_switch, "
                     "sch*:sched_wak*, probe:vfs_write, syscalls:sys_enter_getpid "
                     "(--profile DIR or --vmlinux FILE would check them)"]


def test_the_subsystem_list_holds_mainline_subsystems_and_no_other_providers():
    from ktap.events.specs import tracepoint_subsystems
    subsystems = tracepoint_subsystems()
    assert {"sched", "syscalls", "raw_syscalls", "irq", "block", "skb", "kmem"} <= subsystems
    assert not {"perf", "probe", "kprobe", "kfunc", "fentry", "uprobe", "ftrace"} & subsystems


@pytest.mark.parametrize("spec, freq, period", [
    ("perf:page-faults", 0, 1), ("perf:context-switches:10", 0, 10),
    ("perf:cpu-clock:2ms", 0, 2_000_000), ("perf:cpu-clock", 0, 10_000_000),
    ("perf:cycles:99hz", 99, 0), ("perf:cache-misses:1000", 0, 1000)])
def test_perf_events_take_a_period_or_a_frequency(spec, freq, period):
    img = compile_text(f"trace {spec} {{ }}")
    ev = img.events[0]
    assert (ev.name, ev.offset, ev.period_ns) == (spec.rsplit(":", 1)[0] if spec.count(":") == 2
                                                  else spec, freq, period)


@pytest.mark.parametrize("spec, needle", [
    ("perf:nosuch", "unknown perf event 'nosuch'; ktap knows cpu-clock"),
    ("perf:cycles:10", "period 10 events is too short"),
    ("perf:page-faults:1ms", "counts events: its period is a number"),
    ("perf:cpu-clock:99999", "period 99999 ns is too short"),
    ("perf:cycles:20000hz", "out of range 1..10000"),
])
def test_bad_perf_specs_are_errors_at_the_probe(spec, needle):
    with pytest.raises(SemanticError) as e:
        compile_text(f"var n = 0\ntrace {spec} {{ n += 1 }}")
    assert needle in e.value.message
    assert (e.value.loc.line, e.value.loc.col) == (2, 7)


def test_perf_handlers_cannot_read_arguments():
    with pytest.raises(SemanticError, match="'arg1' is not available in perf probes"):
        compile_text("trace perf:page-faults { print(arg1) }")
