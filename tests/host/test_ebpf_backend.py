"""The eBPF backend on the host: instruction encoding in both byte orders, the
image section round trip, the structural rules every program keeps (the
kernel's verifier checks the rest on the boards), and the compile-time errors
for what the backend cannot express."""
import re
import subprocess
import sys

import pytest

from conftest import ROOT, TARGETS
from ktap import api
from ktap.backends.ebpf import image as im
from ktap.backends.ebpf.insn import (DW, LD, LDX, MAP_TYPES, MAX_INSNS, PSEUDO_MAP_FD,
                                     STACK_SIZE, Insn, is_jump, ld_imm64)
from ktap.backends.kbc import bytecode as bc
from ktap.backends.kbc.disasm import disassemble
from ktap.core.diagnostics import KtapError, Source
from ktap.core.targets import get_target
from ktap.events.kinds import EV_END
from ktapdev import boardtest

CASES = [c for c in boardtest.load_cases() if c.script is not None]
COUNTER = ('var n = 0\nvar s = {}\nvar h = {}\nvar f = {}\n'
           'trace probe:vfs_write /execname == "ktapw"/ {\n'
           '  n += 1\n  s[execname] += arg3\n  h["w"] <<< arg3\n'
           '  printf("%d %s\\n", pid, execname)\n}\n'
           'trace syscalls:sys_enter_write { f[args.fd] = 1 }\n'
           'trace_end { print(n, s["ktapw"])\n  hist(h) }\n')


def ebpf(text: str, target: str = "x86_64", **limits) -> bc.Image:
    return api.compile_source(Source("t.kp", text), target, limits or None, backend="ebpf")


def test_insn_register_nibbles_follow_the_byte_order():
    i = Insn(0xBF, dst=1, src=6, off=-2, imm=7)
    little, big = i.encode("little"), i.encode("big")
    assert little == bytes([0xBF, 0x61, 0xFE, 0xFF, 7, 0, 0, 0])
    assert big == bytes([0xBF, 0x16, 0xFF, 0xFE, 0, 0, 0, 7])
    assert Insn.decode(little, "little") == i == Insn.decode(big, "big")


def test_ld_imm64_splits_the_value_low_half_first():
    lo, hi = ld_imm64(3, 0x1122334455667788)
    assert (lo.code, lo.dst, lo.imm & 0xFFFFFFFF, hi.code, hi.imm) == (0x18, 3, 0x55667788, 0,
                                                                        0x11223344)


@pytest.mark.parametrize("target", TARGETS)
def test_image_round_trips_with_the_backend_byte(target):
    img = ebpf(COUNTER, target)
    data = bc.dump(img)
    assert data[10] == 1 and bc.dump(api.compile_source(Source("t.kp", COUNTER), target))[10] == 0
    back = bc.load(data, name="t.kbc")
    assert back.backend == "ebpf"
    assert back.ebpf == img.ebpf


def test_unknown_backend_byte_is_refused():
    data = bytearray(bc.dump(ebpf(COUNTER)))
    data[10] = 7
    with pytest.raises(KtapError, match="unknown backend code 7"):
        bc.load(bytes(data))


def structural_problems(img: bc.Image) -> list[str]:
    """What a well-formed program never does, whatever the kernel's verifier says."""
    problems = []
    sec = img.ebpf
    for p in sec.programs:
        n = len(p.insns)
        second_halves = {k + 1 for k, i in enumerate(p.insns) if i.code == LD | DW}
        if not 0 < n <= MAX_INSNS or len(p.lines) != n:
            problems.append(f"{n} insns, {len(p.lines)} lines")
        if p.insns[-1].code != 0x95:
            problems.append("does not end with exit")
        for k, i in enumerate(p.insns):
            if is_jump(i) and not (0 <= k + 1 + i.off < n and k + 1 + i.off not in second_halves):
                problems.append(f"insn {k}: jump to {k + 1 + i.off}")
            if i.code & 0x07 in (0x02, 0x03, 0x01) and i.src == 10 or i.dst == 10:
                if i.code & 0x07 != 0x01 and not -STACK_SIZE <= i.off < 0:
                    problems.append(f"insn {k}: stack offset {i.off}")
        for r in p.relocs:
            at = p.insns[r.insn]
            if r.kind == im.RELOC_MAP_FD and not (at.code == LD | DW and at.src == PSEUDO_MAP_FD
                                                  and r.arg < len(sec.maps)):
                problems.append(f"map reloc at {r.insn} on code {at.code:#x}")
            if r.kind in (im.RELOC_FIELD_POS, im.RELOC_FIELD_NAMED) and at.code & 0x07 != LDX:
                problems.append(f"field reloc at {r.insn} on code {at.code:#x}")
        refs = {r.insn for r in p.relocs if r.kind == im.RELOC_MAP_FD}
        if refs != {k for k in range(n) if p.insns[k].code == LD | DW and p.insns[k].src}:
            problems.append("a map reference without its relocation")
    return problems


