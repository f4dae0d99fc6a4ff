/* ktap_interp.c - the interpreter: runs verified images with the semantics of
 * vm.py (the host reference VM). Handlers never allocate: strings come from
 * the interned pool (ktap_string.c), table entries from per-table pools
 * (ktap_table.c), registers and call frames from arrays sized by the
 * verifier's max_stack proof (ktap_session.c). Output is written as records
 * (ktap_record.c); built-in functions are in ktap_builtin.c. */
#include "ktap_object.h"
#include "ktap_builtin.h"
#include "ktap_string.h"
#include "ktap_table.h"

/* -- instruction helpers (the slow paths of the dispatch loop) ----------------- */
static int charge(struct ktap_session *s, int64_t cost, uint32_t f, uint32_t pc)
{
	s->budget -= cost;
	if (s->budget < 0)
		return RTERR(s, f, pc, "instruction budget of %lld exhausted (a loop or a call "
			     "chain ran too long)", (long long)s->limits[KTAP_LIMIT_BUDGET]);
	/* The time watchdog: a clock read every 64 charges. Short handlers never
	 * read the clock; the bound counts from the 64th charge. */
	if (__builtin_expect((++s->charges & 63) == 0, 0)) {
		int64_t now = ktap_now_ns();

		if (s->charges == 64)
			s->started_ns = now;
		else if (now - s->started_ns > KTAP_WATCHDOG_NS)
			return RTERR(s, f, pc, "handler ran longer than %lld ms (watchdog)",
				     (long long)(KTAP_WATCHDOG_NS / 1000000));
	}
	return KTAP_RUN_OK;
}

/* values.cmod: the sign of the dividend; INT64_MIN % -1 is 0. */
static int64_t cmod(int64_t a, int64_t b)
{
	if (b == -1)
		return 0;
	return wrap_sub(a, wrap_mul(ktap_div_s64(a, b), b));
}

static size_t fmt_num(char *buf, int64_t n)
{
	char tmp[24];
	uint64_t u = n < 0 ? 0 - (uint64_t)n : (uint64_t)n;
	size_t i = 0, len = 0;

	do {
		tmp[i++] = (char)('0' + (int)ktap_mod_u64(u, 10));
		u = ktap_div_u64(u, 10);
	} while (u);
	if (n < 0)
		buf[len++] = '-';
	while (i)
		buf[len++] = tmp[--i];
	return len;
}

static int op_concat(struct ktap_session *s, struct ktap_value x, struct ktap_value y,
		     struct ktap_value *out, uint32_t f, uint32_t pc)
{
	size_t cap = (size_t)s->limits[KTAP_LIMIT_STRING_SIZE], len = 0;
	struct ktap_value parts[2] = { x, y };
	int i;

	for (i = 0; i < 2; i++)
		if (parts[i].t != KTAP_T_NUM && parts[i].t != KTAP_T_STR)
			return RTERR(s, f, pc, "attempt to concatenate a %s value", tname(parts[i]));
	/* scratch holds string_size + 64 bytes: room for a clipped string plus a number */
	for (i = 0; i < 2; i++) {
		if (parts[i].t == KTAP_T_NUM) {
			len += fmt_num(s->scratch + len, parts[i].u.n);
		} else {
			size_t n = parts[i].u.s->len;

			/* clip before copying: the scratch buffer only has cap + 64 bytes */
			if (n > cap - len)
				n = cap - len;
			memcpy(s->scratch + len, str_bytes(parts[i].u.s), n);
			len += n;
		}
		if (len > cap)
			len = cap;
	}
	return ktap_str_make(s, s->scratch, len, out);
}

