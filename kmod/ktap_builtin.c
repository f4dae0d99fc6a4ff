/* ktap_builtin.c - the built-in functions of opcodes.BUILTINS, with the
 * semantics of vm.py. Output builtins write records; formatting is left to
 * user space. */
#include "ktap_builtin.h"
#include "ktap_record.h"
#include "ktap_string.h"
#include "ktap_table.h"

struct bargs {
	struct ktap_value *v;
	unsigned n;
	uint32_t f, pc;
};

/* Python's floor division, for the clock (which an events file may set negative). */
static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = ktap_div_s64(a, b);

	return (q * b != a && a < 0) ? q - 1 : q;
}

/* print(t) of a table, and stats(t): a DUMP record of its entries. */
static int dump_record(struct ktap_session *s, const struct ktap_table *t)
{
	size_t at = ktap_rec_begin(s, KTAP_REC_DUMP);

	ktap_put_entries(s, t);
	ktap_rec_end(s, at);
	return KTAP_RUN_OK;
}

static int b_print(struct ktap_session *s, struct bargs *a)
{
	size_t at;

	if (a->n == 1 && a->v[0].t == KTAP_T_TABLE)
		return dump_record(s, a->v[0].u.tab);
	at = ktap_rec_begin(s, KTAP_REC_PRINT);
	ktap_put_values(s, a->v, a->n);
	ktap_rec_end(s, at);
	return KTAP_RUN_OK;
}

static int b_exit(struct ktap_session *s, struct bargs *a)
{
	struct ktap_value code = a->n ? a->v[0] : num(0);

	if (!is_num(code))
		return RTERR(s, a->f, a->pc, "exit() needs a number, got a %s", tname(code));
	s->exit_code = code.u.n;
	return KTAP_RUN_EXIT;
}

static int b_aggregate(struct ktap_session *s, struct bargs *a, unsigned id, struct ktap_value *out)
{
	struct ktap_shard g;

	if (a->v[0].t != KTAP_T_NIL && a->v[0].t != KTAP_T_AGG)
		return RTERR(s, a->f, a->pc, "expected an aggregate (fed with <<<), got a %s",
			     tname(a->v[0]));
	if (a->v[0].t == KTAP_T_NIL) {
		*out = (id == KTAP_B_COUNT || id == KTAP_B_SUM) ? num(0) : NIL;
		return KTAP_RUN_OK;
	}
	g = ktap_agg_merged(a->v[0].u.agg);
	switch (id) {
	case KTAP_B_COUNT: *out = num(g.count); break;
	case KTAP_B_SUM: *out = num(g.sum); break;
	case KTAP_B_MIN: *out = num(g.min); break;
	case KTAP_B_MAX: *out = num(g.max); break;
	default: *out = num(g.count ? cdiv(g.sum, g.count) : 0); break;
	}
	return KTAP_RUN_OK;
}

/* The first live entry of t holding a value of none of the types in `ok`
 * (a bit per KTAP_T_*), or NULL. */
static const struct ktap_value *entry_not_of(const struct ktap_table *t, unsigned ok)
{
	uint32_t i;

	for (i = 0; i < t->used; i++)
		if (t->e[i].live && !(ok & (1u << t->e[i].val.t)))
			return &t->e[i].val;
	return NULL;
}

/* hist(), lhist() and print_hist(): a header (print_hist's count, or the
 * table's descriptor), then the table's entries. */
static int entries_record(struct ktap_session *s, uint8_t kind, const struct ktap_table *t,
			  int64_t count)
{
	size_t at = ktap_rec_begin(s, kind);

	if (kind == KTAP_REC_PRINT_HIST)
		ktap_put_i64(s, count);
	else
		ktap_put_u32(s, t->desc_index);
	ktap_put_entries(s, t);
	ktap_rec_end(s, at);
	return KTAP_RUN_OK;
}

#define AGGS (1u << KTAP_T_AGG)
#define NUMS_OR_AGGS (1u << KTAP_T_NUM | 1u << KTAP_T_AGG)

/* The entries of table t must all be of the types in `ok`, else the built-in
 * `name` stops with "NAME() needs WHAT" (tablebuiltins.table_of). */
static int entries_of(struct ktap_session *s, struct bargs *a, const struct ktap_table *t,
		      unsigned ok, const char *name, const char *what)
{
	const struct ktap_value *bad = entry_not_of(t, ok);

	if (bad)
		return RTERR(s, a->f, a->pc, "%s() needs %s, found a %s entry", name, what,
			     tname(*bad));
	return KTAP_RUN_OK;
}

