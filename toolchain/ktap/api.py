"""The toolchain's Python API: what the CLI and SCons call."""
from __future__ import annotations

from pathlib import Path

from . import bytecode as bc
from .codegen import generate
from .compiler import compile_program
from .diagnostics import KtapError, Source
from .parser import parse
from .sema import analyze
from .targets import get_target
from .verifier import verify


def read_source(path: str) -> Source:
    try:
        with open(path, encoding="utf-8") as f:
            return Source(path, f.read())
    except OSError as e:
        raise KtapError(f"cannot read script: {e.strerror}", filename=path) from None
    except UnicodeDecodeError:
        raise KtapError("script is not valid UTF-8 text", filename=path) from None


def compile_source(src: Source, target_name: str, limits: dict[str, int] | None = None) -> bc.Image:
    """Parses, analyses, compiles and verifies. Raises KtapError on any problem."""
    target = get_target(target_name)
    base = bc.Limits(**(limits or {}))
    script = parse(src)
    program = analyze(script, src, base, set(limits or {}))
    image = generate(compile_program(script, program, src), target)
    verify(image, src)
    return image


def compile_file(path: str, target_name: str, out: str | None = None,
                 limits: dict[str, int] | None = None) -> bc.Image:
    image = compile_source(read_source(path), target_name, limits)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(bc.dump(image))
    return image


def load_image(path: str) -> bc.Image:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KtapError(f"cannot read image: {e.strerror}", filename=path) from None
    return bc.load(data, name=path)
