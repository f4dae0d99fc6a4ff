/*
 * ktapw: deterministic workloads and board introspection for ktap boards.
 *
 * Workloads make an exact number of system calls so tests can compare
 * probe hit counts with N. Introspection subcommands print key=value lines
 * the host parses (toolchain/ktap/boards/frames.py).
 *
 * Exit status: 0 success, 1 runtime failure, 2 usage error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/klog.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <sys/sdt.h>

static int usage(void)
{
	fprintf(stderr,
		"usage: ktapw write N        N one-byte write(2) calls to /dev/null\n"
		"       ktapw open PATH N    N open/close pairs on PATH\n"
		"       ktapw getpid N       N getpid system calls\n"
		"       ktapw fork N         N children that exit at once, each waited for\n"
		"       ktapw sleep MS       sleep MS milliseconds\n"
		"       ktapw spin MS        busy-loop MS milliseconds\n"
		"       ktapw uname          kernel name, release, version, machine\n"
		"       ktapw arch           byte order and word size seen by a guest program\n"
		"       ktapw features       tracing features of the running kernel\n"
		"       ktapw insmod FILE [PARAMS]  load a kernel module (finit_module)\n"
		"       ktapw rmmod NAME     unload a kernel module (delete_module)\n"
		"       ktapw dmesg          print the kernel log buffer\n"
		"       ktapw cat FILE...    copy files to stdout (proc and sysfs too)\n"
		"       ktapw dump [-n NAME] PATH...  files under PATH, each as a\n"
		"                            '@@file PATH LEN' line, LEN bytes, newline\n"
		"       ktapw killafter MS CMD...  run CMD, SIGKILL its process group after MS ms\n"
		"       ktapw intafter MS CMD...   the same with SIGINT (Ctrl-C)\n"
		"       ktapw bpf-objects    how many BPF programs and maps the kernel holds\n"
		"       ktapw after MS CMD...      wait MS ms, then exec CMD\n"
		"       ktapw both CMD1... :: CMD2...  run both at once, then print each one's\n"
		"                            output after a '@@child N status=S' line\n"
		"       ktapw runas UID CMD...     exec CMD as UID/GID UID without groups\n"
		"       ktapw write-file PATH TEXT  write TEXT to PATH (debugfs controls)\n"
		"       ktapw writelat N     N timed one-byte writes: max_ns, total_ns\n"
		"       ktapw calls N        N calls of ktapw_tick(i), i = 1..N, each passing\n"
		"                            the USDT probe ktapw:iteration with i\n");
	return 2;
}

/* Strict non-negative decimal: a typo must not silently become 0 calls. */
static int parse_count(const char *s, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 0)
		return 0;
	*out = v;
	return 1;
}

static int do_write(long n)
{
	int fd = open("/dev/null", O_WRONLY);
	if (fd < 0) {
		perror("ktapw: /dev/null");
		return 1;
	}
	for (long i = 0; i < n; i++) {
		if (write(fd, "x", 1) != 1) {
			perror("ktapw: write");
			return 1;
		}
	}
	close(fd);
	return 0;
}

static int do_open(const char *path, long n)
{
	for (long i = 0; i < n; i++) {
		int fd = open(path, O_RDONLY);
		if (fd < 0) {
			fprintf(stderr, "ktapw: open %s: %s\n", path, strerror(errno));
			return 1;
		}
		close(fd);
	}
	return 0;
}

static int do_getpid(long n)
{
	/* syscall() rather than getpid(): no libc may cache the result. */
	for (long i = 0; i < n; i++)
		syscall(SYS_getpid);
	return 0;
}

static int do_fork(long n)
{
	for (long i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("ktapw: fork");
			return 1;
		}
		if (pid == 0)
			_exit(0);
		int status;
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
	}
	return 0;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int do_spin(long ms)
{
	double end = now_ms() + (double)ms;
	while (now_ms() < end)
		;
	return 0;
}

/* poll() first: on 32-bit kernels without COMPAT_32BIT_TIME glibc's
 * nanosleep is ENOSYS, poll's millisecond timeout needs no timespec. */