static int b_histogram(struct ktap_session *s, struct bargs *a, int linear)
{
	const char *kind = linear ? "lhist" : "hist";
	struct ktap_table *t = NULL;
	int rc = get_table(s, a->v[0], &t, a->f, a->pc);

	if (rc)
		return rc;
	if (!(t->desc->flags & (linear ? KTAP_TABLE_LINEAR : KTAP_TABLE_LOG2)))
		return RTERR(s, a->f, a->pc, "%s() on a table not declared for it", kind);
	rc = entries_of(s, a, t, AGGS, kind, "a table fed with <<<");
	return rc ? rc : entries_record(s, linear ? KTAP_REC_LHIST : KTAP_REC_HIST, t, 0);
}

static int b_print_hist(struct ktap_session *s, struct bargs *a)
{
	struct ktap_value n = a->n > 1 ? a->v[1] : num(20);
	struct ktap_table *t = NULL;
	int rc = get_table(s, a->v[0], &t, a->f, a->pc);

	if (rc)
		return rc;
	if (!is_num(n))
		return RTERR(s, a->f, a->pc, "print_hist's count must be a number, got a %s",
			     tname(n));
	rc = entries_of(s, a, t, NUMS_OR_AGGS, "print_hist", "numbers or aggregates");
	return rc ? rc : entries_record(s, KTAP_REC_PRINT_HIST, t, n.u.n);
}

/* zero(t): numbers become 0 and aggregates empty; the keys, and their order,
 * stay (values.Table.zero). */
static int b_zero(struct ktap_session *s, struct bargs *a)
{
	struct ktap_table *t = NULL;
	int rc = get_table(s, a->v[0], &t, a->f, a->pc);
	uint32_t i;

	if (!rc)
		rc = entries_of(s, a, t, NUMS_OR_AGGS, "zero", "numbers or aggregates");
	if (rc)
		return rc;
	for (i = 0; i < t->used; i++) {
		if (!t->e[i].live)
			continue;
		if (t->e[i].val.t == KTAP_T_AGG)
			ktap_agg_reset(t, i);
		else
			t->e[i].val = num(0);
	}
	return KTAP_RUN_OK;
}

/* stats(t): each entry's count, sum, min, max and avg, as print(t) shows an
 * aggregate table. */
static int b_stats(struct ktap_session *s, struct bargs *a)
{
	struct ktap_table *t = NULL;
	int rc = get_table(s, a->v[0], &t, a->f, a->pc);

	if (!rc)
		rc = entries_of(s, a, t, AGGS, "stats", "a table fed with <<<");
	return rc ? rc : dump_record(s, t);
}

static int b_read_string(struct ktap_session *s, struct bargs *a, int user, struct ktap_value *out)
{
	uint32_t max = (uint32_t)s->limits[KTAP_LIMIT_STRING_SIZE];
	int len;

	if (!is_num(a->v[0]))
		return RTERR(s, a->f, a->pc, "expected an address, got a %s", tname(a->v[0]));
	*out = NIL;
	if (!s->read_str)
		return KTAP_RUN_OK;
	len = s->read_str(s->read_ctx, user, (uint64_t)a->v[0].u.n, s->scratch, max);
	if (len < 0)
		return KTAP_RUN_OK;
	return ktap_str_make(s, s->scratch, (size_t)len, out);
}

/* ksym(addr): a one-frame stack, so the address prints as its symbol the
 * way stack frames do, symbolized in user space. */
static int b_ksym(struct ktap_session *s, struct bargs *a, struct ktap_value *out)
{
	uint64_t addr;
	struct ktap_str *x;

	if (!is_num(a->v[0]))
		return RTERR(s, a->f, a->pc, "expected an address, got a %s", tname(a->v[0]));
	addr = (uint64_t)a->v[0].u.n;
	x = ktap_str_intern(s, KTAP_T_STACK, &addr, 1);
	if (!x)
		return drop(s, KTAP_DROP_STRINGS_FULL);
	out->t = KTAP_T_STACK;
	out->u.s = x;
	return KTAP_RUN_OK;
}

/* ustack(n): the first n lines of the frames the event's glue walked, as a
 * string (the host symbolizes PATH+0xOFFSET). */
static int b_ustack(struct ktap_session *s, struct bargs *a, struct ktap_value *out)
{
	struct ktap_value d = a->n ? a->v[0] : num(KTAP_STACK_DEFAULT_DEPTH);
	const char *p = s->ev ? s->ev->ustack : NULL;
	uint32_t len = p ? s->ev->ustack_len : 0, at = 0;
	int64_t depth;

	if (!is_num(d))
		return RTERR(s, a->f, a->pc, "stack depth must be a number, got a %s", tname(d));
	depth = d.u.n < 1 ? 1 : d.u.n > KTAP_STACK_MAX_DEPTH ? KTAP_STACK_MAX_DEPTH : d.u.n;
	while (at < len && depth > 0) {
		const char *nl = memchr(p + at, '\n', len - at);

		at = nl ? (uint32_t)(nl - p) + 1 : len;
		depth--;
	}
	if (at && p[at - 1] == '\n')
		at--;		/* frames are separated, not terminated */
	return ktap_str_make(s, p ? p : "", at, out);
}

