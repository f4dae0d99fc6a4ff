/* ebpf_maps.c - the BPF maps of an ebpf image (docs/ebpf.md "Maps"): checked
 * against the image, created, seeded from the interpreter after the setup
 * code, and read back into it before trace_end.
 *
 * Map contents are in the kernel's byte order, which is the target's: they
 * are built with ktap_bytes.h like every other target-order integer, so the
 * code reads the same for both byte orders. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ebpf.h"
#include "ktap_bytes.h"

/* BPF_MAP_TYPE_* the image may use */
#define MAP_HASH 1
#define MAP_ARRAY 2
#define MAP_PERF_EVENT_ARRAY 4
#define MAP_PERCPU_HASH 5
#define MAP_PERCPU_ARRAY 6

/* Bounds on what ktaprun allocates for one key or value. */
#define MAX_KEY (1u << 16)
#define MAX_VALUE (1u << 20)

#define SEQ_BYTES 8
#define AGG_HEAD (SEQ_BYTES + 4 * 8)	/* seq, count, sum, min, max */
#define STATE_BYTES (2 * 8)		/* stopped, seq */
#define DROPS_BYTES (KTAP_NUM_DROPS * 8)	/* per CPU */

/* Per CPU, a percpu map's value takes value_size rounded up to 8 bytes. */
static size_t stride(const struct ktap_bpf_map *m)
{
	return ((size_t)m->value_size + 7) & ~(size_t)7;
}

static int is_percpu(const struct ktap_bpf_map *m)
{
	return m->type == MAP_PERCPU_HASH || m->type == MAP_PERCPU_ARRAY;
}

/* Bytes of one lookup or update: a percpu map's value is every CPU's copy. */
static size_t value_bytes(const struct ebpf_sess *e, const struct ktap_bpf_map *m)
{
	return is_percpu(m) ? stride(m) * e->env.ncpus : m->value_size;
}

/* The sum of a u64 over the CPUs' copies of a percpu value. */
static uint64_t sum_cpus(const struct ebpf_sess *e, const struct ktap_bpf_map *m,
			 const unsigned char *val, uint32_t off)
{
	uint64_t n = 0;
	uint32_t c;

	for (c = 0; c < e->env.ncpus; c++)
		n += ktap_get_uint(val + c * stride(m) + off, 8);
	return n;
}

/* Bytes of a global's slot: a tagged one carries the value's tag before it. */
static uint32_t slot_bytes(const struct ktap_bpf_slot *s)
{
	return s->kind == KTAP_BPF_SLOT_TAGGED ? 16 : 8;
}

/* The record tag of a global's value, as a program compares it. */
static uint64_t value_tag(const struct ktap_sync_val *g)
{
	if (g->t == KTAP_T_NUM)
		return KTAP_VAL_NUM;
	if (g->t == KTAP_T_BOOL)
		return g->n ? KTAP_VAL_TRUE : KTAP_VAL_FALSE;
	return KTAP_VAL_NIL;
}

/* The interpreter's value of a tagged slot (tag, then the i64). */
static void tagged_value(const unsigned char *p, struct ktap_sync_val *g)
{
	uint64_t tag = ktap_get_uint(p, 8);

	g->n = (int64_t)ktap_get_uint(p + 8, 8);
	g->t = tag == KTAP_VAL_NUM ? KTAP_T_NUM : tag == KTAP_VAL_NIL ? KTAP_T_NIL : KTAP_T_BOOL;
	if (g->t == KTAP_T_BOOL)
		g->n = tag == KTAP_VAL_TRUE;
}

static const char *const role_names[KTAP_BPF_NUM_ROLES] = {
	"table", "globals", "output", "scratch", "state", "probenames", "counters", "drops",
};

/* -- checking the image ---------------------------------------------------------- */
/* The types (one of two) and key size each role needs; key 0 accepts any.
 * Scratch maps may also be plain arrays (a zero-filled template the programs
 * copy from). */
static const struct { uint32_t type, alt, key; } role_shape[KTAP_BPF_NUM_ROLES] = {
	[KTAP_BPF_TABLE] = { MAP_HASH, MAP_PERCPU_HASH, 0 },
	[KTAP_BPF_GLOBALS] = { MAP_ARRAY, MAP_ARRAY, 4 },
	[KTAP_BPF_OUTPUT] = { MAP_PERF_EVENT_ARRAY, MAP_PERF_EVENT_ARRAY, 4 },
	[KTAP_BPF_SCRATCH] = { MAP_PERCPU_ARRAY, MAP_ARRAY, 4 },
	[KTAP_BPF_STATE] = { MAP_ARRAY, MAP_ARRAY, 4 },
	[KTAP_BPF_PROBENAMES] = { MAP_ARRAY, MAP_ARRAY, 4 },
	[KTAP_BPF_COUNTERS] = { MAP_PERCPU_ARRAY, MAP_PERCPU_ARRAY, 4 },
	[KTAP_BPF_DROPS] = { MAP_PERCPU_ARRAY, MAP_PERCPU_ARRAY, 4 },
};