static int do_sleep(long ms)
{
	double end = now_ms() + (double)ms;
	for (;;) {
		double left = end - now_ms();
		if (left <= 0)
			return 0;
		if (poll(NULL, 0, (int)(left + 0.999)) == 0)
			continue;
		if (errno == EINTR)
			continue;
		struct timespec ts = { (time_t)(left / 1e3), (long)((left - (long)(left / 1e3) * 1e3) * 1e6) };
		if (nanosleep(&ts, NULL) == 0 || errno == EINTR)
			continue;
		return do_spin((long)left);
	}
}

static int do_uname(void)
{
	struct utsname u;
	if (uname(&u) < 0) {
		perror("ktapw: uname");
		return 1;
	}
	printf("%s %s %s %s %s\n", u.sysname, u.nodename, u.release, u.version, u.machine);
	return 0;
}

static int do_arch(void)
{
	union { uint32_t word; unsigned char bytes[4]; } probe = { 0x01020304 };
	struct utsname u;
	uname(&u);
	printf("byte_order=%s\n", probe.bytes[0] == 0x04 ? "little" : probe.bytes[0] == 0x01 ? "big" : "unknown");
	printf("word_size=%u\n", (unsigned)sizeof(long));
	printf("pointer_size=%u\n", (unsigned)sizeof(void *));
	printf("machine=%s\n", u.machine);
	return 0;
}

static int exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

/* A line " name\n" in /proc/kallsyms: the kernel has that function. */
static int kernel_has_symbol(const char *name)
{
	FILE *f = fopen("/proc/kallsyms", "r");
	char line[512];
	size_t len = strlen(name);
	int found = 0;
	if (!f)
		return 0;
	while (!found && fgets(line, sizeof line, f)) {
		char *sym = strrchr(line, ' ');
		if (sym && strncmp(sym + 1, name, len) == 0 &&
		    (sym[1 + len] == '\n' || sym[1 + len] == '\t' || sym[1 + len] == 0))
			found = 1;
	}
	fclose(f);
	return found;
}

static void feature(const char *name, int present, const char *evidence)
{
	printf("%s=%s %s\n", name, present ? "yes" : "no", evidence);
}

static int do_features(void)
{
	const char *kp = exists("/sys/kernel/tracing/kprobe_events") ? "/sys/kernel/tracing/kprobe_events"
		       : exists("/sys/kernel/debug/kprobes/list") ? "/sys/kernel/debug/kprobes/list" : NULL;
	feature("kprobes", kp != NULL, kp ? kp : "(no kprobe_events, no debugfs kprobes/list)");
	feature("kretprobes", kernel_has_symbol("register_kretprobe"), "(kallsyms register_kretprobe)");
	feature("tracepoints", exists("/sys/kernel/tracing/events/sched"), "/sys/kernel/tracing/events/sched");
	feature("syscall_tracepoints", exists("/sys/kernel/tracing/events/syscalls"),
		"/sys/kernel/tracing/events/syscalls");
	feature("ftrace", exists("/sys/kernel/tracing/trace"), "/sys/kernel/tracing/trace");
	feature("perf_events", exists("/proc/sys/kernel/perf_event_paranoid"),
		"/proc/sys/kernel/perf_event_paranoid");
	feature("kallsyms", exists("/proc/kallsyms"), "/proc/kallsyms");
	feature("modules", exists("/proc/modules"), "/proc/modules");
	/* bpf(2) with an invalid command: EINVAL means the syscall exists. */
	long r = syscall(SYS_bpf, -1, NULL, 0);
	feature("bpf", r < 0 && errno != ENOSYS, "(bpf(2) is not ENOSYS)");
	/* The eBPF JIT: off (or absent without CONFIG_BPF_JIT) means the kernel
	 * interprets eBPF programs, which the benchmarks report apart. */
	char jit[8] = "";
	int jfd = open("/proc/sys/net/core/bpf_jit_enable", O_RDONLY);
	if (jfd >= 0) {
		ssize_t got = read(jfd, jit, sizeof(jit) - 1);
		jit[got > 0 ? got : 0] = 0;
		close(jfd);
		jit[strcspn(jit, "\n")] = 0;
	}
	char jit_evidence[96];
	snprintf(jit_evidence, sizeof jit_evidence, jfd >= 0 ? "(bpf_jit_enable = %s)" :
		 "(no /proc/sys/net/core/bpf_jit_enable: CONFIG_BPF_JIT is off)%s", jit);
	feature("bpf_jit", jfd >= 0 && jit[0] != '0' && jit[0] != 0, jit_evidence);
	/* hrtimer_interrupt exists only with CONFIG_HIGH_RES_TIMERS; the current
	 * resolution is shown too, since it stays at the tick until the kernel
	 * trusts a clocksource for high resolution. */
	struct timespec res = { 0, 0 };
	clock_getres(CLOCK_MONOTONIC, &res);
	char evidence[96];
	snprintf(evidence, sizeof evidence, "(kallsyms hrtimer_interrupt; resolution now %ld ns)",
		 (long)(res.tv_sec * 1000000000L + res.tv_nsec));
	feature("hrtimers", kernel_has_symbol("hrtimer_interrupt"), evidence);
	return 0;
}

