#!/usr/bin/env bash
# Command 2: the whole test suite. Installs what is missing, then runs the host
# tests and the QEMU board tests for all four targets. Extra arguments go to pytest.
#
# The default run boots the default 6.1 kernel on every target, plus one smoke
# boot per other kernel version on a little- and a big-endian board
# (KERNEL_SMOKE in tests/conftest.py). --matrix runs the kernel-version board
# tests, the whole board suite included, on every (target x kernel version).
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
