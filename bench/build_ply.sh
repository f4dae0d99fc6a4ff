#!/usr/bin/env bash
# Builds ply (https://github.com/iovisor/ply), the benchmark peer of the eBPF
# backend, as a static binary for one target, from a checkout of its public
# source. The binary is for bench/module.py --ply TARGET=PATH and is never
# committed.
#
#   bench/build_ply.sh TARGET PLY_SOURCE_DIR [OUT_DIR]     (default OUT_DIR: build/ply)
#
# Needs autoconf, automake, libtool, bison and flex (installed here when missing)
# and the target's cross compiler (scripts/setup.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -lt 2 ]; then
    sed -n '2,11p' "$0" >&2
    exit 2
fi
target=$1
src=$(cd "$2" && pwd)
out=${3:-$here/build/ply}
missing=()
for tool in autoreconf automake libtoolize bison flex; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "build_ply: installing autoconf automake libtool bison flex (missing: ${missing[*]})" >&2
    apt-get install -y -q autoconf automake libtool bison flex >/dev/null
fi
cross=$(PYTHONPATH="$here/toolchain" "$here/.venv/bin/python" -c \
    "from ktap.core.targets import get_target; print(get_target('$target').cross_compile)")
host=${cross%-}
[ -n "$host" ] || host=$(gcc -dumpmachine)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -a "$src/." "$work/"
cd "$work"
[ -x configure ] || ./autogen.sh >/dev/null
./configure --host="$host" CC="${cross}gcc" --enable-static --disable-shared >/dev/null
# libtool links a program statically with -all-static (plain -static is not passed on)
make -j"$(nproc)" LDFLAGS=-all-static >/dev/null
mkdir -p "$out"
"${cross}strip" -o "$out/ply-$target" src/ply/ply
echo "$out/ply-$target"
