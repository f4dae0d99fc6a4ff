"""SCons tool: ktap script compilation, the bundle and the board suite. Thin
wrappers over ktap.api, ktap.build.bundle and ktapdev.boardtest."""
import shutil
from pathlib import Path

from ktap import api
from ktap.boards.kernels import ensure_kernel
from ktap.build.bundle import MODULE_NAME, RUNNER_NAME, BundleError, make_bundle
from ktap.core.diagnostics import KtapError
from ktap.core.tools import MissingTool
from ktapdev import boardtest


def _compile_action(target, source, env):
    try:
        api.compile_file(str(source[0]), env["KTAP_TARGET"], str(target[0]))
    except KtapError as e:
        print(e.render())
        return 1
    return 0


def _compile_str(target, source, env):
    return f"ktap compile -t {env['KTAP_TARGET']} {source[0]} -o {target[0]}"


def generate(env):
    env.Append(BUILDERS={"KtapCompile": env.Builder(
        action=env.Action(_compile_action, strfunction=_compile_str),
        suffix=".kbc", src_suffix=".kp")})
    env.AddMethod(board_test_alias, "KtapBoardTest")
    env.AddMethod(bundle, "KtapBundle")


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
    """`scons [target=ARCH] board-test`: the board suite on one target or all four."""
    return env.AlwaysBuild(env.Alias("board-test", [], env.Action(
        _board_test_action(targets), f"board suite on {', '.join(targets)}")))


def _bundle_action(arch, kdir):
    def action(target, source, env):
        out = Path(str(target[0])).parent
        out.mkdir(parents=True, exist_ok=True)
        try:
            bundle = make_bundle(arch, Path(kdir) if kdir else ensure_kernel(arch))
        except Exception as e:            # a clear one-line failure, not a traceback
            print(f"scons: ktapvm/ktaprun for {arch}: {e}")
            return 1
        shutil.copy2(bundle.module, out / MODULE_NAME)
        shutil.copy2(bundle.runner, out / RUNNER_NAME)
        return 0
    return action


def bundle(env, arch, kdir=None):
    """ktapvm.ko (built against KDIR, or the cached board kernel) and ktaprun
    for one target, copied into build/ARCH/. Always re-run: the Python API
    keeps its own caches keyed by sources and kernel."""
    outs = [f"build/{arch}/{MODULE_NAME}", f"build/{arch}/{RUNNER_NAME}"]
    node = env.Command(outs, [], env.Action(_bundle_action(arch, kdir),
                                            f"ktapvm.ko + ktaprun for {arch}"
                                            + (f" against {kdir}" if kdir else "")))
    env.AlwaysBuild(node)
    return node
