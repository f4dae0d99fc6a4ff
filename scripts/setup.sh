#!/usr/bin/env bash
# Installs everything ktap needs on a Debian 12 host: the Debian packages (cross
# compilers, QEMU, kernel source and build tools) and a Python venv with the
# toolchain installed in editable mode. Safe to run again: it only installs
# what is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

DEBS=(
  build-essential bc bison flex libssl-dev libelf-dev cpio kmod xz-utils
  linux-source-6.1
  clang llvm libclang-rt-14-dev
  openssh-client adb dropbear-bin busybox-static
  systemtap-sdt-dev
)
# Each target's cross compiler, static libc and QEMU: the [packages] table of
# targets/*/target.toml, so that a new target needs no edit here.
mapfile -t target_debs < <(python3 - "$here/targets" <<'PY'
import sys, tomllib
from pathlib import Path
for toml in sorted(Path(sys.argv[1]).glob("*/target.toml")):
    packages = tomllib.loads(toml.read_text())["packages"]
    print("\n".join(packages[k] for k in ("gcc", "libc", "qemu")))
PY
)
[ ${#target_debs[@]} -gt 0 ] || { echo "ktap setup: no packages read from targets/" >&2; exit 1; }
DEBS+=("${target_debs[@]}")

missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ktap setup: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "ktap setup: need root to install packages (run as root or with sudo)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "ktap setup: Debian packages present"
fi

venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  echo "ktap setup: creating venv $venv"
  python3 -m venv "$venv"
fi
stamp="$venv/.ktap-installed"
if [ ! -f "$stamp" ] || [ "$here/pyproject.toml" -nt "$stamp" ]; then
  echo "ktap setup: installing Python packages into $venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e "$here[test]"
  touch "$stamp"
else
  echo "ktap setup: Python packages present"
fi
