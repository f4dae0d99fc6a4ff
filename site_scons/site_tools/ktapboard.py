"""SCons tool: kernels and QEMU boards. Thin wrappers over ktap.boards
(kernels.py, initramfs.py, check.py).

    scons target=arm kernel     build (or find cached) the arm kernel
    scons target=arm board      build the arm initramfs and run the board check

Both aliases always run (AlwaysBuild): the real caching happens in
$KTAP_CACHE, keyed by the config fragments and guest sources, so a second
run is a cache lookup.
"""
from ktap.boards import kernels
from ktap.boards.check import check_board
from ktap.boards.errors import BoardError
from ktap.boards.initramfs import base_initramfs
from ktap.core.tools import MissingTool


def _kernel_action(target, source, env):
    try:
        build = kernels.ensure_kernel_build(env["KTAP_BOARD_TARGET"])
    except (kernels.KernelError, MissingTool) as e:
        print(f"ktap: error: {e}")
        return 1
    print(f"ktap: kernel for {env['KTAP_BOARD_TARGET']}: {build.directory}")
    return 0


def _board_action(target, source, env):
    name = env["KTAP_BOARD_TARGET"]
    try:
        print(f"ktap: initramfs for {name}: {base_initramfs(name)}")
        check = check_board(name)
    except (BoardError, kernels.KernelError, MissingTool) as e:
        print(f"ktap: error: {e}")
        return 1
    print(f"ktap: {name}: {check.uname}")
    print(f"ktap: {name}: byte_order={check.arch.get('byte_order')} "
          f"word_size={check.arch.get('word_size')}")
    print(f"ktap: {name}: features " + " ".join(k for k, v in check.features.items() if v))
    for problem in check.problems:
        print(f"ktap: {name}: FAIL: {problem}")
    return 0 if check.ok else 1


def _board_targets(env, target):
    # Aliases with actions are SCons's phony targets: nothing is written in
    # the repo, the results live in $KTAP_CACHE.
    kenv = env.Clone(KTAP_BOARD_TARGET=target)
    kernel = kenv.Alias("kernel", [], kenv.Action(_kernel_action, f"ktap kernel {target}"))
    board = kenv.Alias("board", [], kenv.Action(_board_action, f"ktap board check {target}"))
    kenv.Depends(board, kernel)
    kenv.AlwaysBuild(kernel, board)
    return kernel + board


def generate(env):
    env.AddMethod(_board_targets, "KtapBoardTargets")


def exists(env):
    return True
