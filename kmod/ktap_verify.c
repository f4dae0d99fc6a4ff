/* ktap_verify.c - the static checks of verifier.py, in the same order and
 * with the same reason codes: an image passes both verifiers or is refused by
 * both for the same reason (the differential tests hold a shared corpus).
 * Anything that cannot be proven here is bounded at run time by the
 * instruction budget. */
#include "ktap_vm.h"

const char *const ktap_reason_names[KTAP_NUM_REASONS] = KTAP_REASON_NAMES;

const struct ktap_opinfo ktap_opinfo[KTAP_NUM_OPS] = KTAP_OPINFO_TABLE;
static const struct ktap_builtin_info builtins[KTAP_NUM_BUILTINS] = KTAP_BUILTIN_TABLE;
static const int64_t limit_max[KTAP_NUM_LIMITS] = KTAP_LIMIT_MAXIMA;
static const char *const limit_names[KTAP_NUM_LIMITS] = KTAP_LIMIT_NAMES;
static const int64_t min_period[] = KTAP_MIN_PERIOD_TABLE;

/* perf:NAME of the table, sampled at a frequency (offset, Hz) or a period. */
static int perf_event_ok(const struct ktap_ievent *e)
{
	const struct ktap_perf_event *pe = ktap_perf_event_find(e->name.s, e->name.len);

	if (!pe)
		return 0;
	return e->offset ? e->offset <= KTAP_PERF_MAX_FREQ && !e->period_ns :
			   e->period_ns >= pe->min_period;
}

struct vstate {
	const struct ktap_image *img;
	char *msg;
	size_t msglen;
	int proto, pc;
	int32_t *handler_fields;	/* per function: fields usable by FIELD, -1 = not a handler */
	uint8_t *allocates;		/* per function: contains NEWTABLE */
	uint32_t **calls;		/* per function: sorted distinct callees */
	uint32_t *ncalls;
	uint8_t *starts;		/* scratch: instruction starts of one function */
	uint8_t *state;			/* call graph walk: 1 on the path, 2 done */
	int64_t *depth;
};

/* Records where the fault is and formats the message; evaluates to the reason. */
#define VFAIL(v, reason, f, at, ...)						\
	(ktap_snprintf((v)->msg, (v)->msglen, __VA_ARGS__),			\
	 (v)->proto = (f), (v)->pc = (at), (reason))

/* -- image level ------------------------------------------------------------ */
static int check_limits(struct vstate *v)
{
	int i;

	for (i = 0; i < KTAP_NUM_LIMITS; i++) {
		int64_t x = v->img->limits[i];

		if (x < 1 || x > limit_max[i])
			return VFAIL(v, KTAP_R_BAD_LIMITS, -1, -1, "limit %s = %lld is outside 1..%lld",
				     limit_names[i], (long long)x, (long long)limit_max[i]);
	}
	return KTAP_OK;
}

/* ceil((lmax - lmin) / lstep) without overflow; the caller has lmax > lmin, lstep > 0. */
static uint64_t linear_buckets(const struct ktap_tdesc *d)
{
	uint64_t span = (uint64_t)d->lmax - (uint64_t)d->lmin;
	uint64_t step = (uint64_t)d->lstep;

	return ktap_div_u64(span, step) + (ktap_mod_u64(span, step) != 0);
}

static int check_tables(struct vstate *v)
{
	uint32_t i;

	for (i = 0; i < v->img->ntables; i++) {
		const struct ktap_tdesc *d = &v->img->tables[i];

		if (d->flags & ~(KTAP_TABLE_LOG2 | KTAP_TABLE_LINEAR))
			return VFAIL(v, KTAP_R_BAD_TABLE, -1, -1,
				     "table descriptor %u has unknown flags %#x", i, d->flags);
		if ((d->flags & KTAP_TABLE_LINEAR) &&
		    (d->lstep <= 0 || d->lmax <= d->lmin ||
		     linear_buckets(d) > KTAP_MAX_LHIST_BUCKETS))
			return VFAIL(v, KTAP_R_BAD_TABLE, -1, -1,
				     "table descriptor %u has bad linear bounds", i);
	}
	return KTAP_OK;
}

