/* serve.c - `ktaprun --serve DEV[:BAUD]`: the serial agent.
 *
 * A board without network runs this on a spare serial line (or `-` for
 * stdin/stdout). The host (`ktap run --serial`, toolchain/ktap/deploy/serial.py)
 * pushes files and runs commands through it; their output comes back as
 * frames. One frame:
 *
 *     'k' 'T'  type:u8  len:u32be  payload[len]  crc32:u32be
 *
 * The CRC-32 (zlib's) covers type, len and payload. A reader looks for the
 * magic, and on a bad CRC skips one byte and looks again, so line noise or a
 * host that died in the middle of a frame costs one frame, never the link. A
 * partial frame older than a second is dropped for the same reason.
 *
 * host -> agent                         agent -> host
 *   H nonce                               I nonce "\n" key=value lines
 *   S path                                Y "SHA256HEX SIZE" | "missing"
 *   P "MODE PATH" (open PATH.ktap-tmp)    A ok | X "ERRNAME: message"
 *   D bytes (append)                      A | X
 *   C SHA256HEX (check, chmod, rename)    A | X
 *   R "KEEPALIVE\0ARG0\0ARG1..." (run)    1 stdout bytes, 2 stderr bytes,
 *                                         Z "STATUS" (128+N: signal N) | X
 *   K "SIGNUM" (signal the command)       -
 *   . (keepalive)                         . (when no command runs)
 *
 * While a command runs with KEEPALIVE > 0 seconds, the host pings at least
 * every second; when no frame has arrived for KEEPALIVE seconds the host is
 * gone (cable pulled, host killed): the command gets SIGHUP (ktaprun stops
 * its session, runs trace_end and detaches), its output is discarded, and
 * the agent waits for the next host.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "ktaprun.h"
#include "ktap_crc32.h"
#include "serve.h"

#define SERVE_PROTOCOL 1
#define MAX_PAYLOAD (64 * 1024)
#define HDR 7

/* -- SHA-256 (FIPS 180-4) ------------------------------------------------------ */
struct sha256 {
	uint32_t h[8];
	uint64_t n;
	unsigned char buf[64];
	size_t used;
};

static const uint32_t K256[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(struct sha256 *s, const unsigned char *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, h, t1, t2;
	int i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (; i < 64; i++)
		w[i] = w[i - 16] + (ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3)) +
		       w[i - 7] + (ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10));
	a = s->h[0]; b = s->h[1]; c = s->h[2]; d = s->h[3];
	e = s->h[4]; f = s->h[5]; g = s->h[6]; h = s->h[7];
	for (i = 0; i < 64; i++) {
		t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
		t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
	}
	s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d;
	s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

