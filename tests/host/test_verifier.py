"""The verifier refuses every bad image with a named reason. Images here are
written raw (tests/kbc.py), not by the compiler."""

import pytest

from conftest import ROOT, compile_text
from ktap import api
from ktap.backends.kbc import bytecode as bc
from ktap.backends.kbc.verifier import REASONS, verify
from ktap.core.diagnostics import VerifyError
from ktap.core.targets import target_names
from ktap.events import kinds
from ktap.frontend import program
from ktapdev.rawkbc import RET, handler_image, image, ins, proto


TARGETS = target_names()        # every targets/*/target.toml


S, F, H = program.SETUP, program.FUNCTION, program.HANDLER


def reason_of(img) -> str:
    with pytest.raises(VerifyError) as exc:
        verify(img)
    return exc.value.reason


def fn(name, code, nparams=0, frame=4):
    return proto(name, F, code, frame, nparams)


CASES = {
    "bad-limits": lambda: image(limits=program.Limits(budget=0)),
    "bad-table": lambda: image(protos=[proto("s", S, [ins("NEWTABLE", 0, 3), RET])]),
    "bad-format": lambda: handler_image([ins("PRINTF", 0, 2, 0), RET]),
    "bad-event": lambda: image(events=[bc.Event(kinds.EV_KPROBE, "probe:f", "f", handler=0)]),
    "bad-function": lambda: handler_image([ins("CALL", 0, 0, 0), RET]),
    "bad-frame": lambda: handler_image([RET], frame=251),
    "bad-opcode": lambda: handler_image([[0xEE], RET]),
    "truncated-instruction": lambda: handler_image([RET, ins("LOADI64", 0, 5)[:2]]),
    "falls-off-end": lambda: handler_image([ins("LOADNIL", 0)]),
    "bad-operand": lambda: handler_image([ins("LOADNIL", 0, 1), RET]),
    "bad-register": lambda: handler_image([ins("MOVE", 9, 0), RET]),
    "bad-constant": lambda: handler_image([ins("LOADK", 0, 5), RET]),
    "bad-upvalue": lambda: handler_image([ins("GETUPV", 0, 3), RET]),
    "bad-call": lambda: handler_image([ins("CALLB", 0, 2, 2), RET]),
    "bad-builtin": lambda: handler_image([ins("CALLB", 0, 200, 0), RET]),
    "bad-variable": lambda: handler_image([ins("LOADVAR", 0, 99), RET]),
    "bad-argument": lambda: handler_image([ins("ARG", 0, 10), RET]),
    "bad-field": lambda: handler_image([ins("FIELD", 0, 0), RET]),
    "bad-jump": lambda: handler_image([ins("JMP", 0, 40), RET]),
    "recursion": lambda: handler_image(
        [ins("CALL", 0, 1, 0), RET],
        extra_protos=[fn("f1", [ins("CALL", 0, 2, 0), RET]), fn("f2", [ins("CALL", 0, 1, 0), RET])]),
    "alloc-in-handler": lambda: handler_image(
        [ins("CALL", 0, 1, 0), RET], tables=[program.TableDesc()],
        extra_protos=[fn("make", [ins("NEWTABLE", 0, 0), RET])]),
    "stack-too-deep": lambda: handler_image(
        [ins("CALL", 0, 1, 0), RET], limits=program.Limits(max_stack=300),
        extra_protos=[fn("big", [ins("CALL", 0, 2, 0), RET], frame=200),
                      fn("bigger", [RET], frame=200)]),
}


def test_every_reason_has_a_case():
    assert set(CASES) == set(REASONS)


@pytest.mark.parametrize("reason", sorted(CASES))
def test_refusal(reason):
    assert reason_of(CASES[reason]()) == reason


@pytest.mark.parametrize("reason", sorted(CASES))
def test_refusal_survives_dump_and_load(reason):
    img = CASES[reason]()
    data = bc.dump(img)
    assert reason_of(bc.load(data)) == reason


def test_jump_into_the_middle_of_an_instruction():
    # JMP at word 0; LOADI64 occupies words 1..3; RET is word 4.
    for ok in (0, 3):
        verify(handler_image([ins("JMP", 0, ok), ins("LOADI64", 0, 7), RET]))
    for bad in (1, 2):
        with pytest.raises(VerifyError, match="inside an instruction"):
            verify(handler_image([ins("JMP", 0, bad), ins("LOADI64", 0, 7), RET]))


def test_jump_out_of_bounds_backwards():
    with pytest.raises(VerifyError, match="out of bounds"):
        verify(handler_image([ins("JMP", 0, -5), RET]))


