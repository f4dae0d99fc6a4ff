/* ktap_sync.c - a session's globals and tables read and written from outside
 * the interpreter, for ktaprun's eBPF path (docs/ebpf.md): the setup code and
 * trace_end run here in user space, the handlers run as BPF programs, and
 * ktaprun copies what the handlers use into BPF maps and back.
 *
 * User space only: the module never builds this file (the kernel path has no
 * maps to sync with), so it may assume process context throughout. Every
 * function keeps the core's invariants: tables and globals hold references
 * on their strings, and strings nothing references go back to the pool. */
#include "ktap_object.h"
#include "ktap_string.h"
#include "ktap_table.h"

/* -- globals ------------------------------------------------------------------- */
static void sync_from(struct ktap_value v, struct ktap_sync_val *out)
{
	memset(out, 0, sizeof(*out));
	out->t = v.t;
	if (v.t == KTAP_T_NUM || v.t == KTAP_T_BOOL) {
		out->n = v.u.n;
	} else if (v.t == KTAP_T_STR) {
		out->s = str_bytes(v.u.s);
		out->len = v.u.s->len;
	}
}

int ktap_global_get(const struct ktap_session *s, uint32_t g, struct ktap_sync_val *v)
{
	if (g >= s->img->nglobals)
		return -1;
	sync_from(s->globals[g], v);
	return 0;
}

int ktap_global_set(struct ktap_session *s, uint32_t g, const struct ktap_sync_val *v)
{
	struct ktap_value nv;

	if (g >= s->img->nglobals)
		return -1;
	if (v->t == KTAP_T_NUM)
		nv = num(v->n);
	else if (v->t == KTAP_T_BOOL)
		nv = boolean(v->n != 0);
	else if (v->t == KTAP_T_NIL)
		nv = NIL;
	else
		return -1;
	/* the old value may be a string only this global kept */
	unref(s, s->globals[g]);
	s->globals[g] = nv;
	ktap_str_sweep(s);
	return 0;
}

/* -- tables: what a map needs to know ------------------------------------------ */
struct ktap_table *ktap_global_table(const struct ktap_session *s, uint32_t g)
{
	if (g >= s->img->nglobals || s->globals[g].t != KTAP_T_TABLE)
		return NULL;
	return s->globals[g].u.tab;
}

uint32_t ktap_table_desc(const struct ktap_table *t) { return t->desc_index; }
uint32_t ktap_table_nlinear(const struct ktap_table *t) { return t->linear ? t->nlinear : 0; }
uint32_t ktap_table_count(const struct ktap_table *t) { return t->count; }

/* -- reading entries in insertion order ------------------------------------------ */
int32_t ktap_table_first(const struct ktap_table *t)
{
	return t->oldest;
}

int32_t ktap_table_next(const struct ktap_table *t, int32_t slot)
{
	if (slot < 0 || (uint32_t)slot >= t->used || !t->e[slot].live)
		return -1;
	return t->e[slot].newer;
}

static void agg_read(const struct ktap_agg *a, struct ktap_sync_val *out)
{
	struct ktap_shard m = ktap_agg_merged(a);
	uint32_t b;

	out->count = m.count;
	out->sum = m.sum;
	out->min = m.min;
	out->max = m.max;
	for (b = 0; out->log2 && b < KTAP_LOG2_BUCKETS; b++)
		out->log2[b] = a->t->log2 ? ktap_agg_bucket(a, 0, b) : 0;
	for (b = 0; out->linear && b < ktap_table_nlinear(a->t); b++)
		out->linear[b] = ktap_agg_bucket(a, 1, b);
}

void ktap_table_entry(const struct ktap_table *t, int32_t slot, struct ktap_sync_val *key,
		      struct ktap_sync_val *val)
{
	uint64_t *log2 = val->log2, *linear = val->linear;
	const struct ktap_entry *e = &t->e[slot];

	sync_from(e->key, key);
	sync_from(e->val, val);
	/* the caller's bucket buffers survive sync_from's reset */
	val->log2 = log2;
	val->linear = linear;
	if (e->val.t == KTAP_T_AGG)
		agg_read(e->val.u.agg, val);
}