/* The grammar of printf.parse_format: %[-+ #0]*[0-9]*(.[0-9]*)?CONV. Returns
 * the offset of the first bad conversion, or -1 if the format is good. */
static long bad_format_at(const char *s, uint32_t n)
{
	uint32_t i = 0, start;

	while (i < n) {
		long width = 0, prec = 0;

		if (s[i] != '%') {
			i++;
			continue;
		}
		if (i + 1 < n && s[i + 1] == '%') {
			i += 2;
			continue;
		}
		start = i++;
		while (i < n && strchr("-+ #0", s[i]) && s[i])
			i++;
		/* the caps only keep the numbers small; anything above MAX_WIDTH fails */
		while (i < n && s[i] >= '0' && s[i] <= '9')
			width = width > 100000 ? width : width * 10 + (s[i++] - '0');
		if (i < n && s[i] == '.') {
			i++;
			while (i < n && s[i] >= '0' && s[i] <= '9')
				prec = prec > 100000 ? prec : prec * 10 + (s[i++] - '0');
		}
		if (i >= n || s[i] == '\n' || !s[i] || !strchr(KTAP_PRINTF_CONVERSIONS, s[i]))
			return start;
		if (width > KTAP_MAX_WIDTH || prec > KTAP_MAX_WIDTH)
			return start;
		i++;
	}
	return -1;
}

static int check_formats(struct vstate *v)
{
	uint32_t i;

	for (i = 0; i < v->img->nformats; i++) {
		long at = bad_format_at(v->img->formats[i].s, v->img->formats[i].len);

		if (at >= 0)
			return VFAIL(v, KTAP_R_BAD_FORMAT, -1, -1,
				     "format %u: bad conversion at offset %ld", i, at);
	}
	return KTAP_OK;
}

static int check_events(struct vstate *v)
{
	const struct ktap_image *img = v->img;
	uint32_t i;

	if (!img->nprotos || img->protos[0].kind != KTAP_SETUP)
		return VFAIL(v, KTAP_R_BAD_FUNCTION, -1, -1, "function 0 must be the setup chunk");
	for (i = 0; i < img->nevents; i++) {
		const struct ktap_ievent *e = &img->events[i];
		int32_t nfields, *hf;

		if (e->kind >= KTAP_EV_NKINDS)
			return VFAIL(v, KTAP_R_BAD_EVENT, -1, -1, "event %u has unknown kind %u",
				     i, e->kind);
		if (e->handler >= img->nprotos || img->protos[e->handler].kind != KTAP_HANDLER)
			return VFAIL(v, KTAP_R_BAD_EVENT, -1, -1, "event %u names handler %u, "
				     "which is not a handler function", i, e->handler);
		if (min_period[e->kind] && e->period_ns < min_period[e->kind])
			return VFAIL(v, KTAP_R_BAD_EVENT, -1, -1, "event %u period %lld ns is too short",
				     i, (long long)e->period_ns);
		if (e->kind == KTAP_EV_PERF && !perf_event_ok(e))
			return VFAIL(v, KTAP_R_BAD_EVENT, -1, -1, "event %u (%.*s) is no perf event "
				     "ktap knows, or samples too often", i, (int)e->name.len,
				     e->name.s);
		/* user probes' fields define their uprobe_events entry (ktaprun) */
		if (e->nfields > KTAP_MAX_FIELDS ||
		    (e->nfields && e->kind != KTAP_EV_TRACEPOINT && !KTAP_EV_USER(e->kind)))
			return VFAIL(v, KTAP_R_BAD_EVENT, -1, -1, "event %u has a bad field list", i);
		/* a handler shared by several events may only use the fields all have */
		nfields = e->kind == KTAP_EV_TRACEPOINT ? (int32_t)e->nfields : 0;
		hf = &v->handler_fields[e->handler];
		if (*hf < 0 || nfields < *hf)
			*hf = nfields;
	}
	return KTAP_OK;
}

