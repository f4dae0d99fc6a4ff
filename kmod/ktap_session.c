/* ktap_session.c - sessions: everything a session uses is allocated up front
 * by ktap_session_new() (the string pool, registers, frames, constants, the
 * output buffer), handlers are run one at a time with a fresh budget, and
 * the caller drains the output and ends the session with a STATUS record. */
#include "ktap_object.h"
#include "ktap_record.h"
#include "ktap_string.h"
#include "ktap_table.h"

const char *const ktap_drop_names[KTAP_NUM_DROPS] = {
	"table full", "string pool full", "output buffer full", "re-entered on one CPU",
};

const char *const ktap_type_names[] = {
	"nil", "boolean", "number", "string", "table", "aggregate", "stack", "time",
};

/* Bytes kept free in the output buffer for the final status record. */
#define STATUS_RESERVE 512

/* inline: ktap_fire runs it on every event, one call less */
static __always_inline int run_handler(struct ktap_session *s, uint32_t proto,
				       const struct ktap_event *ev)
{
	int rc;

	if (s->stopped)
		return s->stopped;
	s->ev = ev;
	s->budget = s->limits[KTAP_LIMIT_BUDGET];
	s->charges = 0;
	rc = ktap_execute(s, proto);
	s->ev = NULL;
	if (s->young)
		ktap_str_sweep(s);
	if (rc == KTAP_RUN_DROP) {
		s->drops[s->drop_reason]++;
		return KTAP_RUN_DROP;
	}
	if (rc == KTAP_RUN_EXIT || rc == KTAP_RUN_ERROR)
		s->stopped = rc;
	return rc;
}

int ktap_run_setup(struct ktap_session *s)
{
	return run_handler(s, 0, NULL);
}

int ktap_fire(struct ktap_session *s, uint32_t event_index, const struct ktap_event *ev)
{
	if (event_index >= s->img->nevents)
		return KTAP_RUN_OK;
	return run_handler(s, s->img->events[event_index].handler, ev);
}

/* trace_end runs even after exit(): only an error skips it. */
int ktap_run_end(struct ktap_session *s)
{
	uint32_t i;
	int rc = KTAP_RUN_OK;

	if (s->stopped == KTAP_RUN_ERROR)
		return KTAP_RUN_ERROR;
	s->stopped = 0;
	for (i = 0; i < s->img->nevents && rc != KTAP_RUN_EXIT && rc != KTAP_RUN_ERROR; i++)
		if (s->img->events[i].kind == KTAP_EV_END)
			rc = run_handler(s, s->img->events[i].handler, NULL);
	return rc;
}

void ktap_set_reader(struct ktap_session *s, ktap_read_str_fn fn, void *ctx)
{
	s->read_str = fn;
	s->read_ctx = ctx;
}

void ktap_set_clock(struct ktap_session *s, int64_t ns)
{
	s->clock_ns = ns;
}

void ktap_set_mono(struct ktap_session *s, int64_t ns)
{
	s->mono_ns = ns;
}

const unsigned char *ktap_output(struct ktap_session *s, size_t *len)
{
	*len = s->out_len;
	return s->out;
}

void ktap_output_consumed(struct ktap_session *s)
{
	s->out_len = 0;
}

void ktap_add_drops(struct ktap_session *s, int reason, uint64_t n)
{
	if (reason >= 0 && reason < KTAP_NUM_DROPS)
		s->drops[reason] += n;
}

void ktap_finish(struct ktap_session *s)
{
	s->out_cap += STATUS_RESERVE;	/* the reserve exists for this record */
	ktap_put_status(s);
	s->out_cap -= STATUS_RESERVE;
}

void ktap_session_free(struct ktap_session *s)
{
	struct ktap_table *t, *next;
	uint32_t i;

	if (!s)
		return;
	for (t = s->tables; t; t = next) {
		next = t->all_next;
		ktap_table_free(t);
	}
	for (i = 0; s->kvals && i < s->img->nprotos; i++)
		ktap_free(s->kvals[i]);
	ktap_free(s->kvals);
	ktap_free(s->globals);
	ktap_free(s->regs);
	ktap_free(s->frames);
	ktap_free(s->str_mem);
	ktap_free(s->intern);
	ktap_free(s->scratch);
	ktap_free(s->out);
	ktap_free(s);
}

/* Constants become values once; their strings are referenced for good. */
static int load_constants(struct ktap_session *s)
{
	const struct ktap_image *img = s->img;
	uint32_t i, k;

	for (i = 0; i < img->nprotos; i++) {
		const struct ktap_proto *p = &img->protos[i];

		s->kvals[i] = ktap_zalloc((p->nconsts + 1) * sizeof(struct ktap_value));
		if (!s->kvals[i])
			return -1;
		for (k = 0; k < p->nconsts; k++) {
			struct ktap_value *v = &s->kvals[i][k];

			if (p->consts[k].tag == KTAP_K_NUMBER) {
				*v = num(p->consts[k].n);
				continue;
			}
			v->t = KTAP_T_STR;
			v->u.s = ktap_str_intern(s, KTAP_T_STR, p->consts[k].s.s, p->consts[k].s.len);
			if (!v->u.s)
				return -1;
			v->u.s->refs++;
		}
	}
	ktap_str_sweep(s);
	return 0;
}

/* Everything a session will use, allocated up front. The image must have
 * passed ktap_verify(): the interpreter trusts its proofs. */
struct ktap_session *ktap_session_new(const struct ktap_image *img, uint32_t ncpus, char *err,
				      size_t errlen)
{
	struct ktap_session *s = ktap_zalloc(sizeof(*s));
	size_t nregs;

	if (!s)
		goto oom;
	s->img = img;
	s->ncpus = ncpus ? ncpus : 1;
	memcpy(s->limits, img->limits, sizeof(s->limits));
	nregs = (size_t)s->limits[KTAP_LIMIT_MAX_STACK] + 1;
	s->globals = ktap_zalloc((img->nglobals + 1) * sizeof(*s->globals));
	s->regs = ktap_zalloc(nregs * sizeof(*s->regs));
	s->frames = ktap_zalloc((img->nprotos + 1) * sizeof(*s->frames));
	s->kvals = ktap_zalloc((img->nprotos + 1) * sizeof(*s->kvals));
	s->scratch = ktap_zalloc((size_t)s->limits[KTAP_LIMIT_STRING_SIZE] + 64);
	s->out_cap = (size_t)s->limits[KTAP_LIMIT_OUTBUF_SIZE];
	s->out = ktap_zalloc(s->out_cap + STATUS_RESERVE);
	if (!s->globals || !s->regs || !s->frames || !s->kvals || !s->scratch || !s->out ||
	    ktap_str_pool_new(s) < 0 || load_constants(s) < 0)
		goto oom;
	return s;
oom:
	ktap_snprintf(err, errlen, "out of memory for the session's pools");
	ktap_session_free(s);
	return NULL;
}
