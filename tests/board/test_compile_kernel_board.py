"""`ktap compile/check --vmlinux/--system-map/--profile`: probes checked against
one kernel offline, errors at the probe's location, globs expanded."""

import pytest
from ktap import api
from ktap.boards import kernels as kernel
from ktap.core.diagnostics import KtapError, Source


def board_vmlinux(target="arm"):
    try:
        d = kernel.ensure_kernel(target, progress=False)
    except Exception as e:       # no cached kernel and no toolchain to build one
        pytest.skip(f"no {target} board kernel: {e}")
    return d


def compile_with(text, **kernel_args):
    warnings = []
    img = api.compile_source(Source("k.kp", text), "arm", None,
                             api.KernelInfo(**kernel_args), warnings.append)
    return img, warnings


@pytest.mark.board
def test_missing_tracepoint_field_with_profile():
    from ktap.symbols import profiles
    board_vmlinux()
    p = profiles.board_profile("arm")       # recorded from the board once, then cached
    with pytest.raises(KtapError, match="has no field 'cnt'"):
        compile_with("trace syscalls:sys_enter_write { print(args.cnt) }", profile=str(p.path))
    compile_with("trace syscalls:sys_enter_write { print(args.count) }", profile=str(p.path))
