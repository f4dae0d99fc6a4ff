"""ktaprun's side of the eBPF backend on the host (docs/ebpf.md): kmod's loader
reads the ebpf section and refuses what it must, kmod/ktap_sync.c moves
globals and tables in and out of an interpreter session and stops it like a
handler would, and the host formatter reads ebpf images. Nothing here loads a
BPF program: the host build of ktaprun has no bpf(2) code, and the sync API is
driven by a small C program. The boards run the programs
(tests/board/test_ebpf_suite.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import compile_to
from ktap import api
from ktap.backends.ebpf import image as ebpf_image
from ktap.backends.ebpf.insn import Insn
from ktap.backends.kbc import bytecode as bc
from ktap.build import ktaprun as runner
from ktap.build import render as gen
from ktap.core import tools
from ktap.core.diagnostics import Source
from ktap.frontend.builtins import BUILTIN_BY_NAME
from ktapdev import harness as cvm

TARGETS = ["arm", "mips"]          # little-endian and big-endian 32-bit
needs_cc = pytest.mark.skipif(tools.find_cc() is None, reason="no host C compiler")

COUNT = """
var n = 0
trace probe:vfs_write { n += 1 }
trace_end { printf("writes=%d\\n", n) }
"""


@pytest.fixture(scope="module")
def host_runner(tmp_path_factory):
    work = tmp_path_factory.mktemp("ktaprun-ebpf")
    made = {}

    def get(target: str) -> Path:
        if target not in made:
            made[target] = runner.build_ktaprun(target, work, host=True)
        return made[target]
    return get


def ebpf_image_of(text: str, target: str, name: str = "e") -> bc.Image:
    return api.compile_source(Source(f"{name}.kp", text), target, None, backend="ebpf")


def reheader(image: bc.Image, body: bytes) -> bytes:
    """An image with this body: the header's size and CRC made to match."""
    out = bc.Writer(image.target)
    out.header(body, [], ebpf_image.BACKENDS["ebpf"])
    return bytes(out.buf)


def body_of(image: bc.Image) -> bytes:
    w = bc.Writer(image.target)
    w.body(image)
    return bytes(w.buf)


def status_record(target: str, code: int) -> bytes:
    """A STATUS record (docs/kmod.md) saying the session ran, exit code `code`."""
    order = "big" if target == "mips" else "little"
    payload = bytes([7]) + code.to_bytes(8, order, signed=True) + bytes([0]) + bytes(12) + \
        (0).to_bytes(4, order) + (0).to_bytes(4, order)
    return (len(payload) + 4).to_bytes(4, order) + payload


def load_errors(exe: Path, tmp: Path, data: bytes) -> subprocess.CompletedProcess:
    """What the loader says about an image (the host build loads it before formatting)."""
    img, rec = tmp / "x.kbc", tmp / "r.bin"
    img.write_bytes(data)
    rec.write_bytes(b"")
    return subprocess.run([str(exe), "--format-records", str(rec), str(img)],
                          capture_output=True, text=True, timeout=60)


# -- the loader ---------------------------------------------------------------


@needs_cc
@pytest.mark.parametrize("target", TARGETS)
def test_loader_reads_an_ebpf_image(target, host_runner, tmp_path):
    exe = host_runner(target)
    image = ebpf_image_of(COUNT, target)
    assert image.ebpf is not None and image.ebpf.programs
    path = tmp_path / "c.kbc"
    path.write_bytes(bc.dump(image))
    rec = tmp_path / "r.bin"
    rec.write_bytes(status_record(target, 7))
    r = subprocess.run([str(exe), "--format-records", str(rec), str(path)],
                       capture_output=True, timeout=60)
    assert r.returncode == 7 and r.stderr == b"", r.stderr
    # the host build runs nothing, whichever backend the image is for
    r = subprocess.run([str(exe), str(path)], capture_output=True, timeout=60)
    assert r.returncode == 2 and b"only formats records" in r.stderr