static const char *check_table(const struct ktap_image *img, const struct ktap_bpf_map *m)
{
	if (m->global >= img->nglobals)
		return "its global is out of range";
	if (m->key_kind > KTAP_BPF_KEY_STR || m->value_kind > KTAP_BPF_VAL_AGG)
		return "unknown key or value kind";
	if (m->key_kind == KTAP_BPF_KEY_NUM && m->key_size != 8)
		return "number keys are 8 bytes";
	/* a number table handlers only add to may be per CPU (summed when read) */
	if (m->value_kind == KTAP_BPF_VAL_AGG && m->type != MAP_PERCPU_HASH)
		return "aggregates live in a percpu hash";
	if (m->value_kind == KTAP_BPF_VAL_STR && m->type != MAP_HASH)
		return "string values live in a plain hash";
	if (m->value_kind == KTAP_BPF_VAL_NUM && m->value_size != SEQ_BYTES + 8)
		return "number values are 16 bytes (seq, value)";
	if (m->value_kind == KTAP_BPF_VAL_STR && m->value_size <= SEQ_BYTES)
		return "string values need more than 8 bytes";
	if (m->value_kind == KTAP_BPF_VAL_AGG && m->value_size < AGG_HEAD)
		return "aggregate values need at least 40 bytes";
	return NULL;
}

static const char *check_map(const struct ktap_image *img, const struct ktap_bpf_map *m)
{
	uint32_t i;

	if (m->role >= KTAP_BPF_NUM_ROLES)
		return "unknown role";
	if (m->type != role_shape[m->role].type && m->type != role_shape[m->role].alt)
		return "the wrong map type for its role";
	if (!m->key_size || m->key_size > MAX_KEY || !m->value_size || m->value_size > MAX_VALUE)
		return "key or value size out of range";
	if (role_shape[m->role].key && m->key_size != role_shape[m->role].key)
		return "keys of this role are 4 bytes";
	if (m->role == KTAP_BPF_TABLE)
		return check_table(img, m);
	if (m->role == KTAP_BPF_OUTPUT && m->value_size != 4)
		return "perf event array values are 4 bytes";
	if (m->role == KTAP_BPF_STATE && m->value_size < STATE_BYTES)
		return "the state value is 16 bytes";
	if (m->role == KTAP_BPF_DROPS && m->value_size < DROPS_BYTES)
		return "the drops value is 32 bytes";
	for (i = 0; i < m->nslots; i++) {
		const struct ktap_bpf_slot *s = &m->slots[i];

		/* a counter's per-CPU shares are summed: numbers only */
		if (m->role == KTAP_BPF_COUNTERS && s->kind != KTAP_BPF_SLOT_NUM)
			return "a counter slot holds a number";
		if ((m->role != KTAP_BPF_GLOBALS && m->role != KTAP_BPF_COUNTERS) ||
		    s->global >= img->nglobals ||
		    s->kind > KTAP_BPF_SLOT_TAGGED || m->value_size < slot_bytes(s) ||
		    s->offset > m->value_size - slot_bytes(s))
			return "a global slot is out of range";
	}
	return NULL;
}

int ebpf_check_maps(const struct ktap_image *img, char *err, size_t errlen)
{
	uint32_t i, seen = 0;
	const char *why;

	for (i = 0; i < img->nmaps; i++) {
		const struct ktap_bpf_map *m = &img->maps[i];

		why = check_map(img, m);
		/* scratch maps are only created (zero-filled): any number of them */
		if (!why && m->role != KTAP_BPF_TABLE && m->role != KTAP_BPF_SCRATCH &&
		    (seen & (1u << m->role)))
			why = "a second map of its role";
		if (why) {
			snprintf(err, errlen, "bad ebpf section: map %u (%.*s): %s", i,
				 (int)m->name.len, m->name.s, why);
			return -1;
		}
		seen |= 1u << m->role;
	}
	if (img->nprogs && !(seen & (1u << KTAP_BPF_STATE))) {
		snprintf(err, errlen, "bad ebpf section: no state map");
		return -1;
	}
	return 0;
}

/* -- creating ---------------------------------------------------------------------- */
static const char *map_name(const struct ebpf_map *em, char *buf, size_t size)
{
	const struct ktap_bpf_map *m = em->m;

	if (m->role == KTAP_BPF_TABLE)
		snprintf(buf, size, "%.*s", (int)m->name.len, m->name.s);
	else
		snprintf(buf, size, "%s", role_names[m->role]);
	return buf;
}

