/* session.c - one session on /dev/ktap (ktap_abi.h): load the module when the
 * device is missing, INFO preflight, LOAD, attach table, START, the workload,
 * then records until EOF. A host build (KTAPRUN_FORMAT_ONLY) leaves all of
 * this out, so a test can never load a module on the machine it runs on. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "session.h"
#include "sysdep.h"

#ifdef KTAPRUN_FORMAT_ONLY
int run_session(const struct options *o, const struct ktap_image *img,
		const unsigned char *data, size_t size, const char *argv0)
{
	(void)o; (void)img; (void)data; (void)size; (void)argv0;
	fputs("ktaprun: this host build only formats records (--format-records)\n", stderr);
	return KTAP_EXIT_USAGE;
}
#else

#define NEED_ROOT "ktaprun: need root (CAP_SYS_ADMIN)\n"

/* -- the module -------------------------------------------------------------- */
/* ktapvm.ko next to the ktaprun binary: the two are pushed to a board together. */
static void default_module(const char *argv0, char *buf, size_t size)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;

	if (n > 0)
		exe[n] = 0;
	else
		snprintf(exe, sizeof(exe), "%s", argv0);
	slash = strrchr(exe, '/');
	if (slash)
		snprintf(buf, size, "%.*s/ktapvm.ko", (int)(slash - exe), exe);
	else
		snprintf(buf, size, "ktapvm.ko");
}

/* The kernel logs why it refused a module ("version magic '...' should be
 * '...'", "disagrees about version of symbol ..."); errno alone says only
 * "Exec format error". The log is opened before the load and read after it,
 * so only this load's lines are shown. */
static int kmsg_open_at_end(void)
{
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd >= 0)
		lseek(fd, 0, SEEK_END);
	return fd;
}

static void kmsg_show_module_lines(int fd)
{
	char rec[1024];
	ssize_t n;
	int shown = 0;

	if (fd < 0)
		return;
	/* one record per read(); EAGAIN when none are left */
	while (shown < 8 && (n = read(fd, rec, sizeof(rec) - 1)) > 0) {
		char *msg, *end;

		rec[n] = 0;
		msg = strchr(rec, ';');
		if (!msg || !strstr(msg, KTAP_MODULE_NAME))
			continue;
		end = strchr(++msg, '\n');
		if (end)
			*end = 0;
		fprintf(stderr, "ktaprun: kernel: %s\n", msg);
		shown++;
	}
}

/* The vermagic= string of the module file, or "" (as much as fits in buf). */
static void file_vermagic(const char *path, char *buf, size_t size)
{
	static const char key[] = "vermagic=";
	char chunk[65536 + sizeof(key)];
	size_t keep = 0;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	buf[0] = 0;
	if (fd < 0)
		return;
	/* chunks overlap by the key's length so a match across two reads is found */
	while ((n = read(fd, chunk + keep, sizeof(chunk) - keep - 1)) > 0) {
		size_t len = keep + (size_t)n;
		char *hit = memmem(chunk, len, key, sizeof(key) - 1);

		if (hit) {
			size_t off = (size_t)(hit - chunk) + sizeof(key) - 1, i = 0;

			if (!memchr(chunk + off, 0, len - off) && hit != chunk) {
				/* the value runs past this chunk: move it to the front, read on */
				keep = len - (size_t)(hit - chunk);
				memmove(chunk, hit, keep);
				continue;
			}
			while (off + i < len && chunk[off + i] && i + 1 < size) {
				buf[i] = chunk[off + i];
				i++;
			}
			buf[i] = 0;
			break;
		}
		keep = len < sizeof(key) ? len : sizeof(key) - 1;
		memmove(chunk, chunk + len - keep, keep);
	}
	close(fd);
	/* trailing blanks are part of vermagic, not of the release */
	for (size_t i = strlen(buf); i > 0 && buf[i - 1] == ' '; i--)
		buf[i - 1] = 0;
}

/* A module for another kernel: name both releases and what to rebuild against. */
static void wrong_kernel_hint(const char *path)
{
	char magic[256];
	struct utsname u;
	size_t rel_len;

	file_vermagic(path, magic, sizeof(magic));
	if (uname(&u) < 0 || !magic[0]) {
		fprintf(stderr, "ktaprun: %s: not a module for this kernel; build it for "
			"`uname -r`\n", path);
		return;
	}
	rel_len = strcspn(magic, " ");
	if (rel_len != strlen(u.release) || strncmp(magic, u.release, rel_len))
		fprintf(stderr, "ktaprun: %s was built for kernel %.*s (vermagic '%s'), this "
			"kernel is %s: build it against the headers of %s (Debian: "
			"linux-headers-%s)\n", path, (int)rel_len, magic, magic, u.release,
			u.release, u.release);
	else
		fprintf(stderr, "ktaprun: %s was built for kernel %s but with another "
			"configuration (vermagic '%s', see the kernel's line above): build it "
			"against this kernel's own headers, not a same-named tree\n",
			path, u.release, magic);
}