/* The boards have no kmod tools; these are the two system calls insmod and
 * rmmod boil down to. */
static int do_insmod(const char *path, const char *params)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "ktapw: insmod %s: %s\n", path, strerror(errno));
		return 1;
	}
	if (syscall(SYS_finit_module, fd, params, 0) < 0) {
		fprintf(stderr, "ktapw: insmod %s: %s\n", path, strerror(errno));
		close(fd);
		return 1;
	}
	close(fd);
	return 0;
}

static int do_rmmod(const char *name)
{
	if (syscall(SYS_delete_module, name, O_NONBLOCK) < 0) {
		fprintf(stderr, "ktapw: rmmod %s: %s\n", name, strerror(errno));
		return 1;
	}
	return 0;
}

static int do_dmesg(void)
{
	int size = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0);
	if (size <= 0)
		size = 1 << 16;
	char *buf = malloc((size_t)size);
	int n = buf ? klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, size) : -1;
	if (n < 0) {
		perror("ktapw: dmesg");
		return 1;
	}
	fwrite(buf, 1, (size_t)n, stdout);
	free(buf);
	return 0;
}

/* Reads a whole file into memory. proc and sysfs files report size 0 or a
 * page, so the buffer grows until read() says EOF instead of trusting stat. */
static char *slurp(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t cap = 8192, n = 0;
	char *buf = fd < 0 ? NULL : malloc(cap);
	if (!buf) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	for (;;) {
		if (n == cap) {
			char *bigger = realloc(buf, cap * 2);
			if (!bigger)
				break;
			buf = bigger;
			cap *= 2;
		}
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r < 0) {
				free(buf);
				buf = NULL;
			}
			break;
		}
		n += (size_t)r;
	}
	close(fd);
	*len = n;
	return buf;
}

static int do_cat(int n, char **paths)
{
	int status = 0;
	for (int i = 0; i < n; i++) {
		size_t len;
		char *buf = slurp(paths[i], &len);
		if (!buf) {
			fprintf(stderr, "ktapw: cat %s: %s\n", paths[i], strerror(errno));
			status = 1;
			continue;
		}
		fwrite(buf, 1, len, stdout);
		free(buf);
	}
	return status;
}

/* One file as a self-delimiting record, so a host can split many files out of
 * one stdout stream without a shell or tar on the board. */
static int dump_file(const char *path)
{
	size_t len;
	char *buf = slurp(path, &len);
	if (!buf) {
		fprintf(stderr, "ktapw: dump %s: %s\n", path, strerror(errno));
		return 1;
	}
	printf("@@file %s %zu\n", path, len);
	fwrite(buf, 1, len, stdout);
	putchar('\n');
	free(buf);
	return 0;
}

