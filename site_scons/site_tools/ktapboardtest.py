"""SCons tool: `scons [target=ARCH] board-test`, the board suite on QEMU boards.
A thin wrapper over ktapdev.boardtest, loaded only when board-test is asked for,
so a plain `scons` never imports the test tools."""
from ktap.build.bundle import BundleError
from ktap.core.tools import MissingTool
from ktapdev import boardtest


def generate(env):
    env.AddMethod(board_test_alias, "KtapBoardTest")


def exists(env):
    return True


def _board_test_action(targets):
    def action(target, source, env):
        cases = boardtest.load_cases()
        results, failed = {}, False
        for name in targets:
            try:
                outcomes, run = boardtest.run_target(name, cases)
            except (BundleError, MissingTool) as e:
                print(f"board-test: {name}: cannot run: {e}")
                return 1
            results[name] = outcomes
            if run is not None and (run.trouble or run.unload_status != 0):
                print(f"board-test: {name}: kernel trouble {run.trouble} / rmmod status "
                      f"{run.unload_status}")
                failed = True
            failed |= any(o.state == "failed" for o in outcomes)
        print(boardtest.matrix(results))
        return 1 if failed else 0
    return action


def board_test_alias(env, targets):
    """`scons [target=ARCH] board-test`: the board suite on one target or on all of them."""
    return env.AlwaysBuild(env.Alias("board-test", [], env.Action(
        _board_test_action(targets), f"board suite on {', '.join(targets)}")))
