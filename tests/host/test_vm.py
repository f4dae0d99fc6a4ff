"""Semantics through the reference VM: what a board must print too."""

import pytest

from conftest import sim
from ktap.core.diagnostics import RuntimeErr
from ktap.core.targets import target_names


TARGETS = target_names()        # every targets/*/target.toml


def out(text, events="", **kw):
    o, status, drops = sim(text, events, **kw)
    return o


@pytest.mark.parametrize("target", TARGETS)
def test_64bit_arithmetic_on_every_target(target):
    text = ("print(9223372036854775807 + 1, 4294967296 * 4294967296, 0x7fffffff + 1,"
            " -9223372036854775808 / -1, 4294967295 * 3, 1 - 2)")
    assert out(text, target=target) == ("-9223372036854775808 0 2147483648 "
                                         "-9223372036854775808 12884901885 -1\n")


def test_division_truncates_like_c():
    assert out("print(7 / 2, -7 / 2, 7 / -2, 7 % 3, -7 % 3, 7 % -3)") == "3 -3 -3 1 -1 1\n"


@pytest.mark.parametrize("expr,msg", [("1 / 0", "division by zero"), ("1 % 0", "modulo by zero"),
                                      ("1 + nil", "arithmetic on a nil"),
                                      ("'a' < 1", "compare a string with a number"),
                                      ("{} .. 'x'", "concatenate a table")])
def test_runtime_errors_name_the_line(expr, msg):
    with pytest.raises(RuntimeErr) as exc:
        sim(f"var a = 1\nvar b = {expr}\n")
    assert msg in exc.value.message
    assert exc.value.loc.line == 2
    assert exc.value.render().startswith("t.kp:2:")


def test_runtime_error_in_handler():
    with pytest.raises(RuntimeErr, match="division by zero") as exc:
        sim("trace probe:f {\n  print(arg1 / arg2)\n}", '{"probe": "probe:f", "args": [1, 0]}')
    assert exc.value.loc.line == 2


def test_strings_and_truncation():
    assert out('var s = "ab" .. 12 .. "c"\nprint(s, len(s), s == "ab12c", "a" < "b")') == \
        "ab12c 5 true true\n"
    o = out('var s = "x"\nfor (i = 1, 10) { s = s .. s }\nprint(len(s))', string_size=100)
    assert o == "100\n"


def test_truthiness_is_lua_like():
    assert out("if (0) { print('zero is true') }\nif (!nil) { print('nil is false') }\n"
               "print(nil || 5, false && 1, 1 && 2)") == "zero is true\nnil is false\n5 false 2\n"


def test_tables_and_pairs_order_follows_slots():
    text = """
var t = {}
t["a"] = 1
t["b"] = 2
t["c"] = 3
delete(t, "b")
t["d"] = 4
t.e = 5
for (k, v in pairs(t)) { printf("%s=%d ", k, v) }
print(len(t), t.a, t["zz"])
delete(t)
print(len(t))
"""
    assert out(text) == "a=1 d=4 c=3 e=5 4 1 nil\n0\n"


def test_table_constructor_and_number_keys():
    assert out("var t = {10, 20, x = 'y', [100] = 'h'}\nprint(t[1], t[2], t.x, t[100], len(t))") == \
        "10 20 y h 4\n"


def test_compound_assignment_on_tables_treats_missing_as_zero():
    assert out("var t = {}\nt['a'] += 5\nt['a'] -= 2\nt['b'] -= 300\nprint(t.a, t.b)") == "3 -300\n"


def test_functions_and_tail_calls():
    text = """
function add(a, b) { return a + b }
function twice(x) { return add(x, x) }
function nothing() { }
print(twice(21), nothing())
"""
    assert out(text) == "42 nil\n"


def test_numeric_for_variants():
    assert out("var s = ''\nfor (i = 1, 3) { s = s .. i }\nfor (i = 10, 1, -4) { s = s .. ',' .. i }\n"
               "for (i = 5, 1) { s = s .. 'never' }\nprint(s)") == "123,10,6,2\n"


def test_while_and_break():
    assert out("var i = 0\nwhile (true) { i += 1\n if (i >= 7) { break } }\nprint(i)") == "7\n"


def test_statistics():
    text = """
var st = {}
trace probe:f { st[execname] <<< arg1 }
trace_end {
  var a = st["w"]
  printf("%d %d %d %d %d\\n", count(a), sum(a), min(a), max(a), avg(a))
  print(count(st["none"]), sum(st["none"]), avg(st["none"]))
}
"""
    ev = "\n".join('{"probe": "probe:f", "execname": "w", "args": [%d]}' % v for v in (5, -3, 10, 7))
    assert out(text, ev) == "4 19 -3 10 4\n0 0 nil\n"


