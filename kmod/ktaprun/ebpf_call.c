/* ebpf_call.c - a program's CALL record (docs/ebpf.md "Records from
 * programs"). A handler that prints or clears a whole table cannot walk its
 * map in the kernel, so it asks ktaprun to, in order with its other records:
 * the table is copied from its map into the interpreter and the built-in
 * runs there (ktap_table_call), writing the same record the module's would;
 * delete(t) empties the map and the table.
 *
 * The map is read when the record is, not when it was written: what the
 * handlers added in between is in the dump too. */
#ifndef KTAPRUN_FORMAT_ONLY
#define _GNU_SOURCE
#include <stdarg.h>
#include <string.h>

#include "ebpf.h"

static const struct ktap_builtin_info builtins[KTAP_NUM_BUILTINS] = KTAP_BUILTIN_TABLE;

/* A record ktaprun cannot run stops the session: the programs and ktaprun
 * disagree about the image, and nothing printed after it could be trusted. */
static int bad_call(struct ebpf_sess *e, const char *fmt, ...)
{
	static const char lead[] = "a program's CALL record ";
	va_list ap;

	memcpy(e->err, lead, sizeof(lead));
	va_start(ap, fmt);
	vsnprintf(e->err + sizeof(lead) - 1, sizeof(e->err) - sizeof(lead) + 1, fmt, ap);
	va_end(ap);
	e->failed = 1;
	return -1;
}

static int table_builtin(unsigned id)
{
	return id < KTAP_NUM_BUILTINS && builtins[id].table_call;
}

/* The record's built-in and global, checked against the image and the maps. */
static struct ebpf_map *call_target(struct ebpf_sess *e, const struct krec *r)
{
	const struct ktap_image *img = e->img;
	unsigned id = (unsigned)r->n;
	struct ebpf_map *em;

	if (id != KTAP_CALL_CLEAR && !table_builtin(id)) {
		bad_call(e, "asks for built-in %u (%s), which takes no table, and is not %u "
			 "(delete)", id, id < KTAP_NUM_BUILTINS ?
			 builtins[id].name : "no built-in", KTAP_CALL_CLEAR);
		return NULL;
	}
	if (r->index >= img->nglobals) {
		bad_call(e, "names global %u; the image has %u", r->index, img->nglobals);
		return NULL;
	}
	em = ebpf_table_map(e, r->index);
	if (!em)
		bad_call(e, "names global '%.*s', which holds no table with a BPF map",
			 (int)img->globals[r->index].len, img->globals[r->index].s);
	return em;
}

/* The built-in's arguments after the table: what a program can send (nil,
 * booleans, numbers, strings; strings point into the record). */
static int call_args(struct ebpf_sess *e, const struct krec *r, struct ktap_sync_val *args)
{
	uint32_t i;

	if (r->nvals > KTAP_CALL_MAX_ARGS)
		return bad_call(e, "for %s has %u arguments after the table (at most %u)",
				builtins[r->n].name, r->nvals, KTAP_CALL_MAX_ARGS);
	for (i = 0; i < r->nvals; i++) {
		const struct kval *k = &r->vals[i];

		memset(&args[i], 0, sizeof(args[i]));
		switch (k->tag) {
		case KTAP_VAL_NIL: args[i].t = KTAP_T_NIL; break;
		case KTAP_VAL_FALSE: case KTAP_VAL_TRUE:
			args[i].t = KTAP_T_BOOL;
			args[i].n = k->tag == KTAP_VAL_TRUE;
			break;
		case KTAP_VAL_NUM: args[i].t = KTAP_T_NUM; args[i].n = k->n; break;
		case KTAP_VAL_STR:
			args[i].t = KTAP_T_STR;
			args[i].s = (const char *)k->p;
			args[i].len = k->len;
			break;
		default:
			return bad_call(e, "for %s has an argument of value tag %u, which no program "
					"sends", builtins[r->n].name, k->tag);
		}
	}
	return 0;
}

static int run_call(struct ebpf_sess *e, const struct krec *r, const struct ebpf_map *em)
{
	struct ktap_sync_val args[KTAP_CALL_MAX_ARGS];
	int rc;

	if (call_args(e, r, args) < 0)
		return -1;
	ebpf_pull_table(e, em);
	rc = ktap_table_call(e->vm, r->index, (unsigned)r->n, args, r->nvals);
	if (rc < 0)
		return bad_call(e, "for %s has %u arguments after the table; it takes %u to %u",
				builtins[r->n].name, r->nvals, builtins[r->n].min_args ?
				builtins[r->n].min_args - 1 : 0, builtins[r->n].max_args - 1);
	/* the built-in's runtime error stops the session as a program's would */
	if (rc == KTAP_RUN_ERROR || rc == KTAP_RUN_EXIT)
		e->stopped = 1;
	else if (rc == KTAP_RUN_OK && r->n == KTAP_B_ZERO)
		ebpf_zero_table(e, em);		/* the map too, or the next read undoes it */
	return 0;
}

int ebpf_call(struct ebpf_sess *e, const unsigned char *rec, uint32_t size)
{
	struct ebpf_map *em;
	struct krec r;
	int rc = 0;

	if (record_decode(rec, size, &r) < 0) {
		e->bad_records++;
		return 0;
	}
	if (e->stopped) {		/* as with the module: no handler runs after the stop */
		record_free(&r);
		return 0;
	}
	em = call_target(e, &r);
	if (!em)
		rc = -1;
	else if (r.n == KTAP_CALL_CLEAR)
		ebpf_clear_table(e, em);	/* what the map held is gone: no copy first */
	else
		rc = run_call(e, &r, em);
	record_free(&r);
	return rc;
}
#endif
