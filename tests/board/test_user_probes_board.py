"""User-space probes where the board and the host disagree, on the big-endian
mips board, with both backends: a board file that is not the host copy the probe was resolved in
(another build-id), a file the board lacks, and the uprobe_events definitions
ktaprun leaves behind (none, even when a session fails half-way)."""

import shutil
from pathlib import Path

import pytest

from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.boards.initramfs import guest_sysroot
from ktap.boards.sessions import Session, run_sessions
from ktap.core.diagnostics import KtapError, Source
from ktap.symbols.userelf import open_user_elf
from ktap.core.targets import get_target

TARGET = "mips"
COUNT = "var n = 0\ntrace probe:/bin/ktapw:ktapw_tick { n += 1 }\ntrace_end { print(n) }\n"


def image(script: str, sysroot: Path, backend: str) -> bytes:
    return bc.dump(api.compile_source(Source("u.kp", script), TARGET, sysroot=str(sysroot),
                                      backend=backend))


def other_build_id(sysroot: Path) -> str:
    """bin/ktapw with one byte of its build-id changed: the same code and
    symbols, but not the board's file."""
    elf = open_user_elf(sysroot, "/bin/ktapw", get_target(TARGET))
    old = bytes.fromhex(elf.build_id)
    elf.close()
    path = sysroot / "bin" / "ktapw"
    data = path.read_bytes()
    assert data.count(old) == 1
    new = bytes([old[0] ^ 0xff]) + old[1:]
    path.write_bytes(data.replace(old, new))
    return new.hex()


@pytest.fixture(scope="module")
def sysroots(tmp_path_factory):
    """The board's own files; a copy with a host-only file beside them; and a
    copy whose ktapw has another build-id (with that id)."""
    if shutil.which("qemu-system-mips") is None:
        pytest.skip("qemu-system-mips is not installed (scripts/setup.sh)")
    real = guest_sysroot(TARGET)
    extra = tmp_path_factory.mktemp("extra")
    shutil.copytree(real, extra, dirs_exist_ok=True)
    shutil.copyfile(real / "bin" / "ktapw", extra / "bin" / "ktapw-host-only")
    other = tmp_path_factory.mktemp("other")
    shutil.copytree(real, other, dirs_exist_ok=True)
    return real, extra, other, other_build_id(other)


@pytest.mark.board
@pytest.mark.parametrize("backend", ["ktapvm", "ebpf"])
def test_board_refuses_other_files_and_leaves_no_definitions(sysroots, backend):
    real, extra, other, other_id = sysroots
    # the first probe is defined before the second fails: it must go again
    half = ("var n = 0\ntrace probe:/bin/ktapw:ktapw_tick { n += 1 }\n"
            "trace probe:/bin/ktapw-host-only:ktapw_tick { n += 1 }\n")
    sessions = [
        Session("missing", image(half, extra, backend), ["ktapw", "calls", "3"]),
        Session("mismatch", image(COUNT, other, backend), ["ktapw", "calls", "3"]),
        Session("listing", image(COUNT, real, backend),
                ["ktapw", "cat", "/sys/kernel/tracing/uprobe_events"]),
    ]
    run = run_sessions(TARGET, sessions, timeout=600)
    missing, mismatch, listing = run.sessions
    assert missing.status == 1, missing
    assert "/bin/ktapw-host-only: No such file or directory on the board" in missing.stderr
    assert mismatch.status == 1, mismatch
    assert f"the host copy's {other_id}" in mismatch.stderr
    assert "re-sync" in mismatch.stderr
    # only the listing session's own definition (ktapvm; the eBPF backend
    # attaches through the uprobe PMU, which defines none): the failed
    # sessions' are gone
    defs = [line for line in listing.stdout.splitlines() if ":ktap_" in line]
    assert len(defs) == (backend == "ktapvm"), listing.stdout
    assert all("/bin/ktapw:0x" in d for d in defs)
    assert (listing.status, run.trouble) == (0, [])



@pytest.mark.board
def test_target_sync_pulls_board_files_for_user_probes(sysroots, tmp_path):
    """`ktap target sync --file` keeps the board's own copies and their
    build-ids in the profile; --profile alone then resolves a shared library's
    exported function, and a stripped executable gets the --sysroot hint."""
    from ktap.boards.profile import sync_board
    from ktap.symbols import profiles
    real = sysroots[0]
    out = sync_board(TARGET, tmp_path / "prof", files=["/bin/ktapw", "/lib/libktapdyn.so"])
    prof = profiles.load(out)
    board_copy = real.parent / "stripped" / "ktapw"
    assert (prof.sysroot / "bin" / "ktapw").read_bytes() == board_copy.read_bytes()
    elf = open_user_elf(real, "/bin/ktapw", get_target(TARGET))
    assert prof.meta["files"]["/bin/ktapw"]["build_id"] == elf.build_id
    elf.close()
    lib = "trace probe:/lib/libktapdyn.so:ktapdyn_lib_tick { }\n"
    assert api.compile_source(Source("l.kp", lib), TARGET, sysroot=str(prof.sysroot)).events
    with pytest.raises(KtapError, match="is stripped"):
        api.compile_source(Source("e.kp", COUNT), TARGET, sysroot=str(prof.sysroot))
    with pytest.raises(profiles.ProfileError, match="cannot read /bin/none on the board"):
        sync_board(TARGET, tmp_path / "bad", files=["/bin/none"])


@pytest.mark.board
def test_board_kernels_have_uprobes():
    """What user probes need (docs/language.md): every default board kernel has
    it, from the configs the kernel builds start from."""
    from ktap.boards.choice import DEFAULT_KERNEL, boot_kernel
    from ktap.core.targets import target_names
    for target in target_names():
        config = (boot_kernel(target, DEFAULT_KERNEL).directory / ".config").read_text()
        for option in ("CONFIG_UPROBES=y", "CONFIG_UPROBE_EVENTS=y"):
            assert option in config.splitlines(), (target, option)