def test_hist_layout_matches_quantize():
    text = "var h = {}\ntrace probe:f { h['k'] <<< arg1 }\ntrace_end { hist(h) }"
    ev = '{"probe": "probe:f", "args": [3], "repeat": 3}\n{"probe": "probe:f", "args": [9]}'
    lines = out(text, ev).splitlines()
    assert lines[0] == "k"
    assert lines[1] == "           value  ------------- Distribution ------------- count"
    assert lines[2] == "               1 |                                         0"
    assert lines[3] == "               2 |" + "@" * 30 + " " * 10 + " 3"
    assert lines[4] == "               4 |" + " " * 40 + " 0"
    assert lines[5] == "               8 |" + "@" * 10 + " " * 30 + " 1"
    assert lines[6] == "              16 |" + " " * 40 + " 0"
    assert len(lines) == 7


def test_lhist_rows_and_bounds():
    text = "var h = {}\ntrace probe:f { h[1] <<< arg1 }\ntrace_end { lhist(h, 0, 100, 25) }"
    ev = "\n".join('{"probe": "probe:f", "args": [%d]}' % v for v in (-5, 10, 30, 30, 250))
    lines = out(text, ev).splitlines()
    labels = [ln.split("|")[0].strip() for ln in lines[2:]]
    counts = [int(ln.rsplit(" ", 1)[1]) for ln in lines[2:]]
    assert labels == ["< 0", "0", "25", "50", "75", ">= 100"]
    assert counts == [1, 1, 2, 0, 0, 1]


def test_print_hist_sorts_and_limits():
    text = "var t = {}\ntrace probe:f { t[execname] += 1 }\ntrace_end { print_hist(t, 2) }"
    ev = ('{"probe": "probe:f", "execname": "a", "repeat": 1}\n'
          '{"probe": "probe:f", "execname": "b", "repeat": 5}\n'
          '{"probe": "probe:f", "execname": "c", "repeat": 3}')
    lines = out(text, ev).splitlines()
    assert [ln.split("|")[0].strip() for ln in lines[1:]] == ["b", "c"]


def test_printf_flags_and_widths():
    text = r'printf("[%5d][%-5d][%05d][%+d][%x][%X][%#x][%o][%u][%c][%.2s][%s][%%]\n", 42, 42, 42, 7, 255, 255, 255, 8, -1, 65, "abc", nil)'
    assert out(text) == "[   42][42   ][00042][+7][ff][FF][0xff][10][18446744073709551615][A][ab][nil][%]\n"


def test_printf_takes_c_length_modifiers_as_64_bit():
    text = r'printf("%lu %ld %llx %5lld|%-4hd|%zu %ju %%ld\n", -1, -3, 765, 3, 3, 4294967296 * 3, 7)'
    assert out(text) == "18446744073709551615 -3 2fd     3|3   |12884901888 7 %ld\n"


@pytest.mark.parametrize("target,width", [("x86_64", "0x00000000c0001000"), ("arm", "0xc0001000")])
def test_stack_values_as_keys(target, width):
    text = "var t = {}\nprofile-1ms { t[stack()] += 1 }\ntrace_end { print_hist(t) }"
    ev = '{"probe": "profile-1ms", "stack": [3221229568], "repeat": 2}'
    assert width in out(text, ev, target=target)


def test_builtin_variables_and_fields():
    text = """
trace sched:sched_switch { printf("%s %d %d %s %s\\n", probename, arg1, args.next_pid, args.prev_comm, execname) }
trace probe:do_exit%return { printf("%d %d %d %d\\n", retval, pid, tid, cpu) }
"""
    ev = ('{"probe": "sched:sched_switch", "execname": "sh", "fields": {"prev_comm": "sh", "next_pid": 9}}\n'
          '{"probe": "probe:do_exit%return", "retval": -2, "pid": 4, "tid": 5, "cpu": 1}')
    assert out(text, ev) == "sched:sched_switch sh 9 sh sh\n-2 4 5 1\n"


def test_globs_match_events():
    text = "var n = 0\ntrace syscalls:sys_enter_* { n += 1 }\ntrace_end { print(n) }"
    ev = '{"probe": "syscalls:sys_enter_read"}\n{"probe": "syscalls:sys_exit_read"}\n{"probe": "syscalls:sys_enter_open"}'
    assert out(text, ev) == "2\n"


def test_filters():
    text = "var n = 0\ntrace probe:f /arg1 > 10 && execname != 'x'/ { n += 1 }\ntrace_end { print(n) }"
    ev = "\n".join('{"probe": "probe:f", "execname": "%s", "args": [%d]}' % p
                   for p in (("a", 5), ("a", 11), ("x", 20), ("b", 99)))
    assert out(text, ev) == "2\n"


