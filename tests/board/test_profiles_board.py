"""Board profiles recorded from QEMU (boards/profile.py): one boot per target,
then cached next to the kernel. Profile parsing and the directory round trip are
in tests/native/test_profiles.py."""

from __future__ import annotations

import gzip
import hashlib

import pytest

from ktap.boards import kernels as kernel
from ktap.boards.profile import board_profile, board_profile_dir
from ktap.core import tools
from ktap.core.targets import get_target, target_names


@pytest.fixture(scope="module", params=target_names())
def board_prof(request):
    target = get_target(request.param)
    if kernel.cached_kernel(target) is None:
        pytest.skip(f"no cached {target.name} kernel (build it: ktap board -t {target.name} kernel)")
    try:
        return target, board_profile(target)
    except tools.MissingTool as e:
        pytest.skip(str(e))


@pytest.mark.board
def test_board_profile_contents(board_prof):
    target, p = board_prof
    assert p.target == target.name and p.release.startswith("6.1")
    assert p.path == board_profile_dir(target)
    assert p.features["kprobes"] and p.features["kretprobes"]
    assert p.features["thumb2_kernel"] is False
    assert p.meta["config_source"].endswith(".config")     # boards lack IKCONFIG
    raw = gzip.decompress((p.path / "kallsyms.gz").read_bytes())
    assert hashlib.sha256(raw).hexdigest() == p.meta["kallsyms"]["sha256"]
    assert p.has_function("vfs_read") and not p.has_function("vfs_reed")
    assert len(p.tracepoints()) > 100


@pytest.mark.board
def test_board_tracepoint_layouts(board_prof):
    target, p = board_prof
    fields = {f.name: f for f in p.tracepoint_fields("sched", "sched_switch")}
    assert fields["prev_comm"].array_len == 16 and fields["prev_comm"].offset == 8
    assert fields["prev_pid"].size == 4 and fields["prev_pid"].signed
    # `long` follows the word size: the layout really is the target's.
    assert fields["prev_state"].size == target.word_size
    write = {f.name: f for f in p.tracepoint_fields("syscalls", "sys_enter_write")}
    assert write["buf"].size == target.word_size and write["count"].size == target.word_size
