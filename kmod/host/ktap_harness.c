/* ktap_harness.c - host driver for ktapvm's core (user-space build).
 *
 *   ktap_harness verify IMAGE          -> "ok" or "REASON PROTO PC MESSAGE"
 *   ktap_harness run IMAGE EVENTS      -> binary output records on stdout
 *
 * EVENTS is the line protocol toolchain/ktap/build/kmod.py writes from a `ktap sim`
 * events file (strings are "x" + hex bytes, so they never hold spaces):
 *   mem k|u ADDR XHEX                  kernel_string()/user_string() memory
 *   ctx PID TID UID CPU XEXEC XPROBE TP   start a new event context
 *   retval N | args N a1.. | stack N s1.. | fields N v1.. | named EVIDX N v1..
 *            (a field value v is "-" for nil, "n:NUM" or "s:XHEX")
 *   fire REPEAT TIME|- K ev1..evK      fire image events ev1..evK REPEAT times
 * It mirrors sim.Session.run: setup, events in order (stopping at exit()),
 * then the trace_end handlers; a runtime error stops everything. */
#include "ktap_vm.h"

#define MAX_LINE (1 << 20)
/* aggregate shards: events feed the shard of their cpu (modulo this) */
#define HARNESS_CPUS 4

struct mem { int user; uint64_t addr; char *s; uint32_t len; };

static struct mem *mems;
static size_t nmems;

static void die(const char *what)
{
	fprintf(stderr, "ktap_harness: %s\n", what);
	exit(2);
}

/* The harness's own allocations live until exit and are freed together, so
 * LeakSanitizer only ever reports leaks of the core. */
static void **owned;
static size_t nowned;

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);
	void **grown = realloc(owned, (nowned + 1) * sizeof(*owned));

	if (!p || !grown)
		die("out of memory");
	owned = grown;
	owned[nowned++] = p;
	return p;
}

static void free_owned(void)
{
	while (nowned)
		free(owned[--nowned]);
	free(owned);
	free(mems);
}

static unsigned char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	size_t cap = 0, n;

	if (!f)
		die("cannot open input");
	*len = 0;
	do {
		if (*len == cap) {
			cap = cap ? 2 * cap : 65536;
			buf = realloc(buf, cap + 1);
			if (!buf)
				die("out of memory");
		}
		n = fread(buf + *len, 1, cap - *len, f);
		*len += n;
	} while (n);
	fclose(f);
	buf[*len] = 0;
	return buf;
}

/* "x" + hex -> bytes (allocated, NUL-terminated) */
static char *unhex(const char *t, uint32_t *len)
{
	size_t n, i;
	char *out;

	if (!t || t[0] != 'x')
		die("bad string token");
	n = strlen(t + 1) / 2;
	out = xcalloc(n + 1, 1);
	for (i = 0; i < n; i++) {
		unsigned v;

		if (sscanf(t + 1 + 2 * i, "%2x", &v) != 1)
			die("bad hex");
		out[i] = (char)v;
	}
	*len = (uint32_t)n;
	return out;
}

static int read_mem(void *ctx, int user, uint64_t addr, char *buf, uint32_t max)
{
	size_t i;
	uint32_t n;

	(void)ctx;
	for (i = nmems; i-- > 0;)
		if (mems[i].user == user && mems[i].addr == addr) {
			n = mems[i].len < max ? mems[i].len : max;
			memcpy(buf, mems[i].s, n);
			return (int)n;
		}
	return -1;
}

static int64_t tok_i64(void) { char *t = strtok(NULL, " \n"); if (!t) die("missing number"); return strtoll(t, NULL, 10); }
static uint64_t tok_u64(void) { char *t = strtok(NULL, " \n"); if (!t) die("missing number"); return strtoull(t, NULL, 10); }
static char *tok(void) { char *t = strtok(NULL, " \n"); if (!t) die("missing token"); return t; }

