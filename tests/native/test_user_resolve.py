"""User-space probes resolved offline in each target's real guest files (built
by the cross compilers): what the image carries, and every refusal with the
probe's line and column."""

import re
import shutil

import pytest

from ktap import api
from ktap.boards.initramfs import guest_sysroot
from ktap.core.diagnostics import KtapError, Source
from ktap.core.targets import get_target, target_names
from ktap.backends.kbc import bytecode as bc
from ktap.events.kinds import EV_END, EV_URETPROBE, EV_USDT, USER_KINDS
from ktap.symbols.userelf import open_user_elf
from ktapdev import boardtest


def compile_user(script: str, target: str, sysroot):
    return api.compile_source(Source("u.kp", script), target, sysroot=str(sysroot))


def error_of(script: str, target: str, sysroot) -> str:
    with pytest.raises(KtapError) as e:
        compile_user(script, target, sysroot)
    return e.value.render()


@pytest.fixture(scope="module", params=target_names())
def board(request):
    return request.param, guest_sysroot(request.param)


def test_probes_carry_file_offset_build_id_and_fetch_arguments(board):
    target, root = board
    t = get_target(target)
    image = compile_user(
        "var s = 0\n"
        "trace probe:/bin/ktapw:ktapw_tick { s += arg2 }\n"
        "trace probe:/bin/ktapw:ktapw_tick%return { s += retval }\n"
        "trace sdt:/bin/ktapw:ktapw:iteration { s += arg1 }\n", target, root)
    elf = open_user_elf(root, "/bin/ktapw", t)
    tick = elf.symbols.function("ktapw_tick")
    entry, ret, usdt = image.events[:3]
    word = 8 * t.word_size
    assert entry.offset == ret.offset == elf.file_offset(tick.addr)
    assert entry.fields == [elf.build_id, ""] + [f"{r}:s{word}" for r in t.user.args[:2]]
    assert (ret.kind, ret.fields[2:]) == (EV_URETPROBE, [f"$retval:s{word}"])
    # ktapw_tick(int i) passes i to the USDT probe: the first argument register
    assert usdt.kind == EV_USDT and usdt.fields[2:] == [f"{t.user.args[0]}:s32"]
    assert tick.addr <= elf.usdt_notes[0].pc < tick.addr + tick.size
    assert len(elf.build_id) == 40
    elf.close()


def test_refusals_name_the_probe_and_the_reason(board, tmp_path):
    target, root = board
    cases = {
        "probe:/bin/nothere:f": r"/bin/nothere is not in the sysroot",
        "probe:/bin/ktapw:ktapw_tik": r"no symbol 'ktapw_tik' in /bin/ktapw; did you mean "
                                      r"'ktapw_tick'",
        "probe:/lib/libc.so.6:environ": r"'environ' in /lib/libc.so.6 is a data object",
        "probe:/bin/ktapw:ktapw_tick+2": r"ktapw_tick\+0x2 is not an instruction boundary",
        "sdt:/bin/ktapw:ktapw:nope": r"no USDT probe ktapw:nope in /bin/ktapw; it has "
                                     r"ktapw:iteration",
        "sdt:/bin/ktapdyn:ktapw:iteration": r"no USDT probe .* \(it has no .note.stapsdt",
    }
    for spec, message in cases.items():
        text = error_of(f"var n = 0\n\ntrace {spec} {{ n += 1 }}\n", target, root)
        assert text.startswith("u.kp:3:7: error: probe '" + spec + "': "), text
        assert re.search(message, text), text


def test_stripped_copy_gets_the_sysroot_hint(board, tmp_path):
    target, root = board
    (tmp_path / "bin").mkdir()
    shutil.copyfile(root.parent / "stripped" / "ktapw", tmp_path / "bin" / "ktapw")
    text = error_of("trace probe:/bin/ktapw:ktapw_tick { }\n", target, tmp_path)
    assert "is stripped" in text and "--sysroot needs the unstripped copy" in text


def test_arm_thumb_code_is_refused():
    root = guest_sysroot("arm")
    text = error_of("trace probe:/lib/libc.so.6:getppid { }\n", "arm", root)
    assert "is Thumb code: arm uprobes decode ARM instructions only" in text


def test_without_a_sysroot_the_probe_asks_for_one():
    with pytest.raises(KtapError) as e:
        api.compile_source(Source("u.kp", "trace probe:/bin/ktapw:ktapw_tick { }\n"), "mips")
    assert e.value.loc.line == 1 and "give --sysroot DIR" in e.value.message


def test_user_board_cases_compile_for_both_backends(board):
    """What the board suite will run, checked on the host first."""
    target, _ = board
    builders = boardtest.bad_image_builders()
    cases = [c for c in boardtest.load_cases() if boardtest.uses_user_probes(c)]
    assert len(cases) >= 8
    for case in cases:
        if case.skip_reason(target):
            continue
        if case.ebpf_error:
            with pytest.raises(boardtest.CaseError, match=case.ebpf_error):
                boardtest.build_image(case, target, builders, "ebpf")
        for backend in ("ktapvm",) if case.ebpf_error else ("ktapvm", "ebpf"):
            image = bc.load(boardtest.build_image(case, target, builders, backend))
            assert any(e.kind in USER_KINDS for e in image.events)
            if backend == "ebpf":
                handlers = sum(1 for e in image.events if e.kind != EV_END)
                assert len(image.ebpf.programs) == handlers


def test_a_stripped_file_resolves_through_its_debug_file(tmp_path):
    """The board's stripped copy in the sysroot, its symbols in a separate
    debug file: by build-id under /usr/lib/debug/.build-id, or by
    .gnu_debuglink beside it."""
    import subprocess
    root = guest_sysroot("x86_64")
    elf = open_user_elf(root, "/bin/ktapw", get_target("x86_64"))
    bid = elf.build_id
    elf.close()
    script = "trace probe:/bin/ktapw:ktapw_tick { }\n"
    want = compile_user(script, "x86_64", root).events[0].offset
    by_id = tmp_path / "by-id"
    (by_id / "bin").mkdir(parents=True)
    shutil.copyfile(root.parent / "stripped" / "ktapw", by_id / "bin" / "ktapw")
    debug = by_id / "usr" / "lib" / "debug" / ".build-id" / bid[:2] / f"{bid[2:]}.debug"
    debug.parent.mkdir(parents=True)
    shutil.copyfile(root / "bin" / "ktapw", debug)
    assert compile_user(script, "x86_64", by_id).events[0].offset == want
    link = tmp_path / "link"
    (link / "bin" / ".debug").mkdir(parents=True)
    shutil.copyfile(root / "bin" / "ktapw", link / "bin" / ".debug" / "ktapw.dbg")
    subprocess.run(["objcopy", "--strip-all", "--add-gnu-debuglink=" +
                    str(link / "bin" / ".debug" / "ktapw.dbg"), str(root / "bin" / "ktapw"),
                    str(link / "bin" / "ktapw")], check=True)
    assert compile_user(script, "x86_64", link).events[0].offset == want