/* Walks PATH without following symlinks (sysfs is full of cycles); with a
 * NAME only files of that base name are dumped (e.g. tracepoint "format"). */
static int dump_tree(const char *path, const char *only)
{
	struct stat st;
	if (lstat(path, &st) < 0) {
		fprintf(stderr, "ktapw: dump %s: %s\n", path, strerror(errno));
		return 1;
	}
	if (S_ISREG(st.st_mode)) {
		const char *base = strrchr(path, '/');
		base = base ? base + 1 : path;
		return only && strcmp(base, only) ? 0 : dump_file(path);
	}
	if (!S_ISDIR(st.st_mode))
		return 0;
	DIR *d = opendir(path);
	if (!d) {
		fprintf(stderr, "ktapw: dump %s: %s\n", path, strerror(errno));
		return 1;
	}
	int status = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char child[4096];
		snprintf(child, sizeof child, "%s/%s", path, e->d_name);
		status |= dump_tree(child, only);
	}
	closedir(d);
	return status;
}

static int do_dump(int argc, char **argv)
{
	const char *only = NULL;
	int i = 2, status = 0;
	if (argc > 3 && !strcmp(argv[2], "-n")) {
		only = argv[3];
		i = 4;
	}
	if (i >= argc)
		return usage();
	for (; i < argc; i++)
		status |= dump_tree(argv[i], only);
	return status;
}

/* ---- safety and stress helpers (tests/test_safety_board.py, tests/test_stress.py) */

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static pid_t spawn(char **argv, int out_fd)
{
	pid_t pid = fork();
	if (pid == 0) {
		setpgid(0, 0);
		if (out_fd >= 0) {
			dup2(out_fd, 1);
			dup2(out_fd, 2);
			close(out_fd);
		}
		execvp(argv[0], argv);
		fprintf(stderr, "ktapw: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

static int wait_status(pid_t pid)
{
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st);
}

/* killafter MS CMD...: run CMD in its own process group, SIGKILL the group
 * after MS ms (intafter: SIGINT, as Ctrl-C sends it). Prints killed=1
 * status=137, or killed=0 status=N if CMD ended first. Exit 0 when the kill
 * happened. */
static int do_killafter(long ms, int sig, char **argv)
{
	pid_t pid = spawn(argv, -1);
	int64_t end = mono_ns() + (int64_t)ms * 1000000;
	int st;
	if (pid < 0)
		return 1;
	while (mono_ns() < end) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid) {
			printf("killed=0 status=%d\n",
			       WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st));
			return 1;
		}
		poll(NULL, 0, 5);
	}
	kill(-pid, sig);
	printf("killed=1 status=%d\n", wait_status(pid));
	return 0;
}

/* bpf-objects: "progs=N maps=M", the BPF programs and maps alive in the
 * kernel, walked by id; what an eBPF session must leave at zero. The kernel
 * frees them after an RCU grace period, so the count is retried briefly. */
static int count_bpf_ids(int cmd)
{
	union { uint32_t start_id; uint64_t pad[4]; } attr;
	uint32_t id = 0;
	int n = 0;

	for (;;) {
		memset(&attr, 0, sizeof(attr));
		attr.start_id = id;
		if (syscall(__NR_bpf, cmd, &attr, sizeof(attr)) < 0)
			return errno == ENOENT ? n : -1;
		/* next_id follows start_id in union bpf_attr */
		memcpy(&id, (char *)&attr + 4, sizeof(id));
		n++;
	}
}

static int do_bpf_objects(void)
{
	enum { PROG_GET_NEXT_ID = 11, MAP_GET_NEXT_ID = 12 };
	int progs = -1, maps = -1;

	for (int tries = 0; tries < 50; tries++) {
		progs = count_bpf_ids(PROG_GET_NEXT_ID);
		maps = count_bpf_ids(MAP_GET_NEXT_ID);
		if (progs <= 0 && maps <= 0)
			break;
		poll(NULL, 0, 20);
	}
	if (progs < 0 || maps < 0) {
		perror("ktapw: bpf");
		return 1;
	}
	printf("progs=%d maps=%d\n", progs, maps);
	return 0;
}