/* max_entries 0 means one per possible CPU; the output map is indexed by
 * CPU id (BPF_F_CURRENT_CPU), so it always covers the highest one; the
 * probenames map has one entry per attachment, which only this board knows. */
static uint32_t entries(const struct ebpf_sess *e, const struct ktap_bpf_map *m)
{
	uint32_t n = m->max_entries ? m->max_entries : e->env.ncpus;

	if (m->role == KTAP_BPF_OUTPUT)
		return e->env.cpu_ids;
	if (m->role == KTAP_BPF_PROBENAMES && n < e->natt)
		n = e->natt;
	return n ? n : 1;
}

/* About what the kernel allocates for a map up front: hash maps preallocate
 * every element (tick and profile programs may use no other kind), each
 * with ~64 bytes of its own, and percpu values exist once per CPU. */
static uint64_t map_bytes(const struct ebpf_sess *e, const struct ktap_bpf_map *m, uint32_t n)
{
	uint64_t value = ((uint64_t)m->value_size + 7) & ~7ULL, key = ((uint64_t)m->key_size + 7) & ~7ULL;
	int percpu = m->type == MAP_PERCPU_HASH || m->type == MAP_PERCPU_ARRAY;

	if (percpu)
		value = value * e->env.ncpus + 8;
	if (m->type == MAP_HASH || m->type == MAP_PERCPU_HASH)
		value += key + 64;
	return value * n;
}

static uint64_t mem_available(void)
{
	unsigned char *text;
	size_t len;
	char *at;
	uint64_t kb = 0;

	text = read_whole("/proc/meminfo", &len);
	if (!text)
		return 0;
	text = xrealloc(text, len + 1);
	text[len] = 0;
	at = strstr((char *)text, "MemAvailable:");
	if (at)
		kb = strtoull(at + 13, NULL, 10);
	free(text);
	return kb * 1024;
}

/* Maps larger than the board can hold would not fail: the kernel would call
 * the OOM killer on this process. Refuse them while that is still a choice. */
static int check_memory(struct ebpf_sess *e)
{
	uint64_t total = 0, biggest = 0, avail = mem_available(), b;
	uint32_t i, at = 0;
	char name[300];

	for (i = 0; i < e->img->nmaps; i++) {
		b = map_bytes(e, e->maps[i].m, e->maps[i].max_entries);
		total += b;
		if (b > biggest) {
			biggest = b;
			at = i;
		}
	}
	if (!avail || total <= avail / 2)
		return 0;
	snprintf(e->err, sizeof(e->err), "the BPF maps need about %llu MiB, more than half of "
		 "the %llu MiB available ('%s' alone %llu MiB): lower table_entries",
		 (unsigned long long)(total >> 20), (unsigned long long)(avail >> 20),
		 map_name(&e->maps[at], name, sizeof(name)), (unsigned long long)(biggest >> 20));
	return -1;
}

int ebpf_create_maps(struct ebpf_sess *e)
{
	const struct ktap_image *img = e->img;
	char name[300], what[400];
	uint32_t i;

	e->maps = xcalloc(img->nmaps ? img->nmaps : 1, sizeof(*e->maps));
	for (i = 0; i < KTAP_BPF_NUM_ROLES; i++)
		e->role[i] = -1;
	for (i = 0; i < img->nmaps; i++) {
		e->maps[i].fd = -1;
		e->maps[i].m = &img->maps[i];
		e->maps[i].max_entries = entries(e, &img->maps[i]);
		if (img->maps[i].role != KTAP_BPF_TABLE)
			e->role[img->maps[i].role] = (int)i;
	}
	if (check_memory(e) < 0)
		return -1;
	for (i = 0; i < img->nmaps; i++) {
		struct ebpf_map *em = &e->maps[i];
		const struct ktap_bpf_map *m = em->m;

		em->fd = bpf_map_create(m->type, m->key_size, m->value_size, em->max_entries,
					map_name(em, name, sizeof(name)));
		if (em->fd < 0) {
			snprintf(what, sizeof(what), "creating the BPF map '%s' (%u entries of %u "
				 "bytes)", name, em->max_entries, m->value_size);
			bpf_error(e->err, sizeof(e->err), what, errno);
			if (errno == E2BIG || errno == ENOMEM)
				strncat(e->err, " (lower table_entries)",
					sizeof(e->err) - strlen(e->err) - 1);
			return -1;
		}
	}
	return 0;
}

void ebpf_close_maps(struct ebpf_sess *e)
{
	uint32_t i;

	for (i = 0; e->maps && i < e->img->nmaps; i++) {
		if (e->maps[i].fd >= 0)
			close(e->maps[i].fd);
		free(e->maps[i].seeded);
	}
	free(e->maps);
	e->maps = NULL;
}

