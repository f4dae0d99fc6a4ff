/* ktap_smoke.c - a tiny static client of /dev/ktap for the module's board tests.
 * It is not ktaprun: it resolves only what its arguments spell out.
 *
 *   ktap_smoke [-n] [-w MS] IMAGE [SPEC...] [-- CMD ARGS...]
 *
 *   SPEC  kp:EVENT:SYMBOL[:OFFSET]   kprobe for image event EVENT
 *         kr:EVENT:SYMBOL            kretprobe
 *         tp:EVENT:SUBSYS:NAME[:F1,F2...]
 *                                    tracepoint; id and fields from tracefs,
 *                                    F1.. are the image event's field list
 *   -w MS wait MS milliseconds after START before running CMD
 *   -n    do not STOP: wait for the session to end by itself (exit() or error)
 *   -b    bare: only run and time CMD (no /dev/ktap), for baselines and
 *         other modules (-w applies too)
 * CMD's run time (CLOCK_MONOTONIC; guest instructions under QEMU -icount)
 * is printed as "cmd: STATUS ns NANOSECONDS".
 *
 * Prints "info ...", "load: ok|error ...", "start: ok|error ...", "cmd: N",
 * "stop: ok|error ...", then the records as hex ("R <hex>" lines, 64 bytes
 * each), then "eof <bytes>". Exits 1 when LOAD or START fails. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "ktap_abi.h"
#include "ktap_event_kinds.h"

static unsigned char *table;
static size_t tlen, tcap;
static unsigned count;

static void put(const void *p, size_t n)
{
	if (tlen + n > tcap) {
		tcap = (tlen + n) * 2 + 256;
		table = realloc(table, tcap);
	}
	memcpy(table + tlen, p, n);
	tlen += n;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0, r;

	if (!f)
		return NULL;
	do {
		if (n + 4096 > cap)
			buf = realloc(buf, cap = cap * 2 + 8192);
		r = fread(buf + n, 1, cap - n - 1, f);
		n += r;
	} while (r > 0);
	fclose(f);
	buf[n] = 0;
	if (len)
		*len = n;
	return buf;
}

static void add_probe(unsigned kind, unsigned event, const char *sym, unsigned long long off)
{
	struct ktap_attach a;

	memset(&a, 0, sizeof(a));
	a.event = event;
	a.kind = kind;
	a.offset = off;
	a.name_len = strlen(sym);
	put(&a, sizeof(a));
	put(sym, a.name_len);
	count++;
}

struct tpfield { char name[64]; struct ktap_field f; };

static int add_tracepoint(unsigned event, const char *sys, const char *name, char *list)
{
	char path[256], *fmt, *line, *save = NULL, evname[128];
	struct tpfield fields[128];
	unsigned nf = 0, i;
	struct ktap_attach a;
	__s16 named[64];
	unsigned nn = 0;
	char *id;

	snprintf(path, sizeof(path), "/sys/kernel/tracing/events/%s/%s/id", sys, name);
	id = slurp(path, NULL);
	if (!id) {
		printf("start: error no tracepoint %s:%s\n", sys, name);
		return -1;
	}
	snprintf(path, sizeof(path), "/sys/kernel/tracing/events/%s/%s/format", sys, name);
	fmt = slurp(path, NULL);
	if (!fmt) {
		printf("start: error no format for %s:%s\n", sys, name);
		return -1;
	}
	for (line = strtok_r(fmt, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *decl = strstr(line, "field:"), *semi, *nm, *br;
		struct tpfield *t;
		unsigned offset, size, sgn = 0;
		char *o = strstr(line, "offset:"), *z = strstr(line, "size:"), *g = strstr(line, "signed:");

		if (!decl || !o || !z || nf == 128)
			continue;
		decl += 6;
		semi = strchr(decl, ';');
		if (!semi)
			continue;
		*semi = 0;
		offset = strtoul(o + 7, NULL, 10);
		size = strtoul(z + 5, NULL, 10);
		if (g)
			sgn = strtoul(g + 7, NULL, 10);
		nm = strrchr(decl, ' ');
		nm = nm ? nm + 1 : decl;
		if (!strncmp(nm, "common_", 7))
			continue;
		t = &fields[nf++];
		memset(t, 0, sizeof(*t));
		snprintf(t->name, sizeof(t->name), "%s", nm);
		br = strchr(t->name, '[');
		if (br)
			*br = 0;
		t->f.offset = offset;
		t->f.size = size;
		if (strstr(decl, "__data_loc"))
			t->f.flags = KTAP_FIELD_DATA_LOC;
		else if (br && strstr(decl, "char"))
			t->f.flags = KTAP_FIELD_STRING;
		else if (sgn)
			t->f.flags = KTAP_FIELD_SIGNED;
		if (br && !(t->f.flags & (KTAP_FIELD_STRING | KTAP_FIELD_DATA_LOC)))
			t->f.size = 8;	/* arrays of numbers: not supported, read as a word */
	}
	if (list)
		for (char *n = strtok_r(list, ",", &save); n && nn < 64; n = strtok_r(NULL, ",", &save)) {
			named[nn] = -1;
			for (i = 0; i < nf; i++)
				if (!strcmp(fields[i].name, n))
					named[nn] = i;
			nn++;
		}
	snprintf(evname, sizeof(evname), "%s:%s", sys, name);
	memset(&a, 0, sizeof(a));
	a.event = event;
	a.kind = KTAP_EV_TRACEPOINT;
	a.tp_id = strtoul(id, NULL, 10);
	a.name_len = strlen(evname);
	a.nfields = nf;
	a.nnamed = nn;
	put(&a, sizeof(a));
	put(evname, a.name_len);
	for (i = 0; i < nf; i++)
		put(&fields[i].f, sizeof(fields[i].f));
	put(named, nn * sizeof(named[0]));
	count++;
	printf("tracepoint %s id %u fields %u named %u\n", evname, a.tp_id, nf, nn);
	return 0;
}

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void run_cmd(char **cmd)
{
	long long t0 = now_ns(), t1;
	int status = 0;
	pid_t pid = fork();

	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		execv(cmd[0], cmd);
		_exit(127);
	}
	waitpid(pid, &status, 0);
	t1 = now_ns();
	printf("cmd: %d ns %lld\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
	       t1 - t0);
}

