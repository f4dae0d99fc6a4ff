/* ktap_string.c - the string pool: strings and stacks interned in fixed-size
 * slots, so equal values share one slot and compare by address, and a handler
 * never allocates. Tables and globals hold references; a temporary nothing
 * references is returned to the pool when the handler ends. */
#include "ktap_string.h"

/* String slots for temporaries a handler makes, beyond what tables can hold. */
#define STR_SCRATCH_SLOTS 1024
/* Upper bound of the string pool, whatever the limits ask for. */
#define STR_POOL_MAX_BYTES (64UL << 20)

static uint32_t hash_bytes(const void *p, size_t n, uint8_t kind)
{
	const unsigned char *b = p;
	uint32_t h = 2166136261u ^ kind;

	while (n--)
		h = (h ^ *b++) * 16777619u;
	return h;
}

static struct ktap_str *str_slot(struct ktap_session *s, size_t i)
{
	return (struct ktap_str *)(s->str_mem + i * s->str_slot);
}

struct ktap_str *ktap_str_intern(struct ktap_session *s, uint8_t kind, const void *p,
				 uint32_t len)
{
	size_t bytes = kind == KTAP_T_STACK ? (size_t)len * 8 : len;
	uint32_t h = hash_bytes(p, bytes, kind);
	struct ktap_str **head = &s->intern[h & s->intern_mask], *x;

	for (x = *head; x; x = x->chain)
		if (x->hash == h && x->kind == kind && x->len == len &&
		    (bytes == 0 || !memcmp(x->data, p, bytes)))
			return x;
	x = s->str_free;
	if (!x)
		return NULL;
	s->str_free = x->chain;
	x->hash = h;
	x->kind = kind;
	x->len = len;
	x->refs = 0;
	x->on_young = 0;
	if (bytes)		/* an empty stack has no source pointer at all */
		memcpy(x->data, p, bytes);
	if (kind == KTAP_T_STR)
		str_bytes(x)[len] = 0;
	x->chain = *head;
	*head = x;
	young_push(s, x);
	return x;
}

static void unintern(struct ktap_session *s, struct ktap_str *x)
{
	struct ktap_str **pp = &s->intern[x->hash & s->intern_mask];

	while (*pp != x)
		pp = &(*pp)->chain;
	*pp = x->chain;
	x->chain = s->str_free;
	s->str_free = x;
}

void ktap_str_sweep(struct ktap_session *s)
{
	struct ktap_str *x = s->young, *next;

	for (; x; x = next) {
		next = x->young;
		x->on_young = 0;
		if (!x->refs)
			unintern(s, x);
	}
	s->young = NULL;
}

int ktap_str_make(struct ktap_session *s, const char *p, size_t len, struct ktap_value *out)
{
	struct ktap_str *x;

	if (len > (size_t)s->limits[KTAP_LIMIT_STRING_SIZE])
		len = (size_t)s->limits[KTAP_LIMIT_STRING_SIZE];
	x = ktap_str_intern(s, KTAP_T_STR, p, (uint32_t)len);
	if (!x)
		return drop(s, KTAP_DROP_STRINGS_FULL);
	out->t = KTAP_T_STR;
	out->u.s = x;
	return KTAP_RUN_OK;
}

/* Slots: what tables can keep (two strings an entry, for the tables the setup
 * chunk can create), the globals and constants, plus room for temporaries. */
static size_t string_slots(const struct ktap_image *img, const int64_t *limits)
{
	size_t sites = 0, n = STR_SCRATCH_SLOTS + img->nglobals;
	uint32_t i, pc;

	for (i = 0; i < img->nprotos; i++) {
		const struct ktap_proto *p = &img->protos[i];

		n += p->nconsts;
		for (pc = 0; pc < p->ncode; pc += (p->code[pc] & 0xFF) == KTAP_OP_LOADI64 ? 3 : 1)
			sites += (p->code[pc] & 0xFF) == KTAP_OP_NEWTABLE;
	}
	return n + sites * 2 * (size_t)limits[KTAP_LIMIT_TABLE_ENTRIES];
}

int ktap_str_pool_new(struct ktap_session *s)
{
	size_t payload = (size_t)s->limits[KTAP_LIMIT_STRING_SIZE] + 1, n, i, nb = 1;

	if (payload < 8 * KTAP_STACK_MAX_DEPTH)
		payload = 8 * KTAP_STACK_MAX_DEPTH;
	s->str_slot = (sizeof(struct ktap_str) + payload + 7) & ~(size_t)7;
	n = string_slots(s->img, s->limits);
	if (n > STR_POOL_MAX_BYTES / s->str_slot)
		n = STR_POOL_MAX_BYTES / s->str_slot;
	while (nb < n)
		nb <<= 1;
	s->str_mem = ktap_zalloc(n * s->str_slot);
	s->intern = ktap_zalloc(nb * sizeof(*s->intern));
	if (!s->str_mem || !s->intern)
		return -1;
	s->intern_mask = (uint32_t)(nb - 1);
	for (i = n; i-- > 0;) {
		str_slot(s, i)->chain = s->str_free;
		s->str_free = str_slot(s, i);
	}
	return 0;
}
