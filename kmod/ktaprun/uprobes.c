/* uprobes.c - user-space probes on the board. The host resolved each probe
 * in its copy of the file (docs/bytecode.md: the image event's offset is the
 * file offset; its fields are the build-id, the reference-counter offset and
 * the fetch arguments). Here the board's file is checked against that
 * build-id, the probe is defined in uprobe_events as ktap_<pid>/u<N>, and
 * the definitions are removed when the session ends; those a killed ktaprun
 * left behind go at the next start. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ktaprun.h"

static struct names defined;		/* "ktap_<pid>/u<N>", to remove */
static unsigned next_seq;
static int stale_done;

/* -- the board file's build-id --------------------------------------------------- */
static uint64_t elf_get(const unsigned char *p, unsigned n, int big)
{
	uint64_t v = 0;
	unsigned i;

	for (i = 0; i < n; i++)
		v |= (uint64_t)p[big ? i : n - 1 - i] << (8 * (n - 1 - i));
	return v;
}

/* The GNU build-id in the notes of the program headers, as hex; "" if none. */
static void note_build_id(const unsigned char *d, size_t len, int big, char *hex, size_t hexlen)
{
	size_t at = 0;

	while (at + 12 <= len) {
		uint32_t namesz = (uint32_t)elf_get(d + at, 4, big);
		uint32_t descsz = (uint32_t)elf_get(d + at + 4, 4, big);
		uint32_t type = (uint32_t)elf_get(d + at + 8, 4, big);
		size_t name = at + 12, desc = name + ((namesz + 3u) & ~3u), i;

		if (desc > len || descsz > len - desc)
			return;
		if (type == 3 && namesz == 4 && !memcmp(d + name, "GNU", 4)) {
			for (i = 0; i < descsz && 2 * i + 2 < hexlen; i++)
				snprintf(hex + 2 * i, 3, "%02x", d[desc + i]);
			return;
		}
		at = desc + ((descsz + 3u) & ~3u);
	}
}

static int file_build_id(const char *path, char *hex, size_t hexlen)
{
	size_t len, ph, i;
	unsigned char *d = read_whole(path, &len);
	int is64, big;

	hex[0] = 0;
	if (!d)
		return -1;
	if (len < 52 || memcmp(d, "\177ELF", 4)) {
		free(d);
		return -1;
	}
	is64 = d[4] == 2;
	big = d[5] == 2;
	ph = (size_t)elf_get(d + (is64 ? 0x20 : 0x1c), is64 ? 8 : 4, big);
	for (i = 0; i < elf_get(d + (is64 ? 0x38 : 0x2c), 2, big) && !hex[0]; i++) {
		size_t at = ph + i * (size_t)elf_get(d + (is64 ? 0x36 : 0x2a), 2, big), off, size;

		if (at + (is64 ? 56 : 32) > len || elf_get(d + at, 4, big) != 4)	/* PT_NOTE */
			continue;
		off = (size_t)elf_get(d + at + (is64 ? 8 : 4), is64 ? 8 : 4, big);
		size = (size_t)elf_get(d + at + (is64 ? 32 : 16), is64 ? 8 : 4, big);
		if (off <= len && size <= len - off)
			note_build_id(d + off, size, big, hex, hexlen);
	}
	free(d);
	return 0;
}

/* -- uprobe_events ------------------------------------------------------------------ */
static int events_write(const char *line)
{
	char path[512];
	int fd, ret = 0;

	snprintf(path, sizeof(path), "%s/uprobe_events", tracefs_root());
	fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (write(fd, line, strlen(line)) < 0)
		ret = -1;
	close(fd);
	return ret;
}

/* The kernel's own words for a refused definition: error_log's last entry. */
static void last_error(char *out, size_t outlen)
{
	char path[512], *line, *last = NULL;
	unsigned char *text;
	size_t len;

	out[0] = 0;
	snprintf(path, sizeof(path), "%s/error_log", tracefs_root());
	text = read_whole(path, &len);
	if (!text)
		return;
	for (line = strtok((char *)text, "\n"); line; line = strtok(NULL, "\n"))
		if (strstr(line, "trace_uprobe"))
			last = line;
	if (last)
		snprintf(out, outlen, " (the kernel says: %s)", last);
	free(text);
}

