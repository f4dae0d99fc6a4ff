"""Where the checkout's data lives. ktap runs from a source checkout (pip install -e),
so kernel-module sources, target descriptors and guest programs are found beside the
toolchain rather than inside the Python package."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
TARGETS_DIR = REPO_ROOT / "targets"
KMOD_DIR = REPO_ROOT / "kmod"
GUEST_DIR = REPO_ROOT / "guest"
BUILD_DIR = REPO_ROOT / "build"
BOARD_TESTS_DIR = REPO_ROOT / "board-tests"