/* -- the state and globals maps ------------------------------------------------------ */
uint64_t ebpf_state_word(struct ebpf_sess *e, uint32_t index)
{
	int s = e->role[KTAP_BPF_STATE];
	uint32_t zero = 0;
	unsigned char *v;
	uint64_t w = 0;

	if (s < 0)
		return 0;
	v = xmalloc(e->maps[s].m->value_size);
	if (bpf_map_lookup(e->maps[s].fd, &zero, v) == 0)
		w = ktap_get_uint(v + 8 * index, 8);
	free(v);
	return w;
}

static int write_state(struct ebpf_sess *e, uint64_t seq)
{
	int s = e->role[KTAP_BPF_STATE];
	unsigned char *v;
	uint32_t zero = 0;
	int rc;

	if (s < 0)
		return 0;
	v = xmalloc(e->maps[s].m->value_size);
	memset(v, 0, e->maps[s].m->value_size);
	ktap_put_uint(v + 8, seq, 8);
	rc = bpf_map_update(e->maps[s].fd, &zero, v);
	free(v);
	return rc;
}

static const char *global_name(const struct ktap_image *img, uint32_t g, char *buf, size_t n)
{
	snprintf(buf, n, "%.*s", (int)img->globals[g].len, img->globals[g].s);
	return buf;
}

/* The setup code's values go into the (first CPU's copy of the) value. */
static int seed_globals(struct ebpf_sess *e, struct ebpf_map *em)
{
	const struct ktap_bpf_map *m = em->m;
	unsigned char *v = xcalloc(1, value_bytes(e, m));
	struct ktap_sync_val g;
	uint32_t i, zero = 0;
	char name[300];
	int rc = 0;

	for (i = 0; i < m->nslots && !rc; i++) {
		ktap_global_get(e->vm, m->slots[i].global, &g);
		if (m->slots[i].kind == KTAP_BPF_SLOT_TAGGED &&
		    (g.t == KTAP_T_NUM || g.t == KTAP_T_BOOL || g.t == KTAP_T_NIL)) {
			ktap_put_uint(v + m->slots[i].offset, value_tag(&g), 8);
			ktap_put_uint(v + m->slots[i].offset + 8, (uint64_t)g.n, 8);
			continue;
		}
		if (g.t == KTAP_T_NUM || g.t == KTAP_T_BOOL || g.t == KTAP_T_NIL) {
			/* nil (never assigned) reads as 0 / false in a program */
			ktap_put_uint(v + m->slots[i].offset, (uint64_t)g.n, 8);
			continue;
		}
		snprintf(e->err, sizeof(e->err), "global '%s' holds a %s after the setup code; its "
			 "handlers need a %s", global_name(e->img, m->slots[i].global, name,
			 sizeof(name)), ktap_type_names[g.t],
			 m->slots[i].kind == KTAP_BPF_SLOT_BOOL ? "boolean" : "number");
		rc = -1;
	}
	if (!rc && bpf_map_update(em->fd, &zero, v) < 0) {
		bpf_error(e->err, sizeof(e->err), "writing the globals map", errno);
		rc = -1;
	}
	free(em->seeded);
	em->seeded = v;		/* read_globals compares with it */
	return rc;
}

static void read_globals(struct ebpf_sess *e, const struct ebpf_map *em)
{
	const struct ktap_bpf_map *m = em->m;
	unsigned char *v = xcalloc(1, value_bytes(e, m));
	struct ktap_sync_val g = { 0 };
	uint32_t i, zero = 0;

	if (bpf_map_lookup(em->fd, &zero, v) == 0) {
		/* a counter's value is its CPUs' shares summed, in the first copy */
		for (i = 0; is_percpu(m) && i < m->nslots; i++)
			ktap_put_uint(v + m->slots[i].offset, sum_cpus(e, m, v, m->slots[i].offset), 8);
		for (i = 0; i < m->nslots; i++) {
			/* a global no program changed keeps its value as it is: a nil
			 * one stays nil rather than becoming the 0 it was seeded as */
			if (em->seeded && !memcmp(v + m->slots[i].offset,
						   em->seeded + m->slots[i].offset,
						   slot_bytes(&m->slots[i])))
				continue;
			if (m->slots[i].kind == KTAP_BPF_SLOT_TAGGED) {
				tagged_value(v + m->slots[i].offset, &g);
				ktap_global_set(e->vm, m->slots[i].global, &g);
				continue;
			}
			g.n = (int64_t)ktap_get_uint(v + m->slots[i].offset, 8);
			g.t = m->slots[i].kind == KTAP_BPF_SLOT_BOOL ? KTAP_T_BOOL : KTAP_T_NUM;
			ktap_global_set(e->vm, m->slots[i].global, &g);
		}
	}
	free(v);
}