/* Definitions of ktaprun processes that are gone (a SIGKILL, a crash). */
static void remove_stale(void)
{
	char path[512], *line;
	unsigned char *text;
	size_t len;

	stale_done = 1;
	snprintf(path, sizeof(path), "%s/uprobe_events", tracefs_root());
	text = read_whole(path, &len);
	if (!text)
		return;
	for (line = strtok((char *)text, "\n"); line; line = strtok(NULL, "\n")) {
		char *group = strstr(line, ":ktap_"), del[128];
		long pid = group ? strtol(group + 6, NULL, 10) : 0;

		if (pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		snprintf(del, sizeof(del), "-:%.*s\n", (int)strcspn(group + 1, " "), group + 1);
		events_write(del);
	}
	free(text);
}

static int check_file(const struct ktap_ievent *ev, const char *path, char *err, size_t errlen)
{
	char have[128];
	const struct ktap_kstr *want = &ev->fields[0];

	if (access(path, R_OK) < 0) {
		snprintf(err, errlen, "probe '%.*s': %s: %s on the board", (int)ev->spec.len,
			 ev->spec.s, path, strerror(errno));
		return -1;
	}
	if (!want->len || file_build_id(path, have, sizeof(have)) < 0)
		return 0;
	if (strlen(have) == want->len && !memcmp(have, want->s, want->len))
		return 0;
	/* the build-ids first: a long path must not cut them off */
	snprintf(err, errlen, "probe '%.*s': the board's file has build-id %s, the host copy's "
		 "%.*s: not the file the probe was resolved in; re-sync the host copy (--sysroot) "
		 "with the board", (int)ev->spec.len, ev->spec.s, have[0] ? have : "none",
		 (int)want->len, want->s);
	return -1;
}

/* Image strings are not NUL-terminated: PATH is the name up to its first ':'. */
char *uprobe_path(const struct ktap_ievent *ev)
{
	const char *colon = memchr(ev->name.s, ':', ev->name.len);

	return xstrndup(ev->name.s, colon ? (size_t)(colon - ev->name.s) : ev->name.len);
}

int uprobe_check(const struct ktap_ievent *ev, char *err, size_t errlen)
{
	char *path = uprobe_path(ev);
	int ret = ev->nfields < 2 ? 0 : check_file(ev, path, err, errlen);

	free(path);
	return ret;
}

int uprobe_define(const struct ktap_ievent *ev, char *tp, size_t tplen, char *err, size_t errlen)
{
	char *path = uprobe_path(ev);
	char group[64], why[400];
	struct sb line = { 0 };
	uint32_t i;
	int ret = -1;

	if (ev->nfields < 2) {
		snprintf(err, errlen, "probe '%.*s': the image event lacks its build-id and "
			 "fetch arguments", (int)ev->spec.len, ev->spec.s);
		goto out;
	}
	if (check_file(ev, path, err, errlen) < 0)
		goto out;
	if (!stale_done)
		remove_stale();
	snprintf(group, sizeof(group), "ktap_%d/u%u", (int)getpid(), next_seq++);
	sb_printf(&line, "%c:%s %s:0x%llx", ev->kind == KTAP_EV_URETPROBE ? 'r' : 'p', group,
		  path, (unsigned long long)ev->offset);
	if (ev->fields[1].len)
		sb_printf(&line, "(%.*s)", (int)ev->fields[1].len, ev->fields[1].s);
	for (i = 2; i < ev->nfields; i++)
		sb_printf(&line, " arg%u=%.*s", i - 1, (int)ev->fields[i].len, ev->fields[i].s);
	sb_putc(&line, '\n');
	sb_putc(&line, 0);
	if (getenv("KTAPRUN_SHOW_UPROBES"))	/* the tests' view of the definitions */
		fprintf(stderr, "ktaprun: uprobe_events: %s", line.b);
	if (events_write(line.b) < 0) {
		if (errno == ENOENT)
			snprintf(err, errlen, "probe '%.*s': user probes need CONFIG_UPROBES and "
				 "CONFIG_UPROBE_EVENTS: this kernel has no %s/uprobe_events",
				 (int)ev->spec.len, ev->spec.s, tracefs_root());
		else {
			int e = errno;

			last_error(why, sizeof(why));
			snprintf(err, errlen, "probe '%.*s': uprobe_events refused '%.*s': %s%s",
				 (int)ev->spec.len, ev->spec.s, (int)strcspn(line.b, "\n"), line.b,
				 strerror(e), why);
		}
		goto out;
	}
	names_add(&defined, group, strlen(group));
	snprintf(tp, tplen, "ktap_%d:u%u", (int)getpid(), next_seq - 1);
	ret = 0;
out:
	sb_free(&line);
	free(path);
	return ret;
}

void uprobes_remove(void)
{
	char del[96];
	size_t i;

	for (i = 0; i < defined.n; i++) {
		snprintf(del, sizeof(del), "-:%s\n", defined.v[i]);
		events_write(del);
	}
	names_free(&defined);
}
