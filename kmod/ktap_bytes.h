/* ktap_bytes.h - integers in the target's byte order, assembled byte by byte.
 *
 * Images and output records hold integers in the byte order of the target
 * they are for, unaligned. Assembling them explicitly (rather than casting
 * and swapping) lets a big-endian core or ktaprun run on a little-endian host
 * for tests, and keeps every access unaligned-safe. */
#ifndef KTAP_BYTES_H
#define KTAP_BYTES_H

#ifdef __KERNEL__
#include <linux/types.h>
#else
#include <stddef.h>
#include <stdint.h>
#endif
#include "ktap_target.h"

/* The n-byte integer at p (n <= 8). */
static inline uint64_t ktap_get_uint(const unsigned char *p, unsigned n)
{
	uint64_t v = 0;
	unsigned i;

	for (i = 0; i < n; i++)
#if KTAP_BIG_ENDIAN
		v = v << 8 | p[i];
#else
		v |= (uint64_t)p[i] << (8 * i);
#endif
	return v;
}

/* Stores the low n bytes of v at p. */
static inline void ktap_put_uint(unsigned char *p, uint64_t v, unsigned n)
{
	unsigned i;

	for (i = 0; i < n; i++)
#if KTAP_BIG_ENDIAN
		p[i] = (unsigned char)(v >> (8 * (n - 1 - i)));
#else
		p[i] = (unsigned char)(v >> (8 * i));
#endif
}

/* A bounded reader over p[0..end): a read past the end poisons it, and every
 * later read returns NULL or 0, so callers check once, after a sequence. */
struct ktap_cursor {
	const unsigned char *p;
	size_t pos, end;
	int bad;
};

static inline const unsigned char *ktap_take(struct ktap_cursor *c, uint64_t n)
{
	const unsigned char *at = c->p + c->pos;

	if (c->bad || n > c->end - c->pos) {
		c->bad = 1;
		return NULL;
	}
	c->pos += n;
	return at;
}

/* The next n-byte integer (n <= 8), 0 once the cursor is bad. */
static inline uint64_t ktap_take_uint(struct ktap_cursor *c, unsigned n)
{
	const unsigned char *b = ktap_take(c, n);

	return b ? ktap_get_uint(b, n) : 0;
}

#endif