static void parse_field(struct ktap_fieldval *fv)
{
	char *t = tok();

	memset(fv, 0, sizeof(*fv));
	if (t[0] == 'n' && t[1] == ':') {
		fv->t = KTAP_T_NUM;
		fv->n = strtoll(t + 2, NULL, 10);
	} else if (t[0] == 's' && t[1] == ':') {
		fv->t = KTAP_T_STR;
		fv->s = unhex(t + 2, &fv->len);
	}
}

/* One event context; `named` is per image event, since field lists differ. */
struct ctx {
	struct ktap_event ev;
	struct ktap_fieldval **named;
	uint32_t *nnamed;
};

static void flush(struct ktap_session *s)
{
	size_t len;
	const unsigned char *p = ktap_output(s, &len);

	if (len && fwrite(p, 1, len, stdout) != len)
		die("write failed");
	ktap_output_consumed(s);
}

static int64_t mono;		/* nsecs: 0 for the setup code, then +1000 per event */

/* Returns KTAP_RUN_EXIT or KTAP_RUN_ERROR when the session must stop firing. */
static int fire(struct ktap_session *s, struct ctx *c, int64_t *clock)
{
	int64_t repeat = tok_i64(), r;
	char *t = tok();
	int has_time = strcmp(t, "-") != 0;
	int64_t time = has_time ? strtoll(t, NULL, 10) : 0;
	uint32_t k = (uint32_t)tok_u64(), i, idx[64];
	int rc;

	if (k > 64)
		die("too many handlers");
	for (i = 0; i < k; i++)
		idx[i] = (uint32_t)tok_u64();
	for (r = 0; r < repeat; r++) {
		*clock = has_time ? time : *clock + 1000;
		ktap_set_clock(s, *clock);
		mono += 1000;		/* as ktap sim's events without "nsecs" */
		ktap_set_mono(s, mono);
		for (i = 0; i < k; i++) {
			c->ev.named = c->named[idx[i]];
			c->ev.nnamed = c->nnamed[idx[i]];
			rc = ktap_fire(s, idx[i], &c->ev);
			flush(s);
			if (rc == KTAP_RUN_EXIT || rc == KTAP_RUN_ERROR)
				return rc;
		}
	}
	return KTAP_RUN_OK;
}

