/* ktap_string.h - the session's string pool (ktap_string.c). */
#ifndef KTAP_STRING_H
#define KTAP_STRING_H

#include "ktap_object.h"

/* Allocates the pool's slots and intern buckets (session creation only). */
int ktap_str_pool_new(struct ktap_session *s);
/* Interns `len` bytes (strings) or `len` frames (stacks). A new one is a
 * temporary until a table or global takes a reference. NULL: the pool is full. */
struct ktap_str *ktap_str_intern(struct ktap_session *s, uint8_t kind, const void *p,
				 uint32_t len);
/* A string value of p[0..len), clipped to the string limit; a full pool
 * drops the event. */
int ktap_str_make(struct ktap_session *s, const char *p, size_t len, struct ktap_value *out);
/* After a handler: temporaries nothing kept are returned to the pool. */
void ktap_str_sweep(struct ktap_session *s);

#endif
