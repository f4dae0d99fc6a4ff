/* format.c - output records to text, byte for byte what toolchain/ktap/refvm/output.py's
 * Formatter produces (the tests compare the two). Each function is named after
 * its Python counterpart; where Python semantics are not C's (arbitrary-size
 * integers, character counts of UTF-8 text, stable sorting) the comment says how
 * they are kept. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ktaprun.h"

#define BAR_WIDTH 40
#define HIST_HEADER "------------- Distribution -------------"
#define WORD_MASK (KTAP_WORD_SIZE == 8 ? ~0ULL : 0xFFFFFFFFULL)

static void tostring(const struct formatter *f, const struct kval *v, struct sb *o);

/* -- padding: Python's str.rjust/ljust count characters, not bytes ----------- */
static void pad_right_aligned(struct sb *o, const char *text, size_t n, size_t width)
{
	size_t chars = utf8_chars(text, n);

	if (chars < width)
		sb_fill(o, ' ', width - chars);
	sb_put(o, text, n);
}


/* -- scalar values ------------------------------------------------------- */
/* strftime(fmt, ns) values: strftime(3) in local time (TZ), whole seconds
 * rounded down, as the reference VM formats them. */
void format_time(const struct kval *v, struct sb *o)
{
	int64_t s = v->n / 1000000000 - (v->n % 1000000000 < 0);
	time_t t = (time_t)s;
	char *fmt = xstrndup((const char *)v->p, v->len), buf[512];
	struct tm tm;
	size_t n = 0;

	if (v->len && localtime_r(&t, &tm))
		n = strftime(buf, sizeof(buf), fmt, &tm);
	sb_put(o, buf, n);
	free(fmt);
}

void format_frame(const struct formatter *f, uint64_t addr, struct sb *o)
{
	if (f->syms && symtab_name(f->syms, addr, o))
		return;
	sb_printf(o, "0x%0*llx", KTAP_WORD_SIZE * 2, (unsigned long long)(addr & WORD_MASK));
}

/* Python's cdiv: truncating division. A zero count never reaches a record
 * (aggregates exist once fed); 0 keeps the runner alive if one did. */
int64_t kval_avg(const struct kval *v)
{
	if (v->count == 0 || (v->sum == INT64_MIN && v->count == -1))
		return v->count == 0 ? 0 : v->sum;
	return v->sum / v->count;
}

static void tostring(const struct formatter *f, const struct kval *v, struct sb *o)
{
	uint32_t i;

	switch (v->tag) {
	case KTAP_VAL_NIL: sb_puts(o, "nil"); break;
	case KTAP_VAL_FALSE: sb_puts(o, "false"); break;
	case KTAP_VAL_TRUE: sb_puts(o, "true"); break;
	case KTAP_VAL_NUM: sb_printf(o, "%lld", (long long)v->n); break;
	case KTAP_VAL_STR: sb_put(o, (const char *)v->p, v->len); break;
	case KTAP_VAL_STACK:
		for (i = 0; i < v->len; i++) {
			if (i)
				sb_putc(o, '\n');
			format_frame(f, (uint64_t)rd_i64(v->p + 8 * i), o);
		}
		break;
	case KTAP_VAL_TIME: format_time(v, o); break;
	case KTAP_VAL_AGG:
		sb_printf(o, "count=%lld sum=%lld min=%lld max=%lld avg=%lld",
			  (long long)v->count, (long long)v->sum, (long long)v->min,
			  (long long)v->max, (long long)kval_avg(v));
		break;
	default: sb_puts(o, "table"); break;
	}
}

/* -- printf ---------------------------------------------------------------- */
struct conv {
	char flags[8];		/* a set: each of "-+ #0" at most once */
	int width;		/* 0 when absent (Python: `c.width or 0`) */
	int precision;		/* -1 when absent */
	char conv;
};

static int has_flag(const struct conv *c, char flag)
{
	return strchr(c->flags, flag) != NULL;
}

/* Pads body = sign + text like Formatter.pad. */
static void pad(const struct conv *c, const char *sign, const char *text, size_t n,
		int numeric, struct sb *o)
{
	size_t slen = strlen(sign), width = (size_t)c->width;
	size_t chars = slen + utf8_chars(text, n);

	if (chars >= width) {
		sb_puts(o, sign);
		sb_put(o, text, n);
	} else if (has_flag(c, '-')) {
		sb_puts(o, sign);
		sb_put(o, text, n);
		sb_fill(o, ' ', width - chars);
	} else if (numeric && has_flag(c, '0') && c->precision < 0) {
		sb_puts(o, sign);
		sb_fill(o, '0', width - chars);
		sb_put(o, text, n);
	} else {
		sb_fill(o, ' ', width - chars);
		sb_puts(o, sign);
		sb_put(o, text, n);
	}
}

