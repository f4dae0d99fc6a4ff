/* proc.c - what every session does around its records, whichever backend
 * runs the handlers: the stop signals, the workload, and noticing that the
 * reader of stdout went away. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "session.h"

#ifndef KTAPRUN_FORMAT_ONLY
/* -- signals and the workload ------------------------------------------------ */
volatile sig_atomic_t got_stop_signal, got_child;

static void on_signal(int sig)
{
	if (sig == SIGCHLD)
		got_child = 1;
	else
		got_stop_signal = 1;
}

/* Blocked except inside ppoll(), so a signal can never slip in between the
 * flag check and the wait. Returns the mask ppoll() waits with. */
sigset_t catch_signals(void)
{
	struct sigaction sa;
	sigset_t block, old;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);	/* the terminal or connection went away */
	sigaction(SIGCHLD, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);	/* EPIPE on stdout is a stop, see pump() */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGCHLD);
	sigprocmask(SIG_BLOCK, &block, &old);
	return old;
}

pid_t start_workload(char **cmd, const sigset_t *mask)
{
	pid_t pid = fork();

	if (pid == 0) {
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGCHLD, SIG_DFL);
		signal(SIGPIPE, SIG_DFL);
		sigprocmask(SIG_SETMASK, mask, NULL);
		execvp(cmd[0], cmd);
		fprintf(stderr, "ktaprun: cannot run %s: %s\n", cmd[0], strerror(errno));
		_exit(127);
	}
	if (pid < 0)
		fprintf(stderr, "ktaprun: fork: %s\n", strerror(errno));
	return pid;
}

int reaped(pid_t pid)
{
	int st;

	return pid <= 0 || waitpid(pid, &st, WNOHANG) == pid;
}

/* stdout is gone when the reader of its pipe or socket closed it, or its
 * terminal hung up (ssh, adb or the serial agent lost the host): writing
 * failed with EPIPE/EIO, or poll() reports POLLERR/POLLHUP on it. */
int output_gone(void)
{
	struct pollfd out = { STDOUT_FILENO, 0, 0 };

	if (ferror(stdout) && (errno == EPIPE || errno == EIO))
		return 1;
	return poll(&out, 1, 0) > 0 && (out.revents & (POLLERR | POLLHUP));
}

void end_workload(pid_t child)
{
	int st;

	if (child <= 0 || reaped(child))
		return;
	kill(child, SIGTERM);
	waitpid(child, &st, 0);
}

/* A script without probes (only setup code and trace_end) can never see an
 * event, so without a workload its session ends right after the setup code. */
int has_probes(const struct ktap_image *img)
{
	uint32_t i;

	for (i = 0; i < img->nevents; i++)
		if (img->events[i].kind != KTAP_EV_END)
			return 1;
	return 0;
}

#endif
