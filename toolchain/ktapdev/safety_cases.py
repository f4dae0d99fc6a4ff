"""The seven criticisms of ktap's 2014 safety (the seed thread) as hand-made KBC
images, written raw with rawkbc (never by the compiler): the board's module must
refuse each at load with its reason or stop it at run time, and the host verifier
must agree case by case."""
from __future__ import annotations

from ktap.backends.kbc import bytecode as bc
from ktap.frontend import program
from ktapdev.rawkbc import RET, handler_image, ins, proto

F = program.FUNCTION
MAX_BUDGET = program.Limits.MAXIMUM["budget"]


def _raw(target: str, code, **kw) -> bytes:
    return bc.dump(handler_image(code, target=target, **kw))


def c1_long_loop_body(t):
    """(1) The loop count alone would hang the CPU: the budget is the maximum
    (10^7 words) and each iteration is 2 words, but one of them concatenates
    two 4 KiB strings (copy, clip, hash, intern). 5 million iterations of that
    run for tens of seconds; the time watchdog stops the handler at 10 ms."""
    big = "x" * 4096
    return _raw(t, [ins("LOADK", 0, 0), ins("CONCAT", 1, 0, 0), ins("JMP", 0, -2), RET],
                consts=[big], limits=program.Limits(budget=MAX_BUDGET, string_size=4096))


def c1_plain_loop(t):
    """(1/5) An empty endless loop (JMP to itself): backward jumps are charged.
    The budget is small so that it, not the watchdog, ends the loop even on a
    slow emulated board (20,000 iterations can take over 10 ms on mips under QEMU)."""
    return _raw(t, [ins("JMP", 0, -1), RET], limits=program.Limits(budget=2000))


def c2_jump_out_of_bounds(t):
    return _raw(t, [ins("JMP", 0, 40), RET])


def c2_jump_backward_out_of_bounds(t):
    return _raw(t, [ins("LOADI", 0, 1), ins("JMP", 0, -100), RET])


def c2_jump_into_instruction(t):
    # pc 0: JMP to pc 2, which is the first extension word of the LOADI64 at pc 1
    return _raw(t, [ins("JMP", 0, 1), ins("LOADI64", 0, 0x0000_0021_0000_0000), RET])


def c3_mutual_recursion(t):
    # handler -> f1 -> f2 -> f1 (protos: 0 setup, 1 f1, 2 f2, 3 handler)
    return _raw(t, [ins("CALL", 0, 1, 0), RET], extra_protos=[
        proto("f1", F, [ins("CALL", 0, 2, 0), RET]),
        proto("f2", F, [ins("CALL", 0, 1, 0), RET])])


def c4_newtable_loop_in_handler(t):
    return _raw(t, [ins("NEWTABLE", 0, 0), ins("JMP", 0, -2), RET], tables=[program.TableDesc()])


def c4_newtable_in_callee(t):
    # the allocation hides in a function the handler calls
    return _raw(t, [ins("CALL", 0, 1, 0), RET], tables=[program.TableDesc()], extra_protos=[
        proto("f1", F, [ins("NEWTABLE", 0, 0), ins("RET", 0, 1)])])


def c4_string_loop(t):
    """(4) Allocation the verifier cannot see: a loop making a new string each
    iteration ("s1", "s2", ...). Strings come from a pool sized at load; when it
    is full the event is dropped and counted, nothing is allocated."""
    return _raw(t, [ins("LOADI", 0, 0), ins("LOADI", 2, 1), ins("LOADK", 1, 0),
                    ins("ADD", 0, 0, 2), ins("CONCAT", 3, 1, 0), ins("JMP", 0, -3), RET],
                consts=["s"])


def c5_tail_call_loop(t):
    return _raw(t, [ins("CALL", 0, 1, 0), RET], extra_protos=[
        proto("f1", F, [ins("TAILCALL", 0, 2, 0)]),
        proto("f2", F, [ins("TAILCALL", 0, 1, 0)])])


def c5_self_tail_call(t):
    return _raw(t, [ins("CALL", 0, 1, 0), RET], extra_protos=[
        proto("f1", F, [ins("TAILCALL", 0, 1, 0)])])


def c6_constant_index(t):
    # kstr: LOADK of constant 9 when the function has one constant
    return _raw(t, [ins("LOADK", 0, 9), RET], consts=["only"])


def c6_constant_key_index(t):
    # the K operand of SETTABLEK (a table key) out of range
    return _raw(t, [ins("LOADNIL", 0), ins("SETTABLEK", 0, 7, 0), RET], consts=["k"])


def c7_upvalue_get(t):
    return _raw(t, [ins("GETUPV", 0, 3), RET], upvals=[0], globals_=["g"])


def c7_upvalue_set(t):
    return _raw(t, [ins("LOADI", 0, 5), ins("SETUPV", 0, 3), RET], upvals=[0], globals_=["g"])


def c7_upvalue_names_missing_global(t):
    # the upvalue index is fine, the global slot it names is not
    return _raw(t, [ins("GETUPV", 0, 0), RET], upvals=[5], globals_=["g"])


ALL_RAW = [c1_long_loop_body, c1_plain_loop, c2_jump_out_of_bounds, c2_jump_backward_out_of_bounds,
           c2_jump_into_instruction, c3_mutual_recursion, c4_newtable_loop_in_handler,
           c4_newtable_in_callee, c4_string_loop, c5_tail_call_loop, c5_self_tail_call,
           c6_constant_index, c6_constant_key_index, c7_upvalue_get, c7_upvalue_set,
           c7_upvalue_names_missing_global]
# The reason each refused image is refused for; the others stop at run time.
REFUSED = {c2_jump_out_of_bounds: "bad-jump", c2_jump_backward_out_of_bounds: "bad-jump",
           c2_jump_into_instruction: "bad-jump", c3_mutual_recursion: "recursion",
           c4_newtable_loop_in_handler: "alloc-in-handler", c4_newtable_in_callee: "alloc-in-handler",
           c5_tail_call_loop: "recursion", c5_self_tail_call: "recursion",
           c6_constant_index: "bad-constant", c6_constant_key_index: "bad-constant",
           c7_upvalue_get: "bad-upvalue", c7_upvalue_set: "bad-upvalue",
           c7_upvalue_names_missing_global: "bad-upvalue"}