/* chr(v & 0xFF) written as UTF-8, as Python's stdout writes it. */
static void put_latin1(struct sb *o, unsigned c)
{
	if (c < 0x80) {
		sb_putc(o, (char)c);
		return;
	}
	sb_putc(o, (char)(0xC0 | c >> 6));
	sb_putc(o, (char)(0x80 | (c & 0x3F)));
}

static void convert_text(const struct formatter *f, const struct conv *c, const struct kval *v,
			 struct sb *o)
{
	struct sb t = { 0 };
	size_t n;

	if (c->conv == 'c' && v->tag == KTAP_VAL_NUM) {
		put_latin1(&t, (unsigned)(v->n & 0xFF));
	} else {
		tostring(f, v, &t);
	}
	n = t.len;
	if (c->conv == 's' && c->precision >= 0)
		n = utf8_prefix(t.b, t.len, (size_t)c->precision);
	pad(c, "", t.b ? t.b : "", n, 0, o);
	sb_free(&t);
}

/* Python's str(abs(v)) also for INT64_MIN: negate in unsigned arithmetic. */
static void digits_of(const struct conv *c, int64_t v, char *buf, size_t size, const char **sign)
{
	uint64_t u = (uint64_t)v;

	*sign = "";
	switch (c->conv) {
	case 'd': case 'i':
		snprintf(buf, size, "%llu", (unsigned long long)(v < 0 ? -u : u));
		*sign = v < 0 ? "-" : has_flag(c, '+') ? "+" : has_flag(c, ' ') ? " " : "";
		break;
	case 'u':
		snprintf(buf, size, "%llu", (unsigned long long)u);
		break;
	case 'x': case 'X':
		snprintf(buf, size, c->conv == 'x' ? "%llx" : "%llX", (unsigned long long)u);
		if (has_flag(c, '#') && u)
			*sign = c->conv == 'x' ? "0x" : "0X";
		break;
	case 'o':
		snprintf(buf, size, "%llo", (unsigned long long)u);
		if (has_flag(c, '#') && strcmp(buf, "0"))
			*sign = "0";
		break;
	default:	/* p */
		snprintf(buf, size, "%llx", (unsigned long long)(u & WORD_MASK));
		*sign = "0x";
	}
}

static void convert(const struct formatter *f, const struct conv *c, const struct kval *v,
		    struct sb *o)
{
	char digits[32];
	const char *sign;
	struct sb t = { 0 };
	size_t len;

	if (c->conv == 's' || c->conv == 'c' || v->tag != KTAP_VAL_NUM) {
		convert_text(f, c, v, o);
		return;
	}
	if (c->conv == 'p' && f->syms && symtab_name(f->syms, (uint64_t)v->n, &t)) {
		pad(c, "", t.b, t.len, 0, o);
		sb_free(&t);
		return;
	}
	digits_of(c, v->n, digits, sizeof(digits), &sign);
	len = strlen(digits);
	if (c->precision >= 0 && (size_t)c->precision > len) {
		sb_fill(&t, '0', (size_t)c->precision - len);
	}
	sb_put(&t, digits, len);
	pad(c, sign, t.b, t.len, 1, o);
	sb_free(&t);
}

static int parse_number(const char **p)
{
	int n = 0;

	while (**p >= '0' && **p <= '9')
		n = n * 10 + (*(*p)++ - '0');
	return n;
}

/* One conversion after '%' (printf.parse_format's regex); returns 0 if the
 * text is no conversion (the compiler and verifier never let one through). */
static int parse_conv(const char **p, const char *end, struct conv *c)
{
	const char *s = *p;
	size_t nf = 0;

	memset(c, 0, sizeof(*c));
	c->precision = -1;
	while (s < end && strchr("-+ #0", *s) && *s) {
		if (nf < sizeof(c->flags) - 1)
			c->flags[nf++] = *s;
		s++;
	}
	c->width = parse_number(&s);
	if (s < end && *s == '.') {
		s++;
		c->precision = parse_number(&s);
	}
	if (s >= end || !strchr("diuxXoscp", *s) || !*s)
		return 0;
	c->conv = *s++;
	*p = s;
	return 1;
}