/* strftime(fmt, ns): a time value, formatted by user space as it prints it
 * (strftime(3) in the board's local time): the nanoseconds, then the format. */
static int b_strftime(struct ktap_session *s, struct bargs *a, struct ktap_value *out)
{
	uint32_t len, room = s->limits[KTAP_LIMIT_STRING_SIZE];
	struct ktap_str *x;
	int64_t ns;

	if (a->v[0].t != KTAP_T_STR)
		return RTERR(s, a->f, a->pc, "strftime format must be a string, got a %s",
			     tname(a->v[0]));
	if (!is_num(a->v[1]))
		return RTERR(s, a->f, a->pc, "strftime time must be a number of nanoseconds, "
			     "got a %s", tname(a->v[1]));
	len = a->v[0].u.s->len;
	if (len > room - 8)
		len = room - 8;
	ns = a->v[1].u.n;
	memcpy(s->scratch, &ns, 8);
	memcpy(s->scratch + 8, str_bytes(a->v[0].u.s), len);
	x = ktap_str_intern(s, KTAP_T_TIME, s->scratch, 8 + len);
	if (!x)
		return drop(s, KTAP_DROP_STRINGS_FULL);
	out->t = KTAP_T_TIME;
	out->u.s = x;
	return KTAP_RUN_OK;
}

static int b_stack(struct ktap_session *s, struct bargs *a, struct ktap_value *out)
{
	struct ktap_value d = a->n ? a->v[0] : num(KTAP_STACK_DEFAULT_DEPTH);
	int64_t depth;
	uint32_t n = 0;
	struct ktap_str *x;

	if (!is_num(d))
		return RTERR(s, a->f, a->pc, "stack depth must be a number, got a %s", tname(d));
	depth = d.u.n < 1 ? 1 : d.u.n > KTAP_STACK_MAX_DEPTH ? KTAP_STACK_MAX_DEPTH : d.u.n;
	if (s->ev)
		n = s->ev->nstack < depth ? s->ev->nstack : (uint32_t)depth;
	x = ktap_str_intern(s, KTAP_T_STACK, s->ev ? s->ev->stack : NULL, n);
	if (!x)
		return drop(s, KTAP_DROP_STRINGS_FULL);
	out->t = KTAP_T_STACK;
	out->u.s = x;
	return KTAP_RUN_OK;
}

int ktap_callb(struct ktap_session *s, unsigned id, struct ktap_value *R, unsigned n,
	       uint32_t f, uint32_t pc)
{
	struct bargs a = { R, n, f, pc };
	struct ktap_value out = NIL;
	int rc = KTAP_RUN_OK;

	switch (id) {
	case KTAP_B_PRINT: rc = b_print(s, &a); break;
	case KTAP_B_EXIT: rc = b_exit(s, &a); break;
	case KTAP_B_COUNT: case KTAP_B_SUM: case KTAP_B_MIN: case KTAP_B_MAX: case KTAP_B_AVG:
		rc = b_aggregate(s, &a, id, &out);
		break;
	case KTAP_B_HIST: rc = b_histogram(s, &a, 0); break;
	case KTAP_B_LHIST: rc = b_histogram(s, &a, 1); break;
	case KTAP_B_PRINT_HIST: rc = b_print_hist(s, &a); break;
	case KTAP_B_GETTIMEOFDAY_NS: out = num(s->clock_ns); break;
	case KTAP_B_GETTIMEOFDAY_US: out = num(floor_div(s->clock_ns, 1000)); break;
	case KTAP_B_GETTIMEOFDAY_MS: out = num(floor_div(s->clock_ns, 1000000)); break;
	case KTAP_B_GETTIMEOFDAY_S: out = num(floor_div(s->clock_ns, 1000000000)); break;
	case KTAP_B_KERNEL_STRING: rc = b_read_string(s, &a, 0, &out); break;
	case KTAP_B_USER_STRING: rc = b_read_string(s, &a, 1, &out); break;
	case KTAP_B_STACK: rc = b_stack(s, &a, &out); break;
	case KTAP_B_USTACK: rc = b_ustack(s, &a, &out); break;
	case KTAP_B_STRFTIME: rc = b_strftime(s, &a, &out); break;
	case KTAP_B_ZERO: rc = b_zero(s, &a); break;
	case KTAP_B_STATS: rc = b_stats(s, &a); break;
	case KTAP_B_KSYM: rc = b_ksym(s, &a, &out); break;
	}
	if (!rc)
		R[0] = out;
	return rc;
}

int ktap_printf(struct ktap_session *s, unsigned fmt, const struct ktap_value *R, unsigned n)
{
	size_t at = ktap_rec_begin(s, KTAP_REC_PRINTF);

	ktap_put_u32(s, fmt);
	ktap_put_values(s, R, n);
	ktap_rec_end(s, at);
	return KTAP_RUN_OK;
}
