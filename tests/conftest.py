import io
import re
import shutil
import sys
from pathlib import Path

import pytest

from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.boards import kernels as kernel
from ktap.boards.qemu import require_qemu
from ktap.build import ktaprun as runner
from ktap.core import tools
from ktap.core.diagnostics import Source
from ktap.core.targets import get_target, target_names
from ktap.core.tools import MissingTool
from ktap.refvm.sim import EventsFile, parse_events, run_sim


# Test modules import this file and tests/adb_peer.py by name.
sys.path.insert(0, str(Path(__file__).parent))


ROOT = Path(__file__).resolve().parents[1]
TARGETS = target_names()        # every targets/*/target.toml


def compile_text(text: str, target: str = "x86_64", **limits):
    return api.compile_source(Source("t.kp", text), target, limits or None)


def sim(text: str, events: str = "", target: str = "x86_64", **limits):
    """Compiles and runs a script on the reference VM; returns (stdout, status, drops)."""
    src = Source("t.kp", text)
    img = api.compile_source(src, target, limits or None)
    out = io.StringIO()
    status, drops = run_sim(img, out.write, src, parse_events(events, "ev") if events else EventsFile())
    return out.getvalue(), status, drops


def require_board_tools(target):
    """Skips the calling test, with the reason, when QEMU, the cross compiler,
    a kernel build tool or the kernel source is missing (scripts/setup.sh)."""
    try:
        require_qemu(target)
        tools.require_cross_gcc(target)
        for tool, package in kernel.BUILD_TOOLS.items():
            tools.require_tool(tool, package)
        kernel.source_version()
    except tools.MissingTool as e:
        pytest.skip(str(e))


def board_run_once(runs: dict, target: str, run, cannot_run=(), what: str = "cannot run"):
    """The one boot per target that a board test module's tests share:
    run(target) the first time, kept in `runs`. Skips when the target's QEMU
    is missing, and, with the reason, when run() raised one of `cannot_run`
    (remembered, so the other tests skip too instead of booting again)."""
    if target not in runs:
        qemu = get_target(target).qemu["binary"]
        if shutil.which(qemu) is None:
            pytest.skip(f"{qemu} is not installed (scripts/setup.sh)")
        try:
            runs[target] = run(target)
        except cannot_run as e:
            runs[target] = e
    result = runs[target]
    if isinstance(result, Exception):
        pytest.skip(f"{what}: {result}")
    return result


def leak_reports(text: str) -> tuple[list[str], list[str]]:
    """Splits a kmemleak report into (the rest, objects allocated by the kernel's
    own init before /init ran: comm "swapper", pid 1). kmemleak may miss a boot
    object in the baseline scan (a stale pointer still referenced it) and report
    it later; such a leak is the kernel's (seen: cacheinfo_cpu_online on powerpc)."""
    blocks = ["unreferenced object" + b for b in text.split("unreferenced object")[1:]]
    boot = [b for b in blocks if 'comm "swapper", pid 1,' in b]
    return [b for b in blocks if b not in boot], boot

def compile_to(tmp: Path, name: str, text: str, target: str) -> tuple[bc.Image, Path]:
    src = Source(f"{name}.kp", text)
    image = api.compile_source(src, target, None)
    path = tmp / f"{name}.{target}.kbc"
    path.write_bytes(bc.dump(image))
    return image, path

def board_vmlinux(target="arm"):
    try:
        d = kernel.ensure_kernel(target, progress=False)
    except Exception as e:       # no cached kernel and no toolchain to build one
        pytest.skip(f"no {target} board kernel: {e}")
    return d

def compile_with(text, **kernel_args):
    warnings = []
    img = api.compile_source(Source("k.kp", text), "arm", None,
                             api.KernelInfo(**kernel_args), warnings.append)
    return img, warnings


# What a debug kernel's console must not show after a stress session.
DEBUG_TROUBLE = re.compile(
    r"BUG:|WARNING:|\bOops\b|Call Trace|Kernel panic|INFO: task .* blocked|soft lockup|"
    r"hard LOCKUP|possible (circular|recursive) locking|inconsistent lock state|"
    r"suspicious RCU usage|lock held when returning|bad unlock balance|"
    r"sleeping function called from invalid context|scheduling while atomic|"
    r"new suspected memory leaks|unreferenced object", re.IGNORECASE)


def cross_build(target: str, tmp: Path) -> Path:
    """The static ktaprun for `target`; skips when its cross compiler is missing."""
    try:
        return runner.build_ktaprun(target)
    except MissingTool as e:
        pytest.skip(str(e))


def build_dir(name: str) -> Path:
    """The cached board kernel's build dir; skips (never builds) when there is none."""
    build = kernel.cached_kernel(get_target(name))
    if build is None:
        pytest.skip(f"no cached {name} kernel (build it: ktap board -t {name} kernel)")
    return build.directory


