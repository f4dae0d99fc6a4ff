/* session.h - command-line options and the device session (session.c). */
#ifndef KTAPRUN_SESSION_H
#define KTAPRUN_SESSION_H

#include "ktaprun.h"

struct options {
	const char *module;	/* -m: ktapvm.ko to load */
	const char *kallsyms;	/* -k */
	const char *records;	/* -f: format this record file, run nothing */
	const char *image;
	char **cmd;		/* after "--": the workload, NULL-terminated */
	const char *serve;	/* --serve DEV[:BAUD]: the serial agent (serve.c) */
	int sha256;		/* --sha256: argv index of the first file */
	int raw, version, help, resolve;
};

/* Loads the module if needed, runs the image through /dev/ktap with the
 * workload, prints its output; returns ktaprun's exit status. */
int run_session(const struct options *o, const struct ktap_image *img,
		const unsigned char *data, size_t size, const char *argv0);

#endif
