"""The four QEMU boards booting: one boot per target for this whole module (the
`booted` fixture runs every guest command the tests look at in that boot); uname,
arch and features checked against the target descriptors, and `ktap board check`.
A missing QEMU, cross compiler or kernel source skips with the reason; a kernel
not yet in the cache is built first (minutes). The parts without a boot are in
tests/native/test_board_parts.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import require_board_tools
from ktap.boards import kernels as kernel
from ktap.boards.batch import run_commands
from ktap.boards.check import CHECK_COMMANDS, evaluate_check, parse_features, parse_key_values
from ktap.cli import board as board_cli
from ktap.cli.main import main as ktap_main
from ktap.core.targets import get_target, target_names


MODULE_SOURCE = """\
#include <linux/module.h>
static int __init ktaptest_init(void) { pr_info("ktaptest loaded\\n"); return 0; }
static void __exit ktaptest_exit(void) { pr_info("ktaptest unloaded\\n"); }
module_init(ktaptest_init);
module_exit(ktaptest_exit);
MODULE_LICENSE("GPL");
"""
BOOT_COMMANDS = CHECK_COMMANDS + [
    ["ktapw", "getpid", "10"],
    ["ktapw", "write", "5"],
    ["ktapw", "open", "/proc/version", "3"],
    ["ktapw", "fork", "3"],
    ["ktapw", "sleep", "100"],
    ["ktapw", "no-such-subcommand"],
    ["cat-is-not-here"],
    ["ktapw", "insmod", "/lib/modules/ktaptest.ko"],
    ["ktapw", "rmmod", "ktaptest"],
    ["ktapw", "dmesg"],
]


def _build_test_module(target, build_dir: Path, work: Path) -> Path:
    (work / "ktaptest.c").write_text(MODULE_SOURCE)
    (work / "Kbuild").write_text("obj-m := ktaptest.o\n")
    cmd = ["make", "-C", str(build_dir), f"M={work}", f"ARCH={target.kernel_arch}", "modules"]
    if target.cross_compile:
        cmd.append(f"CROSS_COMPILE={target.cross_compile}")
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return work / "ktaptest.ko"


@pytest.fixture(scope="module", params=target_names())
def booted(request, tmp_path_factory):
    """One boot per target running BOOT_COMMANDS (kernel built first on a cache miss)."""
    target = get_target(request.param)
    require_board_tools(target)
    build_dir = kernel.ensure_kernel(target)
    module = _build_test_module(target, build_dir, tmp_path_factory.mktemp(f"mod-{target.name}"))
    run = run_commands(target, BOOT_COMMANDS, {"/lib/modules/ktaptest.ko": module},
                       timeout=180)
    return target, run


def result(run, *argv):
    (r,) = [r for r in run.results if r.argv == list(argv)]
    return r


@pytest.mark.board
def test_board_boots_once_and_runs_every_command(booted):
    target, run = booted
    assert run.boots == 1
    assert run.frame_errors == []
    assert len(run.results) == len(BOOT_COMMANDS)
    assert all(r.status is not None for r in run.results)
    assert run.init_seconds is not None and run.init_seconds < run.total_seconds


@pytest.mark.board
def test_board_check_passes(booted):
    target, run = booted
    check = evaluate_check(target, run)
    assert check.ok, check.problems
    assert check.uname.startswith("Linux ") and "6.1." in check.uname


@pytest.mark.board
def test_board_cli_check_reports_and_exits_zero(booted, monkeypatch, capsys):
    target, run = booted
    # Reuse this module's boot: the CLI logic is what is under test here.
    monkeypatch.setattr(board_cli, "check_board", lambda t, timeout: evaluate_check(target, run))
    assert ktap_main(["board", "-t", target.name, "check"]) == 0
    out = capsys.readouterr().out
    assert f"byte order: {target.byte_order}" in out and "board check: OK" in out


@pytest.mark.board
def test_guest_sees_the_descriptor_byte_order_and_word_size(booted):
    target, run = booted
    arch = parse_key_values(result(run, "ktapw", "arch").stdout.decode())
    assert arch["byte_order"] == target.byte_order
    assert arch["word_size"] == str(target.word_size)
    assert arch["pointer_size"] == str(target.word_size)


@pytest.mark.board
def test_kernel_tracing_features_present(booted):
    target, run = booted
    features = parse_features(result(run, "ktapw", "features").stdout.decode())
    for name in ("kprobes", "kretprobes", "tracepoints", "syscall_tracepoints", "perf_events",
                 "kallsyms", "modules", "bpf", "hrtimers"):
        assert features.get(name), name


@pytest.mark.board
def test_workloads_exit_zero(booted):
    target, run = booted
    for argv in (["ktapw", "getpid", "10"], ["ktapw", "write", "5"],
                 ["ktapw", "open", "/proc/version", "3"], ["ktapw", "fork", "3"]):
        r = result(run, *argv)
        assert r.ok, (argv, r.status, r.output)


@pytest.mark.board
def test_sleep_really_sleeps(booted):
    target, run = booted
    r = result(run, "ktapw", "sleep", "100")
    assert r.ok and r.seconds >= 0.1


@pytest.mark.board
def test_failures_keep_their_status_and_stderr(booted):
    target, run = booted
    usage = result(run, "ktapw", "no-such-subcommand")
    assert usage.status == 2 and b"usage: ktapw" in usage.stderr
    missing = result(run, "cat-is-not-here")
    assert missing.status == 127 and b"cannot run cat-is-not-here" in missing.stderr


@pytest.mark.board
def test_module_built_against_cached_tree_loads(booted):
    target, run = booted
    assert result(run, "ktapw", "insmod", "/lib/modules/ktaptest.ko").ok
    assert result(run, "ktapw", "rmmod", "ktaptest").ok
    log = result(run, "ktapw", "dmesg").output
    assert "ktaptest loaded" in log and "ktaptest unloaded" in log
