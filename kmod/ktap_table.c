/* ktap_table.c - tables and aggregates, with the semantics of values.Table
 * and values.Agg: a power-of-two bucket array over a fixed pool of entries, a
 * LIFO free list and an insertion-order list, so `pairs` order and slot reuse
 * equal the reference VM's. Aggregates keep one shard per CPU. */
#include "ktap_table.h"

/* Upper bound of one table array (entries, shards, bucket rows): below
 * kvmalloc's INT_MAX, which it refuses with a warning. */
#define TABLE_ARRAY_MAX_BYTES (1UL << 30)

static uint64_t linear_count(const struct ktap_tdesc *d)
{
	uint64_t span = (uint64_t)d->lmax - (uint64_t)d->lmin;

	return ktap_div_u64(span, d->lstep) + (ktap_mod_u64(span, d->lstep) != 0);
}

void ktap_table_free(struct ktap_table *t)
{
	ktap_free(t->heads);
	ktap_free(t->free);
	ktap_free(t->e);
	ktap_free(t->shards);
	ktap_free(t->log2);
	ktap_free(t->linear);
	ktap_free(t);
}

/* n * m * size bytes, zeroed. NULL when the product overflows size_t (32 bits
 * on arm, mips and powerpc: table_entries, CPUs and histogram buckets
 * multiply) or passes TABLE_ARRAY_MAX_BYTES, so NEWTABLE fails cleanly. */
static void *zalloc_array(size_t n, size_t m, size_t size)
{
	size_t nm, bytes;

	if (__builtin_mul_overflow(n, m, &nm) || __builtin_mul_overflow(nm, size, &bytes) ||
	    bytes > TABLE_ARRAY_MAX_BYTES)
		return NULL;
	return ktap_zalloc(bytes);
}

struct ktap_table *ktap_table_new(struct ktap_session *s, uint32_t desc_index)
{
	const struct ktap_tdesc *d = &s->img->tables[desc_index];
	uint32_t n = (uint32_t)s->limits[KTAP_LIMIT_TABLE_ENTRIES], nb = 1, i;
	struct ktap_table *t = NULL;

	if (s->ntables >= KTAP_MAX_TABLES || !(t = ktap_zalloc(sizeof(*t))))
		return NULL;
	while (nb < n)
		nb <<= 1;
	t->desc_index = desc_index;
	t->desc = d;
	t->limit = n;
	t->mask = nb - 1;
	t->heads = zalloc_array(nb, 1, sizeof(*t->heads));
	t->free = zalloc_array(n, 1, sizeof(*t->free));
	t->e = zalloc_array(n, 1, sizeof(*t->e));
	t->ncpus = s->ncpus;
	t->shards = zalloc_array(t->ncpus, n, sizeof(*t->shards));
	if (d->flags & KTAP_TABLE_LOG2)
		t->log2 = zalloc_array(t->ncpus, n, KTAP_LOG2_BUCKETS * sizeof(uint64_t));
	if (d->flags & KTAP_TABLE_LINEAR) {
		t->nlinear = (uint32_t)linear_count(d) + 2;
		t->linear = zalloc_array((size_t)t->ncpus * t->nlinear, n, sizeof(uint64_t));
	}
	if (!t->heads || !t->free || !t->e || !t->shards ||
	    ((d->flags & KTAP_TABLE_LOG2) && !t->log2) ||
	    ((d->flags & KTAP_TABLE_LINEAR) && !t->linear)) {
		ktap_table_free(t);
		return NULL;
	}
	for (i = 0; i < nb; i++)
		t->heads[i] = -1;
	t->oldest = t->newest = -1;
	for (i = 0; i < n; i++) {
		t->e[i].agg.t = t;
		t->e[i].agg.slot = i;
	}
	t->all_next = s->tables;
	s->tables = t;
	s->ntables++;
	return t;
}

