// SPDX-License-Identifier: GPL-2.0
/* ktapvm_events.c - a session's events: what the image needs from each event,
 * the string reader, and the probes' life cycle (the attach table checked
 * whole, probes set up, registered in order, unregistered and freed).
 * Everything that depends on the kind of probe is its provider's
 * (ktapvm_probe.h, kmod/events/). Only the string reader runs in probe
 * context (kernel_string() and user_string() in a handler). */
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/kallsyms.h>
#include <linux/rcupdate.h>
#include <linux/perf_event.h>
#include <linux/cpumask.h>
#include "ktapvm_probe.h"

/* -- the image's needs ------------------------------------------------------- */
/* Which parts of the event context any handler can read: arguments up to the
 * highest argN, the stack, the clock. Events fill only those. */
void ktapvm_scan_image(struct ktapvm_sess *s)
{
	const struct ktap_image *img = s->img;
	u32 f, pc;

	s->nargs = 0;
	s->need_stack = s->need_clock = s->need_mono = s->need_ustack = 0;
	s->need_vars = 0;
	for (f = 0; f < img->nprotos; f++) {
		const struct ktap_proto *p = &img->protos[f];

		for (pc = 0; pc < p->ncode; ) {
			u32 w = p->code[pc];
			u32 op = w & 0xff, b = (w >> 16) & 0xff;

			if (op >= KTAP_NUM_OPS)
				break;
			if (op == KTAP_OP_ARG && b > s->nargs)
				s->nargs = b;
			if (op == KTAP_OP_LOADVAR && b < 32)
				s->need_vars |= 1U << b;
			if (op == KTAP_OP_LOADVAR && b == KTAP_V_WALLTIME)
				s->need_clock = 1;
			if (op == KTAP_OP_LOADVAR && b == KTAP_V_NSECS)
				s->need_mono = 1;
			if (op == KTAP_OP_CALLB) {
				if (b == KTAP_B_STACK)
					s->need_stack = 1;
				if (b == KTAP_B_USTACK)
					s->need_ustack = 1;
				if (b == KTAP_B_GETTIMEOFDAY_NS || b == KTAP_B_GETTIMEOFDAY_US ||
				    b == KTAP_B_GETTIMEOFDAY_MS || b == KTAP_B_GETTIMEOFDAY_S)
					s->need_clock = 1;
			}
			pc += ktap_opinfo[op].words;
		}
	}
	if (s->nargs > KTAP_MAX_ARGS)
		s->nargs = KTAP_MAX_ARGS;
}

/* -- strings for kernel_string()/user_string() -------------------------------- */
int ktapvm_read_str(void *ctx, int user, uint64_t addr, char *buf, uint32_t max)
{
	unsigned long a = (unsigned long)addr;
	uint32_t n = 0;

	/* 32-bit kernels: accept sign-extended addresses too */
	if ((uint64_t)a != addr && (uint64_t)(long)a != addr)
		return -1;
	while (n < max) {
		size_t room = PAGE_SIZE - ((a + n) & ~PAGE_MASK);
		size_t chunk = min_t(size_t, max - n, room);
		const char *z;
		long r;

		if (user)
			r = copy_from_user_nofault(buf + n, (const void __user *)(a + n), chunk);
		else
			r = copy_from_kernel_nofault(buf + n, (const void *)(a + n), chunk);
		if (r)
			return n ? (int)n : -1;
		z = memchr(buf + n, 0, chunk);
		if (z)
			return (int)(z - buf);
		n += chunk;
	}
	return (int)max;
}

/* -- providers and their errors ------------------------------------------------ */
#define KTAPVM_PROVIDER_ROW(KIND, name) [KTAP_EV_##KIND] = &ktapvm_provider_##name,
static const struct ktapvm_provider *const providers[KTAP_EV_NKINDS] = {
	KTAP_EV_PROVIDERS(KTAPVM_PROVIDER_ROW)
};
#undef KTAPVM_PROVIDER_ROW

static const char *const kind_names[KTAP_EV_NKINDS] = KTAP_EV_NAMES;

