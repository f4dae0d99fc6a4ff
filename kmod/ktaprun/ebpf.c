/* ebpf.c - a session of an ebpf image (docs/ebpf.md "Runtime in ktaprun"):
 * no module and no /dev/ktap. kmod's core runs the setup code and trace_end
 * here in user space, with one CPU shard (nothing runs concurrently here);
 * the handlers are BPF programs whose output records come through perf
 * rings. Both kinds of records go to the same stream and formatter as the
 * module's, so the two backends print the same text.
 *
 * The setup code runs before any map exists: a table it cannot create is
 * its runtime error, as on the ktapvm path, not a map the kernel fails to
 * allocate. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ebpf.h"

#ifdef KTAPRUN_FORMAT_ONLY
int run_ebpf(const struct options *o, const struct ktap_image *img)
{
	(void)o; (void)img;
	fputs("ktaprun: this host build only formats records (--format-records)\n", stderr);
	return KTAP_EXIT_USAGE;
}
#else

/* How often the loop looks at the state map when no record arrives: a
 * program's STATUS record can be lost to a full ring, its state cannot. */
#define STATE_POLL_MS 200

static int64_t clock_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t wall_ns(void)
{
	return clock_ns(CLOCK_REALTIME);
}

static int64_t mono_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

/* The interpreter's records so far, printed as the module's would be. */
static void flush_vm(struct ebpf_sess *e)
{
	size_t len;
	const unsigned char *p = ktap_output(e->vm, &len);

	if (len)
		stream_feed(e->out, p, len);
	ktap_output_consumed(e->vm);
}

/* kmod's verifier, as the module runs it at LOAD (same message). */
static int verify(struct ebpf_sess *e)
{
	char msg[KTAP_ERRLEN];
	int proto = -1, pc = -1, rc = ktap_verify(e->img, msg, sizeof(msg), &proto, &pc);

	if (rc == KTAP_OK)
		return 0;
	snprintf(e->err, sizeof(e->err), "verifier: %s: %s (function %d, pc %d)",
		 rc < KTAP_NUM_REASONS ? ktap_reason_names[rc] : "?", msg, proto, pc);
	return -1;
}

/* One small map, at once closed: whether bpf(2) is there and allowed at
 * all, said before anything else is tried (tracefs, programs). */
static int bpf_usable(struct ebpf_sess *e)
{
	int fd = bpf_map_create(2 /* array */, 4, 8, 1, "ktap_probe");

	if (fd < 0) {
		bpf_error(e->err, sizeof(e->err), "bpf(2)", errno);
		return -1;
	}
	close(fd);
	return 0;
}

/* Everything before the setup code runs: the image checked, bpf(2) usable,
 * the interpreter's session. */
static int prepare(struct ebpf_sess *e)
{
	if (verify(e) < 0 || ebpf_check_maps(e->img, e->err, sizeof(e->err)) < 0 ||
	    ebpf_check_progs(e->img, e->err, sizeof(e->err)) < 0 ||
	    bpf_env_init(&e->env, e->err, sizeof(e->err)) < 0 || bpf_usable(e) < 0)
		return -1;
	e->vm = ktap_session_new(e->img, 1, e->err, sizeof(e->err));
	return e->vm ? 0 : -1;
}

/* After the setup code: the probes expanded, the maps made and filled, the
 * programs loaded with their relocations. */
static int load_probes(struct ebpf_sess *e)
{
	return ebpf_expand(e) < 0 || ebpf_create_maps(e) < 0 || ebpf_fill_probenames(e) < 0 ||
	       ebpf_load(e) < 0 || ebpf_seed_maps(e) < 0 ? -1 : 0;
}

/* -- records from the programs ----------------------------------------------------- */
/* A program's STATUS record: the session stops as after the interpreter's
 * own exit() or runtime error. The first one counts. */
static void program_status(struct ebpf_sess *e, const unsigned char *rec, uint32_t size)
{
	struct krec r;

	if (e->stopped || record_decode(rec, size, &r) < 0) {
		e->bad_records += !e->stopped;
		return;
	}
	ktap_session_stop(e->vm, r.status.state, r.status.exit_code, r.status.line, r.status.col,
			  r.status.func, (const char *)r.status.msg, r.status.msglen);
	e->stopped = 1;
	record_free(&r);
}

/* A program's CALL record: the built-in runs in the interpreter and its
 * record is printed now, in order with the programs' own. */
static void program_call(struct ebpf_sess *e, const unsigned char *rec, uint32_t size)
{
	if (ebpf_call(e, rec, size) == 0)
		flush_vm(e);
}

/* Whatever the rings hold, in the order it was written. A CALL record after
 * the session stopped runs nothing (the interpreter's session is stopped). */
static void drain(struct ebpf_sess *e)
{
	struct samples *s = &e->pending;
	size_t i;

	for (i = 0; i < e->nbufs; i++)
		perfbuf_drain(&e->bufs[i], s);
	samples_sort(s);
	for (i = 0; i < s->n && !e->failed; i++) {
		const struct sample *x = &s->v[i];

		if (x->size < 5 || rd_u32(x->rec) != x->size)
			e->bad_records++;
		else if (x->rec[4] == KTAP_REC_STATUS)
			program_status(e, x->rec, x->size);
		else if (x->rec[4] == KTAP_REC_CALL)
			program_call(e, x->rec, x->size);
		else
			stream_feed(e->out, x->rec, x->size);
	}
	samples_clear(s);
}

