/*
 * ktap board init: PID 1 of the QEMU board initramfs.
 *
 * Batch mode (the file /etc/ktap/commands exists): run each command in turn
 * and report everything over the console as frames the host parses, then
 * power off. Interactive mode (no commands file, or `ktap.shell` on the
 * kernel command line): a tiny command loop on the console.
 *
 * Commands file: one command per line, each argument hex-encoded, arguments
 * separated by one space. Hex keeps any byte (spaces, quotes, newlines) in an
 * argument without a quoting language.
 *
 * Frames, one per console line (see toolchain/ktap/boards/frames.py):
 *     @@KTAP:<seq>:<tag>:<fields...>:<crc32 hex>
 * seq counts frames from 0 so the host notices a lost line; the CRC-32 covers
 * everything between "@@KTAP:" and the last ':' so a kernel message printed
 * in the middle of a line is detected instead of silently corrupting output.
 * Command output travels base64-encoded in short chunks, one frame per write
 * to the console, which keeps lines short and binary-safe.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* relative to this file: init.c is compiled on its own, without -I */
#include "../kmod/ktap_crc32.h"

#define PROTOCOL_VERSION 1
#define COMMANDS_FILE "/etc/ktap/commands"
#define BOOT_MODULES_FILE "/etc/ktap/boot-modules"
#define CHUNK 96                 /* raw bytes per output frame: 128 base64 chars */
#define MAX_ARGS 256

static unsigned long frame_seq;
static int console_fd = 1;

static void write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		buf += n;
		len -= (size_t)n;
	}
}

/* Emits "@@KTAP:<seq>:<body>:<crc>\n" with a single write(). */
static void frame(const char *fmt, ...)
{
	char body[512], line[600];
	va_list ap;
	int n = snprintf(body, sizeof body, "%lu:", frame_seq++);
	va_start(ap, fmt);
	vsnprintf(body + n, sizeof body - n, fmt, ap);
	va_end(ap);
	int len = snprintf(line, sizeof line, "@@KTAP:%s:%08x\n", body,
			   ktap_crc32(0, body, strlen(body)));
	write_all(console_fd, line, (size_t)len);
}