int32_t ktap_table_slot(struct ktap_table *t, struct ktap_value k)
{
	int32_t i = table_find(t, k);
	uint32_t h;

	if (i >= 0)
		return i;
	if (t->count >= t->limit)
		return -1;
	i = t->nfree ? (int32_t)t->free[--t->nfree] : (int32_t)t->used++;
	h = key_hash(k) & t->mask;
	t->e[i].key = k;
	t->e[i].val = NIL;
	t->e[i].live = 1;
	t->e[i].next = t->heads[h];
	t->heads[h] = i;
	t->e[i].older = t->newest;
	t->e[i].newer = -1;
	if (t->newest >= 0)
		t->e[t->newest].newer = i;
	else
		t->oldest = i;
	t->newest = i;
	t->count++;
	ref(k);
	return i;
}

void ktap_table_delete(struct ktap_session *s, struct ktap_table *t, struct ktap_value k)
{
	int32_t i = table_find(t, k), *pp;
	struct ktap_entry *e;

	if (i < 0)
		return;
	e = &t->e[i];
	for (pp = &t->heads[key_hash(k) & t->mask]; *pp != i; pp = &t->e[*pp].next)
		;
	*pp = e->next;
	if (e->older >= 0)
		t->e[e->older].newer = e->newer;
	else
		t->oldest = e->newer;
	if (e->newer >= 0)
		t->e[e->newer].older = e->older;
	else
		t->newest = e->older;
	unref(s, e->key);
	unref(s, e->val);
	e->live = 0;
	e->key = e->val = NIL;
	t->free[t->nfree++] = (uint32_t)i;
	t->count--;
}

void ktap_table_clear(struct ktap_session *s, struct ktap_table *t)
{
	/* values.Table.clear deletes in key insertion order, which decides the
	 * free list and so the slots later keys get: keep that order exactly. */
	while (t->oldest >= 0)
		ktap_table_delete(s, t, t->e[t->oldest].key);
}

int ktap_table_set(struct ktap_session *s, struct ktap_table *t, struct ktap_value k,
		   struct ktap_value v)
{
	int32_t i;

	if (v.t == KTAP_T_NIL) {
		ktap_table_delete(s, t, k);
		return 0;
	}
	i = ktap_table_slot(t, k);
	if (i < 0)
		return -1;
	ref(v);
	unref(s, t->e[i].val);
	t->e[i].val = v;
	return 0;
}

/* -- aggregates ------------------------------------------------------------------ */
int64_t ktap_log2_value(int i)
{
	if (i == 64)
		return 0;
	return i > 64 ? (int64_t)(1ULL << (i - 65)) : (int64_t)(0 - (1ULL << (63 - i)));
}

void ktap_agg_reset(struct ktap_table *t, uint32_t slot)
{
	uint32_t c;

	for (c = 0; c < t->ncpus; c++) {
		memset(shard_of(t, c, slot), 0, sizeof(struct ktap_shard));
		if (t->log2)
			memset(log2_row(t, c, slot), 0, KTAP_LOG2_BUCKETS * sizeof(uint64_t));
		if (t->linear)
			memset(linear_row(t, c, slot), 0, t->nlinear * sizeof(uint64_t));
	}
}

/* Sums wrap like values.Agg's, so the order of the shards does not matter. */
struct ktap_shard ktap_agg_merged(const struct ktap_agg *a)
{
	struct ktap_shard m = { 0, 0, 0, 0 };
	uint32_t c;

	for (c = 0; c < a->t->ncpus; c++) {
		const struct ktap_shard *g = shard_of(a->t, c, a->slot);

		if (!g->count)
			continue;
		if (m.count == 0 || g->min < m.min)
			m.min = g->min;
		if (m.count == 0 || g->max > m.max)
			m.max = g->max;
		m.count += g->count;
		m.sum = wrap_add(m.sum, g->sum);
	}
	return m;
}

uint64_t ktap_agg_bucket(const struct ktap_agg *a, int linear, uint32_t b)
{
	uint64_t n = 0;
	uint32_t c;

	for (c = 0; c < a->t->ncpus; c++)
		n += linear ? linear_row(a->t, c, a->slot)[b] : log2_row(a->t, c, a->slot)[b];
	return n;
}
