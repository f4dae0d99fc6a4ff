/* bpf.c - the raw kernel interfaces of the eBPF path: bpf(2) for maps and
 * programs, perf_event_open(2) for the probes, and what sysfs says about the
 * CPUs and the kprobe PMU. No libbpf: a static ktaprun must stay small and
 * run on any kernel these boards boot.
 *
 * union bpf_attr and struct perf_event_attr come from the target libc's uapi
 * headers. Their pointer fields are __u64 on every target, so a pointer is
 * stored as (uint64_t)(uintptr_t)p: on a 32-bit target a plain cast would
 * sign-extend or leave the upper half undefined. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>

#include "ebpf.h"

#define PTR(p) ((uint64_t)(uintptr_t)(p))

/* -- CPUs and the kernel ------------------------------------------------------- */
/* A CPU list file ("0-3,5"): stores up to max ids, raises *top to the
 * highest id + 1, returns how many ids it lists (-1: unreadable). */
static int cpu_list(const char *path, int *ids, uint32_t max, uint32_t *top)
{
	unsigned char *text;
	size_t len;
	char *p, *end;
	long a, b, n = 0;

	text = read_whole(path, &len);
	if (!text)
		return -1;
	text = xrealloc(text, len + 1);
	text[len] = 0;
	for (p = (char *)text; *p && *p != '\n';) {
		a = strtol(p, &end, 10);
		b = *end == '-' ? strtol(end + 1, &end, 10) : a;
		if (end == p || a < 0 || b < a || b > 65535)
			break;
		for (; a <= b; a++, n++) {
			if (ids && (uint32_t)n < max)
				ids[n] = (int)a;
			if (top && (uint32_t)a + 1 > *top)
				*top = (uint32_t)a + 1;
		}
		p = *end == ',' ? end + 1 : end;
	}
	free(text);
	return n > 0 ? (int)n : -1;
}

/* KERNEL_VERSION(a, b, c) of uname -r: kprobe programs on kernels before 5.0
 * must carry it; later kernels ignore it. */
static uint32_t kernel_version(void)
{
	struct utsname u;
	unsigned a = 0, b = 0, c = 0;

	if (uname(&u) < 0 || sscanf(u.release, "%u.%u.%u", &a, &b, &c) < 2)
		return 0;
	return a << 16 | b << 8 | (c > 255 ? 255 : c);
}

int bpf_env_init(struct bpf_env *env, char *err, size_t errlen)
{
	const char *possible = "/sys/devices/system/cpu/possible";
	const char *online = "/sys/devices/system/cpu/online";
	struct rlimit unlimited = { RLIM_INFINITY, RLIM_INFINITY };
	int n;

	memset(env, 0, sizeof(*env));
	n = cpu_list(possible, NULL, 0, &env->cpu_ids);
	if (n < 0) {
		snprintf(err, errlen, "cannot read %s (is sysfs mounted?)", possible);
		return -1;
	}
	env->ncpus = (uint32_t)n;
	env->online = xmalloc(sizeof(int) * env->cpu_ids);
	n = cpu_list(online, env->online, env->cpu_ids, NULL);
	if (n < 0) {
		snprintf(err, errlen, "cannot read %s (is sysfs mounted?)", online);
		return -1;
	}
	env->nonline = (uint32_t)n < env->cpu_ids ? (uint32_t)n : env->cpu_ids;
	env->kern_version = kernel_version();
	/* Kernels before 5.11 charge maps and programs to RLIMIT_MEMLOCK (64 KiB
	 * by default): root may lift it, and later kernels ignore it. */
	setrlimit(RLIMIT_MEMLOCK, &unlimited);
	return 0;
}

void bpf_env_free(struct bpf_env *env)
{
	free(env->online);
	env->online = NULL;
}

