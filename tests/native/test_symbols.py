"""ktap.symbols against the cached board kernels' files: symbol tables against nm,
System.map, refusal reasons, glob expansion, capstone probe-point checks,
symbolization and resolve_events(). A missing cached kernel skips with the
reason; these tests never build one. Board-profile cases are in tests/board."""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import build_dir, compile_text
from ktap.core.diagnostics import KtapError
from ktap.core.targets import get_target, target_names
from ktap.symbols import codecheck, profiles, readers, resolve, symbolize
from ktap.symbols.table import REASONS, TEXT_KINDS, Symbol, SymbolError, SymbolTable


# Text symbols (nm t/T/W) of each board vmlinux, pinned for the kernel build
# they were counted on; a new kernel config changes them, and then only the
# equality with nm is checked.
PINNED_TEXT = {
    "x86_64": ("x86_64-c50f25a6cd084334", 16172),
    "arm": ("arm-3c2b3e9aee5f0e8f", 16096),
    "mips": ("mips-50a9aadb45971992", 16275),
    "powerpc": ("powerpc-c44245eb6504ef85", 15426),
    "arm64": ("arm64-370cae6fa5e2860b", 17501),
}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed")
    return path


@pytest.fixture(scope="module", params=target_names())
def kern(request):
    name = request.param
    d = build_dir(name)
    return get_target(name), d, readers.load_vmlinux(d / "vmlinux")


def nm_text(nm: str, path: Path, word_size: int) -> set[tuple[int, str, str]]:
    out = subprocess.run([nm, str(path)], capture_output=True, text=True, check=True).stdout
    mask = (1 << (8 * word_size)) - 1       # nm sign-extends 32-bit MIPS addresses
    rows = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            rows.add((int(parts[0], 16) & mask, parts[1], parts[2]))
    return rows


def test_vmlinux_text_symbols_match_nm(kern):
    target, d, table = kern
    ref = nm_text(tool(f"{target.cross_compile}nm"), d / "vmlinux", target.word_size)
    mine = {(s.addr, s.kind, s.name) for s in table.symbols if s.kind in TEXT_KINDS}
    assert mine == ref
    key, count = PINNED_TEXT[target.name]
    if d.name == key:
        assert len(mine) == count


def test_vmlinux_header_facts(kern):
    target, _, table = kern
    assert table.machine == target.name
    assert table.byte_order == target.byte_order
    assert table.word_size == target.word_size
    assert len(table.functions()) > 10_000


def test_system_map_agrees_with_vmlinux(kern):
    target, d, table = kern
    smap = readers.load_system_map(d / "System.map", word_size=target.word_size)
    shared = [s for s in table.functions()
              if len(table.lookup(s.name)) == 1 and len(smap.lookup(s.name)) == 1]
    assert len(shared) > 10_000
    for s in shared:
        assert smap.lookup(s.name)[0].addr == s.addr, s.name
    # Sizes in a map are up to the next text symbol: never smaller than ELF's.
    f = smap.function("vfs_read")
    assert f.addr == table.function("vfs_read").addr and f.size >= table.function("vfs_read").size


def test_mips_system_map_needs_word_size():
    d = build_dir("mips")
    wide = readers.load_system_map(d / "System.map")
    narrow = readers.load_system_map(d / "System.map", word_size=4)
    assert wide.function("vfs_read").addr >> 32 == 0xFFFFFFFF
    assert narrow.function("vfs_read").addr >> 32 == 0


