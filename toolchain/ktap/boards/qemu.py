"""QEMU for the boards: the binary, the kernel variant's CPUs, what makes a
run deterministic, and the command line (machine and kernel from
targets/<arch>/target.toml)."""
from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

from ktap.boards import choice
from ktap.boards.errors import BoardError
from ktap.boards.kernels import KernelBuild
from ktap.core.targets import Target, get_target
from ktap.core.tools import require_tool

# CPUs of a board booted with a kernel variant (run_commands(...,
# kernel_variant=...)); a variant not listed boots one CPU.
# The PREEMPT_RT kernel gets two CPUs too: on one CPU a preempted probe
# handler never meets a concurrent one, which is where RT's sleeping locks bite.
VARIANT_CPUS = {"smp": 2, "rt": 2}
# QEMU before this version livelocks an SMP guest under -icount: its
# round-robin loop gives the first vCPU the whole budget up to the next timer,
# and a vCPU that busy-waits for the other one (x86 do_boot_cpu, arm
# stop_machine) uses all of it, so the other vCPU never runs. Fixed upstream
# by "accel/tcg/tcg-accel-ops-rr: ensure fairness with icount" (QEMU 8.1).
ICOUNT_SMP_MIN_QEMU = (8, 1)

# The guest's address on QEMU's user network, where port 22 is forwarded.
GUEST_IP_ARG = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off"


def require_qemu(target: Target | str) -> str:
    target = get_target(target)
    binary = target.qemu["binary"]
    return require_tool(binary, target.packages.qemu)