/* -- bpf(2) ----------------------------------------------------------------------- */
static long sys_bpf(int cmd, union bpf_attr *attr)
{
	return syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

/* Object names allow [A-Za-z0-9_.] and 15 characters; they only help
 * bpftool users, so anything else becomes '_'. */
static void obj_name(char *dst, const char *src)
{
	size_t i;

	for (i = 0; src && src[i] && i < BPF_OBJ_NAME_LEN - 1; i++) {
		char c = src[i];

		dst[i] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			 (c >= '0' && c <= '9') || c == '.' ? c : '_';
	}
	dst[i] = 0;
}

int bpf_map_create(uint32_t type, uint32_t key_size, uint32_t value_size, uint32_t max_entries,
		   const char *name)
{
	union bpf_attr a;
	int fd;

	memset(&a, 0, sizeof(a));
	a.map_type = type;
	a.key_size = key_size;
	a.value_size = value_size;
	a.max_entries = max_entries;
	obj_name(a.map_name, name);
	fd = (int)sys_bpf(BPF_MAP_CREATE, &a);
	if (fd < 0 && errno == EINVAL && a.map_name[0]) {
		/* kernels before 4.15 know no names */
		memset(a.map_name, 0, sizeof(a.map_name));
		fd = (int)sys_bpf(BPF_MAP_CREATE, &a);
	}
	return fd;
}

int bpf_prog_load(uint32_t type, const struct ktap_bpf_insn *insns, uint32_t n, const char *name,
		  uint32_t kern_version, char *log, uint32_t log_size)
{
	_Static_assert(sizeof(struct ktap_bpf_insn) == sizeof(struct bpf_insn),
		       "ktap_bpf_insn is struct bpf_insn");
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.prog_type = type;
	a.insn_cnt = n;
	a.insns = PTR(insns);
	a.license = PTR("GPL");
	a.kern_version = kern_version;
	if (log && log_size) {
		log[0] = 0;
		a.log_level = 1;
		a.log_size = log_size;
		a.log_buf = PTR(log);
	}
	obj_name(a.prog_name, name);
	return (int)sys_bpf(BPF_PROG_LOAD, &a);
}

static int map_elem(int cmd, int fd, const void *key, void *value)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.map_fd = (uint32_t)fd;
	a.key = PTR(key);
	a.value = PTR(value);
	a.flags = BPF_ANY;
	return sys_bpf(cmd, &a) < 0 ? -1 : 0;
}

int bpf_map_update(int fd, const void *key, const void *value)
{
	return map_elem(BPF_MAP_UPDATE_ELEM, fd, key, (void *)value);
}

int bpf_map_lookup(int fd, const void *key, void *value)
{
	return map_elem(BPF_MAP_LOOKUP_ELEM, fd, key, value);
}

int bpf_map_delete(int fd, const void *key)
{
	union bpf_attr a;

	/* value and flags must be zero for this command */
	memset(&a, 0, sizeof(a));
	a.map_fd = (uint32_t)fd;
	a.key = PTR(key);
	return sys_bpf(BPF_MAP_DELETE_ELEM, &a) < 0 ? -1 : 0;
}

int bpf_map_next_key(int fd, const void *key, void *next)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.map_fd = (uint32_t)fd;
	a.key = PTR(key);
	a.next_key = PTR(next);
	return sys_bpf(BPF_MAP_GET_NEXT_KEY, &a) < 0 ? -1 : 0;
}

void bpf_error(char *err, size_t errlen, const char *what, int e)
{
	if (e == ENOSYS)
		snprintf(err, errlen, "%s: the kernel has no bpf(2) (needs CONFIG_BPF_SYSCALL)", what);
	else if (e == EPERM || e == EACCES)
		snprintf(err, errlen, "%s: %s: need root (CAP_SYS_ADMIN)", what, strerror(e));
	else
		snprintf(err, errlen, "%s: %s", what, strerror(e));
}

/* -- perf_event_open(2) ---------------------------------------------------------- */
static int perf_open(struct perf_event_attr *attr, int cpu)
{
	attr->size = sizeof(*attr);
	attr->disabled = 1;
	return (int)syscall(SYS_perf_event_open, attr, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC);
}

