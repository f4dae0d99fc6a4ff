#!/usr/bin/env bash
# Command 2: the whole test suite. Installs what is missing, then runs the host
# tests and the QEMU board tests for every target. Extra arguments go to pytest.
#
# The default run boots the default 6.1 kernel on every target, one smoke boot
# per other kernel version (KERNEL_SMOKE in tests/conftest.py: 5.10 on mips,
# 6.12's rt variant on arm64), Debian's stock armmp and rt-armmp kernels on
# arm, the debug, smp and rt kernel variants on VARIANT_SMOKE's boards, and the
# eBPF backend's board tests on EBPF_SMOKE's (x86_64, mips). --matrix runs everything
# on every combination: each target with each kernel version and variant, the
# whole board suite included, and every stock kernel (docs/kernels.md).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
args=()
for arg in "$@"; do
    if [ "$arg" = "--matrix" ]; then
        args+=(--kernel-matrix)
    else
        args+=("$arg")
    fi
done
"$here/scripts/setup.sh"
cd "$here"
# pytest exits 5 when it collects no test: that is a failure here too.
exec "$here/.venv/bin/python" -m pytest -ra ${args[@]+"${args[@]}"}