def qemu_version(binary: str) -> tuple[int, ...]:
    """(major, minor) of a QEMU binary, from `--version`; () if unknown."""
    r = subprocess.run([binary, "--version"], capture_output=True, text=True)
    m = re.search(r"version (\d+)\.(\d+)", r.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else ()


def variant_cpus(kernel_variant: str | None, cpus: int | None = None) -> int:
    """CPUs of the board: the kernel's own count (KernelBuild.cpus) when it
    asks for more than one, else its variant's (VARIANT_CPUS)."""
    if cpus and cpus > 1:
        return cpus
    return VARIANT_CPUS.get(kernel_variant, 1) if kernel_variant else 1


def variant_qemu_args(kernel_variant: str | None, cpus: int | None = None) -> list[str]:
    """Extra QEMU arguments for a kernel variant: -smp N for "smp" (or for a
    kernel that asks for N CPUs).

    One core per socket: without ACPI (tinyconfig has none) the x86_64 kernel
    finds CPUs in SeaBIOS's MP table, which lists only the first CPU of each
    package, so QEMU's default topology (N cores in one socket) would leave
    the guest with one CPU. arm virt takes the same topology."""
    cpus = variant_cpus(kernel_variant, cpus)
    return ["-smp", f"{cpus},sockets={cpus}"] if cpus > 1 else []


def check_deterministic(qemu: str, kernel_variant: str | None, cpus: int | None = None) -> None:
    """Refuses -icount on a multi-CPU board where QEMU would livelock."""
    if variant_cpus(kernel_variant, cpus) <= 1:
        return
    version = qemu_version(qemu)
    if version and version < ICOUNT_SMP_MIN_QEMU:
        need = ".".join(map(str, ICOUNT_SMP_MIN_QEMU))
        raise BoardError(
            f"deterministic (-icount) runs of the {kernel_variant or 'multi-CPU'} board need "
            f"QEMU {need} or "
            f"later; {qemu} is {'.'.join(map(str, version))}, whose round-robin vCPU loop "
            f"under -icount starves one CPU while the other busy-waits for it, and the "
            f"guest hangs (x86_64 bringing CPU 1 up, arm in stop_machine)")


def agent_device(target: Target | str) -> str:
    """The guest's serial line for `ktaprun --serve` ([agent] of target.toml)."""
    return get_target(target).agent.device


def boot_build(target: Target, kernel_variant: str | None = None,
               kernel: str = choice.DEFAULT_KERNEL) -> KernelBuild:
    """The kernel the board boots (choice.boot_kernel), built or taken from
    the cache. kernel: "5.10", "6.1", "6.12", "debian", "debian-rt".
    kernel_variant="debug" boots the debug kernel (targets/debug.config),
    "smp" the two-CPU kernel of x86_64, arm and arm64 (targets/smp.config),
    "rt" the two-CPU PREEMPT_RT 6.12 kernel of x86_64 and arm64
    (targets/rt.config)."""
    return choice.boot_kernel(target, kernel, kernel_variant or None)


def boot_image(target: Target, kernel_variant: str | None = None,
               kernel: str = choice.DEFAULT_KERNEL) -> Path:
    """Kernel image for the target (boot_build())."""
    return boot_build(target, kernel_variant, kernel).image


def kernel_command_line(target: Target, extra: list[str] = ()) -> str:
    # panic=-1 plus QEMU's -no-reboot turns a guest panic into QEMU exiting,
    # so a broken boot fails fast instead of waiting for the timeout.
    args = [f"console={target.qemu['console']}", "rdinit=/init", "panic=-1"]
    args += target.qemu.get("append", [])
    return " ".join(args + list(extra))


def qemu_command(target: Target, kernel_image: Path, initrd: Path, *,
                 interactive: bool = False, deterministic: bool = False,
                 append: list[str] = (), agent_socket: Path | None = None,
                 ssh_port: int | None = None, kernel_variant: str | None = None,
                 cpus: int | None = None, memory: str | None = None) -> list[str]:
    """agent_socket: a second serial line for `ktaprun --serve` (guest device
    agent_device(target)) as a unix socket QEMU listens on. ssh_port: user
    networking with the guest's port 22 forwarded to 127.0.0.1:ssh_port (the
    guest gets 10.0.2.15/24 from ip= on the kernel command line).
    kernel_variant: the kernel variant booted, for variant_qemu_args()
    (-smp 2 for "smp"). cpus, memory: what the booted kernel asks for
    (KernelBuild.cpus, .memory), over the variant's CPUs and the target's
    memory."""
    q = target.qemu
    cmd = [q["binary"], "-M", q["machine"]]
    if q.get("cpu"):
        cmd += ["-cpu", q["cpu"]]
    cmd += variant_qemu_args(kernel_variant, cpus)
    append = list(append)
    if ssh_port is not None:
        append.append(GUEST_IP_ARG)
    cmd += ["-m", str(memory or q.get("memory", "256")), "-kernel", str(kernel_image),
            "-initrd", str(initrd), "-append", kernel_command_line(target, append),
            "-no-reboot"]
    if ssh_port is None:
        cmd += ["-net", "none"]
    else:
        cmd += ["-netdev", f"user,id=ktapnet,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
                "-device", "e1000,netdev=ktapnet"]
    if interactive:
        cmd += ["-nographic"]
    else:
        cmd += ["-display", "none", "-serial", "stdio", "-monitor", "none"]
    if deterministic:
        cmd += list(q.get("icount_args", ["-icount", "shift=0,sleep=off"]))
    if agent_socket is not None:
        chardev = f"socket,id=ktapagent,path={agent_socket},server=on,wait=off"
        if target.agent.kind == "virtio":
            cmd += ["-device", "virtio-serial-device", "-chardev", chardev,
                    "-device", "virtconsole,chardev=ktapagent"]
        else:
            cmd += ["-chardev", chardev, "-serial", "chardev:ktapagent"]
    return cmd + list(q.get("extra_args", []))


def boot_command(target: Target, initrd: Path, *, kernel_variant: str | None = None,
                 kernel: str = choice.DEFAULT_KERNEL, build: KernelBuild | None = None,
                 **options) -> list[str]:
    """qemu_command() for the cached kernel (`build`, or boot_build() of
    `kernel` and `kernel_variant`), with the QEMU binary found on PATH (or
    MissingTool naming its package) before the kernel is built."""
    qemu = require_qemu(target)
    build = build or boot_build(target, kernel_variant, kernel)
    cmd = qemu_command(target, build.image, initrd, kernel_variant=kernel_variant,
                       cpus=build.cpus, memory=build.memory, **options)
    cmd[0] = qemu
    return cmd


def spawn(cmd: list[str]) -> subprocess.Popen:
    """QEMU with the serial console (and QEMU's own complaints) on one pipe."""
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.stdout:
        proc.stdout.close()
