/* ktap_object.h - the core's private data structures and the small value
 * helpers every part of the interpreter uses (private to ktap_*.c).
 *
 * The helpers are static inline on purpose: the interpreter's hot paths
 * (numbers, references, errors) must not pay a call into another file. */
#ifndef KTAP_OBJECT_H
#define KTAP_OBJECT_H

#include "ktap_vm.h"

/* Tables a session may create (the setup chunk could loop over NEWTABLE). */
#define KTAP_MAX_TABLES 1024

/* -- strings and stacks: interned, reference counted (ktap_string.c) ------- */
struct ktap_str {
	struct ktap_str *chain;		/* intern bucket chain; free list when unused */
	struct ktap_str *young;		/* temporaries list, swept after each handler */
	uint32_t refs;			/* references from tables and globals */
	uint32_t hash;
	uint32_t len;			/* bytes of a string, frames of a stack */
	uint8_t kind;			/* KTAP_T_STR, KTAP_T_STACK or KTAP_T_TIME */
	uint8_t on_young;
	uint64_t data[];		/* bytes (NUL-terminated) or frames */
};

/* -- tables and aggregates (ktap_table.c) ------------------------------------ */
struct ktap_entry {
	struct ktap_value key, val;
	int32_t next;			/* hash chain, -1 ends */
	int32_t older, newer;		/* key insertion order, for CLEAR */
	uint8_t live;
	struct ktap_agg agg;		/* what a `<<<` value in this entry points to */
};

/* One CPU's part of one aggregate. */
struct ktap_shard {
	int64_t count, sum, min, max;
};

struct ktap_table {
	struct ktap_table *all_next;	/* every table of the session, to free them */
	uint32_t desc_index;
	const struct ktap_tdesc *desc;
	uint32_t limit, count;
	uint32_t used;			/* slots ever used: iteration runs over 0..used-1 */
	uint32_t nfree, mask;
	int32_t oldest, newest;		/* ends of the insertion-order list */
	int32_t *heads;
	uint32_t *free;			/* freed slots, reused last-in first-out like values.Table */
	struct ktap_entry *e;
	/* aggregate storage, CPU-major: CPU c's shard of entry i is
	 * shards[c * limit + i], its buckets log2/linear row c * limit + i */
	uint32_t ncpus;
	struct ktap_shard *shards;
	uint64_t *log2, *linear;
	uint32_t nlinear;
};

/* -- sessions (ktap_session.c) ------------------------------------------------ */
struct ktap_frame {
	uint32_t proto, pc, base;
	uint8_t ret;			/* caller's register for the result */
};

struct ktap_session {
	const struct ktap_image *img;
	int64_t limits[KTAP_NUM_LIMITS];
	struct ktap_value *globals;
	struct ktap_value *regs;
	struct ktap_frame *frames;
	struct ktap_value **kvals;	/* per function: its constants as values */
	/* string pool */
	unsigned char *str_mem;
	size_t str_slot;
	struct ktap_str *str_free, *young, **intern;
	uint32_t intern_mask;
	/* The last execname, kept referenced: most events in a row come from the
	 * same task, and comparing 16 bytes is cheaper than hashing and interning.
	 * exec_comm holds the raw comm buffer it was made from. */
	struct ktap_str *exec_cache;
	uint64_t exec_comm[KTAP_COMM_BYTES / 8];
	int exec_comm_valid;
	char *scratch;			/* string_size + 64 bytes for building strings */
	/* tables */
	struct ktap_table *tables;
	uint32_t ntables;
	/* output */
	unsigned char *out;
	size_t out_cap, out_len;
	int out_overflow;
	/* running state */
	const struct ktap_event *ev;
	int64_t clock_ns, mono_ns, budget, exit_code;	/* clocks: walltime, nsecs */
	int64_t started_ns;		/* watchdog: when the running handler started */
	uint32_t charges;
	uint32_t ncpus;			/* aggregate shards per entry */
	int stopped;			/* KTAP_RUN_EXIT or KTAP_RUN_ERROR once the session ends */
	int drop_reason;
	uint64_t drops[KTAP_NUM_DROPS];
	ktap_read_str_fn read_str;
	void *read_ctx;
	/* the runtime error, if any */
	char errmsg[256];
	uint32_t err_line, err_col, err_proto;
};