static void sha256_init(struct sha256 *s)
{
	static const uint32_t iv[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
					0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
	memcpy(s->h, iv, sizeof(iv));
	s->n = 0;
	s->used = 0;
}

static void sha256_update(struct sha256 *s, const unsigned char *p, size_t n)
{
	s->n += n;
	while (n) {
		size_t take = 64 - s->used < n ? 64 - s->used : n;

		memcpy(s->buf + s->used, p, take);
		s->used += take;
		p += take;
		n -= take;
		if (s->used == 64) {
			sha256_block(s, s->buf);
			s->used = 0;
		}
	}
}

static void sha256_hex(struct sha256 *s, char out[65])
{
	uint64_t bits = s->n * 8;
	unsigned char pad = 0x80, len[8];
	int i;

	sha256_update(s, &pad, 1);
	pad = 0;
	while (s->used != 56)
		sha256_update(s, &pad, 1);
	for (i = 0; i < 8; i++)
		len[i] = (unsigned char)(bits >> (56 - 8 * i));
	sha256_update(s, len, 8);
	for (i = 0; i < 8; i++)
		snprintf(out + 8 * i, 9, "%08x", s->h[i]);
}

/* SHA-256 of a file as 64 hex digits; -1 with errno if it cannot be read. */
int sha256_file(const char *path, char out[65], long long *size)
{
	unsigned char buf[8192];
	struct sha256 s;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	sha256_init(&s);
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		sha256_update(&s, buf, (size_t)n);
	close(fd);
	if (n < 0)
		return -1;
	*size = (long long)s.n;
	sha256_hex(&s, out);
	return 0;
}

/* -- frames ------------------------------------------------------------------- */
static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

static uint32_t get_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

struct agent {
	int in, out;
	unsigned char *rx;		/* bytes received, not yet a whole frame */
	size_t rxlen;
	double last_byte, last_frame;
	/* the file being received */
	int put_fd;
	char put_path[PATH_MAX], put_tmp[PATH_MAX + 16];
	mode_t put_mode;
	/* the running command */
	pid_t child;
	int pipes[2];			/* stdout, stderr; -1 when closed */
	int keepalive, orphaned;
	int link_dead;
};

static void send_frame(struct agent *a, int type, const void *payload, size_t len)
{
	unsigned char *f;
	size_t off = 0;

	if (a->link_dead)
		return;
	f = xmalloc(HDR + len + 4);
	f[0] = 'k';
	f[1] = 'T';
	f[2] = (unsigned char)type;
	put_be32(f + 3, (uint32_t)len);
	memcpy(f + HDR, payload, len);
	put_be32(f + HDR + len, ktap_crc32(0, f + 2, 5 + len));
	while (off < HDR + len + 4) {
		ssize_t n = write(a->out, f + off, HDR + len + 4 - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			a->link_dead = 1;
			break;
		}
		off += (size_t)n;
	}
	free(f);
}

static void send_text(struct agent *a, int type, const char *text)
{
	send_frame(a, type, text, strlen(text));
}

static void send_errno(struct agent *a, const char *what, int err)
{
	char msg[PATH_MAX + 128];
	const char *name = err == ENOSPC ? "ENOSPC" : err == EACCES ? "EACCES" :
			   err == EPERM ? "EPERM" : err == ENOENT ? "ENOENT" :
			   err == EROFS ? "EROFS" : err == EDQUOT ? "EDQUOT" :
			   err == EBUSY ? "EBUSY" : "ERROR";

	snprintf(msg, sizeof(msg), "%s: %s: %s", name, what, strerror(err));
	send_text(a, 'X', msg);
}

/* -- requests ------------------------------------------------------------------ */
/* CONFIG_KPROBES: debugfs' kprobes directory, else the symbol in kallsyms. */
static const char *have_kprobes(void)
{
	char line[256];
	FILE *f;
	int found = 0;

	if (access("/sys/kernel/debug/kprobes", F_OK) == 0)
		return "yes";
	f = fopen("/proc/kallsyms", "r");
	if (!f)
		return "unknown";
	while (!found && fgets(line, sizeof(line), f)) {
		size_t n = strlen(line);

		found = n > 16 && !strcmp(line + n - 16, " register_kprobe\n");
	}
	fclose(f);
	return found ? "yes" : "no";
}

static void do_hello(struct agent *a, const unsigned char *p, uint32_t n)
{
	struct utsname u;
	struct sb s = { 0 };

	uname(&u);
	sb_put(&s, (const char *)p, n);
	sb_printf(&s, "\nprotocol=%d\nversion=%s\ntarget=%s\nabi=%d\nrelease=%s\nmachine=%s\n"
		  "uid=%d\nkprobes=%s\nsession=%s\n", SERVE_PROTOCOL, KTAPRUN_VERSION, KTAP_TARGET_NAME,
		  KTAP_ABI_VERSION, u.release, u.machine, (int)geteuid(),
		  have_kprobes(), a->child > 0 ? "running" : "idle");
	send_frame(a, 'I', s.b, s.len);
	sb_free(&s);
}

static void do_stat(struct agent *a, const char *path)
{
	char hex[65], msg[128];
	long long size;

	if (sha256_file(path, hex, &size) == 0) {
		snprintf(msg, sizeof(msg), "%s %lld", hex, size);
		send_text(a, 'Y', msg);
	} else if (errno == ENOENT || errno == ENOTDIR) {
		send_text(a, 'Y', "missing");
	} else {
		send_errno(a, path, errno);
	}
}

static int mkdirs(const char *file)
{
	char dir[PATH_MAX];
	char *p;

	snprintf(dir, sizeof(dir), "%s", file);
	p = strrchr(dir, '/');
	if (!p || p == dir)
		return 0;
	*p = 0;
	for (p = dir + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(dir, 0755) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(dir, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

static void put_abort(struct agent *a)
{
	if (a->put_fd >= 0) {
		close(a->put_fd);
		unlink(a->put_tmp);
		a->put_fd = -1;
	}
}

static void do_put(struct agent *a, const char *arg)
{
	char *end;
	unsigned long mode = strtoul(arg, &end, 8);

	put_abort(a);
	if (*end != ' ' || end[1] != '/') {
		send_text(a, 'X', "EINVAL: put wants 'MODE /PATH'");
		return;
	}
	snprintf(a->put_path, sizeof(a->put_path), "%s", end + 1);
	snprintf(a->put_tmp, sizeof(a->put_tmp), "%s.ktap-tmp", a->put_path);
	a->put_mode = (mode_t)(mode & 07777);
	if (mkdirs(a->put_path) < 0) {
		send_errno(a, a->put_path, errno);
		return;
	}
	a->put_fd = open(a->put_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (a->put_fd < 0)
		send_errno(a, a->put_tmp, errno);
	else
		send_text(a, 'A', "");
}

static void do_data(struct agent *a, const unsigned char *p, uint32_t n)
{
	if (a->put_fd < 0) {
		send_text(a, 'X', "EINVAL: data without put");
		return;
	}
	while (n) {
		ssize_t w = write(a->put_fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			int err = w < 0 ? errno : ENOSPC;

			put_abort(a);
			send_errno(a, a->put_path, err);
			return;
		}
		p += w;
		n -= (uint32_t)w;
	}
	send_text(a, 'A', "");
}

static void do_commit(struct agent *a, const char *want)
{
	char hex[65];
	long long size;

	if (a->put_fd < 0) {
		send_text(a, 'X', "EINVAL: commit without put");
		return;
	}
	/* fsync: ENOSPC on some file systems only shows up here. */
	if (fsync(a->put_fd) < 0 && errno != EINVAL && errno != EROFS) {
		int err = errno;

		put_abort(a);
		send_errno(a, a->put_path, err);
		return;
	}
	close(a->put_fd);
	a->put_fd = -1;
	if (sha256_file(a->put_tmp, hex, &size) < 0 || strcmp(hex, want)) {
		unlink(a->put_tmp);
		send_text(a, 'X', "EIO: the file arrived damaged (SHA-256 differs)");
		return;
	}
	if (chmod(a->put_tmp, a->put_mode) < 0 || rename(a->put_tmp, a->put_path) < 0) {
		int err = errno;

		unlink(a->put_tmp);
		send_errno(a, a->put_path, err);
		return;
	}
	send_text(a, 'A', "");
}

static void do_run(struct agent *a, const unsigned char *p, uint32_t n)
{
	char *buf, *argv[256];
	int argc = 0, out[2], err[2];
	size_t i;

	if (a->child > 0) {
		send_text(a, 'X', "EBUSY: a command is already running on this agent");
		return;
	}
	buf = xmalloc(n + 1);
	memcpy(buf, p, n);
	buf[n] = 0;
	a->keepalive = atoi(buf);
	for (i = strlen(buf) + 1; i < n && argc < 255; i += strlen(buf + i) + 1)
		argv[argc++] = buf + i;
	argv[argc] = NULL;
	if (!argc) {
		free(buf);
		send_text(a, 'X', "EINVAL: run without a command");
		return;
	}
	if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
		free(buf);
		send_errno(a, "pipe", errno);
		return;
	}
	a->child = fork();
	if (a->child == 0) {
		int devnull = open("/dev/null", O_RDONLY);

		signal(SIGPIPE, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGCHLD, SIG_DFL);
		/* An agent started in the background from a script (nohup, an init
		 * script's `&`) inherits SIGINT and SIGQUIT ignored; the command
		 * must not, or the host's Ctrl-C could never reach it. */
		signal(SIGINT, SIG_DFL);
		signal(SIGQUIT, SIG_DFL);
		dup2(devnull, 0);
		dup2(out[1], 1);
		dup2(err[1], 2);
		execvp(argv[0], argv);
		dprintf(2, "ktaprun --serve: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	free(buf);
	if (a->child < 0) {
		close(out[0]);
		close(err[0]);
		a->child = 0;
		send_errno(a, "fork", errno);
		return;
	}
	a->pipes[0] = out[0];
	a->pipes[1] = err[0];
	a->orphaned = 0;
}

static void handle_frame(struct agent *a, int type, const unsigned char *p, uint32_t n)
{
	char text[PATH_MAX + 32];

	a->last_frame = now();
	if (type == 'D') {
		do_data(a, p, n);
		return;
	}
	if (type == 'R') {
		do_run(a, p, n);
		return;
	}
	if (n >= sizeof(text)) {
		send_text(a, 'X', "EINVAL: request too long");
		return;
	}
	memcpy(text, p, n);
	text[n] = 0;
	switch (type) {
	case 'H': do_hello(a, p, n); break;
	case 'S': do_stat(a, text); break;
	case 'P': do_put(a, text); break;
	case 'C': do_commit(a, text); break;
	case 'K':
		if (a->child > 0)
			kill(a->child, atoi(text));
		break;
	case '.':
		if (a->child <= 0)
			send_text(a, '.', "");
		break;
	default:
		send_text(a, 'X', "EINVAL: unknown request");
	}
}

/* Takes every whole frame out of the receive buffer. */
static void parse_frames(struct agent *a)
{
	size_t pos = 0;

	while (a->rxlen - pos >= 2) {
		unsigned char *f = a->rx + pos;
		uint32_t len;

		if (f[0] != 'k' || f[1] != 'T') {
			pos++;
			continue;
		}
		if (a->rxlen - pos < HDR)
			break;
		len = get_be32(f + 3);
		if (len > MAX_PAYLOAD) {
			pos++;
			continue;
		}
		if (a->rxlen - pos < HDR + len + 4)
			break;
		if (ktap_crc32(0, f + 2, 5 + len) != get_be32(f + HDR + len)) {
			pos++;
			continue;
		}
		handle_frame(a, f[2], f + HDR, len);
		pos += HDR + len + 4;
	}
	memmove(a->rx, a->rx + pos, a->rxlen - pos);
	a->rxlen -= pos;
}

/* -- the command's output and end ---------------------------------------------- */
static void pump_child(struct agent *a, int which)
{
	unsigned char buf[16384];
	ssize_t n = read(a->pipes[which], buf, sizeof(buf));

	if (n > 0) {
		if (!a->orphaned)
			send_frame(a, which ? '2' : '1', buf, (size_t)n);
	} else if (n == 0 || errno != EINTR) {
		close(a->pipes[which]);
		a->pipes[which] = -1;
	}
}

static void reap_child(struct agent *a)
{
	char msg[32];
	int st = 0, status;

	while (waitpid(a->child, &st, 0) < 0 && errno == EINTR)
		;
	status = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 255;
	if (!a->orphaned) {
		snprintf(msg, sizeof(msg), "%d", status);
		send_text(a, 'Z', msg);
	}
	a->child = 0;
}

static int open_link(const char *spec, struct agent *a)
{
	char dev[PATH_MAX], *colon;
	struct termios t;
	speed_t speed = B115200;
	int fd;

	if (!strcmp(spec, "-")) {
		a->in = 0;
		a->out = 1;
		return 0;
	}
	snprintf(dev, sizeof(dev), "%s", spec);
	colon = strrchr(dev, ':');
	if (colon && colon[1] >= '0' && colon[1] <= '9') {
		long baud = atol(colon + 1);

		*colon = 0;
		speed = baud == 9600 ? B9600 : baud == 19200 ? B19200 : baud == 38400 ? B38400 :
			baud == 57600 ? B57600 : baud == 230400 ? B230400 :
			baud == 460800 ? B460800 : baud == 921600 ? B921600 : B115200;
	}
	fd = open(dev, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "ktaprun --serve: %s: %s\n", dev, strerror(errno));
		return -1;
	}
	if (isatty(fd) && tcgetattr(fd, &t) == 0) {
		cfmakeraw(&t);
		t.c_cflag |= CLOCAL | CREAD;
		cfsetispeed(&t, speed);
		cfsetospeed(&t, speed);
		tcsetattr(fd, TCSANOW, &t);
		tcflush(fd, TCIOFLUSH);
	}
	a->in = a->out = fd;
	return 0;
}

int serve_main(const char *spec)
{
	struct agent a;
	size_t cap = 2 * (MAX_PAYLOAD + HDR + 4);

	memset(&a, 0, sizeof(a));
	a.put_fd = -1;
	a.pipes[0] = a.pipes[1] = -1;
	if (open_link(spec, &a) < 0)
		return KTAP_EXIT_USAGE;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);	/* a tty hang-up must not end the agent */
	a.rx = xmalloc(cap);
	a.last_frame = a.last_byte = now();
	for (;;) {
		struct pollfd pfd[3] = { { a.in, POLLIN, 0 }, { a.pipes[0], POLLIN, 0 },
					 { a.pipes[1], POLLIN, 0 } };
		double t;
		int i;

		if (a.child > 0 && a.pipes[0] < 0 && a.pipes[1] < 0)
			reap_child(&a);
		if (poll(pfd, 3, 250) < 0 && errno != EINTR)
			return KTAP_EXIT_LOAD_ERROR;
		t = now();
		if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = read(a.in, a.rx + a.rxlen, cap - a.rxlen);

			if (n == 0 && a.in == 0)
				break;		/* stdin closed: the host is gone for good */
			if (n > 0) {
				a.rxlen += (size_t)n;
				a.last_byte = t;
				a.link_dead = 0;
				parse_frames(&a);
				if (a.rxlen == cap)
					a.rxlen = 0;	/* noise that never made a frame */
			} else {
				poll(NULL, 0, 100);	/* a hung-up tty: wait for the next host */
			}
		}
		for (i = 0; i < 2; i++)
			if (a.pipes[i] >= 0 && (pfd[1 + i].revents & (POLLIN | POLLHUP | POLLERR)))
				pump_child(&a, i);
		if (a.rxlen && t - a.last_byte > 1.0)
			a.rxlen = 0;		/* half a frame from a host that went away */
		if (a.child > 0 && !a.orphaned && a.keepalive > 0 &&
		    t - a.last_frame > a.keepalive) {
			fprintf(stderr, "ktaprun --serve: host silent for %d s: hanging up pid %d\n",
				a.keepalive, (int)a.child);
			kill(a.child, SIGHUP);
			a.orphaned = 1;
			put_abort(&a);
		}
	}
	if (a.child > 0) {
		kill(a.child, SIGHUP);
		a.orphaned = 1;
		while (a.pipes[0] >= 0 || a.pipes[1] >= 0)
			for (int i = 0; i < 2; i++)
				if (a.pipes[i] >= 0)
					pump_child(&a, i);
		reap_child(&a);
	}
	return 0;
}