static void base64(const unsigned char *in, size_t n, char *out)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i;
	for (i = 0; i + 2 < n; i += 3) {
		*out++ = tab[in[i] >> 2];
		*out++ = tab[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		*out++ = tab[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
		*out++ = tab[in[i + 2] & 63];
	}
	if (i < n) {
		*out++ = tab[in[i] >> 2];
		if (i + 1 < n) {
			*out++ = tab[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
			*out++ = tab[(in[i + 1] & 15) << 2];
		} else {
			*out++ = tab[(in[i] & 3) << 4];
			*out++ = '=';
		}
		*out++ = '=';
	}
	*out = 0;
}

static void hex_encode(const char *in, char *out, size_t outsz)
{
	static const char digits[] = "0123456789abcdef";
	size_t o = 0;
	for (; *in && o + 3 < outsz; in++) {
		out[o++] = digits[(unsigned char)*in >> 4];
		out[o++] = digits[(unsigned char)*in & 15];
	}
	out[o] = 0;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes a hex word in place; returns 0 on malformed input. */
static int hex_decode(char *s)
{
	char *out = s;
	for (; s[0] && s[1]; s += 2) {
		int hi = hexval(s[0]), lo = hexval(s[1]);
		if (hi < 0 || lo < 0)
			return 0;
		*out++ = (char)(hi << 4 | lo);
	}
	if (*s)
		return 0;
	*out = 0;
	return 1;
}

static double uptime(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void mount_one(const char *src, const char *dir, const char *type)
{
	mkdir(dir, 0755);
	if (mount(src, dir, type, 0, NULL) < 0 && errno != EBUSY)
		fprintf(stderr, "ktap init: mount %s on %s: %s\n", type, dir, strerror(errno));
}

static void mount_filesystems(void)
{
	mount_one("proc", "/proc", "proc");
	mount_one("sysfs", "/sys", "sysfs");
	mount_one("devtmpfs", "/dev", "devtmpfs");
	mount_one("debugfs", "/sys/kernel/debug", "debugfs");
	mount_one("tracefs", "/sys/kernel/tracing", "tracefs");
	mount_one("tmpfs", "/tmp", "tmpfs");
}

static void setup_console(void)
{
	int fd = open("/dev/console", O_RDWR | O_NOCTTY);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	console_fd = 1;
}

static int read_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	return (int)n;
}

/* Value of "name=value" on the kernel command line, or NULL. */
static const char *cmdline_option(const char *name, char *buf, size_t size)
{
	static char cmdline[4096];
	size_t len = strlen(name);
	if (read_file("/proc/cmdline", cmdline, sizeof cmdline) < 0)
		return NULL;
	for (char *tok = strtok(cmdline, " \n"); tok; tok = strtok(NULL, " \n")) {
		if (strncmp(tok, name, len) == 0 && (tok[len] == '=' || tok[len] == 0)) {
			snprintf(buf, size, "%s", tok[len] == '=' ? tok + len + 1 : "");
			return buf;
		}
	}
	return NULL;
}

/* Keeps kernel chatter off the console while commands run (warnings and
 * oopses still get through); ktap.loglevel=N on the command line overrides. */
static void set_console_loglevel(void)
{
	char level[16] = "4";
	cmdline_option("ktap.loglevel", level, sizeof level);
	int fd = open("/proc/sys/kernel/printk", O_WRONLY);
	if (fd >= 0) {
		write_all(fd, level, strlen(level));
		close(fd);
	}
}

static int exit_status(int wstatus)
{
	if (WIFEXITED(wstatus))
		return WEXITSTATUS(wstatus);
	if (WIFSIGNALED(wstatus))
		return 128 + WTERMSIG(wstatus);
	return 255;
}

static void emit_output(int index, char stream, const unsigned char *buf, size_t n)
{
	char b64[4 * (CHUNK / 3) + 8];
	for (size_t off = 0; off < n; off += CHUNK) {
		size_t len = n - off < CHUNK ? n - off : CHUNK;
		base64(buf + off, len, b64);
		frame("%c:%d:%s", stream, index, b64);
	}
}

/* Runs argv with stdout and stderr on two pipes, relaying both as frames. */
static void run_framed(int index, char **argv)
{
	char hex[400];
	int out[2], err[2];
	hex_encode(argv[0], hex, sizeof hex);
	frame("BEGIN:%d:%s", index, hex);
	if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
		frame("END:%d:%d:%s", index, 127, "pipe-failed");
		return;
	}
	double t0 = uptime();
	pid_t pid = fork();
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);
		dup2(devnull, 0);
		dup2(out[1], 1);
		dup2(err[1], 2);
		execvp(argv[0], argv);
		dprintf(2, "ktap init: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	if (pid < 0) {
		close(out[0]);
		close(err[0]);
		frame("END:%d:%d:%s", index, 127, "fork-failed");
		return;
	}
	struct pollfd fds[2] = { { out[0], POLLIN, 0 }, { err[0], POLLIN, 0 } };
	int open_fds = 2;
	while (open_fds > 0) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < 2; i++) {
			if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			unsigned char buf[CHUNK * 8];
			ssize_t n = read(fds[i].fd, buf, sizeof buf);
			if (n > 0) {
				emit_output(index, i == 0 ? 'O' : 'E', buf, (size_t)n);
			} else if (n == 0 || errno != EINTR) {
				close(fds[i].fd);
				fds[i].fd = -1;
				open_fds--;
			}
		}
	}
	int wstatus = 0;
	while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
		;
	frame("END:%d:%d:%.6f", index, exit_status(wstatus), uptime() - t0);
}

/* Splits a commands-file line into decoded argv; returns argc or -1. */
static int parse_command_line(char *line, char **argv)
{
	int argc = 0;
	for (char *tok = strtok(line, " \r\n"); tok; tok = strtok(NULL, " \r\n")) {
		if (argc == MAX_ARGS - 1 || !hex_decode(tok))
			return -1;
		argv[argc++] = tok;
	}
	argv[argc] = NULL;
	return argc;
}

static void run_batch(FILE *commands)
{
	char line[16384];
	char *argv[MAX_ARGS];
	int index = 0;
	while (fgets(line, sizeof line, commands)) {
		int argc = parse_command_line(line, argv);
		if (argc == 0)
			continue;
		if (argc < 0) {
			frame("BEGIN:%d:", index);
			frame("END:%d:%d:%s", index, 127, "bad-command-line");
		} else {
			run_framed(index, argv);
		}
		index++;
	}
	frame("DONE:%d", index);
}

/* ---- boot modules ---------------------------------------------------- */

/* Drivers a stock distribution kernel builds as modules (virtio console,
 * e1000): the host lists them in load order, dependencies first. A failure
 * goes to the console in plain text before HELLO, with the kernel's own
 * reason printed beside it, and the remaining modules are still tried. */
static void load_boot_modules(void)
{
	char path[512];
	FILE *list = fopen(BOOT_MODULES_FILE, "r");
	if (!list)
		return;
	while (fgets(path, sizeof path, list)) {
		path[strcspn(path, "\r\n")] = 0;
		if (!path[0])
			continue;
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "ktap init: boot module %s: cannot open: %s\n", path,
				strerror(errno));
			continue;
		}
		if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST)
			fprintf(stderr, "ktap init: boot module %s failed to load: %s "
				"(the kernel's reason is in the lines above)\n", path, strerror(errno));
		close(fd);
	}
	fclose(list);
}