def test_index_cache_is_used_and_keyed_by_file(tmp_path, monkeypatch):
    src = build_dir("arm") / "System.map"
    monkeypatch.setenv("KTAP_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "System.map"
    copy.write_bytes(src.read_bytes())
    first = readers.load_system_map(copy, word_size=4)
    assert len(list((tmp_path / "cache" / "symbols").glob("*.pickle"))) == 1
    again = readers.load_system_map(copy, word_size=4)
    assert again.symbols == first.symbols and again.nokprobe == first.nokprobe
    copy.write_text("c0000000 T only_one\n")
    assert [s.name for s in readers.load_system_map(copy, word_size=4).symbols] == ["only_one"]


@pytest.mark.parametrize("data", [b"\x7fELF" + b"\x00" * 8, b"\x7fELF\x01\x02\x01" + b"\xff" * 60])
def test_damaged_elf_is_a_ktap_error(tmp_path, data):
    f = tmp_path / "vmlinux"
    f.write_bytes(data)
    with pytest.raises(KtapError, match="vmlinux"):
        readers.load(f, use_cache=False)


def test_stripped_elf_is_explained(tmp_path):
    strip = tool("strip")
    out = tmp_path / "true"
    subprocess.run([strip, "-o", str(out), shutil.which("true")], check=True)
    with pytest.raises(SymbolError, match="no .symtab"):
        readers.load_vmlinux(out, use_cache=False)


def test_missing_file_is_a_ktap_error(tmp_path):
    with pytest.raises(SymbolError, match="No such file"):
        readers.load(tmp_path / "nope")


def synthetic() -> SymbolTable:
    """Every refusal reason, as a kernel's symbols would show it."""
    rows = [
        Symbol("ok_func", 0x1000, 0x40, "T", ".text", True),
        Symbol("jiffies", 0x9000, 8, "D", ".data", False),
        Symbol("boot_func", 0x5000, 0x20, "T", ".init.text", True),
        Symbol("bye_func", 0x6000, 0x20, "t", ".exit.text", True),
        Symbol("__kprobes_text_start", 0x2000, 0, "T", ".text"),
        Symbol("kp_func", 0x2000, 0x10, "T", ".text", True),
        Symbol("__kprobes_text_end", 0x2100, 0, "T", ".text"),
        Symbol("__noinstr_text_start", 0x3000, 0, "T", ".text"),
        Symbol("noinstr_func", 0x3000, 0x10, "T", ".text", True),
        Symbol("__noinstr_text_end", 0x3100, 0, "T", ".text"),
        Symbol("__entry_text_start", 0x4000, 0, "T", ".text"),
        Symbol("entry_func", 0x4000, 0x10, "T", ".text", True),
        Symbol("__entry_text_end", 0x4100, 0, "T", ".text"),
        Symbol("guarded_func", 0x1100, 0x10, "T", ".text", True),
        Symbol("_kbl_addr_guarded_func", 0x9100, 4, "d", "_kprobe_blacklist"),
        Symbol("vfs_write", 0x1200, 0x10, "T", ".text", True),
        Symbol("ksys_write", 0x1300, 0x10, "T", ".text", True),
    ]
    return SymbolTable(rows, source="test", nokprobe=["guarded_func"])


@pytest.mark.parametrize("name,code", [
    ("jiffies", "not-function"), ("boot_func", "init-section"), ("bye_func", "exit-section"),
    ("kp_func", "kprobes-text"), ("noinstr_func", "noinstr"), ("entry_func", "entry-text"),
    ("guarded_func", "nokprobe"),
])
def test_each_refusal_reason(name, code):
    table = synthetic()
    with pytest.raises(SymbolError, match=re.escape(f"cannot probe {name} {REASONS[code]}")):
        resolve.expand_probe(name, table)
    assert [r.code for r in resolve.expand_symbols(name, table).refused] == [code]


def test_globs_skip_refused_quietly_and_keep_the_spec_form():
    table = synthetic()
    assert resolve.expand_probe("*_func", table) == ["ok_func"]
    assert resolve.expand_probe("probe:*_write%return", table) == [
        "probe:ksys_write%return", "probe:vfs_write%return"]
    assert resolve.expand_probe("probe:vfs_write+0x4", table) == ["probe:vfs_write+0x4"]
    with pytest.raises(SymbolError, match=r"only functions that cannot be probed \(1 entry-text\)"):
        resolve.expand_probe("entry_*", table)
    with pytest.raises(SymbolError, match="matches no function"):
        resolve.expand_probe("zzz*", table)


def test_missing_symbol_gets_did_you_mean():
    with pytest.raises(SymbolError, match="did you mean 'vfs_write'"):
        resolve.expand_probe("vfs_wirte", synthetic())


# Real functions each refusal reason applies to on the board kernels.
REAL_REFUSALS = [
    ("x86_64", "jiffies", "not-function"), ("x86_64", "start_kernel", "init-section"),
    ("x86_64", "exit_amd_microcode", "exit-section"), ("x86_64", "do_syscall_64", "noinstr"),
    ("x86_64", "asm_load_gs_index", "entry-text"), ("x86_64", "do_int3", "nokprobe"),
    ("arm", "patch_text", "kprobes-text"), ("arm", "ret_fast_syscall", "entry-text"),
    ("mips", "insn_has_delayslot", "nokprobe"), ("mips", "exit_elf_binfmt", "exit-section"),
    ("powerpc", "timer_interrupt", "nokprobe"), ("powerpc", "start_kernel", "init-section"),
    ("arm64", "do_debug_exception", "nokprobe"), ("arm64", "el1h_64_sync_handler", "noinstr"),
    ("arm64", "kprobe_breakpoint_handler", "kprobes-text"),
    ("arm64", "exit_elf_binfmt", "exit-section"),
]


@pytest.mark.parametrize("arch,name,code", REAL_REFUSALS)
def test_refusals_on_board_kernels(arch, name, code):
    d = build_dir(arch)
    for table in (readers.load_vmlinux(d / "vmlinux"),
                  readers.load_system_map(d / "System.map", word_size=get_target(arch).word_size)):
        if code == "exit-section" and table.source == "system.map":
            code = "init-section"        # a map has no sections; exit text sits in the init area
        assert [r.code for r in resolve.expand_symbols(name, table).refused] == [code], table.source
MODULE_C = textwrap.dedent("""\
    #include <linux/module.h>
    #include <linux/init.h>
    #include <linux/kprobes.h>
    int kmt_counter;
    noinline int kmt_work(int x) { return x * 3 + kmt_counter; }
    noinline int kmt_guarded(int x) { return x + 1; }
    NOKPROBE_SYMBOL(kmt_guarded);
    static int __init kmt_init(void) { return kmt_work(1) + kmt_guarded(0) - 4; }
    static void __exit kmt_exit(void) { }
    module_init(kmt_init);
    module_exit(kmt_exit);
    MODULE_LICENSE("GPL");
""")


@pytest.fixture(scope="module", params=target_names())
def module_ko(request, tmp_path_factory):
    target = get_target(request.param)
    d = build_dir(target.name)
    tool(f"{target.cross_compile}gcc")
    work = tmp_path_factory.mktemp(f"kmt-{target.name}")
    (work / "kmt.c").write_text(MODULE_C)
    (work / "Kbuild").write_text("obj-m := kmt.o\n")
    cmd = ["make", "-s", "-C", str(d), f"M={work}", f"ARCH={target.kernel_arch}", "modules"]
    if target.cross_compile:
        cmd.append(f"CROSS_COMPILE={target.cross_compile}")
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return target, work / "kmt.ko"


def test_module_symbols_and_refusals(module_ko):
    target, ko = module_ko
    table = readers.load_module(ko, use_cache=False)
    assert (table.source, table.machine, table.byte_order) == ("module", target.name,
                                                               target.byte_order)
    assert table.function("kmt_work").module == "kmt"
    assert resolve.expand_probe("kmt_*", table) == ["kmt_work"]
    codes = {r.symbol.name: r.code for r in resolve.expand_symbols("kmt_*", table).refused}
    assert codes == {"kmt_init": "init-section", "kmt_exit": "exit-section",
                     "kmt_guarded": "nokprobe", "kmt_counter": "not-function"}


def test_module_code_checks(module_ko):
    target, ko = module_ko
    table = readers.load_module(ko, use_cache=False)
    reader = codecheck.CodeReader(ko)
    try:
        assert codecheck.check_probe_point(table, reader, target, "kmt_work", 0).ok
        assert not codecheck.check_probe_point(table, reader, target, "kmt_work", 1).ok
    finally:
        reader.close()


@contextmanager
def board_code(arch: str):
    """(target, symbol table, code reader) of the cached board vmlinux."""
    d = build_dir(arch)
    reader = codecheck.CodeReader(d / "vmlinux")
    try:
        yield get_target(arch), readers.load_vmlinux(d / "vmlinux"), reader
    finally:
        reader.close()


def decoded(target, table, reader, name: str):
    sym = table.function(name)
    return sym, codecheck.decode(target, reader.function_bytes(sym), sym.addr)


@pytest.mark.parametrize("arch", target_names())
def test_boundaries_on_real_functions(arch):
    with board_code(arch) as (target, table, reader):
        sym, insns = decoded(target, table, reader, "vfs_read")
        starts = [i.address - sym.addr for i in insns]
        assert starts[0] == 0 and len(starts) > 10
        good = starts[1]
        bad = 1 if starts[1] > 1 else starts[2] - 1
        ok = codecheck.check_probe_point(table, reader, target, "vfs_read", good)
        assert ok.ok and ok.instruction and not ok.warnings
        ko = codecheck.check_probe_point(table, reader, target, "vfs_read", bad)
        assert not ko.ok and "not an instruction boundary" in ko.errors[0]
        assert "past the end" in codecheck.check_probe_point(table, reader, target, "vfs_read",
                                                             sym.size).errors[0]


def test_mips_delay_slot_warning():
    with board_code("mips") as (target, table, reader):
        sym, insns = decoded(target, table, reader, "vfs_read")
        branch = next(i for i in insns if codecheck._mips_branch(i))
        slot = branch.address + 4 - sym.addr
        check = codecheck.check_probe_point(table, reader, target, "vfs_read", slot)
        assert check.ok and "branch delay slot" in check.warnings[0]
        before = codecheck.check_probe_point(table, reader, target, "vfs_read",
                                             branch.address - sym.addr)
        assert before.warnings == []


def test_arm64_exclusive_sequence_warning():
    """user_disable_single_step clears a bit with an ldxr/bic/stxr loop."""
    with board_code("arm64") as (target, table, reader):
        sym, insns = decoded(target, table, reader, "user_disable_single_step")
        ldxr = next(i for i in insns if i.mnemonic == "ldxr")
        inside = ldxr.address + 4 - sym.addr
        check = codecheck.check_probe_point(table, reader, target, sym.name, inside)
        assert check.ok and "exclusive load/store sequence (ldxr at" in check.warnings[0]
        assert codecheck.check_probe_point(table, reader, target, sym.name, 0).warnings == []


ARM_ASM = textwrap.dedent("""\
    .syntax unified
    .text
    .arm
    .global atomic_inc_arm
    .type atomic_inc_arm, %function
    atomic_inc_arm:
    1:  ldrex r1, [r0]
        add r1, r1, #1
        strex r2, r1, [r0]
        cmp r2, #0
        bne 1b
        bx lr
    .size atomic_inc_arm, . - atomic_inc_arm
    .thumb
    .thumb_func
    .global thumb_func
    .type thumb_func, %function
    thumb_func:
        push {r4, lr}
        movw r4, #0x1234
        adds r0, r0, r4
        pop {r4, pc}
    .size thumb_func, . - thumb_func
""")


@pytest.fixture(scope="module")
def arm_object(tmp_path_factory):
    gcc = tool("arm-linux-gnueabihf-gcc")
    work = tmp_path_factory.mktemp("armobj")
    (work / "a.S").write_text(ARM_ASM)
    subprocess.run([gcc, "-c", "-o", str(work / "a.o"), str(work / "a.S")], check=True)
    return work / "a.o"


def test_arm_ldrex_strex_warning(arm_object):
    target, table = get_target("arm"), readers.load_module(arm_object, use_cache=False)
    reader = codecheck.CodeReader(arm_object)
    try:
        inside = codecheck.check_probe_point(table, reader, target, "atomic_inc_arm", 4)
        assert inside.ok and "ldrex/strex" in inside.warnings[0]
        at_strex = codecheck.check_probe_point(table, reader, target, "atomic_inc_arm", 8)
        assert "ldrex/strex" in at_strex.warnings[0]
        after = codecheck.check_probe_point(table, reader, target, "atomic_inc_arm", 12)
        assert after.ok and after.warnings == []
    finally:
        reader.close()


def test_thumb2_code_is_decoded_as_thumb_and_warned(arm_object):
    target, table = get_target("arm"), readers.load_module(arm_object, use_cache=False)
    assert table.function("thumb_func").thumb and table.thumb_functions
    reader = codecheck.CodeReader(arm_object)
    try:
        # push (2 bytes) then movw (4 bytes): +2 is a boundary, +4 is not.
        at2 = codecheck.check_probe_point(table, reader, target, "thumb_func", 2)
        assert at2.ok and at2.instruction.startswith("movw")
        assert any("t16_emulate_push" in w for w in at2.warnings)
        assert not codecheck.check_probe_point(table, reader, target, "thumb_func", 4).ok
    finally:
        reader.close()


def test_symbolize_and_kaslr_slide(kern):
    target, _, table = kern
    f = table.function("vfs_read")
    assert symbolize.Symbolizer(table).symbolize(f.addr + 8) == "vfs_read+0x8"
    slide = 0x200000
    moved = symbolize.Symbolizer(table, anchor_name="_printk",
                                 anchor_runtime=table.address_of("_printk") + slide)
    assert moved.slide == slide
    assert moved(f.addr + slide) == "vfs_read+0x0"
    assert moved(0x10) == "0x10"


def test_folded_stacks():
    table = synthetic()
    sym = symbolize.Symbolizer(table)
    stacks = [((0x1204, 0x1304), 3),              # leaf first: vfs_write called by ksys_write
              ((0x1208, 0x1300), 2),
              (("ok_func", "ksys_write"), 1)]
    assert symbolize.folded(stacks, sym) == ["ksys_write;ok_func 1", "ksys_write;vfs_write 5"]
    assert symbolize.folded([(("a", "b c"), 1)], leaf_first=False) == ["a;b_c 1"]


def events(text: str, target: str = "arm"):
    return compile_text(text, target).events


def test_resolve_without_sources_gives_notices_not_silence():
    r = resolve.resolve_events(events("trace probe:vfs_read { print(arg1) }\n"
                                      "trace sched:sched_switch { print(args.prev_pid) }"), "arm")
    assert r.ok and [e.name for e in r.events] == ["vfs_read", "sched:sched_switch"]
    notes = " ".join(p.message for p in r.problems if p.severity == "notice")
    assert "unchecked" in notes and "--profile" in notes


def test_resolve_expands_checks_and_reports(kern):
    target, d, _ = kern
    script = ("trace probe:vfs_rea* { print(arg1) }\n"
              "trace probe:vfs_read+1 { print(1) }\n"
              "trace probe:jiffies { print(1) }\n"
              "trace probe:vfs_reed%return { print(retval) }")
    r = resolve.resolve_events(events(script, target.name), target, vmlinux=d / "vmlinux")
    names = [e.name for e in r.events]
    assert names[:3] == ["vfs_read", "vfs_readlink", "vfs_readv"]
    msgs = [p.message for p in r.errors]
    assert any("not an instruction boundary" in m for m in msgs)
    assert any("jiffies is not a function" in m for m in msgs)
    assert any("did you mean 'vfs_read'" in m for m in msgs)
    with pytest.raises(SymbolError, match="probe 'probe:jiffies'"):
        r.raise_errors("t.kp")


def test_resolve_refuses_a_wrong_kernel():
    d = build_dir("mips")
    r = resolve.resolve_events(events("trace probe:vfs_read { }"), "arm", vmlinux=d / "vmlinux")
    assert any("is a mips kernel, not arm" in p.message for p in r.errors)


def fake_profile(tmp: Path, target: str, config: str, formats: dict[str, str]) -> Path:
    c = profiles.Collected(target, f"Linux b 6.1.0 #1 {target}", b"c0001000 T vfs_read\n"
                           b"c0001100 T vfs_write\n", {k: v.encode() for k, v in formats.items()},
                           config.encode(), "test", None, "", "test")
    return profiles.write_profile(c, tmp / "prof")
SCHED_SWITCH = """name: sched_switch
ID: 1
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;
"""


def test_resolve_needs_kprobes_in_the_kernel(tmp_path):
    prof = fake_profile(tmp_path, "arm", "# CONFIG_KPROBES is not set\nCONFIG_KRETPROBES=n\n", {})
    r = resolve.resolve_events(events("trace probe:vfs_read%return { }"), "arm", profile=prof)
    assert [p.message.split(",")[0] for p in r.errors] == [
        "this script needs kprobes", "this script needs kretprobes"]
    assert "CONFIG_KPROBES=y" in r.errors[0].message


def test_resolve_tracepoint_fields(tmp_path):
    prof = fake_profile(tmp_path, "arm", "CONFIG_KPROBES=y\n",
                        {"sched/sched_switch": SCHED_SWITCH, "sched/sched_wakeup": SCHED_SWITCH})
    good = resolve.resolve_events(events("trace sched:sched_switch { print(args.prev_pid) }"),
                                  "arm", profile=prof)
    assert good.ok
    f = good.layouts["sched:sched_switch"]["prev_pid"]
    assert (f.offset, f.size, f.signed) == (24, 4, True)
    bad = resolve.resolve_events(events("trace sched:* { print(args.pid) }"), "arm", profile=prof)
    assert len(bad.errors) == 2 and "has no field 'pid'" in bad.errors[0].message
    assert "prev_comm, prev_pid" in bad.errors[0].message
    missing = resolve.resolve_events(events("trace sched:sched_swich { }"), "arm", profile=prof)
    assert "did you mean 'sched:sched_switch'" in missing.errors[0].message


def run_cli(argv, capsys):
    import argparse

    from ktap.cli import symbols as symbols_cli
    parser = argparse.ArgumentParser(prog="ktap")
    symbols_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except KtapError as e:
        return e.exit_status, "", e.render()
    out = capsys.readouterr()
    return status, out.out, out.err


def test_cli_symbols_lists_and_refuses(capsys):
    d = build_dir("x86_64")
    status, out, _ = run_cli(["symbols", "--vmlinux", str(d / "vmlinux"), "*int3*"], capsys)
    assert status == 1          # every match refused
    assert "refused do_int3: is marked NOKPROBE_SYMBOL [nokprobe]" in out
    assert "refused exc_int3: is in .noinstr.text" in out
    status, out, _ = run_cli(["symbols", "--vmlinux", str(d / "vmlinux"), "vfs_rea*"], capsys)
    assert status == 0 and out.split()[2] == "vfs_read"
    status, out, _ = run_cli(["symbols", "--vmlinux", str(d / "vmlinux"), "vfs_read+1"], capsys)
    assert status == 1 and "not an instruction boundary" in out
    status, _, err = run_cli(["symbols", "--vmlinux", str(d / "vmlinux"), "vfs_reed"], capsys)
    assert status == 2 and "did you mean" in err


def test_cli_transports_need_a_target_and_a_reachable_board(capsys, tmp_path):
    for how in (["--ssh", "root@b"], ["--adb", "x"], ["--serial", "/dev/ttyUSB0"]):
        status, _, err = run_cli(["target", "sync", *how, "-o", str(tmp_path)], capsys)
        assert status == 2 and "needs -t ARCH" in err
    status, _, err = run_cli(["target", "sync", "--serial", str(tmp_path / "no-such-tty"),
                              "-t", "arm", "-o", str(tmp_path / "p")], capsys)
    assert status == 1 and "no-such-tty" in err and "Traceback" not in err


def test_resolve_warns_when_vmlinux_and_profile_differ(tmp_path):
    d = build_dir("arm")
    other = profiles.Collected("arm", "Linux b 6.1.0 #1 arm", b"c0001000 T vfs_read\n"
                               b"c0001100 T only_in_other_kernel\n", {}, b"CONFIG_KPROBES=y\n",
                               "test", None, "", "test")
    prof = profiles.write_profile(other, tmp_path / "prof")
    r = resolve.resolve_events(events("trace probe:vfs_read { }"), "arm", vmlinux=d / "vmlinux",
                               profile=prof)
    assert r.ok and any("does not look like the kernel" in p.message for p in r.problems)
