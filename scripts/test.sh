#!/usr/bin/env bash
# Command 2: the whole test suite. Installs what is missing, then runs the host
# tests and the QEMU board tests for all four targets. Extra arguments go to pytest.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup.sh"
cd "$here"
# pytest exits 5 when it collects no test: that is a failure here too.
exec "$here/.venv/bin/python" -m pytest -ra "$@"