/* -- table entries: the interpreter's values <-> map keys and values ------------------ */
static size_t agg_bytes(const struct ebpf_map *em)
{
	return AGG_HEAD + (em->log2 ? 8 * KTAP_LOG2_BUCKETS : 0) + 8 * (size_t)em->nlinear;
}

static int table_error(struct ebpf_sess *e, const struct ebpf_map *em, const char *what)
{
	snprintf(e->err, sizeof(e->err), "table '%.*s': %s", (int)em->m->name.len, em->m->name.s,
		 what);
	return -1;
}

/* key: number -> i64; string -> key_size bytes, NUL-padded */
static int encode_key(struct ebpf_sess *e, const struct ebpf_map *em,
		      const struct ktap_sync_val *k, unsigned char *out)
{
	const struct ktap_bpf_map *m = em->m;
	char what[160];

	memset(out, 0, m->key_size);
	if (m->key_kind == KTAP_BPF_KEY_NUM && k->t == KTAP_T_NUM) {
		ktap_put_uint(out, (uint64_t)k->n, 8);
		return 0;
	}
	if (m->key_kind != KTAP_BPF_KEY_STR || k->t != KTAP_T_STR) {
		snprintf(what, sizeof(what), "a %s key after the setup code, but its map has %s keys",
			 ktap_type_names[k->t], m->key_kind == KTAP_BPF_KEY_STR ? "string" : "number");
		return table_error(e, em, what);
	}
	if (k->len > m->key_size) {
		snprintf(what, sizeof(what), "a key of %u bytes after the setup code, but its map's "
			 "keys have %u", k->len, m->key_size);
		return table_error(e, em, what);
	}
	memcpy(out, k->s, k->len);
	return 0;
}

static void put_agg(const struct ebpf_map *em, const struct ktap_sync_val *v, unsigned char *out)
{
	uint32_t i;

	ktap_put_uint(out + 8, (uint64_t)v->count, 8);
	ktap_put_uint(out + 16, (uint64_t)v->sum, 8);
	ktap_put_uint(out + 24, (uint64_t)v->min, 8);
	ktap_put_uint(out + 32, (uint64_t)v->max, 8);
	out += AGG_HEAD;
	for (i = 0; em->log2 && i < KTAP_LOG2_BUCKETS; i++, out += 8)
		ktap_put_uint(out, v->log2[i], 8);
	for (i = 0; i < em->nlinear; i++, out += 8)
		ktap_put_uint(out, v->linear[i], 8);
}

/* value: u64 seq, then the number, the NUL-padded string or the aggregate
 * (CPU 0's copy of a percpu value: the other CPUs start empty) */
static int encode_value(struct ebpf_sess *e, const struct ebpf_map *em, uint64_t seq,
			const struct ktap_sync_val *v, unsigned char *out)
{
	static const uint8_t want[] = { KTAP_T_NUM, KTAP_T_STR, KTAP_T_AGG };
	const struct ktap_bpf_map *m = em->m;
	char what[160];

	memset(out, 0, value_bytes(e, m));
	if (v->t != want[m->value_kind]) {
		snprintf(what, sizeof(what), "an entry holds a %s after the setup code, but its map "
			 "holds %ss", ktap_type_names[v->t], ktap_type_names[want[m->value_kind]]);
		return table_error(e, em, what);
	}
	if (m->value_kind == KTAP_BPF_VAL_STR && v->len > m->value_size - SEQ_BYTES) {
		snprintf(what, sizeof(what), "a string of %u bytes after the setup code, but its "
			 "map's values hold %u", v->len, m->value_size - SEQ_BYTES);
		return table_error(e, em, what);
	}
	ktap_put_uint(out, seq, 8);
	if (m->value_kind == KTAP_BPF_VAL_NUM)
		ktap_put_uint(out + 8, (uint64_t)v->n, 8);
	else if (m->value_kind == KTAP_BPF_VAL_STR)
		memcpy(out + SEQ_BYTES, v->s, v->len);
	else
		put_agg(em, v, out);
	return 0;
}

/* -- seeding after the setup code ------------------------------------------------------ */
/* The interpreter's table behind a table map, and its aggregate layout. */
static int bind_table(struct ebpf_sess *e, struct ebpf_map *em)
{
	const struct ktap_bpf_map *m = em->m;
	struct ktap_sync_val g;
	char name[300], what[200];
	struct ktap_table *t = ktap_global_table(e->vm, m->global);

	if (!t) {
		ktap_global_get(e->vm, m->global, &g);
		snprintf(e->err, sizeof(e->err), "global '%s' holds a %s after the setup code, not "
			 "a table", global_name(e->img, m->global, name, sizeof(name)),
			 ktap_type_names[g.t]);
		return -1;
	}
	em->table = t;
	if (m->value_kind != KTAP_BPF_VAL_AGG)
		return 0;
	em->log2 = (e->img->tables[ktap_table_desc(t)].flags & KTAP_TABLE_LOG2) != 0;
	em->nlinear = ktap_table_nlinear(t);
	if (agg_bytes(em) <= m->value_size)
		return 0;
	snprintf(what, sizeof(what), "its map's values (%u bytes) cannot hold its histograms "
		 "(%zu bytes)", m->value_size, agg_bytes(em));
	return table_error(e, em, what);
}