void format_printf(const struct formatter *f, const struct krec *r, struct sb *o)
{
	static const struct kval nil = { KTAP_VAL_NIL };
	const struct ktap_kstr *fmt;
	const char *p, *end;
	struct conv c;
	uint32_t next = 0;

	if (r->index >= f->img->nformats)
		return;
	fmt = &f->img->formats[r->index];
	p = fmt->s;
	end = fmt->s + fmt->len;
	while (p < end) {
		if (*p != '%') {
			sb_putc(o, *p++);
		} else if (p + 1 < end && p[1] == '%') {
			sb_putc(o, '%');
			p += 2;
		} else if (p++, parse_conv(&p, end, &c)) {
			convert(f, &c, next < r->nvals ? &r->vals[next] : &nil, o);
			next++;
		} else {
			sb_putc(o, '%');
		}
	}
}

/* -- print and table dumps ------------------------------------------------- */
static void r_print(const struct formatter *f, const struct krec *r, struct sb *o)
{
	uint32_t i;

	for (i = 0; i < r->nvals; i++) {
		if (i)
			sb_putc(o, ' ');
		tostring(f, &r->vals[i], o);
	}
	sb_putc(o, '\n');
}

static void r_dump(const struct formatter *f, const struct krec *r, struct sb *o)
{
	uint32_t i;

	for (i = 0; i + 1 < r->nvals; i += 2) {
		tostring(f, &r->vals[i], o);
		sb_puts(o, r->vals[i].tag == KTAP_VAL_STACK ? "\n    " : "\t");
		tostring(f, &r->vals[i + 1], o);
		sb_putc(o, '\n');
	}
}

/* -- histograms ------------------------------------------------------------ */
/* Python rounds with unbounded integers; 128-bit (or careful 64-bit)
 * arithmetic gives the same bar for any count a board can hold. */
static size_t bar_len(uint64_t count, uint64_t total)
{
	if (!total)
		return 0;
#ifdef __SIZEOF_INT128__
	return (size_t)(((unsigned __int128)count * BAR_WIDTH + total / 2) / total);
#else
	if (count <= UINT64_MAX / BAR_WIDTH - total / 2)
		return (size_t)((count * BAR_WIDTH + total / 2) / total);
	return (size_t)(count / total * BAR_WIDTH + (count % total) * BAR_WIDTH / total);
#endif
}

static void hist_header(struct sb *o, size_t label_width)
{
	pad_right_aligned(o, "value", 5, label_width);
	sb_puts(o, "  " HIST_HEADER " count");
}

static void hist_row(struct sb *o, const char *label, size_t label_width, int64_t count,
		     uint64_t total)
{
	size_t n = bar_len(count > 0 ? (uint64_t)count : 0, total);

	sb_putc(o, '\n');
	pad_right_aligned(o, label, strlen(label), label_width);
	sb_puts(o, " |");
	sb_fill(o, '@', n);
	if (n < BAR_WIDTH)
		sb_fill(o, ' ', BAR_WIDTH - n);
	sb_printf(o, " %lld", (long long)count);
}

/* Last count stored under key in (i64 key, i64 count) pairs: the Python
 * decoder builds a dict, so a later duplicate wins. */
static int64_t pair_count(const unsigned char *pairs, uint32_t n, int64_t key, int *found)
{
	int64_t c = 0;
	uint32_t i;

	*found = 0;
	for (i = 0; i < n; i++)
		if (rd_i64(pairs + 16 * i) == key) {
			c = rd_i64(pairs + 16 * i + 8);
			*found = 1;
		}
	return c;
}

/* log2 buckets 0, +-2^k as ranks: 0 -> 0, 2^k -> k+1, -2^k -> -(k+1). Then
 * output.py's _next_bucket/_prev_bucket are +1/-1, and 2^63 or -2^64 (which
 * Python prints at the edges) stay representable. */
static int bucket_rank(int64_t b)
{
	uint64_t m = b < 0 ? -(uint64_t)b : (uint64_t)b;
	int k = 0;

	if (!b)
		return 0;
	while (m >>= 1)
		k++;
	return b > 0 ? k + 1 : -(k + 1);
}

static void rank_label(int rank, char *buf, size_t size)
{
	int k = (rank < 0 ? -rank : rank) - 1;
	const char *sign = rank < 0 ? "-" : "";

	if (rank == 0)
		snprintf(buf, size, "0");
	else if (k == 64)
		snprintf(buf, size, "%s18446744073709551616", sign);
	else
		snprintf(buf, size, "%s%llu", sign, (unsigned long long)(1ULL << k));
}

/* The count of a rank's bucket; ranks past +2^62 and -2^63 have no int64
 * key, so no count (Python shows them as 0-rows at the edges). */
