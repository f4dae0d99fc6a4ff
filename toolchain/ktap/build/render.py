"""Renders kmod/gen/*.h.j2, the only templates of ktapvm's C sources, for a target.

Everything else in kmod/ is plain C that reads these headers: the opcode, builtin,
variable, limit and reason tables (opcodes.py and the other Python modules), the
target's byte order, word size and calling convention (targets/*/target.toml),
the event kinds (events/kinds.py) and the output records (backends/kbc/records.py).
Nothing is synchronised by hand.

Every C build (the module, the host harness, the fuzzer, ktaprun, the smoke
client) takes its headers from gen_dir(), which renders once per content: the
directory is named by a hash of the rendered text and written atomically.
"""
from __future__ import annotations

from pathlib import Path

import jinja2

from ktap.backends.kbc import bytecode as bc
from ktap.backends.kbc import opcodes, records, verifier
from ktap.core.cache import ContentKey, cached_dir
from ktap.core.paths import KMOD_DIR
from ktap.core.targets import Target, all_targets, get_target
from ktap.events import kinds, perf
from ktap.events import specs as probes
from ktap.frontend import printf, sema
from ktap.frontend import program
from ktap.frontend import builtins

TEMPLATE_DIR = KMOD_DIR / "gen"
GEN_DIR_NAME = "gen"
# The core: what the module, the harness and the fuzzer all compile.
CORE_SOURCES = ("ktap_load.c", "ktap_verify.c", "ktap_string.c", "ktap_table.c",
                "ktap_record.c", "ktap_builtin.c", "ktap_interp.c", "ktap_session.c")


def template_context(target: Target) -> dict:
    """opcodes.c_context() plus the image-format, verifier, target, event-kind
    and record facts the headers spell out."""
    ctx = dict(opcodes.c_context())
    ctx.update(records.c_context())
    attached = [k for k in kinds.KINDS if k.attaches]
    ctx.update(
        target=target,
        targets=sorted(all_targets().values(), key=lambda t: t.id),
        formats=opcodes.FORMATS,
        magic_c="".join(f"\\x{b:02x}" for b in bc.MAGIC),
        version=bc.VERSION, check_int=bc.CHECK_INT, check_word=bc.CHECK_WORD,
        insn_size=bc.INSN_SIZE, number_size=bc.NUMBER_SIZE,
        max_count=bc.Reader.MAX_COUNT, k_number=bc.K_NUMBER, k_string=bc.K_STRING,
        proto_kinds=[("SETUP", program.SETUP), ("FUNCTION", program.FUNCTION), ("HANDLER", program.HANDLER)],
        num_event_kinds=len(kinds.KINDS),
        kinds_c_enum=kinds.c_enum(),
        providers=attached,
        provider_names=list(dict.fromkeys(k.provider_name for k in attached)),
        table_mask=sum(1 << k.id for k in attached if not k.from_image),
        image_mask=sum(1 << k.id for k in attached if k.from_image),
        user_mask=sum(1 << k.id for k in kinds.KINDS if k.user),
        perf_events=perf.PERF_EVENTS, perf_max_freq=perf.MAX_FREQ_HZ,
        table_log2=program.TABLE_LOG2, table_linear=program.TABLE_LINEAR,
        limit_fields=program.Limits.FIELDS, limit_max=program.Limits.MAXIMUM,
        max_frame=verifier.MAX_FRAME, max_code_words=verifier.MAX_CODE_WORDS,
        max_fields=verifier.MAX_FIELDS, max_lhist_buckets=sema.MAX_LHIST_BUCKETS,
        min_period=probes.MIN_PERIOD_NS, max_width=printf.MAX_WIDTH,
        conversions=printf.CONVERSIONS, reasons=list(verifier.REASONS),
        stack_default_depth=builtins.STACK_DEFAULT_DEPTH,
    )
    by_code = {op.code: op.name for op in opcodes.OPS}
    ctx["dispatch"] = [by_code.get(code, "BAD") for code in range(256)]
    return ctx


def render_text(target: Target | str) -> dict[str, str]:
    """header name -> rendered text, for every kmod/gen/*.h.j2."""
    target = get_target(target)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    ctx = template_context(target)
    return {tpl.name[:-3]: env.get_template(tpl.name).render(ctx)
            for tpl in sorted(TEMPLATE_DIR.glob("*.h.j2"))}


def render(target: Target | str, out_dir: Path) -> list[Path]:
    """Writes the generated headers for `target` into out_dir; returns them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_text(target).items():
        dest = out_dir / name
        dest.write_text(text)
        written.append(dest)
    return written


def gen_dir(target: Target | str, root: Path) -> Path:
    """The generated headers for `target` under root/gen-<hash of their text>,
    rendered once and renamed into place whole."""
    texts = render_text(target)
    key = ContentKey("kmod-gen")
    for name, text in sorted(texts.items()):
        key.add(name, text)

    def write(tmp: Path) -> None:
        for name, text in texts.items():
            (tmp / name).write_text(text)
    return cached_dir(root / f"{GEN_DIR_NAME}-{key.hex()}", write)


def headers() -> list[Path]:
    """The plain headers of kmod/ (the core's, the module's, the shared ones)."""
    return sorted(KMOD_DIR.glob("*.h"))


def all_headers(gen: Path) -> list[Path]:
    """What a build reading kmod/ and the generated headers in `gen` includes."""
    return [*headers(), *sorted(gen.iterdir())]


def core_sources() -> list[Path]:
    return [KMOD_DIR / name for name in CORE_SOURCES]


def include_flags(gen: Path) -> list[str]:
    """-I for the plain headers and for one target's generated ones."""
    return ["-I", str(KMOD_DIR), "-I", str(gen)]
