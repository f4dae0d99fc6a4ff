/* attach.c - resolves the image's probe events on this board into the attach
 * table of ktap_abi.h: globs expanded against tracefs and the kernel's symbol
 * lists, tracepoint ids and field layouts read from tracefs. The module then
 * attaches exactly what the table says; matching stays out of the kernel.
 *
 * KTAPRUN_TRACEFS overrides the tracefs mount point (tests use a fake tree). */
#define _GNU_SOURCE
#include <dirent.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ktaprun.h"
#include "sysdep.h"

void names_add(struct names *l, const char *s, size_t len)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	l->v[l->n++] = xstrndup(s, len);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted and without duplicates (static functions repeat in the lists). */
static void names_sort_unique(struct names *l)
{
	size_t i, out = 0;

	qsort(l->v, l->n, sizeof(*l->v), by_name);
	for (i = 0; i < l->n; i++) {
		if (out && !strcmp(l->v[out - 1], l->v[i]))
			free(l->v[i]);
		else
			l->v[out++] = l->v[i];
	}
	l->n = out;
}

void names_free(struct names *l)
{
	while (l->n)
		free(l->v[--l->n]);
	free(l->v);
	l->v = NULL;
	l->cap = 0;
}

static int is_glob(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

/* -- tracefs --------------------------------------------------------------------- */
const char *tracefs_root(void)
{
	static const char *root;
	if (root)
		return root;
	root = getenv("KTAPRUN_TRACEFS");
	if (root)
		return root;
	root = "/sys/kernel/tracing";
	if (is_dir("/sys/kernel/tracing/events"))
		return root;
#ifndef KTAPRUN_FORMAT_ONLY
	/* Not mounted yet (a minimal init): mount it where the kernel offers it. */
	if (mount_tracefs(root) == 0)
		return root;
#endif
	/* Kernels before 4.1 have no /sys/kernel/tracing: tracefs shows only
	 * inside debugfs, which a minimal init may not have mounted either. */
#ifndef KTAPRUN_FORMAT_ONLY
	if (!is_dir("/sys/kernel/debug/tracing"))
		mount_debugfs("/sys/kernel/debug");
#endif
	if (is_dir("/sys/kernel/debug/tracing/events"))
		root = "/sys/kernel/debug/tracing";
	return root;
}

static unsigned char *read_tracefs(const char *rel, size_t *len)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", tracefs_root(), rel);
	return read_whole(path, len);
}

/* Every "subsys:event" under events/ that matches pattern. An event is a
 * directory: a subsystem's `enable` and `filter` files are not events. */
static void glob_tracepoints(const char *pattern, struct names *out)
{
	char path[512], event[768], name[256];
	DIR *top, *sub;
	struct dirent *s, *e;

	snprintf(path, sizeof(path), "%s/events", tracefs_root());
	top = opendir(path);
	if (!top)
		return;
	while ((s = readdir(top))) {
		snprintf(path, sizeof(path), "%s/events/%s", tracefs_root(), s->d_name);
		if (s->d_name[0] == '.' || !is_dir(path) || !(sub = opendir(path)))
			continue;
		while ((e = readdir(sub))) {
			snprintf(name, sizeof(name), "%s:%s", s->d_name, e->d_name);
			snprintf(event, sizeof(event), "%s/%s", path, e->d_name);
			if (e->d_name[0] != '.' && !fnmatch(pattern, name, 0) && is_dir(event))
				names_add(out, name, strlen(name));
		}
		closedir(sub);
	}
	closedir(top);
	names_sort_unique(out);
}

/* -- kernel functions ------------------------------------------------------------ */
/* Functions the kprobes blacklist refuses; globs skip them, so `probe:vfs_*`
 * does not fail on one unprobeable match. "0xSTART-0xEND\tNAME" lines. */
static void load_blacklist(struct names *out)
{
	size_t len;
	char *line, *tab;
	unsigned char *text = read_whole("/sys/kernel/debug/kprobes/blacklist", &len);

	if (!text)
		return;
	for (line = strtok((char *)text, "\n"); line; line = strtok(NULL, "\n")) {
		tab = strrchr(line, '\t');
		if (tab)
			names_add(out, tab + 1, strcspn(tab + 1, " \t"));
	}
	free(text);
	names_sort_unique(out);
}

static int blacklisted(const struct names *bl, const char *name)
{
	return bl->n && bsearch(&name, bl->v, bl->n, sizeof(*bl->v), by_name);
}

/* One symbol per line, maybe followed by " [module]"; kallsyms lines have
 * an address and type first and only 't'/'T' (text) count. */
static void match_lines(char *text, int kallsyms, const char *pattern, const struct names *bl,
			struct names *out)
{
	char *line, *name;
	size_t len;

	for (line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		name = line;
		if (kallsyms) {
			name = strchr(line, ' ');
			if (!name || (name[1] != 't' && name[1] != 'T') || name[2] != ' ')
				continue;
			name += 3;
		}
		len = strcspn(name, " \t");
		name[len] = 0;
		if (len && !fnmatch(pattern, name, 0) && !blacklisted(bl, name))
			names_add(out, name, len);
	}
}