/* Entries in insertion order, stamped 1, 2, ... after the stamps before. */
static int seed_table(struct ebpf_sess *e, struct ebpf_map *em, uint64_t *seq)
{
	const struct ktap_bpf_map *m = em->m;
	unsigned char *key = xmalloc(m->key_size), *val = xmalloc(value_bytes(e, m));
	struct ktap_sync_val k, v;
	uint64_t *log2 = xcalloc(KTAP_LOG2_BUCKETS + em->nlinear + 1, 8);
	int32_t slot;
	int rc = 0;

	for (slot = ktap_table_first(em->table); slot >= 0 && !rc;
	     slot = ktap_table_next(em->table, slot)) {
		v.log2 = log2;
		v.linear = log2 + KTAP_LOG2_BUCKETS;
		ktap_table_entry(em->table, slot, &k, &v);
		rc = encode_key(e, em, &k, key) < 0 || encode_value(e, em, ++*seq, &v, val) < 0;
		if (!rc && bpf_map_update(em->fd, key, val) < 0) {
			bpf_error(e->err, sizeof(e->err), "writing a table map", errno);
			rc = -1;
		}
	}
	free(key);
	free(val);
	free(log2);
	return rc ? -1 : 0;
}

int ebpf_seed_maps(struct ebpf_sess *e)
{
	uint64_t seq = 0;
	uint32_t i;

	for (i = 0; i < e->img->nmaps; i++) {
		struct ebpf_map *em = &e->maps[i];

		if (em->m->role == KTAP_BPF_TABLE &&
		    (bind_table(e, em) < 0 || seed_table(e, em, &seq) < 0))
			return -1;
		if ((em->m->role == KTAP_BPF_GLOBALS || em->m->role == KTAP_BPF_COUNTERS) &&
		    seed_globals(e, em) < 0)
			return -1;
	}
	/* the counter holds the last stamp given: programs add 1, then read it */
	if (write_state(e, seq) < 0) {
		bpf_error(e->err, sizeof(e->err), "writing the state map", errno);
		return -1;
	}
	return 0;
}

int ebpf_open_output(struct ebpf_sess *e)
{
	int o = e->role[KTAP_BPF_OUTPUT];
	size_t bytes = (size_t)e->img->limits[KTAP_LIMIT_OUTBUF_SIZE];
	uint32_t i, cpu, fd;

	if (o < 0)
		return 0;
	e->bufs = xcalloc(e->env.nonline ? e->env.nonline : 1, sizeof(*e->bufs));
	for (i = 0; i < e->env.nonline; i++) {
		if (perfbuf_open(&e->bufs[e->nbufs++], e->env.online[i], bytes, e->err,
				 sizeof(e->err)) < 0)
			return -1;
		cpu = (uint32_t)e->env.online[i];
		fd = (uint32_t)e->bufs[i].fd;
		if (bpf_map_update(e->maps[o].fd, &cpu, &fd) < 0) {
			bpf_error(e->err, sizeof(e->err), "writing the output map", errno);
			return -1;
		}
	}
	return 0;
}

/* -- reading back before trace_end ------------------------------------------------------- */
struct keyed {
	uint64_t seq;
	unsigned char *key;
};