def test_register_span_of_calls_is_checked():
    # CALLB print with 3 arguments starting at r2 needs r2..r4, frame is 4
    with pytest.raises(VerifyError) as exc:
        verify(handler_image([ins("CALLB", 2, 0, 3), RET]))
    assert exc.value.reason == "bad-register"


def test_upvalue_naming_missing_global():
    img = handler_image([ins("GETUPV", 0, 0), RET], upvals=[7])
    assert reason_of(img) == "bad-upvalue"


def test_error_location_points_into_the_script():
    img = compile_text("trace probe:f {\n  var x = 1\n  print(x)\n}")
    img.protos[1].code[1] = ins("MOVE", 200, 0)[0]
    with pytest.raises(VerifyError) as exc:
        verify(img)
    assert exc.value.loc.line == 3
    assert "bad-register" in exc.value.render()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("sample", sorted((ROOT / "samples").glob("*.kp")), ids=lambda p: p.stem)
def test_compiled_samples_verify(target, sample):
    verify(api.compile_file(str(sample), target))


# -- the seed thread's seven criticisms ----------------------------------
class TestSeedCriticisms:
    """shared/seeds: each way the original ktap could crash or hang the kernel."""

    def test_1_long_loop_body_is_charged_by_length(self):
        from ktap.refvm.vm import Machine
        body = [ins("NOP")] * 1000
        img = handler_image(body + [ins("JMP", 0, -1001), RET], limits=program.Limits(budget=50_000))
        verify(img)           # a loop is legal; its cost is bounded at run time
        m = Machine(img, lambda r: None)
        from ktap.core.diagnostics import RuntimeErr
        from ktap.refvm.vm import EventContext
        with pytest.raises(RuntimeErr, match="budget of 50000 exhausted"):
            m.fire(1, EventContext(), [])
        # the budget is in instructions: at most 50 turns of a 1001-word body ran

    def test_2_jumps_out_of_bounds_or_into_an_instruction(self):
        assert reason_of(handler_image([ins("JMP", 0, 40), RET])) == "bad-jump"
        assert reason_of(handler_image([ins("JMP", 0, 1), ins("LOADI64", 0, 1), RET])) == "bad-jump"

    def test_3_recursion_is_refused(self):
        img = CASES["recursion"]()
        with pytest.raises(VerifyError, match=r"calls: f1 -> f2 -> f1$"):
            verify(img)

    def test_4_allocation_in_a_handler_loop_is_refused(self):
        loop = [ins("NEWTABLE", 0, 0), ins("JMP", 0, -2), RET]
        assert reason_of(handler_image(loop, tables=[program.TableDesc()])) == "alloc-in-handler"

    def test_5_tail_call_loops_are_refused(self):
        self_loop = handler_image([ins("CALL", 0, 1, 0), RET],
                                  extra_protos=[fn("f", [ins("TAILCALL", 0, 1, 0)])])
        assert reason_of(self_loop) == "recursion"
        pair = handler_image([ins("CALL", 0, 1, 0), RET],
                             extra_protos=[fn("f1", [ins("TAILCALL", 0, 2, 0)]),
                                           fn("f2", [ins("TAILCALL", 0, 1, 0)])])
        assert reason_of(pair) == "recursion"

    def test_5_tail_calls_are_charged_to_the_budget(self):
        from ktap.core.diagnostics import RuntimeErr
        from ktap.refvm.vm import EventContext, Machine

        # a chain of tail calls through 3 functions, each with a long body
        long = [ins("NOP")] * 400
        protos = [fn("a", long + [ins("TAILCALL", 0, 2, 0)]),
                  fn("b", long + [ins("TAILCALL", 0, 3, 0)]),
                  fn("c", long + [RET])]
        img = handler_image([ins("CALL", 0, 1, 0), RET], extra_protos=protos,
                            limits=program.Limits(budget=1000))
        verify(img)
        with pytest.raises(RuntimeErr, match="budget"):
            Machine(img, lambda r: None).fire(4, EventContext(), [])

    def test_6_out_of_range_constant(self):
        assert reason_of(handler_image([ins("LOADK", 0, 0), RET])) == "bad-constant"
        assert reason_of(handler_image([ins("GETTABLEK", 0, 1, 3), RET], consts=["a"])) == "bad-constant"

    def test_7_out_of_range_upvalue_get_and_set(self):
        assert reason_of(handler_image([ins("GETUPV", 0, 1), RET], upvals=[0],
                                       globals_=["g"])) == "bad-upvalue"
        assert reason_of(handler_image([ins("SETUPV", 0, 1), RET], upvals=[0],
                                       globals_=["g"])) == "bad-upvalue"