static void run_events(struct ktap_session *s, const struct ktap_image *img, char *text)
{
	struct ctx c;
	int64_t clock = 0, *args = NULL;
	uint64_t *stack = NULL;
	struct ktap_fieldval *fields = NULL;
	char *line, *save = NULL;
	uint32_t i, n;

	memset(&c, 0, sizeof(c));
	c.named = xcalloc(img->nevents + 1, sizeof(*c.named));
	c.nnamed = xcalloc(img->nevents + 1, sizeof(*c.nnamed));
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *cmd = strtok(line, " ");

		if (!cmd)
			continue;
		if (!strcmp(cmd, "mem")) {
			mems = realloc(mems, (nmems + 1) * sizeof(*mems));
			if (!mems)
				die("out of memory");
			mems[nmems].user = tok()[0] == 'u';
			mems[nmems].addr = tok_u64();
			mems[nmems].s = unhex(tok(), &mems[nmems].len);
			nmems++;
		} else if (!strcmp(cmd, "ctx")) {
			memset(&c.ev, 0, sizeof(c.ev));
			memset(c.nnamed, 0, (img->nevents + 1) * sizeof(*c.nnamed));
			c.ev.pid = tok_i64();
			c.ev.tid = tok_i64();
			c.ev.uid = tok_i64();
			c.ev.cpu = tok_i64();
			/* each event's CPU feeds its own aggregate shards */
			c.ev.shard = (uint32_t)((uint64_t)c.ev.cpu % HARNESS_CPUS);
			c.ev.execname = unhex(tok(), &c.ev.execname_len);
			/* names a kernel comm could hold take the module's path */
			if (c.ev.execname_len < KTAP_COMM_BYTES &&
			    !memchr(c.ev.execname, 0, c.ev.execname_len)) {
				char *comm = xcalloc(KTAP_COMM_BYTES, 1);

				memcpy(comm, c.ev.execname, c.ev.execname_len);
				c.ev.comm = comm;
			}
			c.ev.probename = unhex(tok(), &c.ev.probename_len);
			c.ev.is_tracepoint = (int)tok_i64();
		} else if (!strcmp(cmd, "retval")) {
			c.ev.has_retval = 1;
			c.ev.retval = tok_i64();
		} else if (!strcmp(cmd, "args")) {
			n = (uint32_t)tok_u64();
			c.ev.args = args = xcalloc(n, sizeof(*args));
			for (i = 0; i < n; i++)
				args[i] = tok_i64();
			c.ev.nargs = n;
		} else if (!strcmp(cmd, "stack")) {
			n = (uint32_t)tok_u64();
			c.ev.stack = stack = xcalloc(n, sizeof(*stack));
			for (i = 0; i < n; i++)
				stack[i] = tok_u64();
			c.ev.nstack = n;
		} else if (!strcmp(cmd, "fields")) {
			n = (uint32_t)tok_u64();
			c.ev.fields = fields = xcalloc(n, sizeof(*fields));
			for (i = 0; i < n; i++)
				parse_field(&fields[i]);
			c.ev.nfields = n;
		} else if (!strcmp(cmd, "named")) {
			uint32_t e = (uint32_t)tok_u64();

			if (e >= img->nevents)
				die("bad event index");
			n = (uint32_t)tok_u64();
			c.named[e] = xcalloc(n, sizeof(**c.named));
			for (i = 0; i < n; i++)
				parse_field(&c.named[e][i]);
			c.nnamed[e] = n;
		} else if (!strcmp(cmd, "fire")) {
			if (fire(s, &c, &clock))
				return;
		} else {
			die("unknown command in the events stream");
		}
	}
}

static struct ktap_image *load_verified(const char *path, int report)
{
	size_t len;
	unsigned char *data = read_file(path, &len);
	struct ktap_image *img;
	char msg[512];
	int proto, pc, rc;

	if (ktap_load(data, len, &img, msg, sizeof(msg)) < 0) {
		printf("bad-image -1 -1 %s\n", msg);
		free(data);
		return NULL;
	}
	free(data);
	rc = ktap_verify(img, msg, sizeof(msg), &proto, &pc);
	if (rc) {
		printf("%s %d %d %s\n", ktap_reason_names[rc], proto, pc, msg);
		ktap_image_free(img);
		return NULL;
	}
	if (report)
		printf("ok\n");
	return img;
}

int main(int argc, char **argv)
{
	struct ktap_image *img;
	struct ktap_session *s;
	char err[256], *events;
	size_t len;
	int rc;

	if (argc == 3 && !strcmp(argv[1], "verify")) {
		img = load_verified(argv[2], 1);
		ktap_image_free(img);
		return 0;
	}
	if (argc != 4 || strcmp(argv[1], "run"))
		die("usage: ktap_harness verify IMAGE | run IMAGE EVENTS");
	img = load_verified(argv[2], 0);
	if (!img)
		return 2;
	atexit(free_owned);
	s = ktap_session_new(img, HARNESS_CPUS, err, sizeof(err));
	if (!s)
		die(err);
	ktap_set_reader(s, read_mem, NULL);
	events = (char *)read_file(argv[3], &len);
	rc = ktap_run_setup(s);
	flush(s);
	if (rc != KTAP_RUN_EXIT && rc != KTAP_RUN_ERROR)
		run_events(s, img, events);
	ktap_run_end(s);	/* skips itself after a runtime error */
	flush(s);
	ktap_finish(s);
	flush(s);
	ktap_session_free(s);
	ktap_image_free(img);
	free(events);
	return 0;
}
