// SPDX-License-Identifier: GPL-2.0
/* tracepoint.c - tracepoints as perf events: perf_event_create_kernel_counter
 * (PERF_TYPE_TRACEPOINT, one per online CPU, PERF_SAMPLE_RAW). The overflow
 * handler reads the fields from the raw record by the attach table's offset,
 * size and flags, bounds-checked against the record size. */
#include <linux/perf_event.h>
#include <linux/cpumask.h>
#include <linux/cpu.h>
#include "ktapvm_probe.h"

struct tracepoint_probe {
	struct ktapvm_probe p;
	struct perf_event **pe;			/* one per possible CPU id */
	u32 tp_id;
	u16 nfields, nnamed;
	struct ktap_field *fields;
	s16 *named;
};

void ktapvm_field_decode(const struct ktap_field *f, const unsigned char *rec, u32 size,
			 struct ktap_fieldval *out)
{
	u32 off = f->offset;

	out->t = KTAP_T_NIL;
	if (off >= size)
		return;
	if (f->flags & KTAP_FIELD_DATA_LOC) {
		u32 loc, at, len;

		if (size - off < 4)
			return;
		memcpy(&loc, rec + off, 4);
		at = loc & 0xffff;
		len = loc >> 16;
		if (at > size || len > size - at)
			return;
		out->t = KTAP_T_STR;
		out->s = (const char *)rec + at;
		out->len = strnlen(out->s, len);
	} else if (f->flags & KTAP_FIELD_STRING) {
		if (f->size > size - off)
			return;
		out->t = KTAP_T_STR;
		out->s = (const char *)rec + off;
		out->len = strnlen(out->s, f->size);
	} else {
		int sgn = f->flags & KTAP_FIELD_SIGNED;

		if (f->size > size - off)
			return;
		out->t = KTAP_T_NUM;
		switch (f->size) {
		case 1: {
			u8 v = rec[off];

			out->n = sgn ? (int64_t)(s8)v : (int64_t)v;
			break;
		}
		case 2: {
			u16 v;

			memcpy(&v, rec + off, 2);
			out->n = sgn ? (int64_t)(s16)v : (int64_t)v;
			break;
		}
		case 4: {
			u32 v;

			memcpy(&v, rec + off, 4);
			out->n = sgn ? (int64_t)(s32)v : (int64_t)v;
			break;
		}
		default: {
			u64 v;

			memcpy(&v, rec + off, 8);
			out->n = (int64_t)v;
			break;
		}
		}
	}
}

bool ktapvm_raw_record(struct perf_sample_data *data, const unsigned char **rec, u32 *size)
{
#if KTAP_HAVE_PERF_SAMPLE_FLAGS
	/* since 6.1 data->raw is set only with this flag; it is garbage without */
	if (!(data->sample_flags & PERF_SAMPLE_RAW))
		return false;
#endif
	if (!data->raw)
		return false;
	*rec = data->raw->frag.data;
	*size = data->raw->frag.size;
	return true;
}

int ktapvm_tracepoint_open(u32 id, perf_overflow_handler_t fn, void *ctx, struct perf_event ***pe)
{
	struct perf_event_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.type = PERF_TYPE_TRACEPOINT;
	attr.size = sizeof(attr);
	attr.config = id;
	attr.sample_period = 1;
	attr.sample_type = PERF_SAMPLE_RAW;
	return ktapvm_counters_open(&attr, fn, ctx, pe);
}

static void tp_overflow(struct perf_event *pe, struct perf_sample_data *data,
			struct pt_regs *regs)
{
	struct tracepoint_probe *tp = pe->overflow_handler_context;
	struct ktapvm_sess *s = tp->p.s;
	const unsigned char *rec;
	unsigned long flags;
	u32 size, i;

