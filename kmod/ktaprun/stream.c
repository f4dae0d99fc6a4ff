/* stream.c - the record stream: bytes in (from read() on /dev/ktap or a file),
 * formatted text (or the raw records with --raw) out on stdout, as soon as
 * each record is whole. The STATUS record is kept for the end. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ktaprun.h"

void stream_init(struct stream *s, const struct formatter *fmt, int raw)
{
	memset(s, 0, sizeof(*s));
	s->fmt = fmt;
	s->raw = raw;
}

static void write_out(const void *p, size_t n)
{
	fwrite(p, 1, n, stdout);
}

static void keep_status(struct stream *s, const unsigned char *p, uint32_t size)
{
	struct krec rec;

	free(s->status_copy);
	s->status_copy = xmalloc(size);
	memcpy(s->status_copy, p, size);
	if (record_decode(s->status_copy, size, &rec) == 0) {
		s->status = rec.status;
		s->have_status = 1;
	}
}

/* Handles one whole record; -1 if it is malformed. */
static int one_record(struct stream *s, const unsigned char *p, uint32_t size, struct sb *out)
{
	struct krec rec;

	if (record_decode(p, size, &rec) < 0)
		return -1;
	/* the eBPF session runs a program's CALL records and sends their output:
	 * one in a stream was never run */
	if (rec.kind == KTAP_REC_CALL) {
		record_free(&rec);
		return -1;
	}
	if (rec.kind == KTAP_REC_STATUS)
		keep_status(s, p, size);
	if (s->raw)
		write_out(p, size);
	else if (rec.kind != KTAP_REC_STATUS)
		format_record(s->fmt, &rec, out);
	record_free(&rec);
	return 0;
}

int stream_feed(struct stream *s, const void *data, size_t n)
{
	struct sb out = { 0 };
	size_t pos = 0;
	uint32_t size;

	if (s->bad)
		return -1;
	if (s->len + n > s->cap) {
		s->cap = (s->len + n) * 2;
		s->buf = xrealloc(s->buf, s->cap);
	}
	memcpy(s->buf + s->len, data, n);
	s->len += n;
	while (s->len - pos >= 5 && (size = record_size(s->buf + pos, s->len - pos), 1)) {
		if (size > s->len - pos)
			break;		/* the rest comes with the next read */
		if (size < 5 || one_record(s, s->buf + pos, size, &out) < 0) {
			s->bad = 1;
			break;
		}
		pos += size;
		if (out.len > 65536) {	/* a huge dump: don't hold it all */
			write_out(out.b, out.len);
			out.len = 0;
		}
	}
	memmove(s->buf, s->buf + pos, s->len - pos);
	s->len -= pos;
	write_out(out.b, out.len);
	fflush(stdout);
	sb_free(&out);
	return s->bad ? -1 : 0;
}

int stream_finish(struct stream *s, const char *what)
{
	struct sb err = { 0 };
	int status;

	if (s->bad || s->len) {
		fprintf(stderr, "ktaprun: %s: malformed output record stream\n", what);
		return KTAP_EXIT_LOAD_ERROR;
	}
	if (!s->have_status) {
		fprintf(stderr, "ktaprun: %s: the session ended without a status record\n", what);
		return KTAP_EXIT_LOAD_ERROR;
	}
	status = format_status(s->fmt->img, &s->status, &err);
	if (s->fmt->json) {
		struct sb out = { 0 };

		format_status_json(&s->status, &out);
		fwrite(out.b, 1, out.len, stdout);
		sb_free(&out);
	}
	fflush(stdout);
	if (err.len)
		fwrite(err.b, 1, err.len, stderr);
	sb_free(&err);
	return status;
}

void stream_free(struct stream *s)
{
	free(s->buf);
	free(s->status_copy);
	s->buf = s->status_copy = NULL;
}