/* after MS CMD...: wait MS ms, then exec CMD. */
static int do_after(long ms, char **argv)
{
	int64_t end = mono_ns() + (int64_t)ms * 1000000;
	while (mono_ns() < end)
		poll(NULL, 0, 5);
	execvp(argv[0], argv);
	fprintf(stderr, "ktapw: exec %s: %s\n", argv[0], strerror(errno));
	return 127;
}

/* both CMD1... :: CMD2...: run both at once (ktaprun takes "--" itself), each with stdout+stderr in a file
 * under /tmp; then print "@@child N status=S" and that output, for N = 1, 2.
 * Exit 0 if both exited 0. */
static int do_both(int argc, char **argv)
{
	int sep = -1, i, rc = 0;
	for (i = 0; i < argc; i++)
		if (!strcmp(argv[i], "::")) {
			sep = i;
			break;
		}
	if (sep <= 0 || sep == argc - 1)
		return usage();
	argv[sep] = NULL;
	char **cargv[2] = {argv, argv + sep + 1};
	char path[2][64];
	pid_t pid[2];
	int st[2];
	for (i = 0; i < 2; i++) {
		snprintf(path[i], sizeof path[i], "/tmp/ktapw-both-%d-%d", (int)getpid(), i + 1);
		int fd = open(path[i], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0) {
			fprintf(stderr, "ktapw: %s: %s\n", path[i], strerror(errno));
			return 1;
		}
		pid[i] = spawn(cargv[i], fd);
		close(fd);
	}
	for (i = 0; i < 2; i++)
		st[i] = wait_status(pid[i]);
	for (i = 0; i < 2; i++) {
		size_t len = 0;
		char *text = slurp(path[i], &len);
		printf("@@child %d status=%d\n", i + 1, st[i]);
		fflush(stdout);
		if (text) {
			fwrite(text, 1, len, stdout);
			if (len && text[len - 1] != '\n')
				putchar('\n');
			free(text);
		}
		unlink(path[i]);
		if (st[i])
			rc = 1;
	}
	fflush(stdout);
	return rc;
}

/* runas UID CMD...: drop to UID (and GID UID, no supplementary groups), exec CMD. */
static int do_runas(long uid, char **argv)
{
	if (setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 ||
	    setresuid(uid, uid, uid) < 0) {
		fprintf(stderr, "ktapw: runas %ld: %s\n", uid, strerror(errno));
		return 1;
	}
	execvp(argv[0], argv);
	fprintf(stderr, "ktapw: exec %s: %s\n", argv[0], strerror(errno));
	return 127;
}

/* write-file PATH TEXT: one write(2) of TEXT (debugfs/sysfs/proc controls). */
static int do_write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "ktapw: %s: %s\n", path, strerror(errno));
		return 1;
	}
	ssize_t n = write(fd, text, strlen(text));
	if (n < 0) {
		fprintf(stderr, "ktapw: write %s: %s\n", path, strerror(errno));
		close(fd);
		return 1;
	}
	close(fd);
	return 0;
}

/* writelat N: N one-byte writes to /dev/null, each timed with CLOCK_MONOTONIC
 * (guest instructions under QEMU -icount). Prints calls, max_ns, total_ns.
 * Runs SCHED_FIFO when allowed (work a probe handler queues, such as ktapvm's
 * stop work, then cannot run between the write and the second clock read) and
 * ignores SIGTERM (ktaprun terminates its workload when a session stops itself). */
