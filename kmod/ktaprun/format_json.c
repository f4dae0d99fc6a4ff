/* format_json.c - output records as JSON lines (--format json,
 * docs/output.md): the same bytes as toolchain/ktap/refvm/jsonout.py.
 * Strings keep valid UTF-8 as it is; any other byte becomes \u00XX, as the
 * host's decoders turn it into a surrogate escape. */
#include <stdlib.h>
#include <string.h>

#include "ktaprun.h"

static const char *const state_names[] = { "ran", "exit", "error" };

static void json_str(struct sb *o, const unsigned char *p, size_t n)
{
	size_t i = 0, len;

	sb_putc(o, '"');
	while (i < n) {
		unsigned char c = p[i];

		if (c == '"' || c == '\\') {
			sb_putc(o, '\\');
			sb_putc(o, (char)c);
		} else if (c == '\n') {
			sb_puts(o, "\\n");
		} else if (c == '\r') {
			sb_puts(o, "\\r");
		} else if (c == '\t') {
			sb_puts(o, "\\t");
		} else if (c == '\b') {
			sb_puts(o, "\\b");
		} else if (c == '\f') {
			sb_puts(o, "\\f");
		} else if (c < 0x80) {
			if (c < 0x20)
				sb_printf(o, "\\u%04x", c);
			else
				sb_putc(o, (char)c);
		} else if ((len = utf8_step(p, n, i)) > 1) {
			sb_put(o, (const char *)p + i, len);
			i += len;
			continue;
		} else {
			sb_printf(o, "\\u%04x", c);
		}
		i++;
	}
	sb_putc(o, '"');
}

struct pair {
	int64_t bucket, count;
};

static int by_bucket(const void *a, const void *b)
{
	const struct pair *x = a, *y = b;

	return (x->bucket > y->bucket) - (x->bucket < y->bucket);
}

/* (bucket, count) pairs with a count, by bucket: [[b,c],...] */
static void pairs(struct sb *o, const unsigned char *raw, uint32_t n)
{
	struct pair *v = xmalloc(sizeof(*v) * (n ? n : 1));
	uint32_t i, k = 0;

	for (i = 0; i < n; i++) {
		v[k].bucket = rd_i64(raw + 16 * i);
		v[k].count = rd_i64(raw + 16 * i + 8);
		k += v[k].count != 0;
	}
	qsort(v, k, sizeof(*v), by_bucket);
	sb_putc(o, '[');
	for (i = 0; i < k; i++)
		sb_printf(o, "%s[%lld,%lld]", i ? "," : "", (long long)v[i].bucket,
			  (long long)v[i].count);
	sb_putc(o, ']');
	free(v);
}

static void value(const struct formatter *f, const struct kval *v, struct sb *o)
{
	struct sb frame = { 0 };
	uint32_t i;

	switch (v->tag) {
	case KTAP_VAL_NIL: sb_puts(o, "null"); break;
	case KTAP_VAL_FALSE: sb_puts(o, "false"); break;
	case KTAP_VAL_TRUE: sb_puts(o, "true"); break;
	case KTAP_VAL_NUM: sb_printf(o, "%lld", (long long)v->n); break;
	case KTAP_VAL_STR: json_str(o, v->p, v->len); break;
	case KTAP_VAL_TIME:
		frame.len = 0;
		format_time(v, &frame);
		json_str(o, (const unsigned char *)frame.b, frame.len);
		break;
	case KTAP_VAL_STACK:
		sb_putc(o, '[');
		for (i = 0; i < v->len; i++) {
			frame.len = 0;
			format_frame(f, (uint64_t)rd_i64(v->p + 8 * i), &frame);
			if (i)
				sb_putc(o, ',');
			json_str(o, (const unsigned char *)frame.b, frame.len);
		}
		sb_putc(o, ']');
		sb_free(&frame);
		break;
	case KTAP_VAL_AGG:
		sb_printf(o, "{\"count\":%lld,\"sum\":%lld,\"min\":%lld,\"max\":%lld,\"avg\":%lld,"
			  "\"log2\":", (long long)v->count, (long long)v->sum, (long long)v->min,
			  (long long)v->max, (long long)kval_avg(v));
		pairs(o, v->log2, v->nlog2);
		sb_puts(o, ",\"linear\":");
		pairs(o, v->lin, v->nlin);
		sb_putc(o, '}');
		break;
	default: sb_puts(o, "{\"table\":true}"); break;
	}
}

static void entries(const struct formatter *f, const struct krec *r, struct sb *o)
{
	uint32_t i;

	sb_puts(o, "\"entries\":[");
	for (i = 0; i + 1 < r->nvals; i += 2) {
		sb_puts(o, i ? ",{\"key\":" : "{\"key\":");
		value(f, &r->vals[i], o);
		sb_puts(o, ",\"value\":");
		value(f, &r->vals[i + 1], o);
		sb_putc(o, '}');
	}
	sb_puts(o, "]}\n");
}

void format_record_json(const struct formatter *f, const struct krec *r, struct sb *o)
{
	struct sb text = { 0 };
	uint32_t i;

	switch (r->kind) {
	case KTAP_REC_PRINTF:
		format_printf(f, r, &text);
		sb_puts(o, "{\"type\":\"printf\",\"text\":");
		json_str(o, (const unsigned char *)text.b, text.len);
		sb_puts(o, "}\n");
		sb_free(&text);
		break;
	case KTAP_REC_PRINT:
		sb_puts(o, "{\"type\":\"print\",\"values\":[");
		for (i = 0; i < r->nvals; i++) {
			if (i)
				sb_putc(o, ',');
			value(f, &r->vals[i], o);
		}
		sb_puts(o, "]}\n");
		break;
	case KTAP_REC_DUMP:
		sb_puts(o, "{\"type\":\"table\",");
		entries(f, r, o);
		break;
	case KTAP_REC_HIST:
		sb_puts(o, "{\"type\":\"hist\",");
		entries(f, r, o);
		break;
	case KTAP_REC_LHIST:
		if (r->index >= f->img->ntables)
			return;
		sb_printf(o, "{\"type\":\"lhist\",\"min\":%lld,\"max\":%lld,\"step\":%lld,",
			  (long long)f->img->tables[r->index].lmin,
			  (long long)f->img->tables[r->index].lmax,
			  (long long)f->img->tables[r->index].lstep);
		entries(f, r, o);
		break;
	case KTAP_REC_PRINT_HIST:
		sb_printf(o, "{\"type\":\"print_hist\",\"n\":%lld,", (long long)r->n);
		entries(f, r, o);
		break;
	}
}

void format_status_json(const struct kstatus *st, struct sb *o)
{
	struct drop *d = status_drops(st);
	uint32_t i;

	sb_printf(o, "{\"type\":\"status\",\"state\":\"%s\",\"exit_code\":%lld,\"drops\":{",
		  st->state < 3 ? state_names[st->state] : "error", (long long)st->exit_code);
	for (i = 0; i < st->ndrops; i++) {
		if (i)
			sb_putc(o, ',');
		json_str(o, d[i].reason, d[i].len);
		sb_printf(o, ":%lld", (long long)d[i].count);
	}
	sb_putc(o, '}');
	if (st->state == KTAP_STATUS_ERROR) {
		sb_puts(o, ",\"error\":{\"message\":");
		json_str(o, st->msg, st->msglen);
		sb_printf(o, ",\"line\":%u,\"col\":%u}", st->line, st->col);
	}
	sb_puts(o, "}\n");
	free(d);
}