static void glob_functions(const char *pattern, struct names *out)
{
	struct names bl = { 0 };
	unsigned char *text;
	size_t len;
	int kallsyms = 0;

	text = read_tracefs("available_filter_functions", &len);
	if (!text) {
		text = read_whole("/proc/kallsyms", &len);
		kallsyms = 1;
	}
	if (!text)
		return;
	load_blacklist(&bl);
	match_lines((char *)text, kallsyms, pattern, &bl, out);
	names_free(&bl);
	free(text);
	names_sort_unique(out);
}

/* -- tracepoint formats ------------------------------------------------------------ */

static long number_after(const char *line, const char *key)
{
	const char *p = strstr(line, key);

	return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

/* "field:TYPE NAME[N];\toffset:O;\tsize:S;\tsigned:G;" -> one ktap_field.
 * common_* fields belong to every event, not to this one: argN starts after
 * them. Arrays other than char[] have no scalar value and are left out. */
static void parse_field(const char *line, struct tp_format *fmt)
{
	const char *decl = strstr(line, "field:"), *semi, *name, *end;
	struct ktap_field f = { 0 };
	long size = number_after(line, "size:");
	size_t len;

	if (!decl || !(semi = strchr(decl, ';')) || fmt->n >= 128)
		return;
	decl += 6;
	end = semi;
	if (end > decl && end[-1] == ']')	/* NAME[N]: an array */
		while (end > decl && *end != '[')
			end--;
	for (name = end; name > decl && name[-1] != ' ' && name[-1] != '*'; name--)
		;
	len = (size_t)(end - name);
	/* uprobe_events entries start with __probe_ip (__probe_func and
	 * __probe_ret_ip on returns): argN are the fetch arguments after them */
	if (!len || len >= 64 || !strncmp(name, "common_", 7) || !strncmp(name, "__probe_", 8))
		return;
	f.offset = (uint16_t)number_after(line, "offset:");
	f.size = (uint16_t)size;
	if (!strncmp(decl, "__data_loc", 10))
		f.flags = KTAP_FIELD_DATA_LOC;
	else if (end != semi && memmem(decl, (size_t)(end - decl), "char", 4))
		f.flags = KTAP_FIELD_STRING;
	else if (end != semi || (size != 1 && size != 2 && size != 4 && size != 8))
		return;
	else if (number_after(line, "signed:") == 1)
		f.flags = KTAP_FIELD_SIGNED;
	memcpy(fmt->name[fmt->n], name, len);
	fmt->name[fmt->n][len] = 0;
	fmt->f[fmt->n++] = f;
}

int tp_read_format(const char *tp, struct tp_format *fmt, char *err, size_t errlen)
{
	char rel[300], *line;
	const char *colon = strchr(tp, ':');
	unsigned char *text;
	size_t len;

	memset(fmt, 0, sizeof(*fmt));
	snprintf(rel, sizeof(rel), "events/%.*s/%s/format", (int)(colon - tp), tp, colon + 1);
	text = read_tracefs(rel, &len);
	if (!text) {
		snprintf(err, errlen, "tracepoint %s: cannot read %s/%s", tp, tracefs_root(), rel);
		return -1;
	}
	for (line = strtok((char *)text, "\n"); line; line = strtok(NULL, "\n")) {
		if (!strncmp(line, "ID:", 3))
			fmt->id = (uint32_t)strtoul(line + 3, NULL, 10);
		else if (strstr(line, "field:"))
			parse_field(line, fmt);
	}
	free(text);
	if (!fmt->id) {
		snprintf(err, errlen, "tracepoint %s: no ID in %s/%s", tp, tracefs_root(), rel);
		return -1;
	}
	return 0;
}

/* -- the table -------------------------------------------------------------------- */
static void put_entry(struct sb *t, uint32_t event, const struct ktap_ievent *ev,
		      const char *name, const struct tp_format *fmt, uint32_t *count)
{
	struct ktap_attach a;
	int16_t idx;
	uint32_t i, j;

	memset(&a, 0, sizeof(a));
	a.event = event;
	a.kind = ev->kind;
	a.offset = ev->offset;
	a.name_len = (uint16_t)strlen(name);
	if (fmt) {
		a.tp_id = fmt->id;
		a.nfields = fmt->n;
		/* a user probe's image fields define it; it has no named fields */
		a.nnamed = KTAP_EV_USER(ev->kind) ? 0 : (uint16_t)ev->nfields;
	}
	sb_put(t, (const char *)&a, sizeof(a));
	sb_put(t, name, a.name_len);
	if (fmt) {
		sb_put(t, (const char *)fmt->f, sizeof(fmt->f[0]) * fmt->n);
		for (i = 0; i < a.nnamed; i++) {
			idx = -1;
			for (j = 0; j < fmt->n; j++)
				if (strlen(fmt->name[j]) == ev->fields[i].len &&
				    !memcmp(fmt->name[j], ev->fields[i].s, ev->fields[i].len))
					idx = (int16_t)j;
			sb_put(t, (const char *)&idx, sizeof(idx));
		}
	}
	(*count)++;
}

static int expand(const struct ktap_ievent *ev, const char *pattern, struct names *out,
		  char *err, size_t errlen)
{
	if (!is_glob(pattern)) {
		names_add(out, pattern, strlen(pattern));
		return 0;
	}
	if (ev->kind == KTAP_EV_TRACEPOINT)
		glob_tracepoints(pattern, out);
	else
		glob_functions(pattern, out);
	if (out->n)
		return 0;
	snprintf(err, errlen, "probe '%.*s' matches no %s on this kernel", (int)ev->spec.len,
		 ev->spec.s, ev->kind == KTAP_EV_TRACEPOINT ? "tracepoint" : "kernel function");
	return -1;
}

int attach_match(const struct ktap_ievent *ev, struct names *out, char *err, size_t errlen)
{
	char *pattern = xstrndup(ev->name.s, ev->name.len);
	int ret = expand(ev, pattern, out, err, errlen);

	free(pattern);
	return ret;
}

/* A user probe: defined in uprobe_events, then attached like a tracepoint
 * under the name it is printed by. */
static int add_user_event(struct sb *t, uint32_t index, const struct ktap_ievent *ev,
			  uint32_t *count, char *err, size_t errlen)
{
	struct tp_format *fmt = xmalloc(sizeof(*fmt));
	char tp[96], *name = xstrndup(ev->name.s, ev->name.len);
	int ret = uprobe_define(ev, tp, sizeof(tp), err, errlen);

	if (ret == 0)
		ret = tp_read_format(tp, fmt, err, errlen);
	if (ret == 0)
		put_entry(t, index, ev, name, fmt, count);
	free(name);
	free(fmt);
	return ret;
}

static int add_event(struct sb *t, uint32_t index, const struct ktap_ievent *ev, uint32_t *count,
		     char *err, size_t errlen)
{
	struct names matched = { 0 };
	struct tp_format *fmt = NULL;
	size_t i;
	int ret = attach_match(ev, &matched, err, errlen);

	if (ev->kind == KTAP_EV_TRACEPOINT)
		fmt = xmalloc(sizeof(*fmt));
	for (i = 0; ret == 0 && i < matched.n; i++) {
		if (fmt && tp_read_format(matched.v[i], fmt, err, errlen) < 0)
			ret = -1;
		else
			put_entry(t, index, ev, matched.v[i], fmt, count);
	}
	free(fmt);
	names_free(&matched);
	return ret;
}

int attach_build(const struct ktap_image *img, struct attach_table *out, char *err, size_t errlen)
{
	struct sb t = { 0 };
	uint32_t i;

	out->count = 0;
	for (i = 0; i < img->nevents; i++) {
		const struct ktap_ievent *ev = &img->events[i];

		if (!KTAP_EV_IN_TABLE(ev->kind))
			continue;	/* timers and trace_end: the module has them */
		if ((KTAP_EV_USER(ev->kind) ? add_user_event : add_event)(&t, i, ev, &out->count,
									   err, errlen) < 0) {
			sb_free(&t);
			return -1;
		}
	}
	out->data = (unsigned char *)t.b;
	out->size = t.len;
	return 0;
}

void attach_free(struct attach_table *t)
{
	free(t->data);
	t->data = NULL;
}

/* --resolve: the table in words, one entry per line, to see what a glob
 * matched and how fields were laid out (also the tests' view of it). */
void attach_print(const struct attach_table *t, FILE *to)
{
	static const char *const kinds[KTAP_EV_NKINDS] = KTAP_EV_NAMES;
	const unsigned char *p = t->data;
	struct ktap_attach a;
	struct ktap_field f;
	int16_t idx;
	uint32_t i, j;

	for (i = 0; i < t->count; i++) {
		memcpy(&a, p, sizeof(a));
		p += sizeof(a);
		fprintf(to, "%u %s %.*s", a.event, KTAP_EV_IN_TABLE(a.kind) ? kinds[a.kind] : "?",
			(int)a.name_len, (const char *)p);
		p += a.name_len;
		if (a.offset)
			fprintf(to, " +0x%llx", (unsigned long long)a.offset);
		if (a.kind == KTAP_EV_TRACEPOINT || KTAP_EV_USER(a.kind))
			fprintf(to, " id=%u fields=", a.tp_id);
		for (j = 0; j < a.nfields; j++, p += sizeof(f)) {
			memcpy(&f, p, sizeof(f));
			fprintf(to, "%s%u:%u:%s", j ? "," : "", f.offset, f.size,
				f.flags & KTAP_FIELD_DATA_LOC ? "loc" : f.flags & KTAP_FIELD_STRING
				? "str" : f.flags & KTAP_FIELD_SIGNED ? "s" : "u");
		}
		if (a.kind == KTAP_EV_TRACEPOINT)
			fputs(" named=", to);
		for (j = 0; j < a.nnamed; j++, p += sizeof(idx)) {
			memcpy(&idx, p, sizeof(idx));
			fprintf(to, "%s%d", j ? "," : "", idx);
		}
		fputc('\n', to);
	}
}