# user-probe cases need the cross-built guest files: tests/native/test_user_resolve.py
@pytest.mark.parametrize("case", [c for c in CASES if c.ebpf_error is None
                                  and not boardtest.uses_user_probes(c)], ids=lambda c: c.name)
def test_board_case_compiles_to_well_formed_programs(case):
    for target in TARGETS:
        img = api.compile_source(Source(f"{case.name}.kp", case.script), target,
                                 case.limits or None, backend="ebpf")
        assert structural_problems(img) == [], target
        handlers = sum(1 for e in img.events if e.kind != EV_END)
        assert len(img.ebpf.programs) == handlers


@pytest.mark.parametrize("case", [c for c in CASES if c.ebpf_error is not None
                                  and not boardtest.uses_user_probes(c)], ids=lambda c: c.name)
def test_board_case_the_backend_cannot_run_gets_its_documented_error(case):
    with pytest.raises(KtapError) as e:
        api.compile_source(Source(f"{case.name}.kp", case.script), "mips", case.limits or None,
                           backend="ebpf")
    text = e.value.render()
    assert re.search(case.ebpf_error, text), text
    assert re.match(rf"{re.escape(case.name)}\.kp:\d+:\d+: error: ", text), text
    assert "--backend ktapvm" in text


@pytest.mark.parametrize("script,where,what", [
    ("trace probe:vfs_write { var i = 0\n  while (i < 3) { i += 1 } }", (2, 3), "a loop"),
    ('trace probe:vfs_write { print(execname .. "x") }', (1, 40), "string concatenation"),
    ("var t = {}\ntrace probe:vfs_write { print(len(t)) }", (2, 31), "len()"),
    ("var s = {}\ntrace probe:vfs_write { s[stack()] += 1 }", (2, 27), "stack()"),
    ('var t = {}\ntrace probe:vfs_write { t[1] = 1\n  t["a"] = 2 }', (3, 10),
     "numbers and strings"),
])
def test_what_the_backend_cannot_express_is_a_compile_error_at_its_position(script, where, what):
    with pytest.raises(KtapError) as e:
        ebpf(script)
    assert (e.value.loc.line, e.value.loc.col) == where
    assert what in e.value.message and "ebpf backend" in e.value.message
    # the ktapvm backend takes the same script
    api.compile_source(Source("t.kp", script), "x86_64")


ATOMIC_ADD_DW = 0xDB


def atomics(img: bc.Image) -> list[Insn]:
    return [i for p in img.ebpf.programs for i in p.insns if i.code == ATOMIC_ADD_DW]


def maps_by_name(img: bc.Image) -> dict[str, im.Map]:
    return {m.name: m for m in img.ebpf.maps}


def test_a_global_handlers_also_read_is_updated_by_one_atomic_add():
    img = ebpf("var n = 0\ntrace probe:vfs_write { n += 1\n if (n > 5) { exit() } }")
    assert len(atomics(img)) == 1
    assert "counters" not in maps_by_name(img)


def test_a_global_handlers_only_add_to_is_a_per_cpu_counter():
    img = ebpf("var n = 0\ntrace probe:vfs_write { n += arg3 }\ntrace_end { print(n) }")
    maps = maps_by_name(img)
    assert atomics(img) == []
    assert "globals" not in maps
    assert maps["counters"].role == im.ROLE_COUNTERS
    assert maps["counters"].type == MAP_TYPES["percpu_array"]
    assert [img.globals[s.global_index] for s in maps["counters"].slots] == ["n"]