	if (!ktapvm_raw_record(data, &rec, &size) || !ktapvm_fire_begin(s, &flags))
		return;
	ktapvm_fill_task(s, &tp->p);
	/* only what handlers read: argN up to the highest N in the image, and
	 * this event's fields by name */
	for (i = 0; i < tp->nfields && i < s->nargs; i++)
		ktapvm_field_decode(&tp->fields[i], rec, size, &s->fields[i]);
	for (i = 0; i < tp->nnamed; i++) {
		if (tp->named[i] >= 0)
			ktapvm_field_decode(&tp->fields[tp->named[i]], rec, size, &s->named[i]);
		else
			s->named[i].t = KTAP_T_NIL;
	}
	s->ev.is_tracepoint = 1;
	s->ev.nfields = tp->nfields;
	s->ev.nnamed = tp->nnamed;
	ktapvm_fire_end(s, tp->p.event, flags);
}

/* The id and the field layout from the attach table, checked. */
static int tracepoint_setup(struct ktapvm_probe *p, const struct ktap_ievent *iev,
			    const struct ktap_attach *a, const unsigned char *extra, char *err,
			    size_t errlen)
{
	struct tracepoint_probe *tp = container_of(p, struct tracepoint_probe, p);
	size_t fbytes = (size_t)a->nfields * sizeof(struct ktap_field);
	size_t nbytes = (size_t)a->nnamed * sizeof(s16);
	u32 j;

	if (a->nfields > KTAPVM_MAX_TP_FIELDS || a->nnamed != iev->nfields) {
		snprintf(err, errlen, "attach table: tracepoint %s: %u fields (at most %u), "
			 "%u named (the image event lists %u)", p->name, a->nfields,
			 KTAPVM_MAX_TP_FIELDS, a->nnamed, iev->nfields);
		return -EINVAL;
	}
	tp->tp_id = a->tp_id;
	tp->nfields = a->nfields;
	tp->nnamed = a->nnamed;
	/* one spare byte so an empty list is not a zero-size allocation; copy
	 * only what the attach table holds (kmemdup of size + 1 read a byte past
	 * its end: found by KASAN on the debug kernel) */
	tp->fields = kzalloc(fbytes + 1, GFP_KERNEL);
	tp->named = kzalloc(nbytes + 1, GFP_KERNEL);
	if (!tp->fields || !tp->named)
		return -ENOMEM;
	memcpy(tp->fields, extra, fbytes);
	memcpy(tp->named, extra + fbytes, nbytes);
	for (j = 0; j < tp->nfields; j++) {
		const struct ktap_field *f = &tp->fields[j];

		if (!(f->flags & (KTAP_FIELD_STRING | KTAP_FIELD_DATA_LOC)) &&
		    f->size != 1 && f->size != 2 && f->size != 4 && f->size != 8) {
			snprintf(err, errlen, "attach table: tracepoint %s: field %u has size %u",
				 p->name, j, f->size);
			return -EINVAL;
		}
	}
	for (j = 0; j < tp->nnamed; j++)
		if (tp->named[j] < -1 || tp->named[j] >= (s16)tp->nfields) {
			snprintf(err, errlen, "attach table: tracepoint %s: named field %u points "
				 "at %d", p->name, j, tp->named[j]);
			return -EINVAL;
		}
	return 0;
}

static void tracepoint_detach(struct ktapvm_probe *p)
{
	ktapvm_counters_close(container_of(p, struct tracepoint_probe, p)->pe);
}

static int tracepoint_attach(struct ktapvm_probe *p, char *err, size_t errlen)
{
	struct tracepoint_probe *tp = container_of(p, struct tracepoint_probe, p);
	int ret = ktapvm_tracepoint_open(tp->tp_id, tp_overflow, tp, &tp->pe);

	if (ret && ret != -ENOMEM) {
		snprintf(err, errlen, "tracepoint %s (id %u): cannot attach (%s, %d)",
			 p->name, tp->tp_id, ktapvm_errname(ret), ret);
	}
	return ret;
}

static void tracepoint_release(struct ktapvm_probe *p)
{
	struct tracepoint_probe *tp = container_of(p, struct tracepoint_probe, p);

	kfree(tp->pe);
	kfree(tp->fields);
	kfree(tp->named);
}

const struct ktapvm_provider ktapvm_provider_tracepoint = {
	.size = sizeof(struct tracepoint_probe),
	.setup = tracepoint_setup,
	.attach = tracepoint_attach,
	.detach = tracepoint_detach,
	.release = tracepoint_release,
};