static int compare(struct ktap_session *s, struct ktap_value x, struct ktap_value y,
		   int *lt, int *eq, uint32_t f, uint32_t pc)
{
	if (x.t == KTAP_T_NUM && y.t == KTAP_T_NUM) {
		*lt = x.u.n < y.u.n;
		*eq = x.u.n == y.u.n;
		return KTAP_RUN_OK;
	}
	if (x.t == KTAP_T_STR && y.t == KTAP_T_STR) {
		uint32_t n = x.u.s->len < y.u.s->len ? x.u.s->len : y.u.s->len;
		int c = memcmp(str_bytes(x.u.s), str_bytes(y.u.s), n);

		*lt = c < 0 || (c == 0 && x.u.s->len < y.u.s->len);
		*eq = c == 0 && x.u.s->len == y.u.s->len;
		return KTAP_RUN_OK;
	}
	return RTERR(s, f, pc, "attempt to compare a %s with a %s", tname(x), tname(y));
}

/* vm.Machine.equal: same type and value; tables and aggregates by identity. */
static int equal(struct ktap_value x, struct ktap_value y)
{
	if (x.t != y.t)
		return 0;
	switch (x.t) {
	case KTAP_T_NIL:
		return 1;
	case KTAP_T_BOOL:
	case KTAP_T_NUM:
		return x.u.n == y.u.n;
	case KTAP_T_TABLE:
		return x.u.tab == y.u.tab;
	case KTAP_T_AGG:
		return x.u.agg == y.u.agg;
	default:
		return x.u.s == y.u.s;
	}
}

static int arith(struct ktap_session *s, uint8_t op, struct ktap_value x, struct ktap_value y,
		 struct ktap_value *out, uint32_t f, uint32_t pc)
{
	if (!is_num(x) || !is_num(y))
		return RTERR(s, f, pc, "attempt to perform arithmetic on a %s value",
			     tname(is_num(x) ? y : x));
	switch (op) {
	case KTAP_OP_ADD:
		*out = num(wrap_add(x.u.n, y.u.n));
		break;
	case KTAP_OP_SUB:
		*out = num(wrap_sub(x.u.n, y.u.n));
		break;
	case KTAP_OP_MUL:
		*out = num(wrap_mul(x.u.n, y.u.n));
		break;
	case KTAP_OP_DIV:
		if (!y.u.n)
			return RTERR(s, f, pc, "division by zero");
		*out = num(cdiv(x.u.n, y.u.n));
		break;
	default:
		if (!y.u.n)
			return RTERR(s, f, pc, "modulo by zero");
		*out = num(cmod(x.u.n, y.u.n));
		break;
	}
	return KTAP_RUN_OK;
}

/* The table tv indexed by a valid key k, or the runtime error. */
static int table_key(struct ktap_session *s, struct ktap_value tv, struct ktap_value k,
		     struct ktap_table **t, uint32_t f, uint32_t pc)
{
	int rc = get_table(s, tv, t, f, pc);

	if (!rc && !valid_key(k))
		rc = RTERR(s, f, pc, "invalid table key (%s)", tname(k));
	return rc;
}

static int store(struct ktap_session *s, struct ktap_value tv, struct ktap_value k,
		 struct ktap_value v, uint32_t f, uint32_t pc)
{
	struct ktap_table *t = NULL;
	int rc = table_key(s, tv, k, &t, f, pc);

	if (!rc && ktap_table_set(s, t, k, v) < 0)
		rc = drop(s, KTAP_DROP_TABLE_FULL);
	return rc;
}

/* A new entry for key k; a full table drops the event. */
static int new_slot(struct ktap_session *s, struct ktap_table *t, struct ktap_value k,
		    int32_t *i)
{
	*i = ktap_table_slot(t, k);
	return *i < 0 ? drop(s, KTAP_DROP_TABLE_FULL) : KTAP_RUN_OK;
}

/* TADD / TADDI on table t (table_key checked it and k): a missing entry
 * counts as 0 */
static int add_entry(struct ktap_session *s, struct ktap_table *t, struct ktap_value k,
		     struct ktap_value delta, uint32_t f, uint32_t pc)
{
	struct ktap_value old;
	int32_t i;
	int rc;

	/* One lookup on the hot path (the entry exists): update it in place;
	 * numbers hold no references, so nothing is ref'd or released. */
	i = table_find(t, k);
	old = i < 0 ? num(0) : t->e[i].val;
	if (!is_num(old) || !is_num(delta))
		return RTERR(s, f, pc, "attempt to add a %s to a %s table entry", tname(delta),
			     tname(old));
	if (i < 0 && (rc = new_slot(s, t, k, &i)))
		return rc;
	t->e[i].val = num(wrap_add(old.u.n, delta.u.n));
	return KTAP_RUN_OK;
}

