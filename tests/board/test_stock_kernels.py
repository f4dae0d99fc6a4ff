"""ktap on Debian 12's stock kernels (boards/stock.py), booted unchanged, with
ktapvm.ko built against the headers packages alone.

By default one (target, flavour) pair, STOCK_SMOKE, runs: the packages are
fetched (about 57 MB for arm), ktapvm builds against the headers, the board
boots with the kernel's own virtio and e1000 modules loaded by init, a kprobe
count, a kretprobe, a tracepoint histogram and a profile give exact counts
and symbolized stacks, a module whose vermagic disagrees is refused with
both strings named, and a boot module that fails is named on the console.
With --kernel-matrix (conftest.py) every pair in stock.STOCK runs, and the
tests marked kernel_matrix too: KASLR across two boots, a module for another
ABI or for the RT kernel, probes inside the ftrace patch site, the whole
board suite (but STOCK_DIFFERENCES). The hot-event stress on PREEMPT_RT
(arm, debian-rt) runs in both.
Measured: the default run takes 72 s from an empty ktap cache (55 MB of
packages), the matrix about 9 minutes with the packages cached.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

from conftest import DEBUG_TROUBLE
from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.boards import sessions as boardrun
from ktap.boards import stock
from ktap.boards import qemu
from ktap.boards.batch import drive, run_commands
from ktap.boards.initramfs import build_initramfs
from ktap.boards.sessions import GUEST_DIR, GUEST_MODULE, GUEST_RUNNER, kernel_trouble
from ktap.build import kmod, ktaprun
from ktap.build.bundle import module_vermagic, session_argv
from ktap.core import tools
from ktap.core.diagnostics import Source
from ktap.core.targets import all_targets, get_target
from ktapdev import boardtest
from test_kernel_versions import SMOKE as VERSION_SMOKE
from test_stress import SCRIPTS as STRESS_SCRIPTS
from test_stress import SUMMARY as STRESS_SUMMARY
from test_stress import load as stress_load

# The default run's pair: the smallest download (57 MB) that still exercises
# the cross build with the amd64 kbuild tools and the boot modules.
STOCK_SMOKE = [("arm", "debian")]

# name -> (script, workload, exact stdout): the kernel-version smoke's kprobe
# and kretprobe, and a tracepoint histogram.
SMOKE = {
    **{name: VERSION_SMOKE[name] for name in ("kprobe-count", "kretprobe-retval")},
    "tracepoint-hist": ('''
var sizes = {}
trace syscalls:sys_enter_write /execname == "ktapw"/ { sizes[args.count] += 1 }
trace_end { print(sizes[1], len(sizes)) }
''', ["ktapw", "write", "30"], "30 1\n"),
}
PROFILE = '''
var s = {}
profile-1ms { s[stack(8)] += 1 }
trace_end { print_hist(s, 3) }
'''
# One frame as ktaprun symbolizes it from the target's /proc/kallsyms.
FRAME = re.compile(r"^[A-Za-z_.][\w.]*\+0x[0-9a-f]+$")

# Debian's kernels with KASLR (armmp has none: 32-bit arm cannot randomise).
KASLR_TARGETS = ["x86_64", "arm64"]

_RUNS: dict[tuple[str, str], object] = {}


def pytest_generate_tests(metafunc):
    """`stock_kernel` runs once per STOCK_SMOKE pair, or every stock.STOCK pair
    whose target exists under --kernel-matrix."""
    if "stock_kernel" in metafunc.fixturenames:
        if metafunc.config.getoption("--kernel-matrix"):
            pairs = [p for p in stock.STOCK if p[0] in all_targets()]
        else:
            pairs = list(STOCK_SMOKE)
        metafunc.parametrize("stock_kernel", pairs, ids=[f"{t}-{k}" for t, k in pairs])


def _require(target: str) -> None:
    """Skips with the reason when a host tool is missing; a stock kernel needs
    no kernel source, so conftest.require_board_tools() asks too much."""
    try:
        qemu.require_qemu(get_target(target))
        tools.require_cross_gcc(get_target(target))
        for tool, package in (("make", "make"), ("apt-get", "apt"), ("dpkg-deb", "dpkg")):
            tools.require_tool(tool, package)
    except tools.MissingTool as e:
        pytest.skip(str(e))


def _once(key, run):
    if key not in _RUNS:
        _RUNS[key] = run()
    return _RUNS[key]


def build(target: str, flavour: str):
    _require(target)
    return _once(("build", target, flavour),
                 lambda: stock.ensure_stock_kernel(target, flavour, progress=False))


def smoke_run(target: str, flavour: str) -> boardrun.SuiteRun:
    """One boot running every SMOKE script and the profile, then rmmod."""
    build(target, flavour)

    def run():
        scripts = {name: (text, workload) for name, (text, workload, _) in SMOKE.items()}
        scripts["profile"] = (PROFILE, ["ktapw", "spin", "300"])
        sessions = [boardrun.Session(name, bc.dump(api.compile_source(
                        Source(f"{name}.kp", text), target)), workload)
                    for name, (text, workload) in scripts.items()]
        return boardrun.run_sessions(target, sessions, timeout=900, kernel=flavour)
    return _once(("smoke", target, flavour), run)


def session(run: boardrun.SuiteRun, name: str) -> boardrun.SessionResult:
    return next(s for s in run.sessions if s.name == name)


def _image(tmp: Path, name: str, text: str, target: str) -> Path:
    path = tmp / f"{name}.kbc"
    path.write_bytes(bc.dump(api.compile_source(Source(f"{name}.kp", text), target)))
    return path


def run_with_module(target: str, flavour: str, module: Path, extra: list[list[str]] = ()):
    """Boots `flavour` and runs a kprobe count with `module` as ktapvm.ko."""
    with tempfile.TemporaryDirectory(prefix="ktap-stock-") as tmp:
        image = _image(Path(tmp), "count", SMOKE["kprobe-count"][0], target)
        files = {GUEST_MODULE: module, GUEST_RUNNER: ktaprun.build_ktaprun(target),
                 f"{GUEST_DIR}/count.kbc": image}
        commands = [session_argv(GUEST_RUNNER, f"{GUEST_DIR}/count.kbc", module=GUEST_MODULE,
                                 workload=["ktapw", "write", "3"]),
                    ["ktapw", "cat", "/proc/modules"], *extra]
        return run_commands(target, commands, extra_files=files, timeout=600, kernel=flavour)


# ---------------------------------------------------------------- smoke (default run)

@pytest.mark.board
def test_stock_kernel_is_debian_and_self_contained(stock_kernel):
    target, flavour = stock_kernel
    kb = build(target, flavour)
    fl = stock.STOCK[target, flavour]
    assert (kb.kernel, kb.cpus, kb.memory) == (flavour, 2, fl.memory)
    release = kb.directory.name.removeprefix("linux-headers-")
    assert release.endswith("-" + fl.suffix) and kb.image.name == f"vmlinuz-{release}"
    config = kb.config.read_text()
    assert "CONFIG_KPROBES=y" in config and "CONFIG_MODULE_SIG_FORCE" not in config.replace(
        "# CONFIG_MODULE_SIG_FORCE is not set", "")
    # Debian's image ships a stub System.map naming the -dbg package
    assert kb.system_map is None
    # every path the headers' Makefile includes lies in ktap's cache, not /usr
    makefile = (kb.directory / "Makefile").read_text()
    included = re.findall(r"^include\s+(\S+)", makefile, re.M)
    assert included and all(Path(p).is_file() and str(p).startswith(str(kb.directory.parents[3]))
                            for p in included), makefile
    assert [m.name for m in kb.boot_modules][-1] == "e1000.ko"
    assert all(m.is_file() for m in kb.boot_modules)


@pytest.mark.board
def test_module_built_from_headers_has_the_kernels_vermagic(stock_kernel):
    target, flavour = stock_kernel
    kb = build(target, flavour)
    magic = module_vermagic(kmod.build_module(target, kb.directory))
    release = kb.directory.name.removeprefix("linux-headers-")
    assert magic.split()[0] == release
    assert ("preempt_rt" in magic.split()) == (flavour == "debian-rt"), magic


@pytest.mark.board
@pytest.mark.parametrize("name", list(SMOKE))
def test_smoke_session_counts_exactly(stock_kernel, name):
    run = smoke_run(*stock_kernel)
    result = session(run, name)
    assert (result.status, result.stdout) == (0, SMOKE[name][2]), result


@pytest.mark.board
def test_profile_stacks_symbolize_on_the_stock_kernel(stock_kernel):
    run = smoke_run(*stock_kernel)
    result = session(run, "profile")
    assert result.status == 0, result
    frames = [line for line in result.stdout.splitlines()
              if line and "|" not in line and "Distribution" not in line]
    assert frames, result.stdout
    assert all(FRAME.match(f) for f in frames), frames
    assert any(f.startswith(("hrtimer_interrupt+", "__hrtimer_run_queues+")) for f in frames)


@pytest.mark.board
def test_stock_board_boots_its_modules_and_stays_healthy(stock_kernel):
    target, flavour = stock_kernel
    run = smoke_run(target, flavour)
    release = build(target, flavour).directory.name.removeprefix("linux-headers-")
    assert f"Linux version {release} " in run.console, run.console[-2000:]
    assert "ktap init: boot module" not in run.console
    assert run.trouble == [], run.trouble
    assert run.unload_status == 0, "rmmod ktapvm failed"


@pytest.mark.board
def test_module_with_another_vermagic_is_refused_naming_both(stock_kernel, tmp_path):
    """Same release, other configuration: the kernel's version-magic check
    refuses it, and ktaprun quotes the kernel's line and the file's vermagic."""
    target, flavour = stock_kernel
    kb = build(target, flavour)
    ko = kmod.build_module(target, kb.directory)
    data = ko.read_bytes()
    magic = module_vermagic(ko)
    # same length, so the ELF layout is untouched; a module option the kernel lacks
    forged = magic.replace("mod_unload", "mod_unlXad")
    assert forged != magic
    bad = tmp_path / "ktapvm.ko"
    bad.write_bytes(data.replace(b"vermagic=" + magic.encode(), b"vermagic=" + forged.encode()))
    run = run_with_module(target, flavour, bad)
    r = run.results[0]
    err = r.stderr.decode()
    assert r.status != 0 and r.stdout == b"", err
    assert "Exec format error" in err, err
    assert f"version magic '{forged}' should be '{magic}'" in err, err
    assert "Traceback" not in err and "ktapvm" not in run.results[1].stdout.decode()


@pytest.mark.board
def test_boot_module_that_fails_is_reported_on_the_console(stock_kernel, tmp_path):
    """init goes on to HELLO and the commands, and says which module failed and why."""
    target, flavour = stock_kernel
    kb = build(target, flavour)
    bad = tmp_path / "broken.ko"
    bad.write_bytes(b"not an ELF module")
    initrd = build_initramfs(target, None, [["ktapw", "uname"]], tmp_path / "initrd.cpio.gz",
                             boot_modules=[*kb.boot_modules, bad])
    run = drive(get_target(target), qemu.boot_command(get_target(target), initrd, build=kb),
                [["ktapw", "uname"]], 600)
    assert run.results[0].status == 0 and run.boots == 1
    failed = [line for line in run.console.splitlines() if "ktap init: boot module" in line]
    assert len(failed) == 1 and "broken.ko failed to load: " in failed[0], failed


# ---------------------------------------------------------------- --kernel-matrix

@pytest.mark.board
@pytest.mark.kernel_matrix
def test_module_for_another_abi_names_both_releases():
    """ktapvm built against 6.1.0-50-amd64's headers, booted on the newest
    amd64 kernel: refused, with both releases and the headers to use named."""
    _require("x86_64")
    new = build("x86_64", "debian")
    old = stock.ensure_stock_kernel("x86_64", "debian", progress=False, abi="6.1.0-50")
    new_release = new.directory.name.removeprefix("linux-headers-")
    if new_release == "6.1.0-50-amd64":
        pytest.fail("the newest amd64 ABI is 6.1.0-50: the test needs an older one to pin")
    ko = kmod.build_module("x86_64", old.directory)
    run = run_with_module("x86_64", "debian", ko)
    err = run.results[0].stderr.decode()
    assert run.results[0].status != 0, err
    assert "was built for kernel 6.1.0-50-amd64" in err and f"this kernel is {new_release}" in err
    assert f"linux-headers-{new_release}" in err
    # whether the kernel refused it or ktaprun unloaded it, nothing stays loaded
    assert "ktapvm" not in run.results[1].stdout.decode()


@pytest.mark.board
@pytest.mark.kernel_matrix
@pytest.mark.parametrize("target", KASLR_TARGETS)
def test_kaslr_moves_the_kernel_and_stacks_still_symbolize(target):
    """Two boots: the raw addresses of a vfs_write probe hit's stack (ktaprun
    -k /dev/null prints frames unsymbolized) move, and the symbolized stacks
    are the same in both."""
    if target not in all_targets():
        pytest.skip(f"no {target} target yet")
    kb = build(target, "debian")
    kaslr = "CONFIG_RANDOMIZE_BASE=y" in kb.config.read_text()
    assert kaslr, f"Debian's {target} kernel was expected to have KASLR"
    # the kprobe machinery's frames (ftrace on x86_64, the brk handler on
    # arm64) come above vfs_write's
    one_hit = 'trace probe:vfs_write /execname == "ktapw"/ {\n  print(stack(16))\n  exit(0)\n}\n'
    seen = []
    with tempfile.TemporaryDirectory(prefix="ktap-kaslr-") as tmp:
        image = _image(Path(tmp), "hit", one_hit, target)
        files = {GUEST_MODULE: kmod.build_module(target, kb.directory),
                 GUEST_RUNNER: ktaprun.build_ktaprun(target), f"{GUEST_DIR}/hit.kbc": image}
        base = [GUEST_RUNNER, "-m", GUEST_MODULE]
        work = [f"{GUEST_DIR}/hit.kbc", "--", "ktapw", "write", "1"]
        for _ in range(2):
            run = run_commands(target, [base + ["-k", "/dev/null"] + work, base + work],
                               extra_files=files, timeout=600, kernel="debian")
            raw, named = (r.stdout.decode().split() for r in run.results)
            assert all(r.status == 0 for r in run.results), run.results
            seen.append(([int(a, 16) for a in raw], named))
    (raw1, named1), (raw2, named2) = seen
    assert named1 == named2 and any(f.startswith("vfs_write+0x") for f in named1), seen
    assert len(raw1) == len(named1)
    # x86_64 has 512 slots of 2 MB: two boots share one about once in 500.
    # vfs_write and its caller move by one slide (an ftrace trampoline,
    # allocated at run time, moves on its own)
    at = next(i for i, f in enumerate(named1) if f.startswith("vfs_write+0x"))
    slides = {raw2[i] - raw1[i] for i in (at, at + 1)}
    assert len(slides) == 1 and slides != {0}, (f"{target}: the kernel did not move", seen)


# board-tests cases whose expectations are the ktap-built boards' (one CPU, no
# ftrace patch site at function entry), by target (None: every target).
STOCK_DIFFERENCES = {
    "builtin-variables": (None, "asserts cpu == 0; the stock boards have two CPUs"),
    "tick-fires-on-time": (None, "its tick range is one CPU's on an idle host"),
    "profile-samples": (None, "profile-10ms fires on each of the two CPUs"),
    "kprobe-with-offset": (("x86_64", "arm64"), "vfs_write+4 lies in the ftrace patch site: "
                           "the kernel refuses it (-EILSEQ, -EINVAL), see the test below"),
}


def stock_differences(target: str) -> set[str]:
    return {name for name, (targets, _) in STOCK_DIFFERENCES.items()
            if targets is None or target in targets}


@pytest.mark.board
@pytest.mark.kernel_matrix
@pytest.mark.parametrize("target", ["x86_64", "arm64"])
def test_probe_inside_the_ftrace_patch_site_is_refused_in_one_line(target):
    if target not in all_targets():
        pytest.skip(f"no {target} target yet")
    build(target, "debian")
    text = 'var n = 0\ntrace probe:vfs_write+4 { n += 1 }\ntrace_end { print(n) }\n'
    session_ = boardrun.Session("offset", bc.dump(api.compile_source(Source("o.kp", text),
                                                                      target)), [])
    run = boardrun.run_sessions(target, [session_], timeout=600, kernel="debian")
    r = run.sessions[0]
    assert r.status != 0 and r.stdout == "", r
    assert re.fullmatch(r"ktaprun: \S+: kprobe vfs_write\+0x4: .* \(-E[A-Z]+\)\n", r.stderr), r
    assert run.trouble == [] and run.unload_status == 0


@pytest.mark.board
@pytest.mark.kernel_matrix
def test_board_suite_on_stock_kernel(stock_kernel):
    """Every board-tests case but STOCK_DIFFERENCES' (which hold for the one-CPU
    kernels ktap builds, not for a two-CPU distribution kernel)."""
    target, flavour = stock_kernel
    build(target, flavour)
    cases = boardtest.load_cases()
    builders = boardtest.bad_image_builders()
    runnable = [c for c in cases if not c.skip_reason(target)
                and c.name not in stock_differences(target)]
    assert len(runnable) > 50
    sessions = [boardrun.Session(c.name, boardtest.build_image(c, target, builders), c.workload)
                for c in runnable]
    run = boardrun.run_sessions(target, sessions, timeout=1800, kernel=flavour)
    failed = [f"{c.name}: {'; '.join(p)}" for c, r in zip(runnable, run.sessions)
              for p in [boardtest.check(c, r.status, r.stdout, r.stderr)] if p]
    assert failed == [], "\n".join(failed)
    assert run.trouble == [] and run.unload_status == 0, run.trouble


@pytest.mark.board
@pytest.mark.kernel_matrix
def test_rt_module_on_the_non_rt_kernel_is_refused():
    """ktapvm for 6.1.0-N-rt-armmp offered to 6.1.0-N-armmp: a one-line cause
    naming both kernels, the kernel's own reason quoted."""
    rt = build("arm", "debian-rt")
    plain = build("arm", "debian").directory.name.removeprefix("linux-headers-")
    run = run_with_module("arm", "debian", kmod.build_module("arm", rt.directory))
    err = run.results[0].stderr.decode()
    rt_release = rt.directory.name.removeprefix("linux-headers-")
    assert run.results[0].status != 0, err
    assert "ktaprun: kernel: ktapvm: " in err, err
    assert f"was built for kernel {rt_release}" in err and f"this kernel is {plain}" in err
    assert "ktapvm" not in run.results[1].stdout.decode()


