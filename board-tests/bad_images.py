"""Hand-made bad KBC images for the board suite, written raw (not by the
compiler). Each builder takes the Target and returns image bytes; the module
must refuse each at load with the named reason, and the board must stay healthy."""
from ktap.backends.kbc import bytecode as bc
from ktap.events import kinds
from ktapdev.rawkbc import RET, handler_image, ins, proto
from ktap.frontend import program

F = program.FUNCTION


def _dump(img) -> bytes:
    return bc.dump(img)


def _handler(target, code, **kw) -> bytes:
    return _dump(handler_image(code, target=target.name, **kw))


def bad_jump(t):
    return _handler(t, [ins("JMP", 0, 40), RET])


def jump_into_instruction(t):
    return _handler(t, [ins("JMP", 0, 1), ins("LOADI64", 0, 7), RET])


def recursion(t):
    return _handler(t, [ins("CALL", 0, 1, 0), RET], extra_protos=[
        proto("f1", F, [ins("CALL", 0, 2, 0), RET]), proto("f2", F, [ins("CALL", 0, 1, 0), RET])])


def tail_call_loop(t):
    return _handler(t, [ins("CALL", 0, 1, 0), RET], extra_protos=[
        proto("f1", F, [ins("TAILCALL", 0, 2, 0)]), proto("f2", F, [ins("TAILCALL", 0, 1, 0)])])


def alloc_in_handler(t):
    return _handler(t, [ins("NEWTABLE", 0, 0), ins("JMP", 0, -2), RET], tables=[program.TableDesc()])


def bad_constant(t):
    return _handler(t, [ins("LOADK", 0, 9), RET])


def bad_upvalue_get(t):
    return _handler(t, [ins("GETUPV", 0, 3), RET], upvals=[0], globals_=["g"])


def bad_upvalue_set(t):
    return _handler(t, [ins("SETUPV", 0, 3), RET], upvals=[0], globals_=["g"])


def bad_register(t):
    return _handler(t, [ins("MOVE", 200, 0), RET])


def bad_opcode(t):
    return _handler(t, [[0xEE], RET])


def perf_sampling_too_often(t):
    """perf:cpu-clock every 10 ns: the compiler refuses the spec, the verifiers
    the image (the handler would run all the time). A software event, so no
    board refuses it earlier for lacking a PMU."""
    img = handler_image([RET], target=t.name)
    img.events = [bc.Event(kinds.EV_PERF, "perf:cpu-clock:10", "perf:cpu-clock", 0, 10,
                           img.events[0].handler)]
    return _dump(img)


def wrong_byte_order(t):
    """An image for a target of the other byte order (and maybe word size)."""
    other = "mips" if t.byte_order == "little" else "arm"
    return _dump(handler_image([RET], target=other))


def corrupt_checksum(t):
    data = bytearray(_handler(t, [RET]))
    data[-1] ^= 0xFF
    return bytes(data)


BUILDERS = {name.replace("_", "-"): fn for name, fn in list(globals().items())
            if callable(fn) and not name.startswith("_") and name not in ("proto", "ins",
                                                                          "handler_image")}
