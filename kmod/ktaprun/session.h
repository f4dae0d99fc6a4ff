/* session.h - command-line options and the device session (session.c). */
#ifndef KTAPRUN_SESSION_H
#define KTAPRUN_SESSION_H

#include "ktaprun.h"

struct options {
	const char *module;	/* -m: ktapvm.ko to load */
	const char *kallsyms;	/* -k */
	int json;		/* --format json: records as JSON lines */
	const char *records;	/* -f: format this record file, run nothing */
	const char *image;
	char **cmd;		/* after "--": the workload, NULL-terminated */
	const char *serve;	/* --serve DEV[:BAUD]: the serial agent (serve.c) */
	int sha256;		/* --sha256: argv index of the first file */
	int raw, version, help, resolve;
};

#include <signal.h>
#include <sys/types.h>

/* -- the stop signals and the workload (proc.c) ------------------------------ */
extern volatile sig_atomic_t got_stop_signal, got_child;
/* Catches SIGINT, SIGTERM, SIGHUP and SIGCHLD into the flags above and blocks
 * them; returns the mask to wait with in ppoll(). */
sigset_t catch_signals(void);
/* fork + exec of the workload with the caller's mask; -1 (said why) if not. */
pid_t start_workload(char **cmd, const sigset_t *mask);
int reaped(pid_t pid);			/* it exited (or there was none) */
void end_workload(pid_t child);		/* SIGTERM if still running, then reaped */
int output_gone(void);			/* stdout's reader went away */
int has_probes(const struct ktap_image *img);	/* any event besides trace_end */

/* Loads the module if needed, runs the image through /dev/ktap with the
 * workload, prints its output; returns ktaprun's exit status. */
int run_session(const struct options *o, const struct ktap_image *img,
		const unsigned char *data, size_t size, const char *argv0);
/* Runs an ebpf image (docs/ebpf.md) without the module: setup and trace_end
 * in user space, the handlers as BPF programs; returns the exit status. */
int run_ebpf(const struct options *o, const struct ktap_image *img);

#endif
