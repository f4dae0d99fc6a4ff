/* records.c - decodes the module's output records (docs/kmod.md).
 *
 * Integers are in the target's byte order, nothing is aligned: this build's
 * target (ktap_bytes.h), assembled byte by byte, so a host build for a
 * big-endian target decodes that target's records correctly. Every read is
 * bounds-checked: a record from a buggy module must not crash the runner. */
#include <stdlib.h>
#include <string.h>

#include "ktaprun.h"
#include "ktap_bytes.h"

int64_t rd_i64(const unsigned char *p) { return (int64_t)ktap_get_uint(p, 8); }
uint32_t rd_u32(const unsigned char *p) { return (uint32_t)ktap_get_uint(p, 4); }

uint32_t record_size(const unsigned char *p, size_t avail)
{
	return avail >= 5 ? rd_u32(p) : 0;
}

static uint8_t cu8(struct ktap_cursor *c) { return (uint8_t)ktap_take_uint(c, 1); }
static uint32_t cu32(struct ktap_cursor *c) { return (uint32_t)ktap_take_uint(c, 4); }
static int64_t ci64(struct ktap_cursor *c) { return (int64_t)ktap_take_uint(c, 8); }

/* A count of items of at least `min_size` bytes each, checked against the
 * bytes left so a corrupt count never drives a huge allocation. */
static uint32_t count(struct ktap_cursor *c, uint32_t min_size)
{
	uint32_t n = cu32(c);

	if (!c->bad && (uint64_t)n * min_size > c->end - c->pos)
		c->bad = 1;
	return c->bad ? 0 : n;
}

/* (i64, i64) pairs stay in the buffer; the formatter reads them with rd_i64. */
static const unsigned char *pairs(struct ktap_cursor *c, uint32_t *n)
{
	*n = count(c, 16);
	return ktap_take(c, (uint64_t)*n * 16);
}

static void value(struct ktap_cursor *c, struct kval *v)
{
	memset(v, 0, sizeof(*v));
	v->tag = cu8(c);
	switch (v->tag) {
	case KTAP_VAL_NIL: case KTAP_VAL_FALSE: case KTAP_VAL_TRUE:
		break;
	case KTAP_VAL_NUM:
		v->n = ci64(c);
		break;
	case KTAP_VAL_STR:
		v->len = count(c, 1);
		v->p = ktap_take(c, v->len);
		break;
	case KTAP_VAL_TABLE:
		v->n = cu32(c);
		break;
	case KTAP_VAL_STACK:
		v->len = count(c, 8);
		v->p = ktap_take(c, (uint64_t)v->len * 8);
		break;
	case KTAP_VAL_TIME:		/* n: nanoseconds; p, len: the format */
		v->n = ci64(c);
		v->len = count(c, 1);
		v->p = ktap_take(c, v->len);
		break;
	case KTAP_VAL_AGG:
		v->count = ci64(c);
		v->sum = ci64(c);
		v->min = ci64(c);
		v->max = ci64(c);
		v->log2 = pairs(c, &v->nlog2);
		v->lin = pairs(c, &v->nlin);
		break;
	default:
		c->bad = 1;
	}
}

/* n values (per_item 1) or n key/value entries (per_item 2). */
static void values(struct ktap_cursor *c, struct krec *r, uint32_t per_item)
{
	uint32_t n = count(c, per_item), i;

	r->nvals = n * per_item;
	r->vals = calloc(r->nvals ? r->nvals : 1, sizeof(*r->vals));
	if (!r->vals) {
		c->bad = 1;
		r->nvals = 0;
		return;
	}
	for (i = 0; i < r->nvals && !c->bad; i++)
		value(c, &r->vals[i]);
}

static void status(struct ktap_cursor *c, struct kstatus *st)
{
	uint32_t i, len;

	st->exit_code = ci64(c);
	st->state = cu8(c);
	st->line = cu32(c);
	st->col = cu32(c);
	st->func = cu32(c);
	st->msglen = count(c, 1);
	st->msg = ktap_take(c, st->msglen);
	st->ndrops = count(c, 12);
	st->drops = c->p + c->pos;
	for (i = 0; i < st->ndrops && !c->bad; i++) {
		len = cu32(c);
		ktap_take(c, len);
		ci64(c);
	}
}

int record_decode(const unsigned char *p, uint32_t size, struct krec *rec)
{
	struct ktap_cursor c = { p, 0, size, 0 };

	memset(rec, 0, sizeof(*rec));
	if (cu32(&c) != size)
		return -1;
	rec->kind = cu8(&c);
	switch (rec->kind) {
	case KTAP_REC_PRINTF:
		rec->index = cu32(&c);
		values(&c, rec, 1);
		break;
	case KTAP_REC_PRINT:
		values(&c, rec, 1);
		break;
	case KTAP_REC_DUMP:
		values(&c, rec, 2);
		break;
	case KTAP_REC_PRINT_HIST:
		rec->n = ci64(&c);
		values(&c, rec, 2);
		break;
	case KTAP_REC_HIST: case KTAP_REC_LHIST:
		rec->index = cu32(&c);
		values(&c, rec, 2);
		break;
	case KTAP_REC_STATUS:
		status(&c, &rec->status);
		break;
	case KTAP_REC_CALL:
		rec->n = cu8(&c);
		rec->index = cu32(&c);
		values(&c, rec, 1);
		break;
	default:
		return -1;
	}
	if (c.bad || c.pos != size) {
		record_free(rec);
		return -1;
	}
	return 0;
}

void record_free(struct krec *rec)
{
	free(rec->vals);
	rec->vals = NULL;
	rec->nvals = 0;
}