def test_budget_stops_an_endless_loop():
    with pytest.raises(RuntimeErr, match="budget of 1000 exhausted") as exc:
        sim("trace probe:f {\n  while (true) { }\n}", '{"probe": "probe:f"}', budget=1000)
    assert exc.value.loc.line == 2


def test_table_pool_exhaustion_is_a_counted_drop():
    text = "var t = {}\ntrace probe:f { t[arg1] = 1 }\ntrace_end { print(len(t)) }"
    ev = "\n".join('{"probe": "probe:f", "args": [%d]}' % i for i in range(10))
    o, status, drops = sim(text, ev, table_entries=4)
    assert o == "4\n" and drops == ["ktap: 6 events dropped (table full)"]


def test_exit_status_and_trace_end():
    o, status, _ = sim("trace probe:f { exit(7) }\ntrace_end { print('end') }",
                       '{"probe": "probe:f", "repeat": 5}\n')
    assert (o, status) == ("end\n", 7)


def test_kernel_and_user_strings_are_fault_safe():
    text = "trace probe:f { print(kernel_string(arg1), user_string(arg2), kernel_string(0)) }"
    ev = '{"memory": {"0x1000": "kdata"}, "user_memory": {"0x2000": "udata"}}\n' \
         '{"probe": "probe:f", "args": [4096, 8192]}\n{"probe": "probe:f", "args": [8192, 4096]}'
    assert out(text, ev) == "kdata udata nil\nnil nil nil\n"


def test_time_builtins_follow_event_clock():
    text = "trace probe:f { print(gettimeofday_ns(), gettimeofday_us(), gettimeofday_ms(), gettimeofday_s()) }"
    assert out(text, '{"probe": "probe:f", "time_ns": 3000001234}') == "3000001234 3000001 3000 3\n"


def test_print_dumps_tables():
    assert out("var t = {}\nt['a'] = 1\nt[2] = 'x'\nprint(t)") == "a\t1\n2\tx\n"


def test_delete_with_a_boolean_key_deletes_nothing():
    assert out("var t = {}\nt[1] = 'one'\ndelete(t, true)\nprint(len(t))") == "1\n"


def test_clocks_have_values_in_setup_handlers_and_trace_end():
    text = ("var t0 = nsecs\nvar w0 = walltime\n"
            "trace probe:vfs_write { printf(\"%d %d\\n\", nsecs - t0, walltime - w0) }\n"
            "trace_end { print(nsecs, walltime) }")
    events = ('{"probe": "probe:vfs_write", "nsecs": 5000, "time_ns": 7000}\n'
              '{"probe": "probe:vfs_write"}\n')
    assert out(text, events) == "5000 7000\n6000 8000\n6000 8000\n"


def test_zero_keeps_keys_clear_drops_them_stats_prints_aggregates():
    text = ('var t = {}\nvar a = {}\n'
            'trace probe:vfs_write { t[execname] += 1\n  a[execname] <<< arg1 }\n'
            'trace_end { stats(a)\n  zero(t)\n  zero(a)\n  t["new"] += 5\n  print(t)\n'
            '  print(count(a["sh"]), avg(a["sh"]))\n  clear(t)\n  print(len(t), len(a)) }')
    events = ('{"probe": "probe:vfs_write", "execname": "sh", "args": [4], "repeat": 2}\n'
              '{"probe": "probe:vfs_write", "execname": "ls", "args": [9]}\n')
    assert out(text, events) == ("sh\tcount=2 sum=8 min=4 max=4 avg=4\n"
                                 "ls\tcount=1 sum=9 min=9 max=9 avg=9\n"
                                 "sh\t0\nls\t0\nnew\t5\n0 0\n0 2\n")


@pytest.mark.parametrize("call, needle", [("zero(s)", "zero() needs numbers or aggregates"),
                                          ("stats(t)", "stats() needs a table fed with <<<")])
def test_zero_and_stats_refuse_other_entries(call, needle):
    with pytest.raises(RuntimeErr) as e:
        sim(f'var s = {{}}\nvar t = {{}}\ns["a"] = "x"\nt["b"] = 1\n{call}')
    assert needle in e.value.message and e.value.loc.line == 5


def test_ksym_is_a_one_frame_stack_printed_as_its_symbol():
    text = ('var seen = {}\ntrace probe:vfs_write { seen[ksym(arg1)] += 1 }\n'
            'trace_end { print(seen) }')
    events = '{"probe": "probe:vfs_write", "args": [3221225488], "repeat": 2}\n'
    assert out(text, events) == "0x00000000c0000010\n    2\n"
    with pytest.raises(RuntimeErr) as e:
        sim('print(ksym("vfs_write"))')
    assert "expected an address, got a string" in e.value.message
