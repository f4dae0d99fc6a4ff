/* util.c - growable text buffer, UTF-8 character counts, file and memory helpers. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ktaprun.h"

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p) {
		fputs("ktaprun: out of memory\n", stderr);
		exit(KTAP_EXIT_LOAD_ERROR);
	}
	return p;
}

void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p) {
		fputs("ktaprun: out of memory\n", stderr);
		exit(KTAP_EXIT_LOAD_ERROR);
	}
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p) {
		fputs("ktaprun: out of memory\n", stderr);
		exit(KTAP_EXIT_LOAD_ERROR);
	}
	return p;
}

char *xstrndup(const char *s, size_t n)
{
	char *d = xmalloc(n + 1);

	memcpy(d, s, n);
	d[n] = 0;
	return d;
}

static void sb_grow(struct sb *s, size_t more)
{
	if (s->len + more + 1 <= s->cap)
		return;
	s->cap = (s->len + more + 1) * 2;
	s->b = xrealloc(s->b, s->cap);
}

void sb_put(struct sb *s, const char *p, size_t n)
{
	sb_grow(s, n);
	memcpy(s->b + s->len, p, n);
	s->len += n;
	s->b[s->len] = 0;
}

void sb_puts(struct sb *s, const char *p) { sb_put(s, p, strlen(p)); }
void sb_putc(struct sb *s, char c) { sb_put(s, &c, 1); }

void sb_fill(struct sb *s, char c, size_t n)
{
	sb_grow(s, n);
	memset(s->b + s->len, c, n);
	s->len += n;
	s->b[s->len] = 0;
}

void sb_printf(struct sb *s, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n <= 0)
		return;
	sb_grow(s, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(s->b + s->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	s->len += (size_t)n;
}

void sb_free(struct sb *s)
{
	free(s->b);
	s->b = NULL;
	s->len = s->cap = 0;
}

static int cont(const unsigned char *p, size_t n, size_t i)
{
	return i < n && (p[i] & 0xC0) == 0x80;
}

/* Length of the valid UTF-8 sequence at p[i], or 1 for a byte Python's
 * surrogateescape would turn into one lone character. Same ranges as
 * CPython's decoder: no overlongs, no surrogates, nothing above U+10FFFF. */
size_t utf8_step(const unsigned char *p, size_t n, size_t i)
{
	unsigned char c = p[i], lo = 0x80, hi = 0xBF;
	size_t len, k;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		len = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		len = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		len = 4;
	else
		return 1;
	if (c == 0xE0)
		lo = 0xA0;
	else if (c == 0xED)
		hi = 0x9F;
	else if (c == 0xF0)
		lo = 0x90;
	else if (c == 0xF4)
		hi = 0x8F;
	if (i + 1 >= n || p[i + 1] < lo || p[i + 1] > hi)
		return 1;
	for (k = 2; k < len; k++)
		if (!cont(p, n, i + k))
			return 1;
	return len;
}

size_t utf8_chars(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, chars = 0;

	while (i < n) {
		i += utf8_step(p, n, i);
		chars++;
	}
	return chars;
}

size_t utf8_prefix(const char *s, size_t n, size_t chars)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < n && chars--)
		i += utf8_step(p, n, i);
	return i;
}

unsigned char *read_whole(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	unsigned char *buf = NULL;
	size_t cap = 0, n = 0;
	ssize_t got;

	if (fd < 0)
		return NULL;
	for (;;) {
		if (n + 4096 > cap) {
			cap = (n + 4096) * 2;
			buf = xrealloc(buf, cap);
		}
		got = read(fd, buf + n, cap - n - 1);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		n += (size_t)got;
	}
	if (got < 0) {
		int e = errno;

		free(buf);
		close(fd);
		errno = e;
		return NULL;
	}
	close(fd);
	buf[n] = 0;		/* text files (tracefs, kallsyms) are parsed as strings */
	*len = n;
	return buf;
}
