"""SCons tool: ktap script compilation. A thin wrapper over ktap.api."""


def _compile_action(target, source, env):
    from ktap import api
    from ktap.diagnostics import KtapError
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


def exists(env):
    return True