@pytest.mark.parametrize("handler, per_cpu", [
    ("s[execname] += 1", True),
    ("s[execname] += arg3", True),
    ("s[execname] += 1\n if (s[execname] > 3) { printf(\"x\") }", False),
    ("s[execname] = 1", False),
    ("s[pid] += 1\n delete(s)", True),
    ("s[pid] += 1\n print(s)\n zero(s)", True),
    ("s[pid] += 1\n delete(s, pid)", True),
])
def test_a_table_handlers_only_add_to_is_a_per_cpu_hash(handler, per_cpu):
    img = ebpf(f"var s = {{}}\ntrace probe:vfs_write {{ {handler} }}")
    kind = maps_by_name(img)["s"].type
    assert kind == MAP_TYPES["percpu_hash" if per_cpu else "hash"]


@pytest.mark.parametrize("target", TARGETS)
def test_counting_scripts_use_no_atomics_where_the_jit_lacks_them(target):
    """arm's and powerpc's JITs refuse a program with a 64-bit atomic add: per-CPU
    counters, tables and drops, and a plain insertion stamp, need none there."""
    img = ebpf(COUNTER, target)
    if "atomic64" in get_target(target).bpf_jit_lacks:
        assert atomics(img) == []
    else:   # the insertion stamp stays atomic where it can
        assert atomics(img)


def test_maps_are_typed_from_the_script():
    maps = {m.name: m for m in ebpf(COUNTER).ebpf.maps}
    assert (maps["s"].key_kind, maps["s"].key_size, maps["s"].value_kind) == \
        (im.KEY_STR, 16, im.VAL_NUM)
    assert (maps["f"].key_kind, maps["f"].key_size) == (im.KEY_NUM, 8)
    assert maps["h"].value_kind == im.VAL_AGG and maps["h"].value_size == 8 + 32 + 8 * 128
    assert maps["counters"].slots[0].global_index == 0
    assert maps["s"].max_entries == 4096


def test_disasm_names_maps_and_relocations():
    text = disassemble(ebpf(COUNTER, "mips"))
    assert "; eBPF program for probe:vfs_write (kprobe" in text
    assert "r1 = map[s]" in text and "call get_current_comm" in text
    assert "; field by name 0" in text