/* A sysfs file holding "config:N" (a PMU format bit) or a number: N, or -1. */
static long sysfs_number(const char *path, const char *prefix)
{
	unsigned char *text;
	size_t len;
	long v = -1;

	text = read_whole(path, &len);
	if (!text)
		return -1;
	text = xrealloc(text, len + 1);
	text[len] = 0;
	if (!strncmp((char *)text, prefix, strlen(prefix)))
		v = strtol((char *)text + strlen(prefix), NULL, 10);
	free(text);
	return v;
}

#define KPROBE_PMU "/sys/bus/event_source/devices/kprobe"

int perf_kprobe_open(const char *name, uint64_t offset, int retprobe, char *err, size_t errlen)
{
	static long type = -2, retbit = -1;
	struct perf_event_attr attr;

	if (type == -2) {
		type = sysfs_number(KPROBE_PMU "/type", "");
		retbit = sysfs_number(KPROBE_PMU "/format/retprobe", "config:");
	}
	if (type < 0 || (retprobe && retbit < 0)) {
		snprintf(err, errlen, "this kernel has no kprobe PMU (%s): it needs "
			 "CONFIG_KPROBE_EVENTS and Linux 4.17 or later", KPROBE_PMU);
		errno = ENODEV;
		return -1;
	}
	memset(&attr, 0, sizeof(attr));
	attr.type = (uint32_t)type;
	attr.config = retprobe ? 1ULL << retbit : 0;
	attr.config1 = PTR(name);	/* kprobe_func */
	attr.config2 = offset;		/* probe_offset */
	/* The program runs wherever the function is hit: the event's CPU only
	 * says where perf's own samples would go. */
	return perf_open(&attr, 0);
}

#define UPROBE_PMU "/sys/bus/event_source/devices/uprobe"

int perf_uprobe_open(const char *path, uint64_t offset, uint64_t ref_ctr, int retprobe, char *err,
		     size_t errlen)
{
	static long type = -2, retbit = -1;
	struct perf_event_attr attr;

	if (type == -2) {
		type = sysfs_number(UPROBE_PMU "/type", "");
		retbit = sysfs_number(UPROBE_PMU "/format/retprobe", "config:");
	}
	if (type < 0 || (retprobe && retbit < 0)) {
		snprintf(err, errlen, "this kernel has no uprobe PMU (%s): it needs CONFIG_UPROBES, "
			 "CONFIG_UPROBE_EVENTS and Linux 4.17 or later", UPROBE_PMU);
		errno = ENODEV;
		return -1;
	}
	memset(&attr, 0, sizeof(attr));
	attr.type = (uint32_t)type;
	/* the USDT semaphore's file offset: the PMU's ref_ctr_offset, config:32-63 */
	attr.config = (retprobe ? 1ULL << retbit : 0) | ref_ctr << 32;
	attr.config1 = PTR(path);	/* uprobe_path */
	attr.config2 = offset;		/* probe_offset: in the file */
	return perf_open(&attr, 0);
}

int perf_tracepoint_open(uint32_t id)
{
	struct perf_event_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.type = PERF_TYPE_TRACEPOINT;
	attr.config = id;
	return perf_open(&attr, 0);
}

int perf_sample_open(uint32_t type, uint64_t config, uint64_t period, uint64_t freq, int cpu)
{
	struct perf_event_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.type = type;
	attr.config = config;
	attr.freq = freq != 0;
	if (freq)
		attr.sample_freq = freq;
	else
		attr.sample_period = period;
	return perf_open(&attr, cpu);
}

int perf_timer_open(int64_t period_ns, int cpu)
{
	/* cpu-clock counts nanoseconds */
	return perf_sample_open(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK, (uint64_t)period_ns,
				0, cpu);
}

int perf_attach_prog(int perf_fd, int prog_fd)
{
	if (ioctl(perf_fd, PERF_EVENT_IOC_SET_BPF, prog_fd) < 0)
		return -1;
	return ioctl(perf_fd, PERF_EVENT_IOC_ENABLE, 0);
}
