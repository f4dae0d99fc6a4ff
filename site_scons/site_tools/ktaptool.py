"""SCons tool: ktap script compilation and the bundle. Thin wrappers over
ktap.api and ktap.build.bundle."""
import shutil
from pathlib import Path

from ktap import api
from ktap.boards.kernels import ensure_kernel
from ktap.build.bundle import MODULE_NAME, RUNNER_NAME, make_bundle
from ktap.core.diagnostics import KtapError


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
    env.AddMethod(bundle, "KtapBundle")


def exists(env):
    return True


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
