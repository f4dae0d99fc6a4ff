// SPDX-License-Identifier: GPL-2.0
/* perf.c - `trace perf:NAME`: a sampling perf counter (software or hardware,
 * events/perf.py) on every online CPU, through
 * perf_event_create_kernel_counter. Each sample fires the handler: every
 * `period` events, or `offset` times a second (the image event's fields, as
 * events/kinds.py describes). A CPU whose PMU lacks the event refuses the
 * counter; the error names the event. */
#include <linux/perf_event.h>
#include <linux/cpumask.h>
#include "ktapvm_probe.h"

struct perf_probe {
	struct ktapvm_probe p;
	struct perf_event **pe;			/* one per possible CPU id */
	const struct ktap_perf_event *what;
	u64 period, freq;
};

static void perf_overflow(struct perf_event *pe, struct perf_sample_data *data,
			  struct pt_regs *regs)
{
	struct perf_probe *pp = pe->overflow_handler_context;
	struct ktapvm_sess *s = pp->p.s;
	unsigned long flags;

	if (!ktapvm_fire_begin(s, &flags))
		return;
	ktapvm_fill_task(s, &pp->p);
	ktapvm_fire_end(s, pp->p.event, flags);
}

/* The event by name ("perf:" and a row of the table) and its rate. */
static int perf_setup(struct ktapvm_probe *p, const struct ktap_ievent *iev,
		      const struct ktap_attach *a, const unsigned char *extra, char *err,
		      size_t errlen)
{
	struct perf_probe *pp = container_of(p, struct perf_probe, p);

	pp->what = ktap_perf_event_find(p->name, strlen(p->name));
	if (!pp->what) {
		snprintf(err, errlen, "%s is no perf event ktapvm knows", p->name);
		return -EINVAL;
	}
	pp->freq = iev->offset;
	pp->period = (u64)iev->period_ns;
	return 0;
}

static void perf_detach(struct ktapvm_probe *p)
{
	ktapvm_counters_close(container_of(p, struct perf_probe, p)->pe);
}

static int perf_attach(struct ktapvm_probe *p, char *err, size_t errlen)
{
	struct perf_probe *pp = container_of(p, struct perf_probe, p);
	struct perf_event_attr attr;
	int ret;

	memset(&attr, 0, sizeof(attr));
	attr.type = pp->what->type;
	attr.size = sizeof(attr);
	attr.config = pp->what->config;
	attr.freq = pp->freq != 0;
	if (attr.freq)
		attr.sample_freq = pp->freq;
	else
		attr.sample_period = pp->period;
	ret = ktapvm_counters_open(&attr, perf_overflow, pp, &pp->pe);
	if (!ret || ret == -ENOMEM)
		return ret;
	if (ret == -ENOENT || ret == -EOPNOTSUPP || ret == -ENODEV)
		snprintf(err, errlen, "%s: this CPU's PMU does not count %s (%s); emulated CPUs "
			 "(QEMU) mostly have no hardware counters", p->name, pp->what->name,
			 ktapvm_errname(ret));
	else
		snprintf(err, errlen, "%s: cannot open the perf counter (%s, %d)", p->name,
			 ktapvm_errname(ret), ret);
	return ret;
}

static void perf_release(struct ktapvm_probe *p)
{
	kfree(container_of(p, struct perf_probe, p)->pe);
}

const struct ktapvm_provider ktapvm_provider_perf = {
	.size = sizeof(struct perf_probe),
	.setup = perf_setup,
	.attach = perf_attach,
	.detach = perf_detach,
	.release = perf_release,
};
