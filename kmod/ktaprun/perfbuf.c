/* perfbuf.c - the output rings of the eBPF path: one PERF_COUNT_SW_BPF_OUTPUT
 * event per CPU, mmap'd, whose fd sits in the output map at that CPU's index.
 * A program's bpf_perf_event_output(ctx, map, BPF_F_CURRENT_CPU, rec, size)
 * lands in its CPU's ring as a PERF_RECORD_SAMPLE whose raw data is exactly
 * one output record (docs/kmod.md), zero-padded to 8 bytes by the kernel.
 * Samples also carry the time, so records of several CPUs read in one round
 * are put back into the order they were written in. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/perf_event.h>

#include "ebpf.h"

/* The data area is a power of two of pages: at least the image's output
 * buffer size, at most 4 MiB per CPU (boards have little memory). */
#define RING_MAX (4u << 20)

int perfbuf_open(struct perfbuf *b, int cpu, size_t bytes, char *err, size_t errlen)
{
	struct perf_event_attr attr;
	size_t page = (size_t)sysconf(_SC_PAGESIZE), data = page * 8;

	memset(b, 0, sizeof(*b));
	b->fd = -1;
	b->cpu = cpu;
	while (data < bytes && data < RING_MAX)
		data *= 2;
	memset(&attr, 0, sizeof(attr));
	attr.size = sizeof(attr);
	attr.type = PERF_TYPE_SOFTWARE;
	attr.config = PERF_COUNT_SW_BPF_OUTPUT;
	attr.sample_type = PERF_SAMPLE_TIME | PERF_SAMPLE_RAW;
	attr.sample_period = 1;
	attr.wakeup_events = 1;		/* poll() wakes for every record */
	b->fd = (int)syscall(SYS_perf_event_open, &attr, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC);
	if (b->fd < 0) {
		snprintf(err, errlen, "output buffer on CPU %d: perf_event_open: %s%s", cpu,
			 strerror(errno), errno == ENOSYS || errno == ENOENT
			 ? " (needs CONFIG_PERF_EVENTS)" : "");
		return -1;
	}
	b->map_len = page + data;
	b->base = mmap(NULL, b->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, b->fd, 0);
	if (b->base == MAP_FAILED) {
		b->base = NULL;
		snprintf(err, errlen, "output buffer on CPU %d: mmap of %zu bytes: %s", cpu,
			 b->map_len, strerror(errno));
		return -1;
	}
	b->data_size = data;
	ioctl(b->fd, PERF_EVENT_IOC_ENABLE, 0);
	return 0;
}

void perfbuf_close(struct perfbuf *b)
{
	if (b->base)
		munmap(b->base, b->map_len);
	if (b->fd >= 0)
		close(b->fd);
	b->base = NULL;
	b->fd = -1;
}

/* n bytes at ring offset off, copied out in two parts when they wrap. */
static void ring_copy(const struct perfbuf *b, uint64_t off, void *dst, size_t n)
{
	const unsigned char *data = b->base + (b->map_len - b->data_size);
	size_t at = (size_t)(off & (b->data_size - 1)), first = b->data_size - at;

	if (first > n)
		first = n;
	memcpy(dst, data + at, first);
	memcpy((unsigned char *)dst + first, data, n - first);
}

static void add_sample(struct samples *s, uint64_t time, const unsigned char *raw, uint32_t n)
{
	struct sample *x;

	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->v = xrealloc(s->v, s->cap * sizeof(*s->v));
	}
	x = &s->v[s->n++];
	x->time = time;
	x->order = s->n - 1;
	x->rec = xmalloc(n);
	memcpy(x->rec, raw, n);
	/* the kernel pads the raw data: the record says how long it is */
	x->size = n >= 4 ? rd_u32(raw) : n;
	if (x->size > n)
		x->size = n;	/* truncated: the stream calls it malformed */
}

/* One PERF_RECORD_SAMPLE (u64 time, u32 size, raw bytes) or _LOST (u64 id,
 * u64 lost); everything else the ring may hold is skipped. */
static void one_event(const unsigned char *ev, size_t n, struct samples *out)
{
	struct perf_event_header h;
	uint64_t time, lost;
	uint32_t raw;

	memcpy(&h, ev, sizeof(h));
	if (h.type == PERF_RECORD_SAMPLE && n >= sizeof(h) + 12) {
		memcpy(&time, ev + sizeof(h), 8);
		memcpy(&raw, ev + sizeof(h) + 8, 4);
		if (raw <= n - sizeof(h) - 12)
			add_sample(out, time, ev + sizeof(h) + 12, raw);
	} else if (h.type == PERF_RECORD_LOST && n >= sizeof(h) + 16) {
		memcpy(&lost, ev + sizeof(h) + 8, 8);
		out->lost += lost;
	}
}

void perfbuf_drain(struct perfbuf *b, struct samples *out)
{
	volatile struct perf_event_mmap_page *meta = (void *)b->base;
	struct perf_event_header h;
	unsigned char *ev = NULL;
	size_t cap = 0;
	uint64_t head, tail;

	if (!b->base)
		return;
	/* the kernel writes data, then head: read head, then a barrier (32-bit
	 * targets have no atomic 64-bit load; head only grows) */
	head = meta->data_head;
	__sync_synchronize();
	tail = meta->data_tail;
	while (tail + sizeof(h) <= head) {
		ring_copy(b, tail, &h, sizeof(h));
		if (h.size < sizeof(h) || tail + h.size > head) {
			tail = head;	/* not a record the kernel writes: skip it all */
			break;
		}
		if (h.size > cap) {
			cap = h.size;
			ev = xrealloc(ev, cap);
		}
		ring_copy(b, tail, ev, h.size);
		one_event(ev, h.size, out);
		tail += h.size;
	}
	free(ev);
	/* everything read is copied out before the kernel may reuse it */
	__sync_synchronize();
	meta->data_tail = tail;
}

static int by_time(const void *a, const void *b)
{
	const struct sample *x = a, *y = b;

	if (x->time != y->time)
		return x->time < y->time ? -1 : 1;
	/* equal times keep the order they were read in */
	return x->order < y->order ? -1 : x->order > y->order;
}

void samples_sort(struct samples *s)
{
	if (s->n > 1)
		qsort(s->v, s->n, sizeof(*s->v), by_time);
}

void samples_clear(struct samples *s)
{
	while (s->n)
		free(s->v[--s->n].rec);
}