static int do_writelat(long n)
{
	struct sched_param sp = { .sched_priority = 50 };
	sched_setscheduler(0, SCHED_FIFO, &sp);
	signal(SIGTERM, SIG_IGN);
	int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	int64_t max = 0, total = 0;
	long i, ok = 0;
	if (fd < 0) {
		fprintf(stderr, "ktapw: /dev/null: %s\n", strerror(errno));
		return 1;
	}
	for (i = 0; i < n; i++) {
		int64_t t0 = mono_ns();
		if (write(fd, "x", 1) == 1)
			ok++;
		int64_t d = mono_ns() - t0;
		total += d;
		if (d > max)
			max = d;
	}
	close(fd);
	printf("calls=%ld ok=%ld max_ns=%lld total_ns=%lld\n", n, ok, (long long)max,
	       (long long)total);
	return 0;
}

/* The user-space probes' workload: uprobes on ktapw_tick, uretprobes on its
 * return value (2 * i), the USDT probe ktapw:iteration (arg1 = i), and user
 * stacks ktapw_tick <- ktapw_calls <- main. noipa keeps GCC from inlining
 * or cloning them, so each stays one function under its own name. */
__attribute__((noipa)) int ktapw_tick(int i)
{
	DTRACE_PROBE1(ktapw, iteration, i);
	return 2 * i;
}

__attribute__((noipa)) static long ktapw_calls(long n)
{
	long i, sum = 0;

	for (i = 1; i <= n; i++)
		sum += ktapw_tick((int)i);
	return sum;
}

static int do_calls(long n)
{
	printf("calls=%ld sum=%ld\n", n, ktapw_calls(n));
	return 0;
}

int main(int argc, char **argv)
{
	long n;
	if (argc < 2)
		return usage();
	const char *cmd = argv[1];
	if (argc == 3 && parse_count(argv[2], &n)) {
		if (!strcmp(cmd, "write"))
			return do_write(n);
		if (!strcmp(cmd, "getpid"))
			return do_getpid(n);
		if (!strcmp(cmd, "fork"))
			return do_fork(n);
		if (!strcmp(cmd, "sleep"))
			return do_sleep(n);
		if (!strcmp(cmd, "spin"))
			return do_spin(n);
		if (!strcmp(cmd, "calls"))
			return do_calls(n);
	}
	if (argc == 4 && !strcmp(cmd, "open") && parse_count(argv[3], &n))
		return do_open(argv[2], n);
	if (argc == 2 && !strcmp(cmd, "uname"))
		return do_uname();
	if (argc == 2 && !strcmp(cmd, "arch"))
		return do_arch();
	if (argc == 2 && !strcmp(cmd, "features"))
		return do_features();
	if ((argc == 3 || argc == 4) && !strcmp(cmd, "insmod"))
		return do_insmod(argv[2], argc == 4 ? argv[3] : "");
	if (argc == 3 && !strcmp(cmd, "rmmod"))
		return do_rmmod(argv[2]);
	if (argc == 2 && !strcmp(cmd, "dmesg"))
		return do_dmesg();
	if (argc >= 3 && !strcmp(cmd, "cat"))
		return do_cat(argc - 2, argv + 2);
	if (argc >= 3 && !strcmp(cmd, "dump"))
		return do_dump(argc, argv);
	if (argc >= 4 && !strcmp(cmd, "killafter") && parse_count(argv[2], &n))
		return do_killafter(n, SIGKILL, argv + 3);
	if (argc >= 4 && !strcmp(cmd, "intafter") && parse_count(argv[2], &n))
		return do_killafter(n, SIGINT, argv + 3);
	if (argc == 2 && !strcmp(cmd, "bpf-objects"))
		return do_bpf_objects();
	if (argc >= 4 && !strcmp(cmd, "after") && parse_count(argv[2], &n))
		return do_after(n, argv + 3);
	if (argc >= 5 && !strcmp(cmd, "both"))
		return do_both(argc - 2, argv + 2);
	if (argc >= 4 && !strcmp(cmd, "runas") && parse_count(argv[2], &n))
		return do_runas(n, argv + 3);
	if (argc == 4 && !strcmp(cmd, "write-file"))
		return do_write_file(argv[2], argv[3]);
	if (argc == 3 && !strcmp(cmd, "writelat") && parse_count(argv[2], &n))
		return do_writelat(n);
	return usage();
}