# The kernels other than the default 6.1 that the default run (CI) boots:
# (target, version, variant) triples, one little-endian and one big-endian
# board per version (tests/board/test_kernel_versions.py). mips is the
# cheapest big-endian 5.10 build (about 3-4 minutes cold on 2 cores; powerpc
# cannot run 5.10: kernels.UNSUPPORTED). 6.12 boots arm64's rt variant, the
# kernel the PREEMPT_RT stress (tests/board/test_rt_stress.py) builds anyway:
# a second 6.12 build would cost 4 more minutes of cold CI.
# --kernel-matrix runs every target with every plain kernel version instead.
KERNEL_SMOKE = [("mips", "5.10", None), ("arm64", "6.12", "rt")]
# The kernel variants the default run boots, per variant: the debug kernel
# (KASAN, lockdep, kmemleak) on one little-endian and one big-endian board,
# the two-CPU kernel on arm, PREEMPT_RT with lockdep on arm64 (its 6.12 build
# is a quarter of x86_64's). Every variant build costs 4-12 minutes of cold CI
# on 2 cores; --kernel-matrix boots every target's variants.
VARIANT_SMOKE = {"debug": ("arm", "mips"), "smp": ("arm",), "rt": ("arm64",)}
# The boards the eBPF backend's board tests (marked ebpf_board) run on by
# default: 64-bit little-endian and 32-bit big-endian, the two layouts its
# instruction encoding and records differ by. --kernel-matrix runs all five.
EBPF_SMOKE = ("x86_64", "mips")


def pytest_addoption(parser):
    parser.addoption("--kernel-matrix", action="store_true", default=False,
                     help="run the kernel-version board tests on every (target x kernel "
                          "version) combination, the whole board suite included, instead "
                          "of the smoke combinations in KERNEL_SMOKE")


def pytest_configure(config):
    config.addinivalue_line("markers", "kernel_matrix: runs only under --kernel-matrix "
                            "(the whole board suite on every kernel version)")
    config.addinivalue_line("markers", "kernel_variant(name): the test boots that kernel "
                            "variant; without --kernel-matrix only on VARIANT_SMOKE's targets")
    config.addinivalue_line("markers", "ebpf_board: an eBPF backend board test; without "
                            "--kernel-matrix only on EBPF_SMOKE's targets")


def kernel_combinations(config) -> list[tuple[str, str, str | None]]:
    """(target, kernel version, variant) triples the kernel-version tests
    run: every target with every plain version other than the default (whose
    board suite is tests/board/test_board_suite.py) under --kernel-matrix,
    else KERNEL_SMOKE."""
    if config.getoption("--kernel-matrix"):
        # kernel.UNSUPPORTED pairs are refused with their reason
        # (tests/host/test_kernel_choice.py), not booted.
        return [(t, k, None) for k in kernel.KERNEL_VERSIONS if k != kernel.DEFAULT_KERNEL
                for t in TARGETS if (t, k) not in kernel.UNSUPPORTED]
    return list(KERNEL_SMOKE)


def pytest_generate_tests(metafunc):
    """A test taking `target_kernel` runs once per kernel_combinations() triple."""
    if "target_kernel" in metafunc.fixturenames:
        triples = kernel_combinations(metafunc.config)
        metafunc.parametrize("target_kernel", triples,
                             ids=["-".join(w for w in triple if w) for triple in triples])


TIERS = ("host", "native", "board")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Every test gets the marker of its folder, so `-m host`, `-m native` and
    `-m board` select exactly tests/host, tests/native and tests/board; a test
    marked for another tier than its folder's is a usage error."""
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/host, tests/native "
                                    f"or tests/board")
        for other in TIERS:
            if other != tier and item.get_closest_marker(other):
                raise pytest.UsageError(f"{item.nodeid} is marked {other} but lives in "
                                        f"tests/{tier}")
        item.add_marker(getattr(pytest.mark, tier))
    # Tests marked kernel_matrix (the whole suite on another kernel), and
    # variant boots outside VARIANT_SMOKE, belong to --kernel-matrix runs only:
    # deselected, so no skip is counted otherwise.
    if not config.getoption("--kernel-matrix"):
        matrix = [item for item in items if matrix_only(item)]
        if matrix:
            config.hook.pytest_deselected(items=matrix)
            items[:] = [item for item in items if not matrix_only(item)]


def item_target(item) -> str | None:
    """The target a parametrized test runs on: the first parameter naming one."""
    callspec = getattr(item, "callspec", None)
    for value in (callspec.params.values() if callspec else ()):
        if isinstance(value, str) and value in TARGETS:
            return value
    return None


def matrix_only(item) -> bool:
    if item.get_closest_marker("kernel_matrix"):
        return True
    if item.get_closest_marker("ebpf_board"):
        return item_target(item) not in EBPF_SMOKE
    variant = item.get_closest_marker("kernel_variant")
    if variant is None:
        return False
    target = item_target(item)
    return target is not None and target not in VARIANT_SMOKE[variant.args[0]]


@pytest.fixture
def root():
    return ROOT