def test_cli_compile_and_check_take_the_backend(tmp_path):
    script = tmp_path / "w.kp"
    script.write_text(COUNTER)
    out = tmp_path / "w.kbc"
    cmd = [sys.executable, "-m", "ktap.cli"]
    r = subprocess.run(cmd + ["compile", "-t", "powerpc", "--backend", "ebpf", str(script),
                              "-o", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert bc.load(out.read_bytes()).backend == "ebpf"
    script.write_text("trace probe:vfs_write { while (true) { } }\n")
    r = subprocess.run(cmd + ["check", "--backend", "ebpf", str(script)], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert re.search(r"w\.kp:1:25: error: a loop is not supported .* --backend ktapvm", r.stderr)


MODULES = {"CONFIG_MODULES": "y", "CONFIG_KPROBES": "y", "CONFIG_BPF_SYSCALL": "y",
           "CONFIG_BPF_EVENTS": "y"}


@pytest.mark.parametrize("config,chosen,why", [
    (MODULES, "ktapvm", "loads modules"),
    (dict(MODULES, CONFIG_MODULES="n"), "ebpf", "CONFIG_MODULES is off"),
    (dict(MODULES, CONFIG_MODULE_SIG_FORCE="y"), "ebpf", "CONFIG_MODULE_SIG_FORCE"),
    (None, "ktapvm", "no kernel config"),
])
def test_auto_backend_reads_the_kernel_config(config, chosen, why):
    backend, reason = api.choose_backend("auto", config, "the board")
    assert backend == chosen and why in reason and reason.startswith("auto: ")
    assert api.choose_backend("ebpf", config) == ("ebpf", "--backend ebpf")


def test_auto_backend_names_the_options_when_neither_can_run():
    config = dict(MODULES, CONFIG_MODULES="n", CONFIG_BPF_EVENTS="n")
    with pytest.raises(KtapError, match="CONFIG_MODULES is off.*CONFIG_BPF_EVENTS off"):
        api.choose_backend("auto", config, "the board")


def test_setup_entries_shape_the_table_maps():
    img = ebpf('var t = {}\nt["setup"] = "a long string value"\n'
               'trace probe:vfs_write { print(t["k"]) }')
    m = next(m for m in img.ebpf.maps if m.name == "t")
    assert (m.key_kind, m.value_kind) == (im.KEY_STR, im.VAL_STR)
    assert m.value_size >= 8 + len("a long string value") + 1
    with pytest.raises(KtapError, match="every key of table 't' to be of one type") as e:
        ebpf('var t = {}\nt["setup"] = 7\ntrace probe:vfs_write { t[arg1] += 1 }')
    assert e.value.loc.line == 3


def test_reader_bounds_map_names():
    img = ebpf(COUNTER)
    img.ebpf.maps[0].name = "m" * 257
    with pytest.raises(KtapError, match="map name of 257 bytes"):
        bc.load(bc.dump(img))


def test_for_loops_with_literal_bounds_are_unrolled():
    img = ebpf('var n = 0\ntrace probe:vfs_write {\n  for (i = 1, 5) {\n'
               '    for (j = i, 3) { n += j }\n    if (i == 4) { break }\n  }\n}')
    assert structural_problems(img) == []
    # no back edge is left for the kernel's verifier to refuse
    for k, i in enumerate(img.ebpf.programs[0].insns):
        assert not (is_jump(i) and i.off < 0), k
    with pytest.raises(KtapError, match="more than 64 iterations") as e:
        ebpf("var n = 0\ntrace probe:vfs_write { for (i = 1, 100) { n += i } }")
    assert (e.value.loc.line, e.value.loc.col) == (2, 25)
    with pytest.raises(KtapError, match="bounds are not number literals"):
        ebpf("var n = 0\ntrace probe:vfs_write { for (i = 1, n) { n += i } }")


def test_handler_calls_are_inlined_and_siblings_share_registers():
    text = ("function sq(x) { return x * x }\nfunction f(a, b) { return sq(a) + b }\n"
            "var n = 0\ntrace probe:vfs_write {\n  n += f(arg3, 1)\n  n += f(2, 3)\n"
            "  n += f(4, 5)\n}")
    img = ebpf(text)
    assert structural_problems(img) == []
    # three call sites, one register area: the frame stays as small as one call's
    one = ebpf(text.replace("  n += f(2, 3)\n  n += f(4, 5)\n", ""))
    low_slot = lambda i: min((x.off for x in i.ebpf.programs[0].insns  # noqa: E731
                              if x.dst == 10 or x.src == 10), default=0)
    assert low_slot(img) == low_slot(one)


def test_globals_that_may_hold_nil_get_tagged_slots():
    img = ebpf("var t = {}\nvar g = 0\nvar c = 0\n"
               "trace probe:vfs_write { g = t[1]\n  c += 1 }")
    slots = {img.globals[s.global_index]: s for m in img.ebpf.maps for s in m.slots}
    assert (slots["g"].kind, slots["c"].kind) == (im.SLOT_TAGGED, im.SLOT_NUM)
    with pytest.raises(KtapError, match="numbers, booleans and nil; this value may be string"):
        ebpf('var g = 0\ntrace probe:vfs_write { g = execname }')


def test_what_the_jit_lacks_is_a_warning_at_its_position():
    text = "var n = 0\ntrace probe:vfs_write { n += 1\n  if (n > arg3 / 3) { exit() } }"
    for target in TARGETS:
        heard = []
        api.compile_source(Source("t.kp", text), target, backend="ebpf", warn=heard.append)
        heard = [h for h in heard if "eBPF JIT" in h]
        lacks = get_target(target).bpf_jit_lacks
        assert len(heard) == len(lacks), heard
        if lacks:
            assert heard[0].startswith("t.kp:2:27: warning: this update takes a 64-bit atomic add")
            assert heard[1].startswith("t.kp:3:16: warning: this takes a 64-bit division")
            assert f"{target}'s eBPF JIT lacks" in heard[0]
            assert "net.core.bpf_jit_enable" in heard[1]
    # a script of per-CPU counters needs nothing the JITs lack
    heard = []
    api.compile_source(Source("t.kp", COUNTER), "arm", backend="ebpf", warn=heard.append)
    assert [h for h in heard if "eBPF JIT" in h] == []
