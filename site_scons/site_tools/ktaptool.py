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
    env.AddMethod(board_test_alias, "KtapBoardTest")


def exists(env):
    return True


def _board_test_action(targets):
    def action(target, source, env):
        from ktap import boardtest
        from ktap.boardrun import BundleError
        cases = boardtest.load_cases()
        results, failed = {}, False
        for name in targets:
            try:
                outcomes, run = boardtest.run_target(name, cases)
            except BundleError as e:
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