/* The event's CPU; the setup chunk and trace_end (no event) use shard 0. */
static uint32_t this_shard(const struct ktap_session *s)
{
	if (!s->ev || s->ev->shard < s->ncpus)
		return s->ev ? s->ev->shard : 0;
	return s->ev->shard % s->ncpus;
}

/* AGGR on table t (table_key checked it and k) */
static int op_aggr(struct ktap_session *s, struct ktap_table *t, struct ktap_value k,
		   struct ktap_value v, uint32_t f, uint32_t pc)
{
	struct ktap_value cur;
	int32_t i;
	int rc;

	if (!is_num(v))
		return RTERR(s, f, pc, "'<<<' needs a number, got a %s", tname(v));
	cur = table_get(t, k);
	if (cur.t == KTAP_T_NIL) {
		rc = new_slot(s, t, k, &i);
		if (rc)
			return rc;
		ktap_agg_reset(t, (uint32_t)i);
		t->e[i].val.t = KTAP_T_AGG;
		t->e[i].val.u.agg = &t->e[i].agg;
		cur = t->e[i].val;
	} else if (cur.t != KTAP_T_AGG) {
		return RTERR(s, f, pc, "'<<<' on an entry holding a %s", tname(cur));
	}
	agg_feed(cur.u.agg, this_shard(s), v.u.n);
	return KTAP_RUN_OK;
}

static int op_len(struct ktap_session *s, struct ktap_value v, struct ktap_value *out,
		  uint32_t f, uint32_t pc)
{
	if (v.t == KTAP_T_TABLE)
		*out = num(v.u.tab->count);
	else if (v.t == KTAP_T_STR)
		*out = num(v.u.s->len);
	else
		return RTERR(s, f, pc, "attempt to get the length of a %s value", tname(v));
	return KTAP_RUN_OK;
}

static int op_forprep(struct ktap_session *s, struct ktap_value *R, uint32_t f, uint32_t pc)
{
	static const char *const what[3] = { "initial value", "limit", "step" };
	int i;

	for (i = 0; i < 3; i++)
		if (!is_num(R[i]))
			return RTERR(s, f, pc, "'for' %s must be a number, got a %s", what[i],
				     tname(R[i]));
	if (!R[2].u.n)
		return RTERR(s, f, pc, "'for' step is zero");
	R[0] = num(wrap_sub(R[0].u.n, R[2].u.n));
	return KTAP_RUN_OK;
}

static int op_forloop(struct ktap_value *R)
{
	int64_t step = R[2].u.n;

	R[0] = num(wrap_add(R[0].u.n, step));
	if ((step > 0 && R[0].u.n <= R[1].u.n) || (step < 0 && R[0].u.n >= R[1].u.n)) {
		R[3] = R[0];
		return 1;
	}
	return 0;
}

static int op_next(struct ktap_session *s, struct ktap_value *R, struct ktap_value tv,
		   uint32_t f, uint32_t pc)
{
	struct ktap_table *t = NULL;
	uint64_t i = 0;
	int rc = get_table(s, tv, &t, f, pc);

	if (rc)
		return rc;
	if ((R[0].t == KTAP_T_NUM || R[0].t == KTAP_T_BOOL) && R[0].u.n > 0)
		i = (uint64_t)R[0].u.n;
	for (; i < t->used; i++)
		if (t->e[i].live) {
			R[0] = num((int64_t)i + 1);
			R[1] = t->e[i].key;
			R[2] = t->e[i].val;
			return KTAP_RUN_OK;
		}
	R[1] = NIL;
	return KTAP_RUN_OK;
}

/* -- what handlers read from the event (LOADVAR, ARG, FIELD) ------------------------ */
static int event_str(struct ktap_session *s, const char *p, uint32_t len, struct ktap_value *out)
{
	return ktap_str_make(s, p ? p : "", p ? len : 0, out);
}