/* -- function level ----------------------------------------------------------- */
static int find_starts(struct vstate *v, int f, const struct ktap_proto *p)
{
	uint32_t pc = 0, last = 0;

	memset(v->starts, 0, p->ncode);
	while (pc < p->ncode) {
		unsigned opcode = p->code[pc] & 0xFF;

		if (opcode >= KTAP_NUM_OPS)
			return VFAIL(v, KTAP_R_BAD_OPCODE, f, (int)pc, "unknown opcode %#04x", opcode);
		if (pc + ktap_opinfo[opcode].words > p->ncode)
			return VFAIL(v, KTAP_R_TRUNCATED_INSTRUCTION, f, (int)pc, "%s needs %u words",
				     ktap_opinfo[opcode].name, ktap_opinfo[opcode].words);
		v->starts[pc] = 1;
		last = pc;
		pc += ktap_opinfo[opcode].words;
	}
	switch (p->code[last] & 0xFF) {
	case KTAP_OP_RET: case KTAP_OP_TAILCALL: case KTAP_OP_JMP:
		return KTAP_OK;
	}
	return VFAIL(v, KTAP_R_FALLS_OFF_END, f, (int)last,
		     "the last instruction must be RET, TAILCALL or JMP");
}

struct operand {
	char field;		/* 'A', 'B' or 'C' */
	char kind;		/* operand kind from opcodes.py */
	int64_t value;
};

static int check_callee(struct vstate *v, int f, int pc, const struct ktap_opinfo *op,
			int64_t value, unsigned nargs)
{
	const struct ktap_image *img = v->img;
	const struct ktap_proto *callee;

	if (value >= img->nprotos || img->protos[value].kind != KTAP_FUNCTION)
		return VFAIL(v, KTAP_R_BAD_FUNCTION, f, pc, "%s operand B: %lld is not a callable "
			     "function", op->name, (long long)value);
	callee = &img->protos[value];
	if (callee->nparams != nargs)
		return VFAIL(v, KTAP_R_BAD_CALL, f, pc, "%s passes %u argument(s), '%.*s' takes %u",
			     op->name, nargs, (int)callee->name.len, callee->name.s, callee->nparams);
	v->calls[f][v->ncalls[f]++] = (uint32_t)value;
	return KTAP_OK;
}

static int check_operand(struct vstate *v, int f, int pc, const struct ktap_opinfo *op,
			 const struct operand *o)
{
	const struct ktap_image *img = v->img;
	const struct ktap_proto *p = &img->protos[f];
	unsigned cbyte = p->code[pc] >> 24;
	int64_t x = o->value;

	switch (o->kind) {
	case '-':
		if (x)
			return VFAIL(v, KTAP_R_BAD_OPERAND, f, pc, "%s operand %c must be 0, is %lld",
				     op->name, o->field, (long long)x);
		break;
	case 'R': {
		int64_t span = 1;

		if (o->field == 'A')
			span = op->span ? op->span : (cbyte ? cbyte : 1);
		if (x + span > p->frame_size)
			return VFAIL(v, KTAP_R_BAD_REGISTER, f, pc, "%s operand %c: register %lld "
				     "outside the frame of %u", op->name, o->field,
				     (long long)(x + span - 1), p->frame_size);
		break;
	}
	case 'K':
		if (x >= p->nconsts)
			return VFAIL(v, KTAP_R_BAD_CONSTANT, f, pc, "%s operand %c: constant %lld, "
				     "the function has %u", op->name, o->field, (long long)x, p->nconsts);
		break;
	case 'U':
		if (x >= p->nupvals)
			return VFAIL(v, KTAP_R_BAD_UPVALUE, f, pc, "%s operand %c: upvalue %lld, "
				     "the function has %u", op->name, o->field, (long long)x, p->nupvals);
		break;
	case 'T':
		if (x >= img->ntables)
			return VFAIL(v, KTAP_R_BAD_TABLE, f, pc, "%s operand %c: table descriptor "
				     "%lld, the image has %u", op->name, o->field, (long long)x,
				     img->ntables);
		if (op->flags & KTAP_OPF_ALLOC)
			v->allocates[f] = 1;
		break;
	case 'F':
		if (x >= img->nformats)
			return VFAIL(v, KTAP_R_BAD_FORMAT, f, pc, "%s operand %c: format %lld, the "
				     "image has %u", op->name, o->field, (long long)x, img->nformats);
		break;
	case 'P':
		return check_callee(v, f, pc, op, x, cbyte);
	case 'B':
		if (x >= KTAP_NUM_BUILTINS)
			return VFAIL(v, KTAP_R_BAD_BUILTIN, f, pc, "%s operand %c: built-in %lld",
				     op->name, o->field, (long long)x);
		if (cbyte < builtins[x].min_args || cbyte > builtins[x].max_args)
			return VFAIL(v, KTAP_R_BAD_CALL, f, pc, "%s takes %u..%u arguments, %u given",
				     builtins[x].name, builtins[x].min_args, builtins[x].max_args, cbyte);
		break;
	case 'V':
		if (x >= KTAP_NUM_VARIABLES)
			return VFAIL(v, KTAP_R_BAD_VARIABLE, f, pc, "%s operand %c: variable %lld",
				     op->name, o->field, (long long)x);
		break;
	case 'N':
		if (x < 1 || x > KTAP_MAX_ARGS)
			return VFAIL(v, KTAP_R_BAD_ARGUMENT, f, pc, "%s operand %c: argument %lld",
				     op->name, o->field, (long long)x);
		break;
	case 'D':
		if (v->handler_fields[f] < 0 || x >= v->handler_fields[f])
			return VFAIL(v, KTAP_R_BAD_FIELD, f, pc, "%s operand %c: field %lld is not a "
				     "field of this handler's event", op->name, o->field, (long long)x);
		break;
	case 'J': {
		int64_t target = pc + op->words + x;

		if (target < 0 || target >= p->ncode || !v->starts[target])
			return VFAIL(v, KTAP_R_BAD_JUMP, f, pc, "jump to %lld is %s", (long long)target,
				     target < 0 || target >= p->ncode ? "out of bounds"
								      : "inside an instruction");
		break;
	}
	default:	/* I, X and absent fields: nothing to check */
		break;
	}
	return KTAP_OK;
}

