/* ebpf.h - ktaprun's eBPF path (docs/ebpf.md): the raw bpf(2) and
 * perf_event_open(2) layer (bpf.c), the output rings (perfbuf.c), the maps
 * (ebpf_maps.c), the programs and their attachments (ebpf_progs.c) and the
 * session flow (ebpf.c). None of it is built into the host formatter. */
#ifndef KTAPRUN_EBPF_H
#define KTAPRUN_EBPF_H

#include "session.h"

/* -- the kernel's side (bpf.c) ----------------------------------------------- */
/* What this kernel offers, found once per session. */
struct bpf_env {
	uint32_t ncpus;			/* possible CPUs: values per percpu map entry */
	uint32_t cpu_ids;		/* highest possible CPU id + 1: perf event array size */
	int *online;			/* online CPU ids */
	uint32_t nonline;
	uint32_t kern_version;		/* LINUX_VERSION_CODE of uname -r (kernels < 5.0 check it) */
};

int bpf_env_init(struct bpf_env *env, char *err, size_t errlen);
void bpf_env_free(struct bpf_env *env);

/* Each returns a file descriptor or -1 with errno set. */
int bpf_map_create(uint32_t type, uint32_t key_size, uint32_t value_size, uint32_t max_entries,
		   const char *name);
int bpf_prog_load(uint32_t type, const struct ktap_bpf_insn *insns, uint32_t n, const char *name,
		  uint32_t kern_version, char *log, uint32_t log_size);
/* 0 or -1 with errno set. */
int bpf_map_update(int fd, const void *key, const void *value);
int bpf_map_lookup(int fd, const void *key, void *value);
int bpf_map_next_key(int fd, const void *key, void *next);	/* key NULL: the first */
int bpf_map_delete(int fd, const void *key);

/* A one-line reason for a failed bpf(2) call, naming the kernel option that
 * is missing when errno says the kernel lacks it. */
void bpf_error(char *err, size_t errlen, const char *what, int e);

/* perf_event_open(2) for the probes: a kprobe/kretprobe through the kprobe
 * PMU (name and offset), a tracepoint by id, a cpu-clock timer of period_ns
 * on one CPU. Disabled until PERF_EVENT_IOC_ENABLE. fd, or -1 + errno. */
int perf_kprobe_open(const char *name, uint64_t offset, int retprobe, char *err, size_t errlen);
/* A uprobe through the uprobe PMU on PATH at a file offset: closing it removes it. */
int perf_uprobe_open(const char *path, uint64_t offset, uint64_t ref_ctr, int retprobe, char *err,
		     size_t errlen);
int perf_tracepoint_open(uint32_t id);
int perf_timer_open(int64_t period_ns, int cpu);
/* A sampling counter: every `period` events, or `freq` times a second. */
int perf_sample_open(uint32_t type, uint64_t config, uint64_t period, uint64_t freq, int cpu);
/* PERF_EVENT_IOC_SET_BPF then PERF_EVENT_IOC_ENABLE; 0 or -1 + errno. */
int perf_attach_prog(int perf_fd, int prog_fd);

/* -- the output rings (perfbuf.c) --------------------------------------------- */
struct perfbuf {
	int fd, cpu;
	unsigned char *base;		/* the mmap'd metadata page, then the data */
	size_t data_size, map_len;
};

/* One record a program sent: its raw data is one output record. */
struct sample {
	uint64_t time;
	size_t order;			/* read order, for ties */
	unsigned char *rec;
	uint32_t size;
};

struct samples {
	struct sample *v;
	size_t n, cap;
	uint64_t lost;			/* PERF_RECORD_LOST counts */
};

/* A PERF_COUNT_SW_BPF_OUTPUT event on cpu with a ring of at least bytes. */
int perfbuf_open(struct perfbuf *b, int cpu, size_t bytes, char *err, size_t errlen);
/* Appends every whole sample waiting in the ring to out. */
void perfbuf_drain(struct perfbuf *b, struct samples *out);
void perfbuf_close(struct perfbuf *b);
/* Sorts by time (stable: one CPU's records keep their order). */
void samples_sort(struct samples *s);
void samples_clear(struct samples *s);

