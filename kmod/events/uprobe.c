// SPDX-License-Identifier: GPL-2.0
/* uprobe.c - user-space probes (uprobe, uretprobe, usdt): ktaprun defines
 * each in uprobe_events with fetch arguments (the image event's fields), so
 * the kernel reads the user registers and memory, and the module attaches to
 * the resulting trace event as a perf event, like a tracepoint. Its record's
 * fields, in order, are arg1..argN (uprobe, usdt) or the return value
 * (uretprobe). The attach entry's name is the probe as printed. */
#include <linux/perf_event.h>
#include "ktapvm_probe.h"

struct uprobe_probe {
	struct ktapvm_probe p;
	struct perf_event **pe;			/* one per possible CPU id */
	u32 tp_id;
	u16 nfields;
	struct ktap_field *fields;
};

static void up_overflow(struct perf_event *pe, struct perf_sample_data *data,
			struct pt_regs *regs)
{
	struct uprobe_probe *up = pe->overflow_handler_context;
	struct ktapvm_sess *s = up->p.s;
	struct ktap_fieldval ret;
	const unsigned char *rec;
	unsigned long flags;
	u32 size, i;

	if (!ktapvm_raw_record(data, &rec, &size) || !ktapvm_fire_begin(s, &flags))
		return;
	ktapvm_fill_task(s, &up->p);
	if (up->p.kind == KTAP_EV_URETPROBE) {
		ret.t = KTAP_T_NIL;
		if (up->nfields)
			ktapvm_field_decode(&up->fields[0], rec, size, &ret);
		s->ev.has_retval = ret.t == KTAP_T_NUM;
		s->ev.retval = ret.t == KTAP_T_NUM ? ret.n : 0;
	} else {
		for (i = 0; i < up->nfields && i < s->nargs; i++)
			ktapvm_field_decode(&up->fields[i], rec, size, &s->fields[i]);
		s->ev.is_tracepoint = 1;	/* argN reads the fields */
		s->ev.nfields = min_t(u32, up->nfields, s->nargs);
	}
	ktapvm_fire_end(s, up->p.event, flags);
}

static int uprobe_setup(struct ktapvm_probe *p, const struct ktap_ievent *iev,
			const struct ktap_attach *a, const unsigned char *extra, char *err,
			size_t errlen)
{
	struct uprobe_probe *up = container_of(p, struct uprobe_probe, p);
	u32 j;

	if (a->nfields > KTAPVM_MAX_TP_FIELDS || a->nnamed) {
		snprintf(err, errlen, "attach table: %s: %u fields (at most %u), %u named (none "
			 "for user probes)", p->name, a->nfields, KTAPVM_MAX_TP_FIELDS, a->nnamed);
		return -EINVAL;
	}
	up->tp_id = a->tp_id;
	up->nfields = a->nfields;
	/* "/PATH:SYMBOL" is a function's entry; "+0xOFF", "0xADDR" and USDT
	 * sites are not (ustack() then takes no caller from the link register) */
	p->user_entry = p->kind == KTAP_EV_UPROBE && !strstr(p->name, "+0x") &&
			!strstr(p->name, ":0x");
	up->fields = kzalloc((size_t)a->nfields * sizeof(struct ktap_field) + 1, GFP_KERNEL);
	if (!up->fields)
		return -ENOMEM;
	memcpy(up->fields, extra, (size_t)a->nfields * sizeof(struct ktap_field));
	for (j = 0; j < up->nfields; j++) {
		const struct ktap_field *f = &up->fields[j];

		/* fetch arguments are integers ktaprun typed :s8..:u64 */
		if (f->flags & (KTAP_FIELD_STRING | KTAP_FIELD_DATA_LOC) ||
		    (f->size != 1 && f->size != 2 && f->size != 4 && f->size != 8)) {
			snprintf(err, errlen, "attach table: %s: field %u is no integer", p->name, j);
			return -EINVAL;
		}
	}
	return 0;
}

static int uprobe_attach(struct ktapvm_probe *p, char *err, size_t errlen)
{
	struct uprobe_probe *up = container_of(p, struct uprobe_probe, p);
	int ret = ktapvm_tracepoint_open(up->tp_id, up_overflow, up, &up->pe);

	if (ret && ret != -ENOMEM)
		snprintf(err, errlen, "%s (event id %u): cannot attach (%s, %d)", p->name,
			 up->tp_id, ktapvm_errname(ret), ret);
	return ret;
}

static void uprobe_detach(struct ktapvm_probe *p)
{
	ktapvm_counters_close(container_of(p, struct uprobe_probe, p)->pe);
}

static void uprobe_release(struct ktapvm_probe *p)
{
	struct uprobe_probe *up = container_of(p, struct uprobe_probe, p);

	kfree(up->pe);
	kfree(up->fields);
}

const struct ktapvm_provider ktapvm_provider_uprobe = {
	.size = sizeof(struct uprobe_probe),
	.setup = uprobe_setup,
	.attach = uprobe_attach,
	.detach = uprobe_detach,
	.release = uprobe_release,
};