static int execname_str(struct ktap_session *s, const char *p, uint32_t len,
			struct ktap_value *out)
{
	struct ktap_str *c = s->exec_cache;
	int rc;

	if (!p)
		return event_str(s, p, len, out);
	if (len > (uint32_t)s->limits[KTAP_LIMIT_STRING_SIZE])
		len = (uint32_t)s->limits[KTAP_LIMIT_STRING_SIZE];
	if (c && c->len == len && !memcmp(str_bytes(c), p, len)) {
		out->t = KTAP_T_STR;
		out->u.s = c;
		return KTAP_RUN_OK;
	}
	rc = ktap_str_make(s, p, len, out);
	if (rc)
		return rc;
	ref(*out);
	if (c)
		unref(s, (struct ktap_value){ .t = KTAP_T_STR, .u.s = c });
	s->exec_cache = out->u.s;
	s->exec_comm_valid = 0;
	return KTAP_RUN_OK;
}

/* The comm buffer equal, word for word, to the one the cached execname was
 * made from: the same string, whatever follows the NUL. */
static __always_inline int same_comm(const struct ktap_session *s, const char *comm)
{
	uint64_t w[KTAP_COMM_BYTES / 8];

	memcpy(w, comm, sizeof(w));	/* comm may be unaligned */
	return s->exec_comm_valid && w[0] == s->exec_comm[0] && w[1] == s->exec_comm[1];
}

static int execname_comm(struct ktap_session *s, const char *comm, struct ktap_value *out)
{
	uint64_t w[KTAP_COMM_BYTES / 8];
	int rc;

	if (same_comm(s, comm)) {
		out->t = KTAP_T_STR;
		out->u.s = s->exec_cache;
		return KTAP_RUN_OK;
	}
	/* the string comes from the snapshot the cache is keyed by: the task
	 * may be renaming itself meanwhile */
	memcpy(w, comm, sizeof(w));
	s->exec_comm_valid = 0;
	rc = execname_str(s, (const char *)w, (uint32_t)strnlen((const char *)w, KTAP_COMM_BYTES),
			  out);
	if (rc)
		return rc;
	memcpy(s->exec_comm, w, sizeof(w));
	s->exec_comm_valid = 1;
	return KTAP_RUN_OK;
}

static int op_loadvar(struct ktap_session *s, unsigned var, struct ktap_value *out)
{
	const struct ktap_event *ev = s->ev;

	*out = NIL;
	/* the clocks have a value outside handlers too */
	if (var == KTAP_V_NSECS || var == KTAP_V_WALLTIME) {
		*out = num(var == KTAP_V_NSECS ? s->mono_ns : s->clock_ns);
		return KTAP_RUN_OK;
	}
	if (!ev)
		return KTAP_RUN_OK;
	switch (var) {
	case KTAP_V_PID:
		*out = num(ev->pid);
		break;
	case KTAP_V_TID:
		*out = num(ev->tid);
		break;
	case KTAP_V_UID:
		*out = num(ev->uid);
		break;
	case KTAP_V_CPU:
		*out = num(ev->cpu);
		break;
	case KTAP_V_EXECNAME:
		if (ev->comm)
			return execname_comm(s, ev->comm, out);
		return execname_str(s, ev->execname, ev->execname_len, out);
	case KTAP_V_PROBENAME:
		return event_str(s, ev->probename, ev->probename_len, out);
	case KTAP_V_RETVAL:
		if (ev->has_retval)
			*out = num(ev->retval);
		break;
	}
	return KTAP_RUN_OK;
}

static int field_value(struct ktap_session *s, const struct ktap_fieldval *fv,
		       struct ktap_value *out)
{
	*out = NIL;
	if (fv->t == KTAP_T_NUM)
		*out = num(fv->n);
	else if (fv->t == KTAP_T_STR)
		return ktap_str_make(s, fv->s, fv->len, out);
	return KTAP_RUN_OK;
}

