/* ktap_fuzz.c - libFuzzer target for ktapvm's core (loader, verifier, interpreter).
 *
 * One input is one KBC image for the target it is built for. It goes the way
 * the module takes it: ktap_load(); if that accepts it, ktap_verify(); if that
 * accepts it, a session runs setup, fires every probe event a few times with a
 * synthetic context, runs trace_end and writes the status record, then
 * everything is freed. Anything the loader or verifier lets through must run
 * within the image's budget, without a sanitizer report and without leaking:
 * libFuzzer reports a crash, -timeout reports a hang, LeakSanitizer a leak.
 *
 * Built by toolchain/ktapdev/fuzz.py with clang -fsanitize=fuzzer,address,undefined. */
#include "ktap_vm.h"
#include "ktap_bytes.h"
#include "ktap_crc32.h"

/* Cheap runs keep the fuzzer fast. The image's limits are only clamped
 * downwards and before ktap_verify(), so the verifier checks the image
 * against the limits the session really gets: the clamp cannot hide a bug, it
 * only keeps one input from costing seconds or gigabytes (a 10M-instruction
 * budget per handler, or 1024 log2 tables of 2^20 entries). */
#define FUZZ_BUDGET 50000
#define FUZZ_TABLE_ENTRIES 1024
#define FUZZ_OUTBUF (64 * 1024)
#define FUZZ_FIRES 3		/* times each probe event fires */
#define FUZZ_CPUS 2		/* aggregate shards */

/* kernel_string()/user_string() memory: addresses 0x1000 + i hold strs[i],
 * anything else is unreadable, as a faulting address would be. */
static const char *const strs[] = { "", "vfs_write", "/etc/passwd", "a\tb\nc%s%d",
	"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" };
#define NSTRS (sizeof(strs) / sizeof(strs[0]))

static int read_str(void *ctx, int user, uint64_t addr, char *buf, uint32_t max)
{
	uint32_t n;

	(void)ctx;
	if (addr < 0x1000 || addr >= 0x1000 + NSTRS || (user && addr == 0x1000))
		return -1;
	n = (uint32_t)strlen(strs[addr - 0x1000]);
	if (n > max)
		n = max;
	memcpy(buf, strs[addr - 0x1000], n);
	return (int)n;
}

/* Arguments mix small numbers, extremes and readable string addresses. */
static const int64_t args[] = { 0x1001, 0x1002, -1, 0, INT64_MIN, INT64_MAX, 0x1004, 4096 };
static const uint64_t stack[] = { 0xffffffff81000000ULL, 0xffffffff81234567ULL, 0, 1,
	0xc0001000ULL };

static void field(struct ktap_fieldval *f, unsigned i)
{
	memset(f, 0, sizeof(*f));
	switch (i % 4) {
	case 0: f->t = KTAP_T_NUM; f->n = (int64_t)i * 37 - 5; break;
	case 1: f->t = KTAP_T_STR; f->s = strs[i % NSTRS]; f->len = (uint32_t)strlen(f->s); break;
	case 2: f->t = KTAP_T_NUM; f->n = INT64_MIN + i; break;
	default: f->t = KTAP_T_NIL; break;
	}
}

/* Fills ev for image event e; named[] gets exactly the event's field list. */
static void make_event(struct ktap_event *ev, const struct ktap_ievent *e, unsigned round,
		       struct ktap_fieldval *fields, struct ktap_fieldval *named)
{
	unsigned i;

	memset(ev, 0, sizeof(*ev));
	ev->pid = 100 + round;
	ev->tid = 101 + round;
	ev->uid = round ? 1000 : 0;
	ev->cpu = round % 2;
	ev->shard = round % (FUZZ_CPUS + 1);	/* out of range too: taken modulo */
	ev->execname = round == 1 ? "" : "ktap-fuzz";
	ev->execname_len = (uint32_t)strlen(ev->execname);
	/* rounds 1 and 2 take the kernel's comm path (a zero-padded 16-byte
	 * buffer), empty and not; round 0 the execname/execname_len path */
	if (round)
		ev->comm = round == 1 ? "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0" : "ktap-fuzz\0\0\0\0\0\0";
	ev->probename = "vfs_write";
	ev->probename_len = 9;
	ev->has_retval = e->kind == KTAP_EV_KRETPROBE;
	ev->retval = round == 2 ? -14 : 42;
	ev->args = args;
	ev->nargs = round == 1 ? 0 : (uint32_t)(sizeof(args) / sizeof(args[0]));
	ev->stack = stack;
	ev->nstack = round == 1 ? 0 : (uint32_t)(sizeof(stack) / sizeof(stack[0]));
	ev->is_tracepoint = e->kind == KTAP_EV_TRACEPOINT;
	for (i = 0; i < 8; i++)
		field(&fields[i], i + round);
	ev->fields = fields;
	ev->nfields = round == 1 ? 0 : 8;
	for (i = 0; i < e->nfields; i++)
		field(&named[i], i + round);
	ev->named = named;
	ev->nnamed = e->nfields;
}

