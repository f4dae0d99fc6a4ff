/* ktap_sync.c - a session's globals and tables read and written from outside
 * the interpreter, for ktaprun's eBPF path (docs/ebpf.md): the setup code and
 * trace_end run here in user space, the handlers run as BPF programs, and
 * ktaprun copies what the handlers use into BPF maps and back.
 *
 * User space only: the module never builds this file (the kernel path has no
 * maps to sync with), so it may assume process context throughout. Every
 * function keeps the core's invariants: tables and globals hold references
 * on their strings, and strings nothing references go back to the pool. */
#include "ktap_builtin.h"
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

/* -- a program's CALL record: a built-in on a whole table ------------------------ */
static const struct ktap_builtin_info builtin_info[KTAP_NUM_BUILTINS] = KTAP_BUILTIN_TABLE;

/* Instructions that read R[A] and write no register: a global loaded there
 * before them is still there after. */
static int reads_a_only(uint8_t op)
{
	switch (op) {
	case KTAP_OP_SETUPV: case KTAP_OP_SETTABLE: case KTAP_OP_SETTABLEK: case KTAP_OP_TADD:
	case KTAP_OP_TADDI: case KTAP_OP_AGGR: case KTAP_OP_DELETE: case KTAP_OP_CLEAR:
	case KTAP_OP_JMPF: case KTAP_OP_JMPT: case KTAP_OP_PRINTF:
		return 1;
	}
	return 0;
}

/* The pc of a CALLB of built-in id in p whose table argument was loaded from
 * global g, or -1. A straight scan (handlers that reach the eBPF backend have
 * no loops): GETUPV loads a global into a register, MOVE copies it, any other
 * write forgets it. */
static int64_t site_in(const struct ktap_proto *p, uint32_t g, unsigned id)
{
	int32_t held[256];
	uint32_t pc, w, a, b;
	uint8_t op;

	memset(held, 0xff, sizeof(held));
	for (pc = 0; pc < p->ncode; pc += ktap_opinfo[op].words) {
		w = p->code[pc];
		op = (uint8_t)(w & 0xFF);
		a = (w >> 8) & 0xFF;
		b = (w >> 16) & 0xFF;
		if (op == KTAP_OP_CALLB && b == id && held[a] == (int32_t)g)
			return pc;
		if (op == KTAP_OP_GETUPV)
			held[a] = b < p->nupvals ? (int32_t)p->upvals[b] : -1;
		else if (op == KTAP_OP_MOVE)
			held[a] = held[b];
		else if (ktap_opinfo[op].a == 'R' && !reads_a_only(op))
			held[a] = -1;
	}
	return -1;
}

/* Where a handler calls built-in id on global g's table, for the position of
 * its runtime errors: a CALL record names no script position, but the
 * handler's KBC, which the image keeps, does. *pc past the code (line 0) if
 * no handler does. */
static void call_site(const struct ktap_image *img, uint32_t g, unsigned id, uint32_t *f,
		      uint32_t *pc)
{
	uint32_t i;
	int64_t at;

	*f = 0;
	*pc = UINT32_MAX;
	for (i = 0; i < img->nevents; i++) {
		const struct ktap_ievent *e = &img->events[i];

		/* trace_end runs in the interpreter: it never sends a CALL record */
		if (e->kind == KTAP_EV_END || e->handler >= img->nprotos)
			continue;
		at = site_in(&img->protos[e->handler], g, id);
		if (at >= 0) {
			*f = e->handler;
			*pc = (uint32_t)at;
			return;
		}
	}
}

/* An argument as a register value; strings interned (young until the sweep). */
static int arg_value(struct ktap_session *s, const struct ktap_sync_val *v, struct ktap_value *out)
{
	if (v->t == KTAP_T_NIL) {
		*out = NIL;
		return 0;
	}
	return to_value(s, v, out);
}

int ktap_table_call(struct ktap_session *s, uint32_t g, unsigned id,
		    const struct ktap_sync_val *args, uint32_t n)
{
	struct ktap_value R[KTAP_CALL_MAX_ARGS + 1];
	uint32_t i, f, pc;
	int rc = KTAP_RUN_OK;

	if (id >= KTAP_NUM_BUILTINS || !builtin_info[id].table_call || n > KTAP_CALL_MAX_ARGS ||
	    n + 1 < builtin_info[id].min_args ||
	    n + 1 > builtin_info[id].max_args || !ktap_global_table(s, g))
		return -1;
	if (s->stopped)
		return s->stopped;
	R[0] = s->globals[g];
	for (i = 0; i < n && rc == KTAP_RUN_OK; i++)
		if (arg_value(s, &args[i], &R[i + 1]) < 0)
			rc = args[i].t == KTAP_T_STR ? drop(s, KTAP_DROP_STRINGS_FULL) : -1;
	if (rc == KTAP_RUN_OK) {
		call_site(s->img, g, id, &f, &pc);
		rc = ktap_callb(s, id, R, n + 1, f, pc);
	}
	/* as after a handler: the arguments' strings go, a drop is counted, an
	 * error or exit stops the session */
	ktap_str_sweep(s);
	if (rc == KTAP_RUN_DROP)
		s->drops[s->drop_reason]++;
	else if (rc == KTAP_RUN_EXIT || rc == KTAP_RUN_ERROR)
		s->stopped = rc;
	return rc;
}
