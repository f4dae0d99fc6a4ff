// SPDX-License-Identifier: GPL-2.0
/* ktap_native.c - the benchmark's yardstick: what a kernel engineer would
 * write by hand for `var s = {} trace probe:vfs_write { s[execname] += 1 }`.
 *
 *   insmod ktap_native.ko mode=empty   a kprobe on vfs_write with an empty handler
 *   insmod ktap_native.ko mode=count   the same kprobe counting calls per comm
 *   ... on=tracepoint                   syscalls:sys_enter_write instead, through a
 *                                       perf counter per online CPU (as ktapvm
 *                                       attaches tracepoints)
 *
 * The table is preallocated (open addressing, linear probing), keyed by the
 * task's comm, and guarded by a raw spinlock as any SMP-safe module must be.
 * At unload it prints "ktap_native: COMM COUNT" lines, so the benchmark can
 * check that the handler really ran. */
#include <linux/module.h>
#include <linux/kprobes.h>
#include <linux/rcupdate.h>
#include <linux/perf_event.h>
#include <linux/trace_events.h>
#include <linux/cpumask.h>
#include <linux/sched.h>
#include <linux/spinlock.h>
#include <linux/string.h>

#define SLOTS 4096

struct slot {
	char comm[TASK_COMM_LEN];
	u64 count;
	bool used;
};

static char mode[8] = "count";
module_param_string(mode, mode, sizeof(mode), 0444);
static char on[16] = "kprobe";
module_param_string(on, on, sizeof(on), 0444);

static struct slot *table;
static bool counting;
static u64 full;
static DEFINE_RAW_SPINLOCK(table_lock);

static u32 comm_hash(const char *s, size_t n)
{
	u32 h = 2166136261u;	/* FNV-1a */

	while (n--)
		h = (h ^ (u8)*s++) * 16777619u;
	return h;
}

static void count_comm(const char *comm)
{
	size_t n = strnlen(comm, TASK_COMM_LEN);
	u32 i = comm_hash(comm, n), probes;
	unsigned long flags;

	raw_spin_lock_irqsave(&table_lock, flags);
	for (probes = 0; probes < SLOTS; probes++, i++) {
		struct slot *e = &table[i & (SLOTS - 1)];

		if (!e->used) {
			memcpy(e->comm, comm, n);
			e->comm[n] = 0;
			e->used = true;
		} else if (memcmp(e->comm, comm, n) || e->comm[n]) {
			continue;
		}
		e->count++;
		break;
	}
	if (probes == SLOTS)
		full++;
	raw_spin_unlock_irqrestore(&table_lock, flags);
}

static int on_vfs_write(struct kprobe *kp, struct pt_regs *regs)
{
	if (counting)
		count_comm(current->comm);
	return 0;
}

static struct kprobe probe = {
	.symbol_name = "vfs_write",
	.pre_handler = on_vfs_write,
};

static struct trace_event_file *tp_file;
static struct perf_event *tp_events[NR_CPUS];

static void on_sys_enter_write(struct perf_event *event, struct perf_sample_data *data,
			       struct pt_regs *regs)
{
	if (counting)
		count_comm(current->comm);
}

static void detach_tracepoint(void)
{
	int cpu;

	for_each_possible_cpu(cpu)
		if (tp_events[cpu]) {
			perf_event_release_kernel(tp_events[cpu]);
			tp_events[cpu] = NULL;
		}
	if (tp_file)
		trace_put_event_file(tp_file);
	tp_file = NULL;
}

static int attach_tracepoint(void)
{
	struct perf_event_attr attr = {
		.type = PERF_TYPE_TRACEPOINT,
		.size = sizeof(attr),
		.sample_period = 1,
		.sample_type = PERF_SAMPLE_RAW,	/* what ktapvm asks for */
	};
	int cpu, rc = 0;

	tp_file = trace_get_event_file(NULL, "syscalls", "sys_enter_write");
	if (IS_ERR(tp_file)) {
		rc = PTR_ERR(tp_file);
		tp_file = NULL;
		return rc;
	}
	attr.config = tp_file->event_call->event.type;
	cpus_read_lock();
	for_each_online_cpu(cpu) {
		struct perf_event *pe = perf_event_create_kernel_counter(&attr, cpu, NULL,
									 on_sys_enter_write, NULL);

		if (IS_ERR(pe)) {
			rc = PTR_ERR(pe);
			break;
		}
		tp_events[cpu] = pe;
	}
	cpus_read_unlock();
	if (rc)
		detach_tracepoint();
	return rc;
}

static int __init native_init(void)
{
	int rc;

	if ((strcmp(mode, "empty") && strcmp(mode, "count")) ||
	    (strcmp(on, "kprobe") && strcmp(on, "tracepoint")))
		return -EINVAL;
	counting = !strcmp(mode, "count");
	table = kcalloc(SLOTS, sizeof(*table), GFP_KERNEL);
	if (!table)
		return -ENOMEM;
	rc = strcmp(on, "kprobe") ? attach_tracepoint() : register_kprobe(&probe);
	if (rc)
		kfree(table);
	return rc;
}

static void __exit native_exit(void)
{
	u32 i;

	if (strcmp(on, "kprobe"))
		detach_tracepoint();
	else
		unregister_kprobe(&probe);
	synchronize_rcu();	/* a handler already running finishes before the table goes */
	for (i = 0; i < SLOTS; i++)
		if (table[i].used)
			pr_info("ktap_native: %s %llu\n", table[i].comm, table[i].count);
	if (full)
		pr_info("ktap_native: %llu not counted (table full)\n", full);
	kfree(table);
}

module_init(native_init);
module_exit(native_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("ktap benchmark yardstick: a hand-written vfs_write counter");