@needs_cc
@pytest.mark.parametrize("target", TARGETS)
def test_loader_refuses_bad_ebpf_sections(target, host_runner, tmp_path):
    exe = host_runner(target)
    image = ebpf_image_of(COUNT, target)
    good = bc.dump(image)
    # header byte 10 is the backend
    r = load_errors(exe, tmp_path, good[:10] + bytes([2]) + good[11:])
    assert r.returncode == 1 and "bad image: unknown backend code 2" in r.stderr
    # a cut section: no read past the end
    r = load_errors(exe, tmp_path, reheader(image, body_of(image)[:-5]))
    assert r.returncode == 1 and "truncated at byte" in r.stderr, r.stderr
    # bytes after the section
    r = load_errors(exe, tmp_path, reheader(image, body_of(image) + b"\0\0\0"))
    assert r.returncode == 1 and "3 trailing bytes" in r.stderr
    # a ktapvm image that carries a section has trailing bytes too
    plain = body_of(image)
    out = bc.Writer(image.target)
    out.header(plain, [], 0)
    r = load_errors(exe, tmp_path, bytes(out.buf))
    assert r.returncode == 1 and "trailing bytes" in r.stderr
    # map names are bounded
    image.ebpf.maps[0].name = "m" * 257
    r = load_errors(exe, tmp_path, bc.dump(image))
    assert r.returncode == 1 and "map name of 257 bytes (at most 256)" in r.stderr


@needs_cc
def test_loader_bounds_the_instructions_of_a_program(host_runner, tmp_path):
    exe = host_runner("arm")
    image = ebpf_image_of(COUNT, "arm")
    prog = image.ebpf.programs[0]
    prog.insns = [Insn(0)] * 1_000_001
    prog.lines = []
    prog.relocs = []
    r = load_errors(exe, tmp_path, bc.dump(image))
    assert r.returncode == 1
    assert "1000001 eBPF instructions in one program (at most 1000000)" in r.stderr