static int module_error(const char *path, int err, int kmsg)
{
	switch (err) {
	case EPERM: case EACCES:
		fputs(NEED_ROOT, stderr);
		break;
	case EBUSY:
		fprintf(stderr, "ktaprun: module %s is busy (being loaded or unloaded); "
			"try again\n", KTAP_MODULE_NAME);
		break;
	case ENOEXEC: case EINVAL: case ENOENT:
		/* ENOENT: a symbol the module needs is missing ("Unknown symbol") */
		fprintf(stderr, "ktaprun: loading %s failed: %s\n", path, strerror(err));
		kmsg_show_module_lines(kmsg);
		wrong_kernel_hint(path);
		break;
	default:
		fprintf(stderr, "ktaprun: loading %s: %s\n", path, strerror(err));
		kmsg_show_module_lines(kmsg);
	}
	return -1;
}

/* Whether this ktaprun loaded the module (rather than finding it loaded), so
 * a module found to be for another kernel is unloaded again by its loader. */
static int loaded_here, wrong_release;

/* finit_module(2): the boards have no kmod tools. EEXIST is fine: another
 * ktaprun loaded it meanwhile. */
static int load_module(const struct options *o, const char *argv0)
{
	char path[PATH_MAX];
	int fd, ret, kmsg, err;

	if (o->module)
		snprintf(path, sizeof(path), "%s", o->module);
	else
		default_module(argv0, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "ktaprun: %s is missing and the module %s cannot be opened: %s "
			"(use -m PATH)\n", KTAP_DEVICE, path, strerror(errno));
		return -1;
	}
	kmsg = kmsg_open_at_end();
	ret = (int)syscall(SYS_finit_module, fd, "", 0);
	err = errno;
	close(fd);
	if (ret == 0)
		loaded_here = 1;
	if (ret < 0 && err != EEXIST)
		module_error(path, err, kmsg);
	if (kmsg >= 0)
		close(kmsg);
	return ret < 0 && err != EEXIST ? -1 : 0;
}

static int open_device(const struct options *o, const char *argv0)
{
	int fd = open(KTAP_DEVICE, O_RDWR | O_CLOEXEC), tries;

	if (fd < 0 && errno == ENOENT) {
		if (load_module(o, argv0) < 0)
			return -1;
		for (tries = 0; fd < 0 && errno == ENOENT && tries < 40; tries++) {
			if (tries == 10)
				make_char_node(KTAP_DEVICE, "/sys/class/misc/ktap/dev");	/* no devtmpfs */
			poll(NULL, 0, 25);
			fd = open(KTAP_DEVICE, O_RDWR | O_CLOEXEC);
		}
	}
	if (fd >= 0)
		return fd;
	if (errno == EPERM || errno == EACCES)
		fputs(NEED_ROOT, stderr);
	else if (errno == EBUSY)
		fprintf(stderr, "ktaprun: %s is busy (in use by another session)\n", KTAP_DEVICE);
	else
		fprintf(stderr, "ktaprun: %s: %s\n", KTAP_DEVICE, strerror(errno));
	return -1;
}

/* -- preflight --------------------------------------------------------------- */
static const char *target_name(uint32_t id)
{
	static const struct ktap_target_info targets[] = KTAP_TARGET_TABLE;
	size_t i;

	for (i = 0; i < sizeof(targets) / sizeof(targets[0]); i++)
		if ((uint32_t)targets[i].id == id)
			return targets[i].name;
	return "an unknown target";
}

static int preflight(int fd)
{
	struct ktap_ioc_info info;
	struct utsname u;

	memset(&info, 0, sizeof(info));
	if (ioctl(fd, KTAP_IOC_INFO, &info) < 0) {
		fprintf(stderr, "ktaprun: %s: INFO failed: %s\n", KTAP_DEVICE, strerror(errno));
		return -1;
	}
	info.release[sizeof(info.release) - 1] = 0;
	if (info.abi_version != KTAP_ABI_VERSION) {
		fprintf(stderr, "ktaprun: the loaded %s speaks ABI %u, this ktaprun ABI %d: "
			"use matching builds\n", KTAP_MODULE_NAME, info.abi_version,
			KTAP_ABI_VERSION);
		return -1;
	}
	if (uname(&u) == 0 && strcmp(u.release, info.release)) {
		/* modversions let the kernel accept it (same symbol CRCs), but
		 * structure layouts may still differ: refuse, and take it out again */
		fprintf(stderr, "ktaprun: %s was built for kernel %s, this kernel is %s: "
			"build it against the headers of %s (Debian: linux-headers-%s)%s\n",
			KTAP_MODULE_NAME, info.release, u.release, u.release, u.release,
			loaded_here ? "; unloaded it again" : "");
		wrong_release = loaded_here;
		return -1;
	}
	if (info.target_id != KTAP_TARGET_ID) {
		fprintf(stderr, "ktaprun: the loaded %s is for %s, this ktaprun and image are "
			"for %s\n", KTAP_MODULE_NAME, target_name(info.target_id),
			KTAP_TARGET_NAME);
		return -1;
	}
	return 0;
}