static int64_t rank_count(const struct kval *agg, int rank)
{
	int k = (rank < 0 ? -rank : rank) - 1, found;
	int64_t key;

	if (rank == 0)
		key = 0;
	else if (rank > 0 && k <= 62)
		key = (int64_t)(1ULL << k);
	else if (rank < 0 && k <= 62)
		key = -(int64_t)(1ULL << k);
	else if (rank < 0 && k == 63)
		key = INT64_MIN;
	else
		return 0;
	return pair_count(agg->log2, agg->nlog2, key, &found);
}

static uint64_t total_of(const int64_t *counts, size_t n)
{
	uint64_t t = 0;
	size_t i;

	for (i = 0; i < n; i++)
		t += (uint64_t)counts[i];
	return t;
}

static void log2_rows(const struct kval *agg, struct sb *o)
{
	int lo = 0, hi = 0, r;
	uint32_t i;
	int64_t *counts;
	char label[32];

	hist_header(o, 16);
	if (agg->tag != KTAP_VAL_AGG || !agg->nlog2) {
		sb_putc(o, '\n');
		return;
	}
	for (i = 0; i < agg->nlog2; i++) {
		r = bucket_rank(rd_i64(agg->log2 + 16 * i));
		if (!i || r < lo)
			lo = r;
		if (!i || r > hi)
			hi = r;
	}
	counts = xmalloc(sizeof(*counts) * (size_t)(hi - lo + 3));
	for (r = lo - 1; r <= hi + 1; r++)
		counts[r - lo + 1] = rank_count(agg, r);
	for (r = lo - 1; r <= hi + 1; r++) {
		rank_label(r, label, sizeof(label));
		hist_row(o, label, 16, counts[r - lo + 1], total_of(counts, (size_t)(hi - lo + 3)));
	}
	sb_putc(o, '\n');
	free(counts);
}

/* values.linear_count without overflow: ceil((lmax - lmin) / lstep). */
static int64_t linear_count(const struct ktap_tdesc *d)
{
	uint64_t span = (uint64_t)d->lmax - (uint64_t)d->lmin, step = (uint64_t)d->lstep;

	if (d->lstep <= 0 || d->lmax <= d->lmin)
		return 0;
	return (int64_t)(span / step + (span % step != 0));
}

static void linear_label(const struct ktap_tdesc *d, int64_t i, int64_t n, char *buf, size_t size)
{
	if (i == -1)
		snprintf(buf, size, "< %lld", (long long)d->lmin);
	else if (i == n)
		snprintf(buf, size, ">= %lld", (long long)d->lmax);
	else
		snprintf(buf, size, "%lld",
			 (long long)((uint64_t)d->lmin + (uint64_t)i * (uint64_t)d->lstep));
}

static void linear_rows(const struct kval *agg, const struct ktap_tdesc *d, struct sb *o)
{
	int64_t n = linear_count(d), lo = 0, hi = 0, k, i, *counts;
	uint32_t j;
	int found;
	char label[48];

	hist_header(o, 16);
	if (agg->tag != KTAP_VAL_AGG || !agg->nlin) {
		sb_putc(o, '\n');
		return;
	}
	for (j = 0; j < agg->nlin; j++) {
		k = rd_i64(agg->lin + 16 * j);
		if (!j || k < lo)
			lo = k;
		if (!j || k > hi)
			hi = k;
	}
	lo = lo - 1 > -1 ? lo - 1 : -1;
	hi = hi + 1 < n ? hi + 1 : n;
	if (hi < lo) {
		sb_putc(o, '\n');
		return;
	}
	counts = xmalloc(sizeof(*counts) * (size_t)(hi - lo + 1));
	for (i = lo; i <= hi; i++)
		counts[i - lo] = pair_count(agg->lin, agg->nlin, i, &found);
	for (i = lo; i <= hi; i++) {
		linear_label(d, i, n, label, sizeof(label));
		hist_row(o, label, 16, counts[i - lo], total_of(counts, (size_t)(hi - lo + 1)));
	}
	sb_putc(o, '\n');
	free(counts);
}

/* Formatter.keyed: "key\n" + rows per entry, entries joined by "\n". */
static void keyed(const struct formatter *f, const struct krec *r, struct sb *o)
{
	const struct ktap_tdesc *d = NULL;
	uint32_t i;

	if (r->kind == KTAP_REC_LHIST) {
		if (r->index >= f->img->ntables)
			return;
		d = &f->img->tables[r->index];
	}
	for (i = 0; i + 1 < r->nvals; i += 2) {
		if (i)
			sb_putc(o, '\n');
		tostring(f, &r->vals[i], o);
		sb_putc(o, '\n');
		if (d)
			linear_rows(&r->vals[i + 1], d, o);
		else
			log2_rows(&r->vals[i + 1], o);
	}
}