static void clamp(int64_t *v, int64_t max)
{
	if (*v > max)
		*v = max;
}

static void run(const struct ktap_image *img)
{
	struct ktap_session *s;
	struct ktap_fieldval fields[8], *named;
	struct ktap_event ev;
	size_t len, maxf = 1;
	char err[256];
	unsigned round;
	uint32_t i;
	int rc = KTAP_RUN_OK;

	for (i = 0; i < img->nevents; i++)
		if (img->events[i].nfields > maxf)
			maxf = img->events[i].nfields;
	named = calloc(maxf, sizeof(*named));
	s = ktap_session_new(img, FUZZ_CPUS, err, sizeof(err));
	if (!s || !named)
		goto out;
	ktap_set_reader(s, read_str, NULL);
	ktap_set_clock(s, 1000000);
	rc = ktap_run_setup(s);
	ktap_output(s, &len);
	ktap_output_consumed(s);
	/* Probe events in image order, FUZZ_FIRES rounds, as the harness does:
	 * exit() or a runtime error stops the firing. */
	for (round = 0; round < FUZZ_FIRES && rc != KTAP_RUN_EXIT && rc != KTAP_RUN_ERROR; round++)
		for (i = 0; i < img->nevents && rc != KTAP_RUN_EXIT && rc != KTAP_RUN_ERROR; i++) {
			if (img->events[i].kind == KTAP_EV_END)
				continue;
			make_event(&ev, &img->events[i], round, fields, named);
			ktap_set_clock(s, 2000000 + 1000 * (int64_t)(round * img->nevents + i));
			rc = ktap_fire(s, i, &ev);
			/* leave output in the buffer on odd rounds, so it fills up */
			if (round % 2 == 0)
				ktap_output_consumed(s);
		}
	ktap_add_drops(s, KTAP_DROP_REENTERED, 1);
	ktap_run_end(s);
	ktap_finish(s);
	ktap_output(s, &len);
out:
	ktap_session_free(s);
	free(named);
}

/* The header (docs/bytecode.md) ends with the body size and its CRC-32. A
 * mutated input almost never carries a matching CRC, so without help the
 * loader would refuse nearly everything at the checksum and the fuzzer would
 * never reach the body reader, the verifier or the interpreter. */
#define HDR_FIXED 20		/* magic .. reserved (12) + check_int (8) */
#define HDR_SIZE (HDR_FIXED + 2 * KTAP_WORD_SIZE + 4)

/* The image with body_size and body_crc32 rewritten to match its body. */
static unsigned char *fixed_copy(const uint8_t *data, size_t size)
{
	unsigned char *c = malloc(size);

	if (!c)
		return NULL;
	memcpy(c, data, size);
	ktap_put_uint(c + HDR_FIXED + KTAP_WORD_SIZE, size - HDR_SIZE, KTAP_WORD_SIZE);
	ktap_put_uint(c + HDR_FIXED + 2 * KTAP_WORD_SIZE, ktap_crc32(0, c + HDR_SIZE, size - HDR_SIZE),
		      4);
	return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ktap_image *img = NULL;
	unsigned char *copy = NULL;
	char msg[512];
	int proto, pc;

	/* The input as given first (so header and checksum errors stay covered),
	 * then, if refused, with its size and checksum repaired. */
	if (ktap_load(data, size, &img, msg, sizeof(msg)) < 0) {
		if (size < HDR_SIZE || !(copy = fixed_copy(data, size)))
			return 0;
		if (ktap_load(copy, size, &img, msg, sizeof(msg)) < 0)
			img = NULL;
		free(copy);	/* the loader keeps its own copy */
		if (!img)
			return 0;
	}
	clamp(&img->limits[KTAP_LIMIT_BUDGET], FUZZ_BUDGET);
	clamp(&img->limits[KTAP_LIMIT_TABLE_ENTRIES], FUZZ_TABLE_ENTRIES);
	clamp(&img->limits[KTAP_LIMIT_OUTBUF_SIZE], FUZZ_OUTBUF);
	if (ktap_verify(img, msg, sizeof(msg), &proto, &pc) == KTAP_OK)
		run(img);
	ktap_image_free(img);
	return 0;
}