/* -- writing entries ------------------------------------------------------------- */
void ktap_table_reset(struct ktap_session *s, struct ktap_table *t)
{
	uint32_t i;

	/* Not ktap_table_clear(): that keeps the freed slots on the LIFO list,
	 * and the entries inserted next would take them newest first. A fresh
	 * table gives slots in insertion order, which is what dumps show. */
	for (i = 0; i < t->used; i++) {
		if (!t->e[i].live)
			continue;
		unref(s, t->e[i].key);
		unref(s, t->e[i].val);
		t->e[i].key = t->e[i].val = NIL;
		t->e[i].live = 0;
	}
	for (i = 0; i <= t->mask; i++)
		t->heads[i] = -1;
	t->used = t->nfree = t->count = 0;
	t->oldest = t->newest = -1;
	ktap_str_sweep(s);
}

/* A number, boolean or string as a value; strings clipped to the limit like
 * every string the interpreter makes. -1: the pool is full or a wrong type. */
static int to_value(struct ktap_session *s, const struct ktap_sync_val *v, struct ktap_value *out)
{
	uint32_t len = v->len;
	struct ktap_str *x;

	if (v->t == KTAP_T_NUM || v->t == KTAP_T_BOOL) {
		*out = v->t == KTAP_T_NUM ? num(v->n) : boolean(v->n != 0);
		return 0;
	}
	if (v->t != KTAP_T_STR)
		return -1;
	if (len > (uint64_t)s->limits[KTAP_LIMIT_STRING_SIZE])
		len = (uint32_t)s->limits[KTAP_LIMIT_STRING_SIZE];
	x = ktap_str_intern(s, KTAP_T_STR, v->s, len);
	if (!x)
		return -1;
	out->t = KTAP_T_STR;
	out->u.s = x;
	return 0;
}

/* What op_aggr does for a new entry, then the given numbers in CPU 0's shard. */
static int put_agg(struct ktap_session *s, struct ktap_table *t, struct ktap_value k,
		   const struct ktap_sync_val *v)
{
	int32_t i = ktap_table_slot(t, k);
	struct ktap_shard *g;

	if (i < 0)
		return -1;
	unref(s, t->e[i].val);
	ktap_agg_reset(t, (uint32_t)i);
	t->e[i].val.t = KTAP_T_AGG;
	t->e[i].val.u.agg = &t->e[i].agg;
	g = shard_of(t, 0, (uint32_t)i);
	g->count = v->count;
	g->sum = v->sum;
	g->min = v->min;
	g->max = v->max;
	if (t->log2 && v->log2)
		memcpy(log2_row(t, 0, (uint32_t)i), v->log2, KTAP_LOG2_BUCKETS * sizeof(uint64_t));
	if (t->linear && v->linear)
		memcpy(linear_row(t, 0, (uint32_t)i), v->linear, t->nlinear * sizeof(uint64_t));
	return 0;
}

int ktap_table_insert(struct ktap_session *s, struct ktap_table *t,
		      const struct ktap_sync_val *key, const struct ktap_sync_val *val)
{
	struct ktap_value k, v;
	int rc = -1;

	if ((key->t == KTAP_T_NUM || key->t == KTAP_T_STR) && to_value(s, key, &k) == 0) {
		if (val->t == KTAP_T_AGG)
			rc = put_agg(s, t, k, val);
		else if (to_value(s, val, &v) == 0)
			rc = ktap_table_set(s, t, k, v);
	}
	/* a key or value the table did not take goes back to the pool */
	ktap_str_sweep(s);
	return rc;
}

/* -- stopping -------------------------------------------------------------------- */
void ktap_session_stop(struct ktap_session *s, int state, int64_t exit_code, uint32_t line,
		       uint32_t col, uint32_t func, const char *msg, uint32_t len)
{
	if (state != KTAP_RUN_EXIT && state != KTAP_RUN_ERROR)
		return;
	s->stopped = state;
	s->exit_code = exit_code;
	if (state == KTAP_RUN_EXIT)
		return;
	if (len >= sizeof(s->errmsg))
		len = sizeof(s->errmsg) - 1;
	memcpy(s->errmsg, msg, len);
	s->errmsg[len] = 0;
	s->err_line = line;
	s->err_col = col;
	s->err_proto = func;
}