@needs_cc
def test_help_and_resolve_know_ebpf_images(host_runner, tmp_path):
    exe = host_runner("arm")
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "ebpf backend" in r.stdout and "without the module" in r.stdout
    root = tmp_path / "tracefs"
    (root / "events").mkdir(parents=True)
    (root / "available_filter_functions").write_text("vfs_write\nvfs_read\n")
    path = tmp_path / "g.kbc"
    path.write_bytes(bc.dump(ebpf_image_of("trace probe:vfs_* { }\n", "arm")))
    r = subprocess.run([str(exe), "--resolve", str(path)], capture_output=True, text=True,
                       env={"KTAPRUN_TRACEFS": str(root), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["0 kprobe vfs_read", "0 kprobe vfs_write"]


# -- kmod/ktap_sync.c ---------------------------------------------------------

# Reads the globals and tables after setup, then replaces them as ktaprun does
# with what the maps held, and ends the session as a program's STATUS would:
#   sync_driver IMAGE exit|error OUT   (records of trace_end + STATUS in OUT)
DRIVER = r"""
#include "ktap_vm.h"

static unsigned char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	static unsigned char buf[1 << 20];

	*n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	return buf;
}

static void show(const char *what, const struct ktap_sync_val *v)
{
	uint32_t i;

	printf(" %s:", what);
	if (v->t == KTAP_T_STR)
		printf("str=%.*s", (int)v->len, v->s);
	else if (v->t == KTAP_T_AGG) {
		printf("agg=%lld,%lld,%lld,%lld", (long long)v->count, (long long)v->sum,
		       (long long)v->min, (long long)v->max);
		for (i = 0; i < KTAP_LOG2_BUCKETS; i++)
			if (v->log2[i])
				printf(",b%u=%llu", i, (unsigned long long)v->log2[i]);
	} else
		printf("%s=%lld", ktap_type_names[v->t], (long long)v->n);
}

static void dump(struct ktap_session *s, uint32_t nglobals)
{
	static uint64_t log2[KTAP_LOG2_BUCKETS];
	struct ktap_sync_val k, v;
	struct ktap_table *t;
	uint32_t g;
	int32_t e;

	for (g = 0; g < nglobals; g++) {
		ktap_global_get(s, g, &v);
		printf("g%u", g);
		show("", &v);
		t = ktap_global_table(s, g);
		for (e = t ? ktap_table_first(t) : -1; e >= 0; e = ktap_table_next(t, e)) {
			v.log2 = log2;
			v.linear = NULL;
			ktap_table_entry(t, e, &k, &v);
			show("key", &k);
			show("val", &v);
		}
		printf("\n");
	}
}

int main(int argc, char **argv)
{
	static uint64_t log2[KTAP_LOG2_BUCKETS];
	struct ktap_image *img;
	struct ktap_session *s;
	struct ktap_sync_val k = { 0 }, v = { 0 };
	struct ktap_table *t, *h;
	char err[256];
	size_t n;
	unsigned char *data = slurp(argv[1], &n);
	const unsigned char *out;
	FILE *f;
	int p = -1, pc = -1;

	if (ktap_load(data, n, &img, err, sizeof(err)) || ktap_verify(img, err, sizeof(err), &p, &pc))
		return fprintf(stderr, "%s\n", err), 2;
	s = ktap_session_new(img, 1, err, sizeof(err));
	ktap_run_setup(s);
	ktap_output_consumed(s);
	dump(s, img->nglobals);
	/* globals 0 n, 1 flag, 2 t, 3 h (declaration order) */
	v.t = KTAP_T_NUM; v.n = 42;
	ktap_global_set(s, 0, &v);
	v.t = KTAP_T_BOOL; v.n = 0;
	ktap_global_set(s, 1, &v);
	t = ktap_global_table(s, 2);
	h = ktap_global_table(s, 3);
	ktap_table_reset(s, t);
	k.t = KTAP_T_NUM; k.n = 5; v.t = KTAP_T_NUM; v.n = 50;
	ktap_table_insert(s, t, &k, &v);
	k.t = KTAP_T_STR; k.s = "z"; k.len = 1; v.t = KTAP_T_STR; v.s = "str"; v.len = 3;
	ktap_table_insert(s, t, &k, &v);
	ktap_table_reset(s, h);
	k.t = KTAP_T_STR; k.s = "q"; k.len = 1;
	v.t = KTAP_T_AGG; v.count = 3; v.sum = 30; v.min = 5; v.max = 20;
	v.log2 = log2; log2[67] = 2; log2[69] = 1;
	ktap_table_insert(s, h, &k, &v);
	if (argv[2][0] == 'e' && argv[2][1] == 'x')
		ktap_session_stop(s, KTAP_RUN_EXIT, 7, 0, 0, 0, NULL, 0);
	else
		ktap_session_stop(s, KTAP_RUN_ERROR, 0, 3, 4, 1, "boom", 4);
	ktap_run_end(s);
	ktap_finish(s);
	out = ktap_output(s, &n);
	f = fopen(argv[3], "wb");
	fwrite(out, 1, n, f);
	fclose(f);
	ktap_session_free(s);
	ktap_image_free(img);
	return 0;
}
"""

SYNC_SCRIPT = """
var n = 3
var flag = true
var t = {}
var h = {}
t[1] = 10
t["k"] = 20
h["x"] <<< 5
h["x"] <<< 100
trace probe:vfs_write { n += 1 }
trace_end { print(n, flag); print(t); print(h["q"]); hist(h) }
"""

# What the synced session must print: the same script with the synced state
# made by its own setup code (5, 5 and 20 give count 3, sum 30, min 5, max 20).
SYNCED_SCRIPT = """
var n = 42
var flag = false
var t = {}
var h = {}
t[5] = 50
t["z"] = "str"
h["q"] <<< 5
h["q"] <<< 5
h["q"] <<< 20
exit(7)
trace probe:vfs_write { n += 1 }
trace_end { print(n, flag); print(t); print(h["q"]); hist(h) }
"""


def c_driver(tmp_path_factory, name: str, source: str):
    """A host build of `source` with kmod's core and ktap_sync.c, per target:
    get(target) -> the executable (built once)."""
    work = tmp_path_factory.mktemp(name)
    src = work / f"{name}.c"
    src.write_text(source)
    made = {}

    def get(target: str) -> Path:
        if target not in made:
            headers = gen.gen_dir(target, work / target)
            exe = work / f"{name}-{target}"
            r = subprocess.run([tools.find_cc(), "-std=gnu11", "-g", "-Wall", "-Werror",
                                *gen.include_flags(headers), str(src),
                                *map(str, gen.core_sources()), str(runner.SYNC),
                                "-o", str(exe)], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            made[target] = exe
        return made[target]
    return get


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    return c_driver(tmp_path_factory, "sync_driver", DRIVER)


def formatted(exe: Path, records: Path, image_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), "--format-records", str(records), str(image_path)],
                          capture_output=True, text=True, timeout=60)


@needs_cc
@pytest.mark.parametrize("target", TARGETS)
def test_sync_reads_globals_and_tables_in_insertion_order(target, driver, tmp_path):
    _, path = compile_to(tmp_path, "sync", SYNC_SCRIPT, target)
    r = subprocess.run([str(driver(target)), str(path), "exit", str(tmp_path / "out.bin")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # 5 is log2 bucket 67 (4..7), 100 bucket 71 (64..127)
    assert r.stdout.splitlines() == [
        "g0 :number=3",
        "g1 :boolean=1",
        "g2 :table=0 key:number=1 val:number=10 key:str=k val:number=20",
        "g3 :table=0 key:str=x val:agg=2,105,5,100,b67=1,b71=1",
    ]


@needs_cc
@pytest.mark.parametrize("target", TARGETS)
def test_synced_session_prints_what_its_state_says(target, driver, host_runner, tmp_path):
    """After the sync and a program's exit(7), trace_end and STATUS are byte for
    byte what the same state made by the interpreter itself gives."""
    harness = cvm.build_harness(target, tmp_path / "kmod", sanitize=False)
    exe = host_runner(target)
    _, path = compile_to(tmp_path, "sync", SYNC_SCRIPT, target)
    synced = tmp_path / "synced.bin"
    r = subprocess.run([str(driver(target)), str(path), "exit", str(synced)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    _, want_path = compile_to(tmp_path, "synced", SYNCED_SCRIPT, target)
    (tmp_path / "none.ev").write_text("")
    r = subprocess.run([str(harness), "run", str(want_path), str(tmp_path / "none.ev")],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    (tmp_path / "want.bin").write_bytes(r.stdout)
    got = formatted(exe, synced, path)
    want = formatted(exe, tmp_path / "want.bin", want_path)
    assert got.stdout == want.stdout and "42 false" in got.stdout and "Distribution" in got.stdout
    assert got.returncode == want.returncode == 7
    assert got.stderr == want.stderr == ""


@needs_cc
@pytest.mark.parametrize("target", TARGETS)
def test_runtime_error_from_a_program_skips_trace_end(target, driver, host_runner, tmp_path):
    exe = host_runner(target)
    _, path = compile_to(tmp_path, "sync", SYNC_SCRIPT, target)
    out = tmp_path / "err.bin"
    r = subprocess.run([str(driver(target)), str(path), "error", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = formatted(exe, out, path)
    assert got.stdout == ""
    assert got.stderr == "sync.kp:3:4: runtime error: boom\n"
    assert got.returncode == 3


# -- a program's CALL record: ktap_table_call ---------------------------------

# Runs the setup code, then built-ins on tables as ktaprun does for a
# program's CALL records, then trace_end and STATUS:
#   call_driver IMAGE OUT CALL...   CALL = GLOBAL:ID[:ARG...], ARG = nNUM, sTEXT,
#                                   nil, true or false
# Prints each call's return value; the records go to OUT.
CALL_DRIVER = r"""
#include <stdlib.h>
#include <string.h>
#include "ktap_vm.h"

static unsigned char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	static unsigned char buf[1 << 20];

	*n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	return buf;
}

static void arg(const char *a, struct ktap_sync_val *v)
{
	memset(v, 0, sizeof(*v));
	if (a[0] == 'n' && a[1] != 'i') {
		v->t = KTAP_T_NUM;
		v->n = strtoll(a + 1, NULL, 10);
	} else if (a[0] == 's') {
		v->t = KTAP_T_STR;
		v->s = a + 1;
		v->len = (uint32_t)strlen(a + 1);
	} else if (!strcmp(a, "true") || !strcmp(a, "false")) {
		v->t = KTAP_T_BOOL;
		v->n = a[0] == 't';
	} else {
		v->t = KTAP_T_NIL;
	}
}

static int call(struct ktap_session *s, char *spec)
{
	struct ktap_sync_val args[KTAP_CALL_MAX_ARGS + 2];
	uint32_t g = (uint32_t)strtoul(strtok(spec, ":"), NULL, 10), n = 0;
	unsigned id = (unsigned)strtoul(strtok(NULL, ":"), NULL, 10);
	char *a;

	while ((a = strtok(NULL, ":")) && n < KTAP_CALL_MAX_ARGS + 2)
		arg(a, &args[n++]);
	return ktap_table_call(s, g, id, args, n);
}

int main(int argc, char **argv)
{
	struct ktap_image *img;
	struct ktap_session *s;
	char err[256];
	size_t n;
	unsigned char *data = slurp(argv[1], &n);
	const unsigned char *out;
	FILE *f;
	int i, p = -1, pc = -1;

	if (ktap_load(data, n, &img, err, sizeof(err)) || ktap_verify(img, err, sizeof(err), &p, &pc))
		return fprintf(stderr, "%s\n", err), 2;
	s = ktap_session_new(img, 1, err, sizeof(err));
	ktap_run_setup(s);
	ktap_output_consumed(s);
	for (i = 3; i < argc; i++)
		printf("%d\n", call(s, argv[i]));
	ktap_run_end(s);
	ktap_finish(s);
	out = ktap_output(s, &n);
	f = fopen(argv[2], "wb");
	fwrite(out, 1, n, f);
	fclose(f);
	ktap_session_free(s);
	ktap_image_free(img);
	return 0;
}
"""

# The tick handler's built-ins are what the driver runs as CALL records.
CALL_SCRIPT = """
var s = {}
var h = {}
var t = {}
s["a"] = 5
s["b"] = 7
s["c"] = 1
h["x"] <<< 5
h["x"] <<< 100
t[1] = 2
trace probe:vfs_write { s[execname] += 1 }
tick-1s {
  print_hist(s, 2)
  hist(h)
  print(s)
  %s
}
trace_end { printf("end %%d\\n", s["b"]) }
"""

# the built-ins a CALL record names, by their frontend/builtins.py ids
B_PRINT, B_EXIT, B_HIST, B_LHIST, B_PRINT_HIST = (
    BUILTIN_BY_NAME[n].id for n in ("print", "exit", "hist", "lhist", "print_hist"))
CALLS = [f"0:{B_PRINT_HIST}:n2", f"1:{B_HIST}", f"0:{B_PRINT}"]


@pytest.fixture(scope="module")
def call_driver(tmp_path_factory):
    return c_driver(tmp_path_factory, "call_driver", CALL_DRIVER)


def fire_tick(harness: Path, image_path: Path, tmp: Path) -> bytes:
    """The module's records for one tick of event 1 (the C core, as ktapvm runs it)."""
    ev = tmp / "tick.ev"
    ev.write_text("ctx 1 1 0 0 x61 x74 0\nargs 0\nstack 0\nfields 0\nfire 1 - 1 1\n")
    r = subprocess.run([str(harness), "run", str(image_path), str(ev)], capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def run_calls(exe: Path, image_path: Path, out: Path, calls: list[str]) -> list[int]:
    r = subprocess.run([str(exe), str(image_path), str(out), *calls], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [int(x) for x in r.stdout.split()]


@needs_cc
@pytest.mark.parametrize("target", TARGETS)
def test_call_records_print_what_the_handler_would(target, call_driver, host_runner, tmp_path):
    """print_hist(s, 2), hist(h), print(s) and print_hist(t) as CALL records:
    the same records, byte for byte, as the handler that calls them gives."""
    harness = cvm.build_harness(target, tmp_path / "kmod", sanitize=False)
    _, path = compile_to(tmp_path, "call", CALL_SCRIPT % "print_hist(t)", target)
    out = tmp_path / "got.bin"
    assert run_calls(call_driver(target), path, out, [*CALLS, f"2:{B_PRINT_HIST}"]) == [0] * 4
    want = fire_tick(harness, path, tmp_path)
    assert out.read_bytes() == want
    got = formatted(host_runner(target), out, path)
    assert got.returncode == 0 and got.stderr == ""
    assert "Distribution" in got.stdout and got.stdout.endswith("end 7\n")


@needs_cc
@pytest.mark.parametrize("target", TARGETS)
def test_call_record_error_is_the_handlers_error(target, call_driver, host_runner, tmp_path):
    """A built-in's runtime error stops the session at the handler's call of it
    (its KBC is in the image), with a string argument interned and released."""
    harness = cvm.build_harness(target, tmp_path / "kmod", sanitize=False)
    _, path = compile_to(tmp_path, "call", CALL_SCRIPT % 'print_hist(t, "x")', target)
    out = tmp_path / "got.bin"
    rcs = run_calls(call_driver(target), path, out, [*CALLS, f"2:{B_PRINT_HIST}:sx",
                                                     f"0:{B_PRINT}"])
    assert rcs == [0, 0, 0, 2, 2]          # KTAP_RUN_ERROR, then stopped: nothing runs
    assert out.read_bytes() == fire_tick(harness, path, tmp_path)
    got = formatted(host_runner(target), out, path)
    assert got.returncode == 3
    assert got.stderr == ("call.kp:16:3: runtime error: print_hist's count must be a number, "
                          "got a string\n")
    assert "end" not in got.stdout


@needs_cc
def test_call_refuses_what_no_handler_can_ask(call_driver, tmp_path):
    """-1 and nothing written: a built-in that is not a table's, a wrong number
    of arguments, an argument of a kind no program sends... and a global
    holding no table; nil and booleans are arguments like any other."""
    _, path = compile_to(tmp_path, "call", CALL_SCRIPT % "print_hist(t, nil)", "arm")
    out = tmp_path / "got.bin"
    rcs = run_calls(call_driver("arm"), path, out, [
        f"0:{B_EXIT}", f"0:{B_HIST}:n1", f"0:{B_PRINT_HIST}:n1:n2", "0:99",
        f"3:{B_PRINT}", f"7:{B_PRINT}", f"2:{B_PRINT_HIST}:nil"])
    assert rcs == [-1, -1, -1, -1, -1, -1, 2]
    text = out.read_bytes()
    assert b"print_hist's count must be a number, got a nil" in text


@needs_cc
def test_a_call_record_in_a_stream_is_malformed(host_runner, tmp_path):
    """Only ktaprun's eBPF session runs CALL records: a saved stream never has one."""
    exe = host_runner("arm")
    _, path = compile_to(tmp_path, "call", CALL_SCRIPT % "", "arm")
    payload = bytes([8, B_PRINT]) + (0).to_bytes(4, "little") + (0).to_bytes(4, "little")
    rec = tmp_path / "r.bin"
    rec.write_bytes((len(payload) + 4).to_bytes(4, "little") + payload + status_record("arm", 0))
    got = formatted(exe, rec, path)
    assert got.returncode == 1 and "malformed output record stream" in got.stderr
