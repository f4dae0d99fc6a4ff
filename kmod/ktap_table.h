/* ktap_table.h - tables and aggregates (ktap_table.c).
 *
 * Lookups and feeding an aggregate are inline: they are the interpreter's
 * hot paths (`t[k] += 1`, `h[k] <<< v`). */
#ifndef KTAP_TABLE_H
#define KTAP_TABLE_H

#include "ktap_object.h"

/* NEWTABLE: process context only (setup chunk), so allocating is allowed here. */
struct ktap_table *ktap_table_new(struct ktap_session *s, uint32_t desc_index);
void ktap_table_free(struct ktap_table *t);
/* The slot of key k, created if missing: values.Table._slot_for. -1 when full. */
int32_t ktap_table_slot(struct ktap_table *t, struct ktap_value k);
void ktap_table_delete(struct ktap_session *s, struct ktap_table *t, struct ktap_value k);
void ktap_table_clear(struct ktap_session *s, struct ktap_table *t);
/* store(): nil deletes. Returns 0, or -1 when the table is full. */
int ktap_table_set(struct ktap_session *s, struct ktap_table *t, struct ktap_value k,
		   struct ktap_value v);

/* A new aggregate entry: every CPU's shard starts empty. */
void ktap_agg_reset(struct ktap_table *t, uint32_t slot);
/* The shards of an aggregate merged: what every read sees. */
struct ktap_shard ktap_agg_merged(const struct ktap_agg *a);
/* Bucket b of the log2 (linear = 0) or linear counts, summed over the CPUs. */
uint64_t ktap_agg_bucket(const struct ktap_agg *a, int linear, uint32_t b);
/* The value a log2 bucket index stands for. */
int64_t ktap_log2_value(int i);

static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

static inline uint32_t key_hash(struct ktap_value k)
{
	return k.t == KTAP_T_NUM ? (uint32_t)mix64((uint64_t)k.u.n) : k.u.s->hash;
}

/* Interned keys compare by address. */
static inline int key_eq(struct ktap_value a, struct ktap_value b)
{
	return a.t == b.t && (a.t == KTAP_T_NUM ? a.u.n == b.u.n : a.u.s == b.u.s);
}

static inline int32_t table_find(const struct ktap_table *t, struct ktap_value k)
{
	int32_t i;

	if (!valid_key(k))
		return -1;
	for (i = t->heads[key_hash(k) & t->mask]; i >= 0; i = t->e[i].next)
		if (key_eq(t->e[i].key, k))
			return i;
	return -1;
}

static inline struct ktap_value table_get(const struct ktap_table *t, struct ktap_value k)
{
	int32_t i = table_find(t, k);

	return i < 0 ? NIL : t->e[i].val;
}

static inline struct ktap_shard *shard_of(const struct ktap_table *t, uint32_t cpu,
					  uint32_t slot)
{
	return &t->shards[(size_t)cpu * t->limit + slot];
}

static inline uint64_t *log2_row(const struct ktap_table *t, uint32_t cpu, uint32_t slot)
{
	return t->log2 + ((size_t)cpu * t->limit + slot) * KTAP_LOG2_BUCKETS;
}

static inline uint64_t *linear_row(const struct ktap_table *t, uint32_t cpu, uint32_t slot)
{
	return t->linear + ((size_t)cpu * t->limit + slot) * t->nlinear;
}

static inline int log2_index(int64_t v)
{
	uint64_t mag;
	int k = 0;

	if (v == 0)
		return 64;
	mag = v > 0 ? (uint64_t)v : 0 - (uint64_t)v;
	while (mag >> (k + 1))
		k++;
	return v > 0 ? 65 + k : 63 - k;
}

/* values.Agg.feed into this CPU's shard, with the buckets the table's
 * descriptor asks for */
static inline void agg_feed(const struct ktap_agg *a, uint32_t cpu, int64_t v)
{
	const struct ktap_table *t = a->t;
	const struct ktap_tdesc *d = t->desc;
	struct ktap_shard *g = shard_of(t, cpu, a->slot);

	if (g->count == 0 || v < g->min)
		g->min = v;
	if (g->count == 0 || v > g->max)
		g->max = v;
	g->count++;
	g->sum = wrap_add(g->sum, v);
	if ((d->flags & KTAP_TABLE_LOG2) && t->log2)
		log2_row(t, cpu, a->slot)[log2_index(v)]++;
	if ((d->flags & KTAP_TABLE_LINEAR) && t->linear) {
		uint64_t i;

		if (v < d->lmin)
			i = 0;
		else if (v >= d->lmax)
			i = t->nlinear - 1;
		else
			i = ktap_div_u64((uint64_t)v - (uint64_t)d->lmin, d->lstep) + 1;
		linear_row(t, cpu, a->slot)[i]++;
	}
}

#endif
