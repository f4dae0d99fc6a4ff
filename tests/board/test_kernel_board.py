"""The cached board kernels themselves (boards/kernels.py): each built kernel
carries the options its fragments ask for. Fragments and cache keys are checked
without a build in tests/native/test_kernel.py."""

from __future__ import annotations

import pytest

from ktap.boards import kernels as kernel
from ktap.core import tools
from ktap.core.targets import get_target, target_names


def _require_build_tools(target):
    try:
        for tool, package in kernel.BUILD_TOOLS.items():
            tools.require_tool(tool, package)
        tools.require_cross_gcc(target)
        kernel.source_version()
    except tools.MissingTool as e:
        pytest.skip(str(e))


@pytest.mark.board
@pytest.mark.parametrize("name", target_names())
def test_cached_kernel_has_the_wanted_config(name):
    """Builds on a cache miss (minutes); instant afterwards."""
    target = get_target(name)
    _require_build_tools(target)
    build = kernel.ensure_kernel_build(target)
    assert build.image.exists()
    assert kernel.config_mismatches(kernel.wanted_options(target),
                                    (build.directory / ".config").read_text()) == []
    # What `make M=... modules` needs from the tree.
    assert (build.directory / "Module.symvers").exists()
    assert (build.directory / "scripts" / "mod" / "modpost").exists()
    again = kernel.ensure_kernel_build(target)
    assert again.cached and again.directory == build.directory