/* ---- interactive mode ---------------------------------------------- */

static void builtin_cat(char **argv)
{
	for (int i = 1; argv[i]; i++) {
		int fd = open(argv[i], O_RDONLY);
		if (fd < 0) {
			printf("cat: %s: %s\n", argv[i], strerror(errno));
			continue;
		}
		char buf[4096];
		ssize_t n;
		while ((n = read(fd, buf, sizeof buf)) > 0)
			write_all(1, buf, (size_t)n);
		close(fd);
	}
}

/* "echo WORDS... > FILE" writes to FILE (how tracefs is driven by hand). */
static void builtin_echo(char **argv)
{
	char text[4096] = "";
	const char *path = NULL;
	for (int i = 1; argv[i]; i++) {
		if (strcmp(argv[i], ">") == 0 && argv[i + 1]) {
			path = argv[++i];
			continue;
		}
		if (text[0])
			strncat(text, " ", sizeof text - strlen(text) - 1);
		strncat(text, argv[i], sizeof text - strlen(text) - 1);
	}
	strncat(text, "\n", sizeof text - strlen(text) - 1);
	if (!path) {
		fputs(text, stdout);
		return;
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, text, strlen(text)) < 0)
		printf("echo: %s: %s\n", path, strerror(errno));
	if (fd >= 0)
		close(fd);
}

/* Whitespace-separated words; double quotes group words. No other syntax. */
static int split_words(char *line, char **argv)
{
	int argc = 0;
	char *p = line;
	while (*p && argc < MAX_ARGS - 1) {
		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
			p++;
		if (!*p)
			break;
		if (*p == '"') {
			argv[argc++] = ++p;
			while (*p && *p != '"')
				p++;
		} else {
			argv[argc++] = p;
			while (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
				p++;
		}
		if (*p)
			*p++ = 0;
	}
	argv[argc] = NULL;
	return argc;
}

static void run_interactive(void)
{
	char line[4096];
	char *argv[MAX_ARGS];
	printf("ktap board shell: runs programs from /bin; built-ins: cd cat echo help poweroff\n");
	for (;;) {
		printf("ktap# ");
		fflush(stdout);
		if (!fgets(line, sizeof line, stdin))
			return;
		if (split_words(line, argv) == 0)
			continue;
		if (!strcmp(argv[0], "poweroff") || !strcmp(argv[0], "exit"))
			return;
		if (!strcmp(argv[0], "help")) {
			printf("programs: ktapw and whatever was added to the initramfs (PATH=/bin:/sbin)\n"
			       "cd DIR | cat FILE... | echo TEXT [> FILE] | poweroff\n");
			continue;
		}
		if (!strcmp(argv[0], "cd")) {
			if (chdir(argv[1] ? argv[1] : "/") < 0)
				printf("cd: %s\n", strerror(errno));
			continue;
		}
		if (!strcmp(argv[0], "cat")) {
			builtin_cat(argv);
			continue;
		}
		if (!strcmp(argv[0], "echo")) {
			builtin_echo(argv);
			continue;
		}
		pid_t pid = fork();
		if (pid == 0) {
			signal(SIGINT, SIG_DFL);
			execvp(argv[0], argv);
			printf("%s: %s\n", argv[0], strerror(errno));
			_exit(127);
		}
		int wstatus = 0;
		while (pid > 0 && waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
			;
		if (pid > 0 && exit_status(wstatus) != 0)
			printf("[exit %d]\n", exit_status(wstatus));
	}
}

int main(void)
{
	struct utsname u;
	char opt[8];

	setenv("PATH", "/bin:/sbin:/usr/bin", 1);
	setenv("HOME", "/", 1);
	mount_filesystems();
	setup_console();
	signal(SIGINT, SIG_IGN);
	load_boot_modules();
	uname(&u);
	frame("HELLO:%d:%s:%s:%.6f", PROTOCOL_VERSION, u.machine, u.release, uptime());
	set_console_loglevel();

	FILE *commands = fopen(COMMANDS_FILE, "r");
	if (commands && !cmdline_option("ktap.shell", opt, sizeof opt)) {
		run_batch(commands);
		fclose(commands);
	} else {
		run_interactive();
		printf("ktap: powering off (if QEMU keeps running, press Ctrl-A x)\n");
	}
	sync();
	reboot(RB_POWER_OFF);
	/* Some boards (mips malta, x86 pc without ACPI) cannot power off; the
	 * host stops QEMU when it sees DONE, so just wait here. */
	for (;;)
		pause();
}