/* Until the workload exits, a stop signal comes, stdout goes away, or a
 * program stops the session. */
static void pump(struct ebpf_sess *e, pid_t child, const sigset_t *waitmask)
{
	struct pollfd *pfd = xmalloc((e->nbufs + 1) * sizeof(*pfd));
	struct timespec tick = { 0, STATE_POLL_MS * 1000000L };
	int child_done = child <= 0;
	uint32_t i;

	for (i = 0; i < e->nbufs; i++)
		pfd[i] = (struct pollfd){ e->bufs[i].fd, POLLIN, 0 };
	pfd[e->nbufs] = (struct pollfd){ STDOUT_FILENO, 0, 0 };
	for (;;) {
		if (got_child && !child_done)
			child_done = reaped(child);
		got_child = 0;
		if (got_stop_signal || (child > 0 && child_done) || output_gone() || e->stopped ||
		    e->failed)
			break;
		if (ppoll(pfd, e->nbufs + 1, &tick, waitmask) < 0)
			continue;	/* EINTR: a signal; look at the flags */
		/* a ring that hangs up would wake ppoll() forever: stop polling it */
		for (i = 0; i < e->nbufs; i++)
			if (pfd[i].revents & (POLLHUP | POLLERR))
				pfd[i].fd = -1;
		drain(e);
		if (ebpf_state_word(e, 0))
			break;		/* stopped: its STATUS comes with the last drain */
	}
	free(pfd);
}

/* A program stopped the session but its STATUS record never arrived (the
 * ring was full): stop as it said, with what the state map knows. */
static void lost_status(struct ebpf_sess *e)
{
	static const char msg[] = "a handler hit a runtime error; its error record was lost "
				  "(output buffer full)";
	uint64_t state = ebpf_state_word(e, 0);

	if (e->stopped || !state)
		return;
	if (state == KTAP_RUN_ERROR)
		ktap_session_stop(e->vm, KTAP_RUN_ERROR, 0, 0, 0, 0, msg, sizeof(msg) - 1);
	else
		ktap_session_stop(e->vm, KTAP_RUN_EXIT, 0, 0, 0, 0, NULL, 0);
	e->stopped = 1;
}

/* Loads and attaches the programs, runs the workload, copies the maps back. */
static int run_probes(struct ebpf_sess *e)
{
	sigset_t waitmask;
	pid_t child = 0;

	if (load_probes(e) < 0 || ebpf_open_output(e) < 0 || ebpf_attach(e) < 0)
		return -1;
	waitmask = catch_signals();
	if (e->o->cmd)
		child = start_workload(e->o->cmd, &waitmask);
	if (child < 0 || (!e->o->cmd && !has_probes(e->img)))
		got_stop_signal = 1;	/* nothing can happen: end the session at once */
	pump(e, child, &waitmask);
	/* no new records once the probes are gone; then those already written */
	ebpf_detach(e);
	drain(e);
	lost_status(e);
	end_workload(child);
	if (e->failed)
		return -1;	/* no trace_end after a CALL record that could not run */
	ebpf_read_back(e, e->pending.lost);
	return 0;
}

/* The session proper: setup code, probes, trace_end, STATUS. */
static int run(struct ebpf_sess *e)
{
	int rc;

	ktap_set_clock(e->vm, wall_ns());
	ktap_set_mono(e->vm, mono_ns());
	e->wall_offset = wall_ns() - clock_ns(CLOCK_BOOTTIME);
	rc = ktap_run_setup(e->vm);
	flush_vm(e);
	/* setup that calls exit() or fails ends the session before any probe */
	if (rc != KTAP_RUN_EXIT && rc != KTAP_RUN_ERROR && run_probes(e) < 0)
		return -1;
	ktap_set_clock(e->vm, wall_ns());
	ktap_set_mono(e->vm, mono_ns());
	ktap_run_end(e->vm);
	flush_vm(e);
	ktap_finish(e->vm);
	flush_vm(e);
	return 0;
}

static void cleanup(struct ebpf_sess *e)
{
	uint32_t i;

	ebpf_free_progs(e);
	for (i = 0; i < e->nbufs; i++)
		perfbuf_close(&e->bufs[i]);
	free(e->bufs);
	samples_clear(&e->pending);
	free(e->pending.v);
	ebpf_close_maps(e);
	ktap_session_free(e->vm);
	bpf_env_free(&e->env);
}

int run_ebpf(const struct options *o, const struct ktap_image *img)
{
	struct formatter f = { img, NULL, o->json };
	struct ebpf_sess e;
	struct stream s;
	int status = KTAP_EXIT_LOAD_ERROR;

	memset(&e, 0, sizeof(e));
	e.o = o;
	e.img = img;
	e.out = &s;
	stream_init(&s, &f, o->raw);
	if (prepare(&e) == 0) {
		f.syms = symtab_load(o->kallsyms ? o->kallsyms : "/proc/kallsyms");
		if (run(&e) == 0)
			status = stream_finish(&s, o->image);
	}
	if (e.err[0])
		fprintf(stderr, "ktaprun: %s: %s\n", o->image, e.err);
	if (e.bad_records) {
		fprintf(stderr, "ktaprun: %s: %u malformed output records from the eBPF programs\n",
			o->image, e.bad_records);
		status = KTAP_EXIT_LOAD_ERROR;
	}
	cleanup(&e);
	stream_free(&s);
	symtab_free((struct symtab *)f.syms);
	return status;
}
#endif
