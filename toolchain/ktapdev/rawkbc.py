"""A raw KBC writer: builds images instruction by instruction, without the
compiler, so tests and the board suite can make images the compiler never emits."""
from __future__ import annotations

from ktap.backends.kbc import bytecode as bc
from ktap.backends.kbc import opcodes
from ktap.core.targets import get_target
from ktap.frontend import program
from ktap.events import kinds


def ins(name: str, a: int = 0, b: int = 0, c: int = 0) -> list[int]:
    return opcodes.encode(opcodes.BY_NAME[name], a, b, c)


def proto(name: str, kind: int, code: list[list[int]], frame: int = 4, nparams: int = 0,
          consts=None, upvals=None) -> bc.Proto:
    words = [w for i in code for w in i]
    return bc.Proto(name, kind, nparams, frame, words, list(consts or []), list(upvals or []),
                    [1] * len(words), [1] * len(words))


RET = ins("RET", 0, 0)


def image(target: str = "x86_64", protos=None, events=None, globals_=None, tables=None,
          formats=None, limits=None) -> bc.Image:
    img = bc.Image(get_target(target), "raw.kbc", limits or program.Limits())
    img.protos = protos or [proto("(setup)", program.SETUP, [RET])]
    img.events = events or []
    img.globals = globals_ or []
    img.tables = tables or []
    img.formats = formats or []
    return img


def handler_image(code: list[list[int]], frame: int = 4, extra_protos=(), **kw) -> bc.Image:
    """An image whose only probe (a kprobe on vfs_write) runs `code`."""
    protos = [proto("(setup)", program.SETUP, [RET])] + list(extra_protos)
    protos.append(proto("handler", program.HANDLER, code, frame, consts=kw.pop("consts", None),
                        upvals=kw.pop("upvals", None)))
    ev = bc.Event(kinds.EV_KPROBE, "probe:vfs_write", "vfs_write", handler=len(protos) - 1)
    return image(protos=protos, events=[ev], **kw)
