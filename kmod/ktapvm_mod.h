/* ktapvm_mod.h - private to the module: the session shared by ktapvm_main.c
 * (device, ioctls, read), ktapvm_events.c (attach/detach) and the event
 * providers' probe handlers (kmod/events/). */
#ifndef KTAPVM_MOD_H
#define KTAPVM_MOD_H

#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <linux/irq_work.h>
#include <linux/atomic.h>
#include <linux/percpu.h>
#include <linux/timekeeping.h>
#include "ktap_vm.h"
#include "ktap_abi.h"

enum ktapvm_state {
	KTAPVM_EMPTY,		/* opened, nothing loaded */
	KTAPVM_LOADED,		/* image loaded and verified */
	KTAPVM_RUNNING,		/* setup ran, events attached */
	KTAPVM_DONE,		/* detached, trace_end ran, STATUS record written */
};

struct ktapvm_probe;

/* Per-session scratch for one event, used under vm_lock only. */
#define KTAPVM_MAX_TP_FIELDS	128
#define KTAPVM_MAX_STACK	64
#define KTAPVM_MAX_USTACK	32	/* user frames ustack() walks */

struct ktapvm_sess {
	struct mutex lock;		/* ioctls, stop, read bookkeeping */
	int state;
	struct ktap_image *img;
	struct ktap_session *vm;

	/* One handler at a time; output drain. An arch spinlock: handlers also run
	 * in NMI-like context (x86 int3 kprobes), which lockdep reports as
	 * inconsistent {IN-NMI} usage of a lockdep-tracked lock. Same-CPU
	 * recursion is impossible: every holder sets the per-CPU busy flag
	 * first (ktapvm_fire_begin, vm_lock_process), and a handler that finds
	 * it set is dropped instead of spinning. */
	arch_spinlock_t vm_lock;
	int active;			/* handlers may run (READ_ONCE) */
	int stop_requested;		/* a handler hit exit() or an error */
	atomic64_t reentered;		/* handler wanted to run inside a handler on its CPU */
	struct irq_work irq_work;	/* from probe context: wake readers, queue stop */
	struct work_struct stop_work;	/* process context: the stop itself */
	wait_queue_head_t wq;

	/* what the image needs from each event (scanned at LOAD) */
	unsigned int nargs;		/* highest argN used by any handler */
	int need_stack, need_clock, need_mono, need_ustack;
	unsigned int need_vars;		/* bit per KTAP_V_* read by LOADVAR */

	/* attached events */
	struct ktapvm_probe **probes;
	unsigned int nprobes;

	/* records drained from the core, waiting for read() */
	unsigned char *rbuf;
	size_t rcap, rlen, rpos;
	int finished;			/* the STATUS record has been produced */

	/* event scratch (under vm_lock) */
	struct ktap_event ev;
	const struct ktapvm_probe *ev_owner;	/* the probe ev was last filled for */
	int64_t args[KTAP_MAX_ARGS];
	uint64_t stack[KTAPVM_MAX_STACK];
	unsigned long stack_raw[KTAPVM_MAX_STACK];
	struct ktap_fieldval fields[KTAPVM_MAX_TP_FIELDS];
	struct ktap_fieldval named[KTAP_MAX_FIELDS];
	char ustack[1024];		/* ustack()'s frames as text (ktapvm_ustack.c) */
	char upath[256];		/* d_path() scratch */
};

/* ktapvm_events.c */
int ktapvm_attach_all(struct ktapvm_sess *s, const void *table, size_t size, u32 count,
		      char *err, size_t errlen);
void ktapvm_detach_all(struct ktapvm_sess *s);
void ktapvm_scan_image(struct ktapvm_sess *s);
/* ktapvm_ustack.c: the current task's user frames into s->ustack, as
 * "PATH+0xOFFSET\n" lines; returns their length. at_entry: the probe sits at
 * a function's first instruction, where the caller is in the link register. */
u32 ktapvm_user_stack(struct ktapvm_sess *s, int at_entry);
int ktapvm_read_str(void *ctx, int user, uint64_t addr, char *buf, uint32_t max);

/* Around every handler (kmod/events/): inline, as they run on every event.
 * The per-CPU busy flag is defined in ktapvm_main.c. */
DECLARE_PER_CPU(int, ktapvm_busy);

/* Before a handler runs: irqs off, then refuse re-entry on this CPU (counted
 * as a drop) and a session that is stopping; then take the session lock. */
static __always_inline bool ktapvm_fire_begin(struct ktapvm_sess *s, unsigned long *flags)
{
	local_irq_save(*flags);
	if (unlikely(__this_cpu_read(ktapvm_busy))) {
		atomic64_inc(&s->reentered);
		local_irq_restore(*flags);
		return false;
	}
	if (unlikely(!READ_ONCE(s->active))) {
		local_irq_restore(*flags);
		return false;
	}
	__this_cpu_write(ktapvm_busy, 1);
	arch_spin_lock(&s->vm_lock);
	return true;
}

/* After the event is filled: run the handler, wake a waiting reader or ask
 * for the stop, drop the lock and the busy flag. */
static __always_inline void ktapvm_fire_end(struct ktapvm_sess *s, u32 event,
					    unsigned long flags)
{
	size_t pending = 0;
	int rc;

	if (s->need_clock)
		ktap_set_clock(s->vm, (int64_t)ktime_get_real_fast_ns());
	if (s->need_mono)
		ktap_set_mono(s->vm, (int64_t)ktime_get_mono_fast_ns());
	rc = ktap_fire(s->vm, event, &s->ev);
	/* records only matter to a reader waiting for them */
	if (wq_has_sleeper(&s->wq))
		ktap_output(s->vm, &pending);
	arch_spin_unlock(&s->vm_lock);
	if (unlikely(rc == KTAP_RUN_EXIT || rc == KTAP_RUN_ERROR)) {
		WRITE_ONCE(s->active, 0);
		WRITE_ONCE(s->stop_requested, 1);
		irq_work_queue(&s->irq_work);
	} else if (pending) {
		irq_work_queue(&s->irq_work);
	}
	__this_cpu_write(ktapvm_busy, 0);	/* irqs are still off */
	local_irq_restore(flags);
}

#endif