static int op_arg(struct ktap_session *s, unsigned n, struct ktap_value *out)
{
	const struct ktap_event *ev = s->ev;

	*out = NIL;
	if (!ev)
		return KTAP_RUN_OK;
	if (ev->is_tracepoint)
		return n <= ev->nfields ? field_value(s, &ev->fields[n - 1], out) : KTAP_RUN_OK;
	*out = num(n <= ev->nargs ? ev->args[n - 1] : 0);
	return KTAP_RUN_OK;
}

static int op_field(struct ktap_session *s, unsigned n, struct ktap_value *out)
{
	*out = NIL;
	if (!s->ev || n >= s->ev->nnamed)
		return KTAP_RUN_OK;
	return field_value(s, &s->ev->named[n], out);
}

/* -- the dispatch loop ------------------------------------------------------------ */
/* Enters function `proto` at register `base` with `nargs` arguments already
 * copied there: the rest of the frame starts as nil, as in vm.Machine.call. */
static __always_inline void enter(struct ktap_session *s, uint32_t fp, uint32_t proto, uint32_t base,
		  unsigned nargs)
{
	uint32_t i, size = s->img->protos[proto].frame_size;

	for (i = nargs; i < size; i++) {	/* field by field: no memset call */
		s->regs[base + i].t = KTAP_T_NIL;
		s->regs[base + i].u.n = 0;
	}
	s->frames[fp].proto = proto;
	s->frames[fp].pc = 0;
	s->frames[fp].base = base;
}

/* Runs function `proto` to its return. Calls use an explicit frame stack,
 * never C recursion: the verifier bounds its depth by the call graph, and the
 * registers of all frames by max_stack.
 *
 * Dispatch is direct-threaded (GCC's labels as values, as the kernel's own
 * BPF interpreter does): each instruction decodes only the operands it uses
 * and jumps straight to the next one's label. The label table is generated
 * from the opcode table; opcodes no image may hold go to op_BAD. Hot paths
 * (a number added to an existing table entry) are done inline; everything
 * else, and every error, goes through the helpers above. */
/* Few locals, so that the hot ones stay in registers: the function index
 * and its constants are found from p when an instruction needs them. */
#define VM_F		(p->index)
#define VM_K		(s->kvals[VM_F])
#define OP_A		((w >> 8) & 0xFF)
#define OP_B		((w >> 16) & 0xFF)
#define OP_C		(w >> 24)
#define OP_BX		(w >> 16)
#define OP_SBX		((int32_t)(int16_t)(w >> 16))
#define VM_PC		((uint32_t)(ip - code))
#define DISPATCH()	do { w = *ip; goto *dispatch[w & 0xFF]; } while (0)
#define NEXT()		do { ip++; DISPATCH(); } while (0)
#define CHECK(expr)	do { rc = (expr); if (unlikely(rc)) return rc; } while (0)
/* pc' = pc + 1 + off; backward jumps (loops) cost the words they jump over */
#define JUMP(off)	do {							\
		int64_t to_ = (int64_t)VM_PC + 1 + (off);				\
		if (to_ <= (int64_t)VM_PC)						\
			CHECK(charge(s, (int64_t)VM_PC + 1 - to_, VM_F, VM_PC));	\
		ip = code + to_;						\
		DISPATCH();							\
	} while (0)

