#!/usr/bin/env bash
# Command 1: set up, build, and trace. Installs what is missing, compiles the
# samples for arm, runs a histogram sample on the host reference VM, then builds
# (or takes from the cache) the arm kernel and board and boots it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup.sh"
cd "$here"
ktap="$here/.venv/bin/ktap"
echo "== compiling the samples for arm (scons target=arm)"
"$here/.venv/bin/scons" -Q target=arm
echo "== write sizes histogram on the host reference VM (ktap sim)"
"$ktap" sim -t arm samples/write_sizes.kp --events samples/write_sizes.events
echo "== booting the arm QEMU board (a cold first run builds its kernel: a few minutes)"
"$ktap" board -t arm check