static int check_instruction(struct vstate *v, int f, int pc)
{
	uint32_t w = v->img->protos[f].code[pc];
	const struct ktap_opinfo *op = &ktap_opinfo[w & 0xFF];
	struct operand o[3];
	int n = 0, i, rc;

	o[n++] = (struct operand){ 'A', op->a, (w >> 8) & 0xFF };
	if (op->fmt == KTAP_FMT_ABC || op->fmt == KTAP_FMT_AX64) {
		o[n++] = (struct operand){ 'B', op->b, (w >> 16) & 0xFF };
		o[n++] = (struct operand){ 'C', op->c, w >> 24 };
	} else if (op->fmt == KTAP_FMT_ABx) {
		o[n++] = (struct operand){ 'B', op->b, w >> 16 };
	} else {
		o[n++] = (struct operand){ 'B', op->b, (int16_t)(w >> 16) };
	}
	for (i = 0; i < n; i++) {
		rc = check_operand(v, f, pc, op, &o[i]);
		if (rc)
			return rc;
	}
	return KTAP_OK;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Sorted, without duplicates: the call graph walk visits callees in order. */
static void sort_calls(struct vstate *v, int f)
{
	uint32_t *c = v->calls[f], i, n = 0;

	ktap_sort(c, v->ncalls[f], sizeof(*c), cmp_u32);
	for (i = 0; i < v->ncalls[f]; i++)
		if (!n || c[n - 1] != c[i])
			c[n++] = c[i];
	v->ncalls[f] = n;
}

static int check_proto(struct vstate *v, int f)
{
	const struct ktap_image *img = v->img;
	const struct ktap_proto *p = &img->protos[f];
	uint32_t k, pc;
	int rc;

	if (p->kind > KTAP_HANDLER || (p->kind == KTAP_SETUP) != (f == 0))
		return VFAIL(v, KTAP_R_BAD_FUNCTION, f, -1, "bad kind %u", p->kind);
	if (p->kind != KTAP_FUNCTION && p->nparams)
		return VFAIL(v, KTAP_R_BAD_FUNCTION, f, -1, "setup and handlers take no parameters");
	if (p->frame_size < 1 || p->frame_size > KTAP_MAX_FRAME || p->nparams > p->frame_size)
		return VFAIL(v, KTAP_R_BAD_FRAME, f, -1, "frame size %u (parameters %u) outside 1..%u",
			     p->frame_size, p->nparams, KTAP_MAX_FRAME);
	if (p->ncode < 1 || p->ncode > KTAP_MAX_CODE_WORDS || p->nlines != p->ncode)
		return VFAIL(v, KTAP_R_BAD_FUNCTION, f, -1, "code length %u / line table %u invalid",
			     p->ncode, p->nlines);
	for (k = 0; k < p->nupvals; k++)
		if (p->upvals[k] >= img->nglobals)
			return VFAIL(v, KTAP_R_BAD_UPVALUE, f, -1, "upvalue %u names global %u, but "
				     "the image has %u", k, p->upvals[k], img->nglobals);
	for (k = 0; k < p->nconsts; k++)
		if (p->consts[k].tag == KTAP_K_STRING &&
		    p->consts[k].s.len > img->limits[KTAP_LIMIT_STRING_SIZE])
			return VFAIL(v, KTAP_R_BAD_CONSTANT, f, -1,
				     "constant %u is longer than the string limit", k);
	rc = find_starts(v, f, p);
	if (rc)
		return rc;
	v->calls[f] = ktap_zalloc(p->ncode * sizeof(uint32_t));
	if (!v->calls[f])
		return VFAIL(v, KTAP_R_BAD_IMAGE, f, -1, "out of memory");
	for (pc = 0; pc < p->ncode; pc++) {
		if (!v->starts[pc])
			continue;
		rc = check_instruction(v, f, (int)pc);
		if (rc)
			return rc;
	}
	sort_calls(v, f);
	return KTAP_OK;
}

/* -- whole program -------------------------------------------------------------- */
static int recursion(struct vstate *v, const uint32_t *path, uint32_t n, uint32_t g)
{
	const struct ktap_proto *protos = v->img->protos;
	size_t used;
	uint32_t i = 0;

	while (path[i] != g)
		i++;
	used = ktap_snprintf(v->msg, v->msglen, "recursive calls: ");
	for (; i < n && used < v->msglen; i++)
		used += ktap_snprintf(v->msg + used, v->msglen - used, "%.*s -> ",
				      (int)protos[path[i]].name.len, protos[path[i]].name.s);
	if (used < v->msglen)
		ktap_snprintf(v->msg + used, v->msglen - used, "%.*s",
			      (int)protos[g].name.len, protos[g].name.s);
	v->proto = (int)g;
	v->pc = -1;
	return KTAP_R_RECURSION;
}

/* Depth-first, callees in ascending order, with an explicit stack: the kernel
 * stack is too small for a recursive walk of a hostile image. */
static int visit(struct vstate *v, uint32_t root, uint32_t *path, uint32_t *next)
{
	const struct ktap_proto *protos = v->img->protos;
	uint32_t n = 0;

	if (v->state[root] == 2)
		return KTAP_OK;
	path[n] = root;
	next[n++] = 0;
	v->state[root] = 1;
	v->depth[root] = 0;	/* deepest callee so far, until the function is done */
	while (n) {
		uint32_t f = path[n - 1];

		if (next[n - 1] < v->ncalls[f]) {
			uint32_t g = v->calls[f][next[n - 1]++];

			if (v->state[g] == 1)
				return recursion(v, path, n, g);
			if (v->state[g] == 0) {
				v->state[g] = 1;
				v->depth[g] = 0;
				path[n] = g;
				next[n++] = 0;
			} else if (v->depth[g] > v->depth[f]) {
				v->depth[f] = v->depth[g];
			}
			continue;
		}
		v->state[f] = 2;
		v->depth[f] += protos[f].frame_size;
		if (--n && v->depth[f] > v->depth[path[n - 1]])
			v->depth[path[n - 1]] = v->depth[f];
	}
	return KTAP_OK;
}

static int check_reachable_alloc(struct vstate *v, uint32_t *todo)
{
	const struct ktap_image *img = v->img;
	uint8_t *seen = v->state;	/* reused: the walk is finished */
	uint32_t n = 0, i, f;

	memset(seen, 0, img->nprotos);
	for (i = 0; i < img->nevents; i++)
		if (!seen[img->events[i].handler]) {
			seen[img->events[i].handler] = 1;
			todo[n++] = img->events[i].handler;
		}
	while (n) {
		f = todo[--n];
		for (i = 0; i < v->ncalls[f]; i++)
			if (!seen[v->calls[f][i]]) {
				seen[v->calls[f][i]] = 1;
				todo[n++] = v->calls[f][i];
			}
	}
	for (f = 0; f < img->nprotos; f++)
		if (seen[f] && v->allocates[f])
			return VFAIL(v, KTAP_R_ALLOC_IN_HANDLER, (int)f, -1, "'%.*s' creates a table "
				     "but runs in probe context; only the setup chunk may allocate",
				     (int)img->protos[f].name.len, img->protos[f].name.s);
	return KTAP_OK;
}

static int check_call_graph(struct vstate *v)
{
	const struct ktap_image *img = v->img;
	uint32_t *path = ktap_zalloc((img->nprotos + 1) * sizeof(uint32_t));
	uint32_t *next = ktap_zalloc((img->nprotos + 1) * sizeof(uint32_t));
	uint32_t f;
	int rc = KTAP_OK;

	if (!path || !next) {
		rc = VFAIL(v, KTAP_R_BAD_IMAGE, -1, -1, "out of memory");
		goto out;
	}
	for (f = 0; f < img->nprotos && !rc; f++) {
		rc = visit(v, f, path, next);
		if (!rc && v->depth[f] > img->limits[KTAP_LIMIT_MAX_STACK])
			rc = VFAIL(v, KTAP_R_STACK_TOO_DEEP, (int)f, -1, "needs %lld registers, "
				   "max_stack is %lld", (long long)v->depth[f],
				   (long long)img->limits[KTAP_LIMIT_MAX_STACK]);
	}
	if (!rc)
		rc = check_reachable_alloc(v, path);
out:
	ktap_free(path);
	ktap_free(next);
	return rc;
}

static int alloc_state(struct vstate *v)
{
	uint32_t n = v->img->nprotos + 1, maxcode = 1, i;

	for (i = 0; i < v->img->nprotos; i++)
		if (v->img->protos[i].ncode > maxcode)
			maxcode = v->img->protos[i].ncode;
	v->handler_fields = ktap_zalloc(n * sizeof(*v->handler_fields));
	v->allocates = ktap_zalloc(n);
	v->calls = ktap_zalloc(n * sizeof(*v->calls));
	v->ncalls = ktap_zalloc(n * sizeof(*v->ncalls));
	v->starts = ktap_zalloc(maxcode);
	v->state = ktap_zalloc(n);
	v->depth = ktap_zalloc(n * sizeof(*v->depth));
	if (!v->handler_fields || !v->allocates || !v->calls || !v->ncalls || !v->starts ||
	    !v->state || !v->depth)
		return -1;
	for (i = 0; i < n; i++)
		v->handler_fields[i] = -1;
	return 0;
}

static void free_state(struct vstate *v)
{
	uint32_t i;

	for (i = 0; v->calls && i < v->img->nprotos; i++)
		ktap_free(v->calls[i]);
	ktap_free(v->handler_fields);
	ktap_free(v->allocates);
	ktap_free(v->calls);
	ktap_free(v->ncalls);
	ktap_free(v->starts);
	ktap_free(v->state);
	ktap_free(v->depth);
}

int ktap_verify(const struct ktap_image *img, char *msg, size_t msglen, int *proto, int *pc)
{
	struct vstate v = { 0 };
	uint32_t f;
	int rc;

	v.img = img;
	v.msg = msg;
	v.msglen = msglen;
	v.proto = v.pc = -1;
	if (msglen)
		msg[0] = 0;
	if (alloc_state(&v) < 0) {
		rc = VFAIL(&v, KTAP_R_BAD_IMAGE, -1, -1, "out of memory");
		goto out;
	}
	rc = check_limits(&v);
	if (!rc)
		rc = check_tables(&v);
	if (!rc)
		rc = check_formats(&v);
	if (!rc)
		rc = check_events(&v);
	for (f = 0; f < img->nprotos && !rc; f++)
		rc = check_proto(&v, (int)f);
	if (!rc)
		rc = check_call_graph(&v);
out:
	*proto = v.proto;
	*pc = v.pc;
	free_state(&v);
	return rc;
}