int ktap_execute(struct ktap_session *s, uint32_t proto)
{
	/* __annotate_jump_table: objtool (x86) then knows the indirect jumps
	 * go through this table and are not sibling calls */
	static const void *const dispatch[256] __annotate_jump_table = KTAP_DISPATCH_LABELS;
	uint32_t fp = 0, w;
	const struct ktap_proto *p;
	const uint32_t *code, *ip;
	struct ktap_value *R, v;
	int rc;

	/* frame 0 starts at register 0; frames[0].pc is only kept once a call
	 * leaves it */
	enter(s, 0, proto, 0, 0);
	p = &s->img->protos[proto];
	code = p->code;
	ip = code;
	R = s->regs;
	DISPATCH();
reload:
	p = &s->img->protos[s->frames[fp].proto];
	code = p->code;
	ip = code + s->frames[fp].pc;
	R = s->regs + s->frames[fp].base;
	DISPATCH();

op_BAD:		/* the verifier refuses these: never reached */
	return RTERR(s, VM_F, VM_PC, "bad opcode %u", w & 0xFF);
op_NOP:
	NEXT();
op_MOVE:
	R[OP_A] = R[OP_B];
	NEXT();
op_LOADK:
	R[OP_A] = VM_K[OP_BX];
	NEXT();
op_LOADI:
	R[OP_A] = num(OP_SBX);
	NEXT();
op_LOADI64:
	R[OP_A] = num((int64_t)((uint64_t)ip[1] | (uint64_t)ip[2] << 32));
	ip += 2;
	NEXT();
op_LOADNIL:
	R[OP_A] = NIL;
	NEXT();
op_LOADBOOL:
	R[OP_A] = boolean(OP_B != 0);
	NEXT();
op_GETUPV:
	R[OP_A] = s->globals[p->upvals[OP_B]];
	NEXT();
op_SETUPV:
	ref(R[OP_A]);
	unref(s, s->globals[p->upvals[OP_B]]);
	s->globals[p->upvals[OP_B]] = R[OP_A];
	NEXT();
op_NEWTABLE:
	v.t = KTAP_T_TABLE;
	v.u.tab = ktap_table_new(s, OP_BX);
	if (!v.u.tab)
		return RTERR(s, VM_F, VM_PC, "cannot create a table (memory or the limit of "
			     "%d tables)", KTAP_MAX_TABLES);
	R[OP_A] = v;
	NEXT();
op_GETTABLE: {
	struct ktap_table *t = NULL;

	CHECK(table_key(s, R[OP_B], R[OP_C], &t, VM_F, VM_PC));
	R[OP_A] = table_get(t, R[OP_C]);
	NEXT();
}
op_GETTABLEK: {
	struct ktap_table *t = NULL;

	CHECK(get_table(s, R[OP_B], &t, VM_F, VM_PC));
	R[OP_A] = table_get(t, VM_K[OP_C]);
	NEXT();
}
op_SETTABLE:
	CHECK(store(s, R[OP_A], R[OP_B], R[OP_C], VM_F, VM_PC));
	NEXT();
op_SETTABLEK:
	CHECK(store(s, R[OP_A], VM_K[OP_B], R[OP_C], VM_F, VM_PC));
	NEXT();
op_TADD:
	v = R[OP_C];
	goto table_add;
op_TADDI:
	v = num((int8_t)OP_C);
table_add:
	/* the hot path: a number added to a number entry that exists */
	if (likely(R[OP_A].t == KTAP_T_TABLE && v.t == KTAP_T_NUM)) {
		struct ktap_table *t = R[OP_A].u.tab;
		int32_t i = table_find(t, R[OP_B]);

		if (likely(i >= 0 && t->e[i].val.t == KTAP_T_NUM)) {
			t->e[i].val.u.n = wrap_add(t->e[i].val.u.n, v.u.n);
			NEXT();
		}
	}
	{
		struct ktap_table *t = NULL;

		CHECK(table_key(s, R[OP_A], R[OP_B], &t, VM_F, VM_PC));
		CHECK(add_entry(s, t, R[OP_B], v, VM_F, VM_PC));
	}
	NEXT();
op_AGGR: {
	struct ktap_table *t = NULL;

	CHECK(table_key(s, R[OP_A], R[OP_B], &t, VM_F, VM_PC));
	CHECK(op_aggr(s, t, R[OP_B], R[OP_C], VM_F, VM_PC));
	NEXT();
}
op_DELETE: {
	struct ktap_table *t = NULL;

	CHECK(get_table(s, R[OP_A], &t, VM_F, VM_PC));
	ktap_table_delete(s, t, R[OP_B]);
	NEXT();
}
op_CLEAR: {
	struct ktap_table *t = NULL;

	CHECK(get_table(s, R[OP_A], &t, VM_F, VM_PC));
	ktap_table_clear(s, t);
	NEXT();
}
op_LEN:
	CHECK(op_len(s, R[OP_B], &R[OP_A], VM_F, VM_PC));
	NEXT();
op_ADD:
op_SUB:
op_MUL:
op_DIV:
op_MOD:
	CHECK(arith(s, w & 0xFF, R[OP_B], R[OP_C], &R[OP_A], VM_F, VM_PC));
	NEXT();
op_CONCAT:
	CHECK(op_concat(s, R[OP_B], R[OP_C], &R[OP_A], VM_F, VM_PC));
	NEXT();
op_UNM:
	if (!is_num(R[OP_B]))
		return RTERR(s, VM_F, VM_PC, "attempt to negate a %s value", tname(R[OP_B]));
	R[OP_A] = num(wrap_sub(0, R[OP_B].u.n));
	NEXT();
op_NOT:
	R[OP_A] = boolean(!truthy(R[OP_B]));
	NEXT();
op_EQ:
	R[OP_A] = boolean(equal(R[OP_B], R[OP_C]));
	NEXT();
op_NE:
	R[OP_A] = boolean(!equal(R[OP_B], R[OP_C]));
	NEXT();
op_LT:
op_LE: {
	int lt = 0, eq = 0;

	CHECK(compare(s, R[OP_B], R[OP_C], &lt, &eq, VM_F, VM_PC));
	R[OP_A] = boolean(lt || ((w & 0xFF) == KTAP_OP_LE && eq));
	NEXT();
}
op_JMP:
	JUMP(OP_SBX);
op_JMPF:
	if (!truthy(R[OP_A]))
		JUMP(OP_SBX);
	NEXT();
op_JMPT:
	if (truthy(R[OP_A]))
		JUMP(OP_SBX);
	NEXT();
op_FORPREP:
	CHECK(op_forprep(s, &R[OP_A], VM_F, VM_PC));
	JUMP(OP_SBX);
op_FORLOOP:
	if (op_forloop(&R[OP_A]))
		JUMP(OP_SBX);
	NEXT();
op_NEXT:
	CHECK(op_next(s, &R[OP_A], R[OP_B], VM_F, VM_PC));
	NEXT();
op_CALL: {
	uint32_t base = s->frames[fp].base + p->frame_size;

	CHECK(charge(s, s->img->protos[OP_B].ncode, VM_F, VM_PC));
	memmove(&s->regs[base], &R[OP_A], OP_C * sizeof(*R));
	s->frames[fp].pc = VM_PC + 1;
	s->frames[fp].ret = (uint8_t)OP_A;
	enter(s, ++fp, OP_B, base, OP_C);
	goto reload;
}
op_TAILCALL:
	CHECK(charge(s, s->img->protos[OP_B].ncode, VM_F, VM_PC));
	memmove(R, &R[OP_A], OP_C * sizeof(*R));
	enter(s, fp, OP_B, s->frames[fp].base, OP_C);
	goto reload;
op_RET:
	if (fp == 0)
		return KTAP_RUN_OK;
	v = OP_B ? R[OP_A] : NIL;
	fp--;
	s->regs[s->frames[fp].base + s->frames[fp].ret] = v;
	goto reload;
op_CALLB:
	CHECK(ktap_callb(s, OP_B, &R[OP_A], OP_C, VM_F, VM_PC));
	NEXT();
op_PRINTF:
	CHECK(ktap_printf(s, OP_B, &R[OP_A], OP_C));
	NEXT();
op_LOADVAR:
	/* the hot path: execname from the same task as the last event */
	if (OP_B == KTAP_V_EXECNAME && likely(s->ev && s->ev->comm && same_comm(s, s->ev->comm))) {
		R[OP_A].t = KTAP_T_STR;
		R[OP_A].u.s = s->exec_cache;
		NEXT();
	}
	CHECK(op_loadvar(s, OP_B, &R[OP_A]));
	NEXT();
op_ARG:
	CHECK(op_arg(s, OP_B, &R[OP_A]));
	NEXT();
op_FIELD:
	CHECK(op_field(s, OP_B, &R[OP_A]));
	NEXT();
}
#undef VM_F
#undef VM_K
#undef OP_A
#undef OP_B
#undef OP_C
#undef OP_BX
#undef OP_SBX
#undef VM_PC
#undef DISPATCH
#undef NEXT
#undef CHECK
#undef JUMP
