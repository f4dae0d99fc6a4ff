/* ktapvm_probe.h - the event providers' interface (the files of kmod/events/).
 *
 * A provider implements one kind of events/kinds.py: how a probe of that kind
 * is set up from the image event (and, for kinds ktaprun resolves, from its
 * attach-table entry), registered, unregistered and freed. ktapvm_events.c
 * owns the probes' life cycle and calls only these operations, so adding a
 * provider is a row in kinds.py (which names it in KTAP_EV_PROVIDERS) and one
 * file here defining ktapvm_provider_<name>. Every probe handler is
 * ktapvm_fire_begin() -> ktapvm_fill_task() -> its own fields ->
 * ktapvm_fire_end(). */
#ifndef KTAPVM_PROBE_H
#define KTAPVM_PROBE_H

#include <linux/module.h>
#include <linux/sched.h>
#include <linux/cred.h>
#include <linux/uidgid.h>
#include <linux/stacktrace.h>
#include <linux/perf_event.h>
#include "ktapvm_mod.h"
#include "ktap_features.h"

/* What every probe has; a provider's probe embeds it first and adds its own
 * state (container_of). */
struct ktapvm_probe {
	const struct ktapvm_provider *ops;
	struct ktapvm_sess *s;
	u32 event, kind;
	int registered;
	char *name;				/* NUL-terminated: symbol, subsys:event, timer */
	char *probename;			/* what the `probename` variable reads */
	u32 probename_len;
	int user_entry;				/* a uprobe on a function's first instruction */
};

/* Room kept after the name in probename (a kprobe's "+0x<offset>"). */
#define KTAPVM_PROBENAME_EXTRA 24

struct ktapvm_provider {
	size_t size;		/* of the provider's probe struct */
	/* Takes what the probe needs from its image event and, for kinds in the
	 * attach table, from its entry `a` and the bytes after its name (`extra`:
	 * a->nfields struct ktap_field, then a->nnamed s16); `a` is NULL for kinds
	 * attached from the image. Process context. NULL: nothing to take. */
	int (*setup)(struct ktapvm_probe *p, const struct ktap_ievent *iev,
		     const struct ktap_attach *a, const unsigned char *extra, char *err,
		     size_t errlen);
	/* Registers the probe. On failure nothing stays registered; err says why,
	 * or, left empty, gets the kernel's reason for the returned errno. */
	int (*attach)(struct ktapvm_probe *p, char *err, size_t errlen);
	void (*detach)(struct ktapvm_probe *p);
	/* Frees what setup allocated. NULL: nothing. */
	void (*release)(struct ktapvm_probe *p);
};

#define KTAPVM_DECLARE_PROVIDER(name) extern const struct ktapvm_provider ktapvm_provider_##name;
KTAP_EV_PROVIDER_NAMES(KTAPVM_DECLARE_PROVIDER)
#undef KTAPVM_DECLARE_PROVIDER

/* One field of a perf raw record (a tracepoint's, or a uprobe_events
 * entry's fetch argument), bounds-checked against the record's size. */
void ktapvm_field_decode(const struct ktap_field *f, const unsigned char *rec, u32 size,
			 struct ktap_fieldval *out);

/* The raw record of a tracepoint-like perf sample; false without one. */
bool ktapvm_raw_record(struct perf_sample_data *data, const unsigned char **rec, u32 *size);
/* ktapvm_counters_open() of the trace event with this id (a tracepoint, or a
 * uprobe_events entry), sampling every hit with its raw record. */
int ktapvm_tracepoint_open(u32 id, perf_overflow_handler_t fn, void *ctx, struct perf_event ***pe);

/* "-ENOENT" and the like, for error messages. */
const char *ktapvm_errname(int e);

/* A perf counter with `attr` on every online CPU, each calling fn(ctx):
 * *pe becomes an array indexed by CPU id. Not under cpus_read_lock():
 * registering a tracepoint's perf probe takes it again (static calls on
 * x86, jump labels), and a percpu rwsem read twice deadlocks once a
 * CPU-hotplug writer waits in between (lockdep reported it on x86_64's
 * PREEMPT_RT kernel). A CPU that goes offline meanwhile is skipped; one
 * that comes online later gets no counter. On failure (the errno) none
 * stays open. ktapvm_counters_close() releases them; kfree(*pe) after. */
int ktapvm_counters_open(struct perf_event_attr *attr, perf_overflow_handler_t fn, void *ctx,
			 struct perf_event ***pe);
void ktapvm_counters_close(struct perf_event **pe);

/* The task part of the event context, and what depends only on the probe:
 * inline, as it runs in every handler. */
static __always_inline void ktapvm_fill_task(struct ktapvm_sess *s, struct ktapvm_probe *p)
{
	struct ktap_event *ev = &s->ev;
	struct task_struct *t = current;
	unsigned int v = s->need_vars;

	/* only what some handler reads (LOADVAR) */
	if (v & (1U << KTAP_V_PID))
		ev->pid = task_tgid_nr(t);
	if (v & (1U << KTAP_V_TID))
		ev->tid = task_pid_nr(t);
	if (v & (1U << KTAP_V_UID))
		ev->uid = from_kuid_munged(&init_user_ns, current_uid());
	if (v & (1U << KTAP_V_CPU))
		ev->cpu = smp_processor_id();
	BUILD_BUG_ON(sizeof(t->comm) != KTAP_COMM_BYTES);
	if (v & (1U << KTAP_V_EXECNAME))
		ev->comm = t->comm;
	ev->shard = raw_smp_processor_id();	/* handlers run with irqs off */
	/* What depends only on the probe stays from its last event (each kind's
	 * own fields are set by its handler every time). */
	if (s->ev_owner != p) {
		s->ev_owner = p;
		ev->probename = p->probename;
		ev->probename_len = p->probename_len;
		ev->has_retval = 0;
		ev->retval = 0;
		ev->args = s->args;
		ev->nargs = 0;
		ev->stack = s->stack;
		ev->nstack = 0;
		ev->is_tracepoint = 0;
		ev->fields = s->fields;
		ev->nfields = 0;
		ev->named = s->named;
		ev->nnamed = 0;
	}
	if (s->need_stack) {
		unsigned int i, n, k = 0;

		/* stack_trace_save_regs() is not exported: walk from here and leave
		 * out ktapvm's own frames */
		n = stack_trace_save(s->stack_raw, KTAPVM_MAX_STACK, 0);
		for (i = 0; i < n; i++)
			if (!within_module(s->stack_raw[i], THIS_MODULE))
				s->stack[k++] = s->stack_raw[i];
		ev->nstack = k;
	}
	if (s->need_ustack) {
		ev->ustack = s->ustack;
		ev->ustack_len = ktapvm_user_stack(s, p->user_entry);
	}
}

#endif