struct counted {
	const struct kval *key;
	int64_t count;
	uint32_t order;
};

/* Descending count; equal counts keep table order (Python's stable sort). */
static int by_count(const void *a, const void *b)
{
	const struct counted *x = a, *y = b;

	if (x->count != y->count)
		return x->count > y->count ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

static int64_t count_of(const struct kval *v)
{
	if (v->tag == KTAP_VAL_AGG)
		return v->count;
	if (v->tag == KTAP_VAL_TRUE)
		return 1;	/* Python: True is the integer 1 */
	return v->tag == KTAP_VAL_NUM ? v->n : 0;
}

static void r_print_hist(const struct formatter *f, const struct krec *r, struct sb *o)
{
	uint32_t n = r->nvals / 2, i, shown;
	struct counted *c = xmalloc(sizeof(*c) * (n ? n : 1));
	uint64_t total = 0;
	struct sb key = { 0 };

	for (i = 0; i < n; i++) {
		c[i].key = &r->vals[2 * i];
		c[i].count = count_of(&r->vals[2 * i + 1]);
		c[i].order = i;
	}
	qsort(c, n, sizeof(*c), by_count);
	shown = r->n <= 0 ? 0 : (uint64_t)r->n < n ? (uint32_t)r->n : n;
	for (i = 0; i < shown; i++)
		total += c[i].count > 0 ? (uint64_t)c[i].count : 0;
	hist_header(o, 32);
	for (i = 0; i < shown; i++) {
		key.len = 0;
		tostring(f, c[i].key, &key);
		if (c[i].key->tag == KTAP_VAL_STACK) {
			sb_putc(o, '\n');
			sb_put(o, key.b, key.len);
			hist_row(o, "", 32, c[i].count, total);
		} else {
			hist_row(o, key.b ? key.b : "", 32, c[i].count, total);
		}
	}
	sb_putc(o, '\n');
	sb_free(&key);
	free(c);
}

void format_record(const struct formatter *f, const struct krec *rec, struct sb *out)
{
	if (f->json) {
		format_record_json(f, rec, out);
		return;
	}
	switch (rec->kind) {
	case KTAP_REC_PRINTF: format_printf(f, rec, out); break;
	case KTAP_REC_PRINT: r_print(f, rec, out); break;
	case KTAP_REC_DUMP: r_dump(f, rec, out); break;
	case KTAP_REC_PRINT_HIST: r_print_hist(f, rec, out); break;
	case KTAP_REC_HIST: case KTAP_REC_LHIST: keyed(f, rec, out); break;
	}
}

/* -- the end of a session -------------------------------------------------- */
static int by_reason(const void *a, const void *b)
{
	const struct drop *x = a, *y = b;
	uint32_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->reason, y->reason, n);

	return c ? c : (x->len > y->len) - (x->len < y->len);
}

struct drop *status_drops(const struct kstatus *st)
{
	struct drop *d = xmalloc(sizeof(*d) * (st->ndrops ? st->ndrops : 1));
	const unsigned char *p = st->drops;
	uint32_t i;

	for (i = 0; i < st->ndrops; i++) {
		d[i].len = rd_u32(p);
		d[i].reason = p + 4;
		d[i].count = rd_i64(p + 4 + d[i].len);
		p += 12 + d[i].len;
	}
	qsort(d, st->ndrops, sizeof(*d), by_reason);
	return d;
}

/* sim.py's drop report: one line per reason, sorted by reason. */
static void drop_report(const struct kstatus *st, struct sb *err)
{
	struct drop *d = status_drops(st);
	uint32_t i;

	for (i = 0; i < st->ndrops; i++) {
		sb_printf(err, "ktap: %lld events dropped (", (long long)d[i].count);
		sb_put(err, (const char *)d[i].reason, d[i].len);
		sb_puts(err, ")\n");
	}
	free(d);
}

int format_status(const struct ktap_image *img, const struct kstatus *st, struct sb *err)
{
	if (st->state == KTAP_STATUS_ERROR) {
		/* RuntimeErr.render() without the source text: the board has none. */
		if (img->source.len)
			sb_put(err, img->source.s, img->source.len);
		else
			sb_puts(err, "ktap");
		sb_printf(err, ":%u:%u: runtime error: ", st->line, st->col);
		sb_put(err, (const char *)st->msg, st->msglen);
		sb_putc(err, '\n');
		return KTAP_EXIT_RUNTIME_ERROR;
	}
	drop_report(st, err);
	return (int)(st->exit_code & 0xFF);
}