int main(int argc, char **argv)
{
	struct ktap_ioc_info info;
	struct ktap_ioc_load ld;
	struct ktap_ioc_start st;
	char err[KTAP_ERRLEN];
	int fd, i, nostop = 0, wait_ms = 0, bare = 0;
	char **cmd = NULL;
	size_t ilen, total = 0;
	char *image;
	static unsigned char buf[2 << 20];
	ssize_t n;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-n"))
			nostop = 1;
		else if (!strcmp(argv[i], "-b"))
			bare = 1;
		else if (!strcmp(argv[i], "-w") && i + 1 < argc)
			wait_ms = atoi(argv[++i]);
		else
			break;
	}
	if (bare) {
		for (; i < argc && strcmp(argv[i], "--"); i++)
			;
		if (i + 1 >= argc)
			return 2;
		if (wait_ms)
			poll(NULL, 0, wait_ms);
		run_cmd(argv + i + 1);
		return 0;
	}
	if (i >= argc) {
		fprintf(stderr, "usage: ktap_smoke [-n] [-w MS] IMAGE [SPEC...] [-- CMD ARGS...]\n");
		return 2;
	}
	image = slurp(argv[i++], &ilen);
	if (!image) {
		perror("image");
		return 2;
	}
	for (; i < argc; i++) {
		char *spec = argv[i], *k, *e, *s1, *s2, *s3;

		if (!strcmp(spec, "--")) {
			cmd = argv + i + 1;
			break;
		}
		k = strtok(spec, ":");
		e = strtok(NULL, ":");
		s1 = strtok(NULL, ":");
		s2 = strtok(NULL, ":");
		s3 = strtok(NULL, ":");
		if (!k || !e || !s1) {
			fprintf(stderr, "bad spec\n");
			return 2;
		}
		if (!strcmp(k, "kp"))
			add_probe(KTAP_EV_KPROBE, atoi(e), s1, s2 ? strtoull(s2, NULL, 0) : 0);
		else if (!strcmp(k, "kr"))
			add_probe(KTAP_EV_KRETPROBE, atoi(e), s1, 0);
		else if (!strcmp(k, "tp") && s2) {
			if (add_tracepoint(atoi(e), s1, s2, s3))
				return 1;
		} else {
			fprintf(stderr, "bad spec kind %s\n", k);
			return 2;
		}
	}

	fd = open(KTAP_DEVICE, O_RDWR);
	if (fd < 0) {
		printf("open: error errno=%d %s\n", errno, strerror(errno));
		return 1;
	}
	memset(&info, 0, sizeof(info));
	if (ioctl(fd, KTAP_IOC_INFO, &info) == 0)
		printf("info abi=%u target=%u release=%s anchor=%llx\n", info.abi_version,
		       info.target_id, info.release, (unsigned long long)info.anchor);
	memset(&ld, 0, sizeof(ld));
	err[0] = 0;
	ld.image = (unsigned long)image;
	ld.size = ilen;
	ld.errbuf = (unsigned long)err;
	if (ioctl(fd, KTAP_IOC_LOAD, &ld) != 0) {
		printf("load: error errno=%d %s\n", errno, err);
		return 1;
	}
	printf("load: ok\n");
	memset(&st, 0, sizeof(st));
	err[0] = 0;
	st.attach = (unsigned long)table;
	st.size = tlen;
	st.count = count;
	st.errbuf = (unsigned long)err;
	if (ioctl(fd, KTAP_IOC_START, &st) != 0) {
		printf("start: error errno=%d %s\n", errno, err);
		return 1;
	}
	printf("start: ok\n");
	if (wait_ms)
		poll(NULL, 0, wait_ms);
	if (cmd && cmd[0])
		run_cmd(cmd);
	if (!nostop) {
		if (ioctl(fd, KTAP_IOC_STOP) != 0)
			printf("stop: error errno=%d\n", errno);
		else
			printf("stop: ok\n");
	}
	alarm(30);
	for (;;) {
		n = read(fd, buf, sizeof(buf));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			printf("read: error errno=%d\n", errno);
			break;
		}
		if (n == 0)
			break;
		for (ssize_t o = 0; o < n; o += 64) {
			printf("R ");
			for (ssize_t j = o; j < n && j < o + 64; j++)
				printf("%02x", buf[j]);
			printf("\n");
		}
		total += n;
	}
	printf("eof %zu\n", total);
	close(fd);
	return 0;
}
