#!/usr/bin/env bash
# Command 1: set up, build, and trace. Installs what is missing, compiles the
# samples for arm, then builds (or takes from the cache) the arm kernel, the
# ktapvm module and ktaprun, boots the arm QEMU board and traces vfs_write
# there, printing a histogram of write sizes.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup.sh"
cd "$here"
ktap="$here/.venv/bin/ktap"
echo "== compiling the samples for arm (scons target=arm)"
"$here/.venv/bin/scons" -Q target=arm
echo "== the arm board: a cold first run builds its kernel (a few minutes)"
"$ktap" board -t arm kernel
echo "== tracing vfs_write on the arm board while 'ktapw write 100' runs"
"$ktap" board -t arm run samples/write_sizes.kp -- ktapw write 100
