/* ktap_record.c - output records (layout in docs/kmod.md, codes in the
 * generated ktap_records.h): a bounded buffer of binary records in the
 * target's byte order, unaligned; formatting happens in user space. */
#include "ktap_record.h"
#include "ktap_table.h"
#include "ktap_bytes.h"

static void put(struct ktap_session *s, const void *p, size_t n)
{
	if (s->out_overflow || n > s->out_cap - s->out_len) {
		s->out_overflow = 1;
		return;
	}
	memcpy(s->out + s->out_len, p, n);
	s->out_len += n;
}

static void put_int(struct ktap_session *s, uint64_t v, unsigned n)
{
	unsigned char b[8];

	ktap_put_uint(b, v, n);
	put(s, b, n);
}

static void put_u8(struct ktap_session *s, uint8_t v) { put(s, &v, 1); }
void ktap_put_u32(struct ktap_session *s, uint32_t v) { put_int(s, v, 4); }
void ktap_put_i64(struct ktap_session *s, int64_t v) { put_int(s, (uint64_t)v, 8); }

static void put_text(struct ktap_session *s, const char *p, uint32_t len)
{
	ktap_put_u32(s, len);
	put(s, p, len);
}

/* count, sum, min, max, then the non-empty log2 and linear buckets */
static void put_agg(struct ktap_session *s, const struct ktap_agg *a)
{
	const struct ktap_table *t = a->t;
	struct ktap_shard m = ktap_agg_merged(a);
	uint32_t i, n = 0;

	ktap_put_i64(s, m.count);
	ktap_put_i64(s, m.sum);
	ktap_put_i64(s, m.min);
	ktap_put_i64(s, m.max);
	for (i = 0; t->log2 && i < KTAP_LOG2_BUCKETS; i++)
		n += ktap_agg_bucket(a, 0, i) != 0;
	ktap_put_u32(s, n);
	for (i = 0; t->log2 && i < KTAP_LOG2_BUCKETS; i++) {
		uint64_t k = ktap_agg_bucket(a, 0, i);

		if (k) {
			ktap_put_i64(s, ktap_log2_value(i));
			ktap_put_i64(s, (int64_t)k);
		}
	}
	for (n = 0, i = 0; t->linear && i < t->nlinear; i++)
		n += ktap_agg_bucket(a, 1, i) != 0;
	ktap_put_u32(s, n);
	for (i = 0; t->linear && i < t->nlinear; i++) {
		uint64_t k = ktap_agg_bucket(a, 1, i);

		if (k) {
			ktap_put_i64(s, (int64_t)i - 1);	/* -1 is "below lmin" as in values.py */
			ktap_put_i64(s, (int64_t)k);
		}
	}
}

static void put_value(struct ktap_session *s, struct ktap_value v)
{
	uint32_t i;
	int64_t ns;

	switch (v.t) {
	case KTAP_T_NIL:
		put_u8(s, KTAP_VAL_NIL);
		break;
	case KTAP_T_BOOL:
		put_u8(s, v.u.n ? KTAP_VAL_TRUE : KTAP_VAL_FALSE);
		break;
	case KTAP_T_NUM:
		put_u8(s, KTAP_VAL_NUM);
		ktap_put_i64(s, v.u.n);
		break;
	case KTAP_T_STR:
		put_u8(s, KTAP_VAL_STR);
		put_text(s, str_bytes(v.u.s), v.u.s->len);
		break;
	case KTAP_T_STACK:
		put_u8(s, KTAP_VAL_STACK);
		ktap_put_u32(s, v.u.s->len);
		for (i = 0; i < v.u.s->len; i++)
			ktap_put_i64(s, (int64_t)v.u.s->data[i]);
		break;
	case KTAP_T_TIME:	/* 8 bytes of nanoseconds, then the format */
		put_u8(s, KTAP_VAL_TIME);
		memcpy(&ns, v.u.s->data, 8);
		ktap_put_i64(s, ns);
		put_text(s, str_bytes(v.u.s) + 8, v.u.s->len - 8);
		break;
	case KTAP_T_TABLE:
		put_u8(s, KTAP_VAL_TABLE);
		ktap_put_u32(s, v.u.tab->desc_index);
		break;
	case KTAP_T_AGG:
		put_u8(s, KTAP_VAL_AGG);
		put_agg(s, v.u.agg);
		break;
	}
}

size_t ktap_rec_begin(struct ktap_session *s, uint8_t kind)
{
	size_t at = s->out_len;

	s->out_overflow = 0;
	ktap_put_u32(s, 0);		/* size, patched by ktap_rec_end */
	put_u8(s, kind);
	return at;
}

void ktap_rec_end(struct ktap_session *s, size_t at)
{
	size_t len = s->out_len - at, end = s->out_len;

	if (s->out_overflow) {
		s->out_len = at;
		s->out_overflow = 0;
		s->drops[KTAP_DROP_OUTPUT_FULL]++;
		return;
	}
	s->out_len = at;
	ktap_put_u32(s, (uint32_t)len);
	s->out_len = end;
}

void ktap_put_values(struct ktap_session *s, const struct ktap_value *v, uint32_t n)
{
	uint32_t i;

	ktap_put_u32(s, n);
	for (i = 0; i < n; i++)
		put_value(s, v[i]);
}

void ktap_put_entries(struct ktap_session *s, const struct ktap_table *t)
{
	uint32_t i;

	ktap_put_u32(s, t->count);
	for (i = 0; i < t->used; i++)
		if (t->e[i].live) {
			put_value(s, t->e[i].key);
			put_value(s, t->e[i].val);
		}
}

/* The state byte is how the session stopped. */
_Static_assert((int)KTAP_RUN_OK == (int)KTAP_STATUS_RAN &&
	       (int)KTAP_RUN_EXIT == (int)KTAP_STATUS_EXIT &&
	       (int)KTAP_RUN_ERROR == (int)KTAP_STATUS_ERROR, "enum ktap_run is the STATUS state");

void ktap_put_status(struct ktap_session *s)
{
	size_t at = ktap_rec_begin(s, KTAP_REC_STATUS);
	int i, n = 0;

	ktap_put_i64(s, s->exit_code);
	put_u8(s, (uint8_t)s->stopped);
	ktap_put_u32(s, s->err_line);
	ktap_put_u32(s, s->err_col);
	ktap_put_u32(s, s->err_proto);
	put_text(s, s->errmsg, (uint32_t)strlen(s->errmsg));
	for (i = 0; i < KTAP_NUM_DROPS; i++)
		n += s->drops[i] != 0;
	ktap_put_u32(s, (uint32_t)n);
	for (i = 0; i < KTAP_NUM_DROPS; i++)
		if (s->drops[i]) {
			put_text(s, ktap_drop_names[i], (uint32_t)strlen(ktap_drop_names[i]));
			ktap_put_i64(s, (int64_t)s->drops[i]);
		}
	ktap_rec_end(s, at);
}
