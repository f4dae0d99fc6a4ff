"""Which kernel a board boots: the one place that maps a kernel name to the
code that provides it.

    "5.10", "6.1", "6.12"   built by ktap from Debian's linux-source-<version>
                            (boards/kernels.py), tinyconfig + ktap's fragments
    "debian", "debian-rt"   Debian's stock kernel images, booted unchanged
                            (boards/stock.py)

Everything that boots a board (batch, sessions, profile, the CLI) asks
boot_kernel() for a KernelBuild and reads the image, the module build dir,
the CPUs, memory and boot modules from it.
"""
from __future__ import annotations

from ktap.boards import kernels, stock
from ktap.boards.kernels import KernelBuild, KernelError
from ktap.core.targets import Target, get_target

DEFAULT_KERNEL = kernels.DEFAULT_KERNEL
BUILT_KERNELS = kernels.KERNEL_VERSIONS
STOCK_KERNELS = stock.STOCK_KERNELS
KERNEL_CHOICES = (*BUILT_KERNELS, *STOCK_KERNELS)


def check_kernel(kernel: str) -> str:
    """`kernel` if it names a known kernel; KernelError listing the known ones if not."""
    if kernel not in KERNEL_CHOICES:
        raise KernelError(f"unknown kernel {kernel!r}; known kernels: "
                          f"{', '.join(KERNEL_CHOICES)} (default {DEFAULT_KERNEL})")
    return kernel


def is_stock(kernel: str) -> bool:
    return check_kernel(kernel) in STOCK_KERNELS


def boot_kernel(target: Target | str, kernel: str = DEFAULT_KERNEL, variant: str | None = None,
                progress: bool = True) -> KernelBuild:
    """The kernel `target`'s board boots for `kernel` (KERNEL_CHOICES), built
    or fetched on a cache miss. `variant` ("debug", "smp", "rt") exists only
    for the kernels ktap builds."""
    target = get_target(target)
    if is_stock(kernel):
        if variant:
            raise KernelError(f"the {variant} variant exists only for the kernels ktap builds "
                              f"({', '.join(BUILT_KERNELS)}), not for {kernel}")
        return stock.ensure_stock_kernel(target, kernel, progress)
    return kernels.ensure_kernel_build(target, progress, variant=variant or None, kernel=kernel)
