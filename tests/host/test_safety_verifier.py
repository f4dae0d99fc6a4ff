"""The seven criticisms of ktap's 2014 safety as raw images (ktapdev.safety_cases):
the host verifier refuses the same images for the same reasons as the module on the
boards (tests/board/test_safety_board.py), on every target."""

from __future__ import annotations

import pytest

from ktap.backends.kbc import bytecode as bc
from ktap.backends.kbc.verifier import verify
from ktap.core.diagnostics import KtapError
from ktap.core.targets import get_target, target_names
from ktapdev.safety_cases import ALL_RAW, REFUSED


TARGETS = target_names()        # every targets/*/target.toml


@pytest.mark.parametrize("builder", ALL_RAW, ids=lambda f: f.__name__)
def test_host_verifier_agrees(builder):
    """The host verifier (the Python mirror of the module's) refuses the same
    images for the same reasons, and passes the three run-time cases."""
    for target in TARGETS:
        img = bc.load(builder(target), expect=get_target(target))
        if builder in REFUSED:
            with pytest.raises(KtapError) as exc:
                verify(img)
            assert REFUSED[builder] in exc.value.message
        else:
            verify(img)