static int by_seq(const void *a, const void *b)
{
	const struct keyed *x = a, *y = b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The smallest stamp any CPU's copy holds: when the key was first inserted
 * (a CPU that never touched the key has 0 there). */
static uint64_t first_stamp(const struct ebpf_sess *e, const struct ktap_bpf_map *m,
			    const unsigned char *val)
{
	uint64_t seq = 0, s;
	uint32_t c;

	for (c = 0; c < e->env.ncpus; c++) {
		s = ktap_get_uint(val + c * stride(m), 8);
		if (s && (!seq || s < seq))
			seq = s;
	}
	return seq;
}

/* The CPUs' copies of an aggregate merged as the interpreter merges shards:
 * counts, sums and buckets add, min/max combine over the CPUs that saw a
 * value; the stamp is the smallest one set. Returns the stamp. */
static uint64_t merge_agg(const struct ebpf_sess *e, const struct ebpf_map *em,
			  const unsigned char *val, struct ktap_sync_val *v)
{
	uint64_t seq = first_stamp(e, em->m, val);
	uint32_t c, i;

	v->t = KTAP_T_AGG;
	v->count = v->sum = v->min = v->max = 0;
	memset(v->log2, 0, 8 * (KTAP_LOG2_BUCKETS + (size_t)em->nlinear));
	for (c = 0; c < e->env.ncpus; c++, val += stride(em->m)) {
		int64_t n = (int64_t)ktap_get_uint(val + 8, 8);
		int64_t lo = (int64_t)ktap_get_uint(val + 24, 8), hi = (int64_t)ktap_get_uint(val + 32, 8);
		const unsigned char *b = val + AGG_HEAD;

		if (!n)
			continue;
		v->min = !v->count || lo < v->min ? lo : v->min;
		v->max = !v->count || hi > v->max ? hi : v->max;
		v->count += n;
		v->sum = (int64_t)((uint64_t)v->sum + ktap_get_uint(val + 16, 8));
		for (i = 0; em->log2 && i < KTAP_LOG2_BUCKETS; i++, b += 8)
			v->log2[i] += ktap_get_uint(b, 8);
		for (i = 0; i < em->nlinear; i++, b += 8)
			v->linear[i] += ktap_get_uint(b, 8);
	}
	return seq;
}

/* A map value as an interpreter value; returns its stamp. */
static uint64_t decode_value(const struct ebpf_sess *e, const struct ebpf_map *em,
			     const unsigned char *val, struct ktap_sync_val *v)
{
	const struct ktap_bpf_map *m = em->m;

	if (m->value_kind == KTAP_BPF_VAL_AGG)
		return merge_agg(e, em, val, v);
	if (m->value_kind == KTAP_BPF_VAL_NUM && is_percpu(m)) {
		v->t = KTAP_T_NUM;
		v->n = (int64_t)sum_cpus(e, m, val, 8);
		return first_stamp(e, m, val);
	}
	if (m->value_kind == KTAP_BPF_VAL_NUM) {
		v->t = KTAP_T_NUM;
		v->n = (int64_t)ktap_get_uint(val + 8, 8);
	} else {
		v->t = KTAP_T_STR;
		v->s = (const char *)val + SEQ_BYTES;
		v->len = (uint32_t)strnlen(v->s, m->value_size - SEQ_BYTES);
	}
	return ktap_get_uint(val, 8);
}

static void decode_key(const struct ebpf_map *em, const unsigned char *key,
		       struct ktap_sync_val *k)
{
	if (em->m->key_kind == KTAP_BPF_KEY_NUM) {
		k->t = KTAP_T_NUM;
		k->n = (int64_t)ktap_get_uint(key, 8);
	} else {
		k->t = KTAP_T_STR;
		k->s = (const char *)key;
		k->len = (uint32_t)strnlen(k->s, em->m->key_size);
	}
}

/* Every key the map holds, key_size bytes each, end to end. The walk is
 * bounded: programs may still change the map (a CALL record is read while
 * they run), and a hash map restarts a walk from a key that went away. */
static unsigned char *walk_keys(const struct ebpf_map *em, size_t *n)
{
	size_t ks = em->m->key_size, cap = 0, steps = 0;
	unsigned char *keys = NULL, *prev = NULL, *key = xmalloc(ks);

	*n = 0;
	while (steps++ <= 2 * (size_t)em->max_entries &&
	       bpf_map_next_key(em->fd, prev, key) == 0) {
		if (*n == cap) {
			cap = cap ? cap * 2 : 64;
			keys = xrealloc(keys, cap * ks);
		}
		prev = keys + (*n)++ * ks;
		memcpy(prev, key, ks);
	}
	free(key);
	return keys;
}

/* Every key with its stamp (keys gone since the walk are left out). */
static struct keyed *collect_keys(struct ebpf_sess *e, const struct ebpf_map *em,
				  unsigned char *val, struct ktap_sync_val *v, size_t *n)
{
	size_t ks = em->m->key_size, nkeys, i;
	unsigned char *keys = walk_keys(em, &nkeys);
	struct keyed *all = xcalloc(nkeys ? nkeys : 1, sizeof(*all));

	*n = 0;
	for (i = 0; i < nkeys; i++) {
		if (bpf_map_lookup(em->fd, keys + i * ks, val) < 0)
			continue;
		all[*n].seq = decode_value(e, em, val, v);
		all[*n].key = xmalloc(ks);
		memcpy(all[*n].key, keys + i * ks, ks);
		(*n)++;
	}
	free(keys);
	return all;
}

struct ebpf_map *ebpf_table_map(struct ebpf_sess *e, uint32_t global)
{
	uint32_t i;

	for (i = 0; e->maps && i < e->img->nmaps; i++)
		if (e->maps[i].m->role == KTAP_BPF_TABLE && e->maps[i].m->global == global &&
		    e->maps[i].table)
			return &e->maps[i];
	return NULL;
}

/* The interpreter's table becomes the map's entries, in stamp order. */
void ebpf_pull_table(struct ebpf_sess *e, const struct ebpf_map *em)
{
	unsigned char *val = xmalloc(value_bytes(e, em->m));
	uint64_t *buckets = xcalloc(KTAP_LOG2_BUCKETS + em->nlinear + 1, 8);
	struct ktap_sync_val k = { 0 }, v = { 0 };
	struct keyed *all;
	size_t n, i;

	v.log2 = buckets;
	v.linear = buckets + KTAP_LOG2_BUCKETS;
	all = collect_keys(e, em, val, &v, &n);
	qsort(all, n, sizeof(*all), by_seq);
	ktap_table_reset(e->vm, em->table);
	for (i = 0; i < n; i++) {
		if (bpf_map_lookup(em->fd, all[i].key, val) == 0) {
			decode_key(em, all[i].key, &k);
			decode_value(e, em, val, &v);
			/* the map holds at most table_entries: only strings can run out */
			if (ktap_table_insert(e->vm, em->table, &k, &v) < 0)
				ktap_add_drops(e->vm, KTAP_DROP_STRINGS_FULL, 1);
		}
		free(all[i].key);
	}
	free(all);
	free(val);
	free(buckets);
}

/* Keys are gathered first and deleted after: deleting the key a walk stands
 * on would restart it. A key a program adds meanwhile stays, as if added
 * just after the delete(t). */
void ebpf_clear_table(struct ebpf_sess *e, const struct ebpf_map *em)
{
	size_t n, i;
	unsigned char *keys = walk_keys(em, &n);

	for (i = 0; i < n; i++)
		bpf_map_delete(em->fd, keys + i * em->m->key_size);	/* ENOENT: gone already */
	free(keys);
	ktap_table_reset(e->vm, em->table);
}

/* The drop counts, summed over the CPUs (zeros without a drops map). */
static uint64_t *read_drops(struct ebpf_sess *e)
{
	static uint64_t sums[KTAP_NUM_DROPS];
	int d = e->role[KTAP_BPF_DROPS];
	uint32_t i, zero = 0;
	unsigned char *v;

	memset(sums, 0, sizeof(sums));
	if (d < 0)
		return sums;
	v = xcalloc(1, value_bytes(e, e->maps[d].m));
	if (bpf_map_lookup(e->maps[d].fd, &zero, v) == 0)
		for (i = 0; i < KTAP_NUM_DROPS; i++)
			sums[i] = sum_cpus(e, e->maps[d].m, v, 8 * i);
	free(v);
	return sums;
}

/* zero(t) in the map: every CPU's copy of every value keeps its stamp and
 * nothing else. What programs added since the CALL record was written is
 * zeroed too (docs/ebpf.md, "Where the backends differ"). */
void ebpf_zero_table(struct ebpf_sess *e, const struct ebpf_map *em)
{
	const struct ktap_bpf_map *m = em->m;
	size_t n, i, c, copies = is_percpu(m) ? e->env.ncpus : 1;
	size_t each = is_percpu(m) ? stride(m) : m->value_size;	/* one copy */
	unsigned char *keys = walk_keys(em, &n), *val = xmalloc(value_bytes(e, m));

	for (i = 0; i < n; i++) {
		const unsigned char *key = keys + i * m->key_size;

		if (bpf_map_lookup(em->fd, key, val) < 0)
			continue;
		for (c = 0; c < copies; c++)
			memset(val + c * each + SEQ_BYTES, 0, each - SEQ_BYTES);
		bpf_map_update(em->fd, key, val);	/* deleted meanwhile: back, zeroed */
	}
	free(keys);
	free(val);
}

int ebpf_read_back(struct ebpf_sess *e, uint64_t lost)
{
	uint64_t n, *drops;
	uint32_t i;

	for (i = 0; i < e->img->nmaps; i++) {
		const struct ebpf_map *em = &e->maps[i];

		if (em->m->role == KTAP_BPF_GLOBALS || em->m->role == KTAP_BPF_COUNTERS)
			read_globals(e, em);
		else if (em->m->role == KTAP_BPF_TABLE && em->table)
			ebpf_pull_table(e, em);
	}
	/* A record the ring had no room for fails bpf_perf_event_output(), which
	 * the program counts, and is also a sample the kernel reports lost: the
	 * larger count has them all (a program that counts nothing leaves the
	 * kernel's). */
	drops = read_drops(e);
	for (i = 0; i < KTAP_NUM_DROPS; i++) {
		n = drops[i];
		if (i == KTAP_DROP_OUTPUT_FULL && lost > n)
			n = lost;
		ktap_add_drops(e->vm, (int)i, n);
	}
	return 0;
}