static const char *kind_name(u32 kind)
{
	return kind < KTAP_EV_NKINDS && providers[kind] ? kind_names[kind] : "event";
}

void ktapvm_counters_close(struct perf_event **pe)
{
	int cpu;

	for (cpu = 0; pe && cpu < nr_cpu_ids; cpu++)
		if (pe[cpu]) {
			perf_event_release_kernel(pe[cpu]);
			pe[cpu] = NULL;
		}
}

int ktapvm_counters_open(struct perf_event_attr *attr, perf_overflow_handler_t fn, void *ctx,
			 struct perf_event ***pe)
{
	int cpu;

	*pe = kcalloc(nr_cpu_ids, sizeof(**pe), GFP_KERNEL);
	if (!*pe)
		return -ENOMEM;
	for_each_online_cpu(cpu) {
		struct perf_event *e = perf_event_create_kernel_counter(attr, cpu, NULL, fn, ctx);

		if (IS_ERR(e)) {
			if (!cpu_online(cpu))
				continue;
			ktapvm_counters_close(*pe);
			return PTR_ERR(e);
		}
		(*pe)[cpu] = e;
	}
	return 0;
}

const char *ktapvm_errname(int e)
{
	switch (e) {
	case -ENOENT: return "-ENOENT";
	case -EINVAL: return "-EINVAL";
	case -EILSEQ: return "-EILSEQ";
	case -EBUSY: return "-EBUSY";
	case -EEXIST: return "-EEXIST";
	case -ENOMEM: return "-ENOMEM";
	case -EACCES: return "-EACCES";
	case -EPERM: return "-EPERM";
	case -EOPNOTSUPP: return "-EOPNOTSUPP";
	case -ENODEV: return "-ENODEV";
	default: return "error";
	}
}

static const char *why(int e)
{
	switch (e) {
	case -ENOENT: return "not found";
	case -EINVAL: return "cannot be probed";
	case -EILSEQ: return "offset is not an instruction boundary";
	case -EBUSY: return "busy";
	case -ENOMEM: return "out of memory";
	default: return "failed";
	}
}

/* A registration failure the way the kernel calls it:
 * "kprobe vfs_wrte: not found (-ENOENT)". */
static void probe_error(const struct ktapvm_probe *p, int e, char *err, size_t errlen)
{
	snprintf(err, errlen, "%s %s: %s (%s)", kind_name(p->kind), p->probename, why(e),
		 ktapvm_errname(e));
}

/* -- the probes' life cycle ------------------------------------------------------ */
static void probe_free(struct ktapvm_probe *p)
{
	if (!p)
		return;
	if (p->ops->release)
		p->ops->release(p);
	kfree(p->name);
	kfree(p->probename);
	kfree(p);
}

/* A probe of image event `event` named name[0..name_len), with its
 * provider's setup done. */
static int probe_new(struct ktapvm_sess *s, u32 event, const struct ktap_attach *a,
		     const char *name, size_t name_len, const unsigned char *extra, char *err,
		     size_t errlen)
{
	const struct ktap_ievent *iev = &s->img->events[event];
	const struct ktapvm_provider *ops = providers[iev->kind];
	struct ktapvm_probe *p = kzalloc(ops->size, GFP_KERNEL);

	if (!p)
		return -ENOMEM;
	p->ops = ops;
	p->s = s;
	p->event = event;
	p->kind = iev->kind;
	p->name = kmemdup_nul(name, name_len, GFP_KERNEL);
	p->probename = kzalloc(name_len + KTAPVM_PROBENAME_EXTRA, GFP_KERNEL);
	if (!p->name || !p->probename) {
		probe_free(p);
		return -ENOMEM;
	}
	s->probes[s->nprobes++] = p;
	memcpy(p->probename, name, name_len);
	p->probename_len = name_len;
	return ops->setup ? ops->setup(p, iev, a, extra, err, errlen) : 0;
}

/* Every probe is unregistered before any is freed; handlers that were
 * already running finish before the memory goes (synchronize_rcu). */
