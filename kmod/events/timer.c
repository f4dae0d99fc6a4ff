// SPDX-License-Identifier: GPL-2.0
/* timer.c - the period-driven kinds, attached from the image alone:
 *   tick-N     one hrtimer
 *   profile-N  one pinned hrtimer per CPU
 * A timer stops re-arming once the session is no longer active. */
#include <linux/hrtimer.h>
#include <linux/percpu.h>
#include <linux/smp.h>
#include "ktapvm_probe.h"

struct timer_probe {
	struct ktapvm_probe p;
	ktime_t period;
};

struct tick_probe {
	struct timer_probe tp;
	struct hrtimer timer;
};

struct profile_timer {
	struct hrtimer t;
	struct profile_probe *pp;
};

struct profile_probe {
	struct timer_probe tp;
	struct profile_timer __percpu *pt;
};

/* hrtimer_setup() (6.13+) replaces hrtimer_init() plus setting .function. */
static void ktap_hrtimer_setup(struct hrtimer *t, enum hrtimer_restart (*fn)(struct hrtimer *),
			       enum hrtimer_mode mode)
{
#if KTAP_HAVE_HRTIMER_SETUP
	hrtimer_setup(t, fn, CLOCK_MONOTONIC, mode);
#else
	hrtimer_init(t, CLOCK_MONOTONIC, mode);
	t->function = fn;
#endif
}

static enum hrtimer_restart timer_fire(struct timer_probe *tp, struct hrtimer *t)
{
	struct ktapvm_sess *s = tp->p.s;
	unsigned long flags;

	if (ktapvm_fire_begin(s, &flags)) {
		ktapvm_fill_task(s, &tp->p);
		ktapvm_fire_end(s, tp->p.event, flags);
	}
	if (!READ_ONCE(s->active))
		return HRTIMER_NORESTART;
	hrtimer_forward_now(t, tp->period);
	return HRTIMER_RESTART;
}

static int period_setup(struct ktapvm_probe *p, const struct ktap_ievent *iev,
		       const struct ktap_attach *a, const unsigned char *extra, char *err,
		       size_t errlen)
{
	container_of(p, struct timer_probe, p)->period = ns_to_ktime(iev->period_ns);
	return 0;
}

/* -- tick ---------------------------------------------------------------------- */
static enum hrtimer_restart tick_fn(struct hrtimer *t)
{
	return timer_fire(&container_of(t, struct tick_probe, timer)->tp, t);
}

static int tick_attach(struct ktapvm_probe *p, char *err, size_t errlen)
{
	struct tick_probe *tk = container_of(p, struct tick_probe, tp.p);

	ktap_hrtimer_setup(&tk->timer, tick_fn, HRTIMER_MODE_REL);
	hrtimer_start(&tk->timer, tk->tp.period, HRTIMER_MODE_REL);
	return 0;
}

static void tick_detach(struct ktapvm_probe *p)
{
	hrtimer_cancel(&container_of(p, struct tick_probe, tp.p)->timer);
}

const struct ktapvm_provider ktapvm_provider_tick = {
	.size = sizeof(struct tick_probe),
	.setup = period_setup,
	.attach = tick_attach,
	.detach = tick_detach,
};

/* -- profile ------------------------------------------------------------------- */
static enum hrtimer_restart profile_fn(struct hrtimer *t)
{
	return timer_fire(&container_of(t, struct profile_timer, t)->pp->tp, t);
}

static void profile_start_here(void *arg)
{
	struct profile_probe *pp = arg;

	hrtimer_start(&this_cpu_ptr(pp->pt)->t, pp->tp.period, HRTIMER_MODE_REL_PINNED);
}

static int profile_attach(struct ktapvm_probe *p, char *err, size_t errlen)
{
	struct profile_probe *pp = container_of(p, struct profile_probe, tp.p);
	int cpu;

	pp->pt = alloc_percpu(struct profile_timer);
	if (!pp->pt)
		return -ENOMEM;
	for_each_possible_cpu(cpu) {
		struct profile_timer *pt = per_cpu_ptr(pp->pt, cpu);

		ktap_hrtimer_setup(&pt->t, profile_fn, HRTIMER_MODE_REL_PINNED);
		pt->pp = pp;
	}
	on_each_cpu(profile_start_here, pp, 1);
	return 0;
}

static void profile_detach(struct ktapvm_probe *p)
{
	struct profile_probe *pp = container_of(p, struct profile_probe, tp.p);
	int cpu;

	for_each_possible_cpu(cpu)
		hrtimer_cancel(&per_cpu_ptr(pp->pt, cpu)->t);
}

static void profile_release(struct ktapvm_probe *p)
{
	struct profile_probe *pp = container_of(p, struct profile_probe, tp.p);

	if (pp->pt)
		free_percpu(pp->pt);
}

const struct ktapvm_provider ktapvm_provider_profile = {
	.size = sizeof(struct profile_probe),
	.setup = period_setup,
	.attach = profile_attach,
	.detach = profile_detach,
	.release = profile_release,
};