/* The module's one-line reason, else errno's. */
static int ioc_failed(const char *file, const char *what, const char *errbuf)
{
	if (errbuf[0])
		fprintf(stderr, "ktaprun: %s: %s\n", file, errbuf);
	else
		fprintf(stderr, "ktaprun: %s: %s failed: %s\n", file, what, strerror(errno));
	return -1;
}

static int load_and_start(int fd, const struct options *o, const struct ktap_image *img,
			  const unsigned char *data, size_t size)
{
	char errbuf[KTAP_ERRLEN] = "";
	struct ktap_ioc_load ld = { (uintptr_t)data, size, (uintptr_t)errbuf };
	struct ktap_ioc_start st;
	struct attach_table tab;
	int ret;

	if (ioctl(fd, KTAP_IOC_LOAD, &ld) < 0)
		return ioc_failed(o->image, "LOAD", errbuf);
	if (attach_build(img, &tab, errbuf, sizeof(errbuf)) < 0) {
		fprintf(stderr, "ktaprun: %s: %s\n", o->image, errbuf);
		return -1;
	}
	memset(&st, 0, sizeof(st));
	st.attach = (uintptr_t)tab.data;
	st.size = tab.size;
	st.count = tab.count;
	st.errbuf = (uintptr_t)errbuf;
	errbuf[0] = 0;
	ret = ioctl(fd, KTAP_IOC_START, &st);
	attach_free(&tab);
	return ret < 0 ? ioc_failed(o->image, "START", errbuf) : 0;
}

/* -- reading records ----------------------------------------------------------- */
struct reader {
	int fd;
	unsigned char *buf;
	size_t cap;
};

/* One read(): >0 bytes, 0 at EOF, -1 on error. A record larger than the
 * buffer (EMSGSIZE) grows it. */
static ssize_t read_records(struct reader *r)
{
	ssize_t n;

	for (;;) {
		n = read(r->fd, r->buf, r->cap);
		if (n >= 0)
			return n;
		if (errno == EMSGSIZE && r->cap < (1u << 30)) {
			r->cap *= 2;
			r->buf = xrealloc(r->buf, r->cap);
		} else if (errno != EINTR && errno != EAGAIN) {
			fprintf(stderr, "ktaprun: reading %s: %s\n", KTAP_DEVICE, strerror(errno));
			return -1;
		}
	}
}

/* Polls until records arrive, or until the workload ended, a stop signal
 * came or the output went away; then STOP, after which read() drains to EOF
 * (trace_end's output included; written only if someone still reads it). */
static int pump(struct reader *r, struct stream *s, pid_t child, const sigset_t *waitmask)
{
	struct pollfd pfd[2] = { { r->fd, POLLIN, 0 }, { STDOUT_FILENO, 0, 0 } };
	int stopped = 0, child_done = child <= 0;
	ssize_t n;

	for (;;) {
		if (got_child && !child_done)
			child_done = reaped(child);
		got_child = 0;
		if (!stopped && (got_stop_signal || (child > 0 && child_done) || output_gone())) {
			ioctl(r->fd, KTAP_IOC_STOP);	/* fails only if it ended already */
			stopped = 1;
		}
		if (!stopped && ppoll(pfd, 2, NULL, waitmask) < 0)
			continue;	/* EINTR: a signal; look at the flags */
		if (!stopped && !(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;	/* only stdout changed: output_gone() looks */
		n = read_records(r);
		if (n <= 0)
			return (int)n;
		stream_feed(s, r->buf, (size_t)n);
	}
}

int run_session(const struct options *o, const struct ktap_image *img,
		const unsigned char *data, size_t size, const char *argv0)
{
	struct formatter f = { img, NULL, o->json };
	struct reader r;
	struct stream s;
	sigset_t waitmask;
	pid_t child = 0;
	int fd, status, ok;

	fd = open_device(o, argv0);
	if (fd < 0)
		return KTAP_EXIT_LOAD_ERROR;
	if (preflight(fd) < 0 || load_and_start(fd, o, img, data, size) < 0) {
		close(fd);
		uprobes_remove();
		if (wrong_release)	/* the device is closed: the module can go */
			syscall(SYS_delete_module, KTAP_MODULE_NAME, O_NONBLOCK);
		return KTAP_EXIT_LOAD_ERROR;
	}
	f.syms = symtab_load(o->kallsyms ? o->kallsyms : "/proc/kallsyms");
	waitmask = catch_signals();
	if (o->cmd)
		child = start_workload(o->cmd, &waitmask);
	if (child < 0 || (!o->cmd && !has_probes(img)))
		got_stop_signal = 1;	/* nothing can happen: end the session at once */
	r.fd = fd;
	r.cap = (size_t)img->limits[KTAP_LIMIT_OUTBUF_SIZE] + 4096;
	r.buf = xmalloc(r.cap);
	stream_init(&s, &f, o->raw);
	ok = pump(&r, &s, child, &waitmask) == 0;
	end_workload(child);
	status = ok ? stream_finish(&s, KTAP_DEVICE) : KTAP_EXIT_LOAD_ERROR;
	stream_free(&s);
	free(r.buf);
	symtab_free((struct symtab *)f.syms);
	close(fd);		/* the module lets go of the probes... */
	uprobes_remove();	/* ...so their definitions can go */
	return status;
}
#endif