void ktapvm_detach_all(struct ktapvm_sess *s)
{
	unsigned int i;

	for (i = 0; i < s->nprobes; i++)
		if (s->probes[i]->registered) {
			s->probes[i]->ops->detach(s->probes[i]);
			s->probes[i]->registered = 0;
		}
	synchronize_rcu();
	for (i = 0; i < s->nprobes; i++)
		probe_free(s->probes[i]);
	kfree(s->probes);
	s->probes = NULL;
	s->nprobes = 0;
	/* the event was filled for probes that are gone: a later START may get
	 * new probes at the same addresses */
	s->ev_owner = NULL;
	memset(&s->ev, 0, sizeof(s->ev));
}

/* One entry of the attach table at table + *pos: checked against the image,
 * then its probe set up. */
static int attach_entry(struct ktapvm_sess *s, u32 i, const unsigned char *table, size_t size,
			size_t *pos, char *err, size_t errlen)
{
	const struct ktap_image *img = s->img;
	const unsigned char *name;
	struct ktap_attach a;
	size_t need;

	if (size - *pos < sizeof(a)) {
		snprintf(err, errlen, "attach table: entry %u is truncated", i);
		return -EINVAL;
	}
	memcpy(&a, table + *pos, sizeof(a));
	*pos += sizeof(a);
	need = (size_t)a.name_len + (size_t)a.nfields * sizeof(struct ktap_field) +
	       (size_t)a.nnamed * sizeof(s16);
	if (size - *pos < need) {
		snprintf(err, errlen, "attach table: entry %u is truncated", i);
		return -EINVAL;
	}
	if (a.event >= img->nevents) {
		snprintf(err, errlen, "attach table: entry %u names event %u, the image has %u",
			 i, a.event, img->nevents);
		return -EINVAL;
	}
	if (a.kind != img->events[a.event].kind || !KTAP_EV_IN_TABLE(a.kind)) {
		snprintf(err, errlen, "attach table: entry %u is a %s, image event %u is a %s",
			 i, kind_name(a.kind), a.event, kind_name(img->events[a.event].kind));
		return -EINVAL;
	}
	name = table + *pos;
	if (a.name_len == 0 || a.name_len > KSYM_NAME_LEN || memchr(name, 0, a.name_len)) {
		snprintf(err, errlen, "attach table: entry %u has a bad name", i);
		return -EINVAL;
	}
	*pos += need;
	return probe_new(s, a.event, &a, (const char *)name, a.name_len, name + a.name_len,
			 err, errlen);
}

/* Parses and checks the whole attach table (ktap_abi.h) before anything is
 * registered, then registers the probes in table order, then the image's
 * timers. On failure the caller detaches whatever was attached. */
int ktapvm_attach_all(struct ktapvm_sess *s, const void *table, size_t size, u32 count,
		      char *err, size_t errlen)
{
	const struct ktap_image *img = s->img;
	size_t pos = 0;
	u32 i, nimage = 0;
	int ret;

	for (i = 0; i < img->nevents; i++)
		if (KTAP_EV_FROM_IMAGE(img->events[i].kind))
			nimage++;
	if (count > 100000) {
		snprintf(err, errlen, "attach table has too many entries (%u)", count);
		return -EINVAL;
	}
	s->probes = kcalloc((size_t)count + nimage + 1, sizeof(*s->probes), GFP_KERNEL);
	if (!s->probes)
		return -ENOMEM;
	for (i = 0; i < count; i++) {
		ret = attach_entry(s, i, table, size, &pos, err, errlen);
		if (ret)
			return ret;
	}
	for (i = 0; i < img->nevents; i++) {
		const struct ktap_ievent *iev = &img->events[i];

		if (!KTAP_EV_FROM_IMAGE(iev->kind))
			continue;
		ret = probe_new(s, i, NULL, iev->name.s, iev->name.len, NULL, err, errlen);
		if (ret)
			return ret;
	}
	for (i = 0; i < s->nprobes; i++) {
		struct ktapvm_probe *p = s->probes[i];

		err[0] = 0;
		ret = p->ops->attach(p, err, errlen);
		if (ret) {
			if (!err[0])
				probe_error(p, ret, err, errlen);
			return ret;
		}
		p->registered = 1;
	}
	return 0;
}