/* The interpreter (ktap_interp.c): runs function `proto` to its return. */
int ktap_execute(struct ktap_session *s, uint32_t proto);

/* -- values ------------------------------------------------------------------- */
extern const char *const ktap_type_names[];

#define NIL ((struct ktap_value){ .t = KTAP_T_NIL })

static inline struct ktap_value num(int64_t n)
{
	struct ktap_value v = { .t = KTAP_T_NUM };

	v.u.n = n;
	return v;
}

static inline struct ktap_value boolean(int b)
{
	struct ktap_value v = { .t = KTAP_T_BOOL };

	v.u.n = !!b;
	return v;
}

static inline int is_num(struct ktap_value v) { return v.t == KTAP_T_NUM; }
static inline int truthy(struct ktap_value v)
{
	return !(v.t == KTAP_T_NIL || (v.t == KTAP_T_BOOL && !v.u.n));
}
static inline const char *tname(struct ktap_value v) { return ktap_type_names[v.t]; }

/* 64-bit wrapping arithmetic, done unsigned because signed overflow is undefined in C. */
static inline int64_t wrap_add(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
static inline int64_t wrap_sub(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }
static inline int64_t wrap_mul(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }

/* values.cdiv: truncates toward zero; INT64_MIN / -1 wraps to INT64_MIN. */
static inline int64_t cdiv(int64_t a, int64_t b)
{
	if (b == -1)
		return wrap_sub(0, a);
	return ktap_div_s64(a, b);
}

static inline char *str_bytes(struct ktap_str *s) { return (char *)s->data; }

/* Keys are numbers, strings, stacks and times. */
static inline int valid_key(struct ktap_value k)
{
	return k.t == KTAP_T_NUM || k.t == KTAP_T_STR || k.t == KTAP_T_STACK || k.t == KTAP_T_TIME;
}

/* -- references: tables and globals keep strings alive ------------------------ */
static inline void young_push(struct ktap_session *s, struct ktap_str *x)
{
	if (!x->on_young) {
		x->on_young = 1;
		x->young = s->young;
		s->young = x;
	}
}

static inline int is_ref(struct ktap_value v)
{
	return v.t == KTAP_T_STR || v.t == KTAP_T_STACK || v.t == KTAP_T_TIME;
}

static inline void ref(struct ktap_value v)
{
	if (is_ref(v))
		v.u.s->refs++;
}

/* A string whose last reference goes may still sit in a register: free it
 * only when the handler is over. */
static inline void unref(struct ktap_session *s, struct ktap_value v)
{
	if (is_ref(v) && !--v.u.s->refs)
		young_push(s, v.u.s);
}

/* -- errors and drops ---------------------------------------------------------- */
#define RTERR(s, f, pc, ...)								\
	(ktap_snprintf((s)->errmsg, sizeof((s)->errmsg), __VA_ARGS__),			\
	 rt_where((s), (f), (pc)))

static inline int rt_where(struct ktap_session *s, uint32_t f, uint32_t pc)
{
	const struct ktap_proto *p = &s->img->protos[f];

	s->err_proto = f;
	s->err_line = pc < p->nlines ? p->lines[2 * pc] : 0;
	s->err_col = pc < p->nlines ? p->lines[2 * pc + 1] : 0;
	return KTAP_RUN_ERROR;
}

static inline int drop(struct ktap_session *s, int reason)
{
	s->drop_reason = reason;
	return KTAP_RUN_DROP;
}

static inline int get_table(struct ktap_session *s, struct ktap_value v, struct ktap_table **t,
			    uint32_t f, uint32_t pc)
{
	if (v.t != KTAP_T_TABLE)
		return RTERR(s, f, pc, "attempt to index a %s value", tname(v));
	*t = v.u.tab;
	return KTAP_RUN_OK;
}

#endif