/* -- the session ---------------------------------------------------------------- */
struct ebpf_map {
	const struct ktap_bpf_map *m;
	int fd;
	uint32_t max_entries;		/* as created (0 in the image resolved) */
	struct ktap_table *table;	/* role table: the interpreter's table */
	uint32_t nlinear;		/* aggregates: linear counters (0: none) */
	int log2;			/* aggregates: the value has the log2 row */
	unsigned char *seeded;		/* globals: the value as seeded */
};

/* One probe on this kernel: a glob match, or a timer. */
struct attachment {
	uint32_t event;			/* image event */
	char *name;			/* what the module calls it: SYM, SYM+0xOFF, S:E, tick-1s */
	char *target;			/* what perf opens: SYM, or S:E */
	struct tp_format *fmt;		/* tracepoints */
};

/* One loaded program attached to one attachment. */
struct link {
	uint32_t prog;			/* image program */
	uint32_t att;			/* attachment index */
	int prog_fd;			/* may be shared with other links */
	int owns_fd;			/* the first link of a shared program closes it */
	int *perf_fds;			/* one, or one per online CPU (profile-N) */
	uint32_t nperf;
};

struct ebpf_sess {
	const struct options *o;
	const struct ktap_image *img;
	struct ktap_session *vm;
	struct bpf_env env;
	struct ebpf_map *maps;		/* img->nmaps */
	int role[KTAP_BPF_NUM_ROLES];	/* map index of each non-table role, -1 if none */
	struct attachment *att;
	uint32_t natt;
	struct link *links;
	uint32_t nlinks;
	struct perfbuf *bufs;
	uint32_t nbufs;
	struct samples pending;
	struct stream *out;
	int stopped;			/* the session stopped: a program's STATUS record,
					 * or a built-in's error from a CALL record */
	int failed;			/* a CALL record ktaprun cannot run: err says why */
	unsigned bad_records;		/* samples that were no output record */
	int64_t wall_offset;		/* CLOCK_REALTIME - CLOCK_BOOTTIME when the
					 * programs load: their walltime */
	char err[512];
};

/* ebpf_maps.c */
int ebpf_check_maps(const struct ktap_image *img, char *err, size_t errlen);
int ebpf_create_maps(struct ebpf_sess *e);
int ebpf_seed_maps(struct ebpf_sess *e);
int ebpf_open_output(struct ebpf_sess *e);
uint64_t ebpf_state_word(struct ebpf_sess *e, uint32_t index);	/* state map u64 #index */
/* Globals and tables back into the interpreter, and the drops; lost: the
 * samples the rings reported lost. */
int ebpf_read_back(struct ebpf_sess *e, uint64_t lost);
void ebpf_close_maps(struct ebpf_sess *e);
/* The map of the table global holds, NULL if none; the interpreter's table
 * made what the map holds now (entries in stamp order); both emptied. */
struct ebpf_map *ebpf_table_map(struct ebpf_sess *e, uint32_t global);
void ebpf_pull_table(struct ebpf_sess *e, const struct ebpf_map *em);
void ebpf_clear_table(struct ebpf_sess *e, const struct ebpf_map *em);
void ebpf_zero_table(struct ebpf_sess *e, const struct ebpf_map *em);

/* ebpf_call.c: a program's CALL record run, its output left in the
 * interpreter's buffer for the caller to print. -1: a record ktaprun cannot
 * run (e->err says why, e->failed is set). */
int ebpf_call(struct ebpf_sess *e, const unsigned char *rec, uint32_t size);

/* ebpf_progs.c */
int ebpf_check_progs(const struct ktap_image *img, char *err, size_t errlen);
int ebpf_expand(struct ebpf_sess *e);
int ebpf_fill_probenames(struct ebpf_sess *e);
int ebpf_load(struct ebpf_sess *e);
int ebpf_attach(struct ebpf_sess *e);
void ebpf_detach(struct ebpf_sess *e);
void ebpf_free_progs(struct ebpf_sess *e);

#endif