STRESS_SECONDS = 5


def rt_stress_run():
    """Every test_stress.py session on hot events under fork and write load, on
    the PREEMPT_RT kernel, then rmmod and dmesg."""
    kb = build("arm", "debian-rt")

    def run():
        names, commands = [], []
        with tempfile.TemporaryDirectory(prefix="ktap-rt-stress-") as tmp:
            files = {GUEST_MODULE: kmod.build_module("arm", kb.directory),
                     GUEST_RUNNER: ktaprun.build_ktaprun("arm")}
            for name, text in STRESS_SCRIPTS.items():
                files[f"{GUEST_DIR}/{name}.kbc"] = _image(Path(tmp), name, text, "arm")
                names.append(name)
                commands.append(session_argv(GUEST_RUNNER, f"{GUEST_DIR}/{name}.kbc",
                                             module=GUEST_MODULE,
                                             workload=stress_load(STRESS_SECONDS)))
            names += ["rmmod", "dmesg"]
            commands += [["ktapw", "rmmod", "ktapvm"], ["ktapw", "dmesg"]]
            board = run_commands("arm", commands, extra_files=files, timeout=900,
                                 kernel="debian-rt")
        return dict(zip(names, board.results)), board.console
    return _once(("rt-stress",), run)


# The PREEMPT_RT stress runs by default: it is the only RT kernel in the run.
@pytest.mark.board
@pytest.mark.parametrize("name", list(STRESS_SCRIPTS))
def test_rt_hot_event_session_stops_cleanly(name):
    results, _ = rt_stress_run()
    r = results[name]
    out = r.stdout.decode("utf-8", "replace")
    assert r.status == 0, (out, r.stderr)
    m = re.search(STRESS_SUMMARY[name], out)
    assert m and int(m.group(1)) > 0, out


@pytest.mark.board
def test_rt_kernel_reports_nothing_after_stress():
    """Debian's rt-armmp config has DEBUG_ATOMIC_SLEEP and lockdep off, so
    "sleeping function called from invalid context" and lockdep reports cannot
    appear; "scheduling while atomic", BUG, WARNING, soft lockups and hung
    tasks still would."""
    results, console = rt_stress_run()
    assert results["rmmod"].status == 0
    config = build("arm", "debian-rt").config.read_text()
    assert "CONFIG_PREEMPT_RT=y" in config
    dmesg = results["dmesg"].stdout.decode("utf-8", "replace")
    assert "PREEMPT_RT" in dmesg or "preempt_rt" in dmesg.lower() or "PREEMPT RT" in dmesg
    bad = [line for line in console.splitlines() + dmesg.splitlines()
           if DEBUG_TROUBLE.search(line) and "@@KTAP:" not in line]
    assert bad == [] and kernel_trouble(console) == [], bad
