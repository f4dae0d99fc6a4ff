/* ktap_builtin.h - the built-in functions (ktap_builtin.c). */
#ifndef KTAP_BUILTIN_H
#define KTAP_BUILTIN_H

#include "ktap_object.h"

/* CALLB: built-in `id` with the n arguments at R; the result goes to R[0]. */
int ktap_callb(struct ktap_session *s, unsigned id, struct ktap_value *R, unsigned n,
	       uint32_t f, uint32_t pc);
/* PRINTF: format `fmt` of the image with the n values at R, as a record. */
int ktap_printf(struct ktap_session *s, unsigned fmt, const struct ktap_value *R, unsigned n);

#endif
