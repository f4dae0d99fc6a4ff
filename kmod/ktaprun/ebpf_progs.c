/* ebpf_progs.c - the programs of an ebpf image (docs/ebpf.md "Relocations"):
 * each image event expanded on this kernel exactly as the ktapvm path does
 * (attach.c's globs and tracepoint formats), the relocations applied per
 * attachment, BPF_PROG_LOAD (a refusal shows the verifier's log at the
 * failing instruction and that instruction's script line), and the perf
 * events that attach the programs. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ebpf.h"

/* struct bpf_insn codes the relocations patch (linux/bpf_common.h, bpf.h) */
#define OP_LD_IMM64 0x18	/* BPF_LD | BPF_IMM | BPF_DW */
#define OP_MOV64_IMM 0xb7	/* BPF_ALU64 | BPF_MOV | BPF_K */
#define OP_LSH64_IMM 0x67
#define OP_RSH64_IMM 0x77
#define OP_ARSH64_IMM 0xc7
#define CLASS_LDX 0x01
#define MODE_MEM 0x60
#define SIZE_BITS 0x18
#define PSEUDO_MAP_FD 1

/* BPF_PROG_TYPE_* each event kind runs */
#define PROG_KPROBE 2
#define PROG_TRACEPOINT 5
#define PROG_PERF_EVENT 7

static const char *const kind_names[KTAP_EV_NKINDS] = KTAP_EV_NAMES;

/* -- checking the image ------------------------------------------------------------ */
static uint32_t prog_type_of(uint8_t kind)
{
	switch (kind) {
	case KTAP_EV_TRACEPOINT: return PROG_TRACEPOINT;
	case KTAP_EV_KPROBE: case KTAP_EV_KRETPROBE: return PROG_KPROBE;
	/* a uprobe's program reads the user registers, as a kprobe's the kernel's */
	case KTAP_EV_UPROBE: case KTAP_EV_URETPROBE: case KTAP_EV_USDT: return PROG_KPROBE;
	case KTAP_EV_TICK: case KTAP_EV_PROFILE: case KTAP_EV_PERF: return PROG_PERF_EVENT;
	default: return 0;
	}
}

static const char *check_field_reloc(const struct ktap_bpf_prog *p, const struct ktap_ievent *ev,
				     const struct ktap_bpf_reloc *x)
{
	const struct ktap_bpf_insn *i = &p->insns[x->insn];

	if (ev->kind != KTAP_EV_TRACEPOINT)
		return "a field relocation outside a tracepoint program";
	if (x->insn + 2 >= p->ninsns || (i->code & 0x07) != CLASS_LDX || (i->code & 0xe0) != MODE_MEM)
		return "a field relocation that is not LDX, LSH, ARSH/RSH";
	if (i[1].code != OP_LSH64_IMM || (i[2].code != OP_ARSH64_IMM && i[2].code != OP_RSH64_IMM))
		return "a field relocation that is not LDX, LSH, ARSH/RSH";
	if (x->kind == KTAP_BPF_RELOC_FIELD_NAMED && x->arg >= ev->nfields)
		return "a named field out of the event's field list";
	return NULL;
}

static const char *check_reloc(const struct ktap_image *img, const struct ktap_bpf_prog *p,
			       const struct ktap_bpf_reloc *x)
{
	const struct ktap_bpf_insn *i = &p->insns[x->insn];

	if (x->insn >= p->ninsns)
		return "a relocation past the last instruction";
	switch (x->kind) {
	case KTAP_BPF_RELOC_MAP_FD:
		if (x->arg >= img->nmaps || x->insn + 1 >= p->ninsns || i->code != OP_LD_IMM64)
			return "a map relocation that is not a BPF_LD_IMM64 of a map";
		return NULL;
	case KTAP_BPF_RELOC_FIELD_POS: case KTAP_BPF_RELOC_FIELD_NAMED:
		return check_field_reloc(p, &img->events[p->event], x);
	case KTAP_BPF_RELOC_ATTACH_INDEX:
		return i->code == OP_MOV64_IMM ? NULL : "an attachment index that is not MOV64 imm";
	case KTAP_BPF_RELOC_WALL_OFFSET:
		if (x->insn + 1 >= p->ninsns || i->code != OP_LD_IMM64)
			return "a wall clock offset that is not a BPF_LD_IMM64";
		return NULL;
	default:
		return "an unknown relocation kind";
	}
}

static const char *check_prog(const struct ktap_image *img, const struct ktap_bpf_prog *p)
{
	const char *why = NULL;
	uint32_t i;

	if (p->event >= img->nevents || img->events[p->event].kind == KTAP_EV_END)
		return "its event is out of range";
	if (p->prog_type != prog_type_of(img->events[p->event].kind))
		return "the wrong program type for its event";
	if (!p->ninsns || p->nlines != p->ninsns)
		return "no instructions, or not one line per instruction";
	for (i = 0; i < p->nrelocs && !why; i++)
		why = check_reloc(img, p, &p->relocs[i]);
	return why;
}

int ebpf_check_progs(const struct ktap_image *img, char *err, size_t errlen)
{
	uint32_t i;
	const char *why;

	for (i = 0; i < img->nprogs; i++) {
		why = check_prog(img, &img->progs[i]);
		if (why) {
			snprintf(err, errlen, "bad ebpf section: program %u: %s", i, why);
			return -1;
		}
	}
	return 0;
}

/* -- expanding the events ---------------------------------------------------------------- */
static int has_prog(const struct ktap_image *img, uint32_t event)
{
	uint32_t i;

	for (i = 0; i < img->nprogs; i++)
		if (img->progs[i].event == event)
			return 1;
	return 0;
}

static struct attachment *add_att(struct ebpf_sess *e, uint32_t event, const char *name)
{
	struct attachment *a;

	e->att = xrealloc(e->att, (e->natt + 1) * sizeof(*e->att));
	a = &e->att[e->natt++];
	memset(a, 0, sizeof(*a));
	a->event = event;
	a->name = xstrndup(name, strlen(name));
	a->target = xstrndup(name, strlen(name));
	return a;
}

/* The probename the module would give it: SYM+0xOFF for a kprobe inside a
 * function, else the name it attaches to. */
static int expand_event(struct ebpf_sess *e, uint32_t index)
{
	const struct ktap_ievent *ev = &e->img->events[index];
	struct names matched = { 0 };
	struct attachment *a;
	char name[300];
	size_t i;
	int ret = 0;

	if (!KTAP_EV_IN_TABLE(ev->kind) || KTAP_EV_USER(ev->kind)) {
		snprintf(name, sizeof(name), "%.*s", (int)ev->name.len, ev->name.s);
		add_att(e, index, name);
		/* user probes: the board's file is the one the host resolved in */
		return KTAP_EV_USER(ev->kind) ? uprobe_check(ev, e->err, sizeof(e->err)) : 0;
	}
	if (attach_match(ev, &matched, e->err, sizeof(e->err)) < 0)
		return -1;
	for (i = 0; i < matched.n && !ret; i++) {
		a = add_att(e, index, matched.v[i]);
		if (ev->offset && ev->kind != KTAP_EV_TRACEPOINT) {
			snprintf(name, sizeof(name), "%s+0x%llx", matched.v[i],
				 (unsigned long long)ev->offset);
			free(a->name);
			a->name = xstrndup(name, strlen(name));
		}
		if (ev->kind == KTAP_EV_TRACEPOINT) {
			a->fmt = xmalloc(sizeof(*a->fmt));
			ret = tp_read_format(a->target, a->fmt, e->err, sizeof(e->err));
		}
	}
	names_free(&matched);
	return ret;
}

int ebpf_expand(struct ebpf_sess *e)
{
	uint32_t i;

	for (i = 0; i < e->img->nevents; i++)
		if (has_prog(e->img, i) && expand_event(e, i) < 0)
			return -1;
	return 0;
}

/* key: attachment index; value: its name, NUL-padded (cut at value_size) */
int ebpf_fill_probenames(struct ebpf_sess *e)
{
	int pm = e->role[KTAP_BPF_PROBENAMES];
	uint32_t i, size, len;
	char *v;

	if (pm < 0)
		return 0;
	size = e->maps[pm].m->value_size;
	v = xmalloc(size);
	for (i = 0; i < e->natt; i++) {
		len = (uint32_t)strlen(e->att[i].name);
		memset(v, 0, size);
		memcpy(v, e->att[i].name, len < size ? len : size);
		if (bpf_map_update(e->maps[pm].fd, &i, v) < 0) {
			bpf_error(e->err, sizeof(e->err), "writing the probenames map", errno);
			free(v);
			return -1;
		}
	}
	free(v);
	return 0;
}

/* -- relocations ------------------------------------------------------------------------ */
static void set_src_reg(struct ktap_bpf_insn *i, uint8_t src)
{
#if KTAP_BIG_ENDIAN
	i->regs = (uint8_t)((i->regs & 0xf0) | src);	/* dst high, src low */
#else
	i->regs = (uint8_t)((i->regs & 0x0f) | src << 4);	/* dst low, src high */
#endif
}

/* The tracepoint field a kind 1/2 relocation names, as argN or args.NAME. */
static int find_field(struct ebpf_sess *e, const struct attachment *a,
		      const struct ktap_bpf_reloc *x, const struct ktap_field **out)
{
	const struct ktap_ievent *ev = &e->img->events[a->event];
	const struct tp_format *fmt = a->fmt;
	char what[96];
	int idx = -1, j;

	if (x->kind == KTAP_BPF_RELOC_FIELD_POS) {
		snprintf(what, sizeof(what), "arg%u", x->arg + 1);
		idx = x->arg < fmt->n ? (int)x->arg : -1;
	} else {
		snprintf(what, sizeof(what), "args.%.*s", (int)ev->fields[x->arg].len,
			 ev->fields[x->arg].s);
		for (j = 0; j < fmt->n; j++)
			if (strlen(fmt->name[j]) == ev->fields[x->arg].len &&
			    !memcmp(fmt->name[j], ev->fields[x->arg].s, ev->fields[x->arg].len))
				idx = j;
	}
	if (idx < 0) {
		snprintf(e->err, sizeof(e->err), "tracepoint %s has no field %s", a->target, what);
		return -1;
	}
	*out = &fmt->f[idx];
	if ((*out)->flags & (KTAP_FIELD_STRING | KTAP_FIELD_DATA_LOC)) {
		snprintf(e->err, sizeof(e->err), "tracepoint %s: %s is a string field; eBPF "
			 "programs read integer fields only (use the ktapvm backend)", a->target,
			 what);
		return -1;
	}
	return 0;
}

/* LDX of the field's size at its offset, then shifts that sign- or
 * zero-extend it to 64 bits. */
static void patch_field(struct ktap_bpf_insn *i, const struct ktap_field *f)
{
	uint8_t size = f->size == 1 ? 0x10 : f->size == 2 ? 0x08 : f->size == 4 ? 0x00 : 0x18;
	int32_t shift = 64 - 8 * (int32_t)f->size;

	i[0].code = (uint8_t)((i[0].code & ~SIZE_BITS) | size);
	i[0].off = (int16_t)f->offset;
	i[1].imm = shift;
	i[2].code = (f->flags & KTAP_FIELD_SIGNED) ? OP_ARSH64_IMM : OP_RSH64_IMM;
	i[2].imm = shift;
}

static int relocate(struct ebpf_sess *e, const struct ktap_bpf_prog *p, uint32_t att,
		    struct ktap_bpf_insn *buf)
{
	const struct ktap_field *f;
	uint32_t r;

	memcpy(buf, p->insns, p->ninsns * sizeof(*buf));
	for (r = 0; r < p->nrelocs; r++) {
		const struct ktap_bpf_reloc *x = &p->relocs[r];
		struct ktap_bpf_insn *i = &buf[x->insn];

		switch (x->kind) {
		case KTAP_BPF_RELOC_MAP_FD:
			set_src_reg(i, PSEUDO_MAP_FD);
			i[0].imm = e->maps[x->arg].fd;
			i[1].imm = 0;
			break;
		case KTAP_BPF_RELOC_FIELD_POS: case KTAP_BPF_RELOC_FIELD_NAMED:
			if (find_field(e, &e->att[att], x, &f) < 0)
				return -1;
			patch_field(i, f);
			break;
		case KTAP_BPF_RELOC_ATTACH_INDEX:
			i->imm = (int32_t)att;
			break;
		case KTAP_BPF_RELOC_WALL_OFFSET:
			i[0].imm = (int32_t)(uint32_t)e->wall_offset;
			i[1].imm = (int32_t)(uint32_t)((uint64_t)e->wall_offset >> 32);
			break;
		}
	}
	return 0;
}

/* Whether the program differs from one attachment to the next. */
static int per_attachment(const struct ktap_bpf_prog *p)
{
	uint32_t r;

	for (r = 0; r < p->nrelocs; r++)
		if (p->relocs[r].kind != KTAP_BPF_RELOC_MAP_FD &&
		    p->relocs[r].kind != KTAP_BPF_RELOC_WALL_OFFSET)
			return 1;
	return 0;
}

/* -- loading ------------------------------------------------------------------------------- */
/* "12: (61) r1 = ..." : the instruction index of a verifier log line, or -1. */
static long log_insn(const char *line)
{
	char *end;
	long n = strtol(line, &end, 10);

	return end != line && line[0] >= '0' && line[0] <= '9' && !strncmp(end, ": (", 3) ? n : -1;
}

/* The verifier's statistics, not its reasons. */
static int log_noise(const char *line)
{
	return !*line || !strncmp(line, "processed ", 10) || !strncmp(line, "verification time", 17) ||
	       !strncmp(line, "stack depth", 11) || !strncmp(line, "max_states_per_insn", 19);
}

#define LOG_CONTEXT 8		/* instructions shown before the failing one */
#define LOG_TAIL 24		/* lines shown of a log without instructions */

/* The log's lines, split in place. */
static char **split_lines(char *log, int *count)
{
	char **lines = NULL, *at;
	int cap = 0;

	*count = 0;
	for (at = strtok(log, "\n"); at; at = strtok(NULL, "\n")) {
		if (*count == cap) {
			cap = cap ? cap * 2 : 256;
			lines = xrealloc(lines, (size_t)cap * sizeof(*lines));
		}
		lines[(*count)++] = at;
	}
	return lines;
}

/* Where the log starts being worth showing: LOG_CONTEXT instructions before
 * the failing one, or the last LOG_TAIL lines when it names none. */
static int context_start(char **lines, int count, int last)
{
	int k, n = 0;

	if (last < 0)
		return count > LOG_TAIL ? count - LOG_TAIL : 0;
	for (k = last; k > 0 && n < LOG_CONTEXT; k--)
		n += log_insn(lines[k - 1]) >= 0;
	return k;
}

/* Prints the refusal: the script line of the failing instruction and the
 * reason on one line, then the log from a few instructions before it. */
static void show_refusal(struct ebpf_sess *e, const struct ktap_bpf_prog *p, const char *probe,
			 char *log)
{
	int count, last = -1, k;
	char **lines = split_lines(log, &count), *reason = NULL, *at;
	long insn = -1, n;

	for (k = 0; k < count; k++)
		if ((n = log_insn(lines[k])) >= 0) {
			insn = n;
			last = k;
		}
	for (k = count - 1; k > last && !reason; k--)
		if (!log_noise(lines[k]))
			reason = lines[k];
	if (insn < 0 && reason && (at = strstr(reason, "insn ")))
		insn = strtol(at + 5, NULL, 10);	/* "unreachable insn 5", "back-edge ..." */
	if (insn >= 0 && (uint64_t)insn < p->nlines)
		fprintf(stderr, "ktaprun: %.*s:%u:%u: ", (int)e->img->source.len, e->img->source.s,
			p->lines[2 * insn], p->lines[2 * insn + 1]);
	else
		fprintf(stderr, "ktaprun: %s: ", e->o->image);
	fprintf(stderr, "the kernel's BPF verifier refused the program for %s: %s", probe,
		reason ? reason : "no reason given");
	if (insn >= 0)
		fprintf(stderr, " (instruction %ld)", insn);
	fputc('\n', stderr);
	/* the log, unless all it says is the reason */
	for (k = 0, n = 0; k < count; k++)
		n += !log_noise(lines[k]);
	for (k = context_start(lines, count, last); k < count && n > 1; k++)
		if (!log_noise(lines[k]))
			fprintf(stderr, "  %s\n", lines[k]);
	free(lines);
}

/* The kernel's ENOTSUPP (not in user space's errno.h): what BPF_PROG_LOAD
 * fails with when the JIT is on and cannot compile the program. */
#define KERNEL_ENOTSUPP 524

static int jit_enabled(void)
{
	char buf[8] = "";
	FILE *f = fopen("/proc/sys/net/core/bpf_jit_enable", "r");

	if (!f)
		return 0;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	return buf[0] && buf[0] != '0';
}

/* Loads once more with the verifier's log: 1 MiB, then 16 MiB if that was
 * too small (kernels before 6.4 fail with ENOSPC when the log fills up). */
static void explain_refusal(struct ebpf_sess *e, const struct ktap_bpf_prog *p,
			    const struct ktap_bpf_insn *buf, const char *name, const char *probe,
			    int first_errno)
{
	uint32_t size;
	char *log = NULL;
	int fd;

	for (size = 1u << 20;; size *= 16) {
		log = xrealloc(log, size);
		fd = bpf_prog_load(p->prog_type, buf, p->ninsns, name, e->env.kern_version, log, size);
		if (fd >= 0 || errno != ENOSPC || size >= (16u << 20))
			break;
	}
	if (fd >= 0)
		close(fd);	/* it loads now: the first refusal was not the verifier's */
	if (first_errno == EINVAL && !log[0])
		snprintf(e->err, sizeof(e->err), "the kernel cannot load %s programs: it needs "
			 "CONFIG_BPF_EVENTS", p->prog_type == PROG_KPROBE ? "kprobe" :
			 p->prog_type == PROG_TRACEPOINT ? "tracepoint" : "perf_event");
	else if (first_errno == KERNEL_ENOTSUPP && jit_enabled())
		/* the verifier passed it (its log holds only statistics); the JIT
		 * could not compile an instruction */
		snprintf(e->err, sizeof(e->err), "the kernel's eBPF JIT could not compile the "
			 "program for %s (ENOTSUPP, net.core.bpf_jit_enable is on). The 32-bit JITs "
			 "of arm and powerpc lack 64-bit atomic adds and divisions: `ktap compile "
			 "--backend ebpf` warns where a script needs one. Set "
			 "net.core.bpf_jit_enable to 0 to run it in the kernel's interpreter, or "
			 "use --backend ktapvm", probe);
	else if (log[0])
		show_refusal(e, p, probe, log);
	else
		bpf_error(e->err, sizeof(e->err), "loading an eBPF program", first_errno);
	free(log);
}

static int load_prog(struct ebpf_sess *e, uint32_t index, const struct ktap_bpf_insn *buf,
		     const char *probe)
{
	const struct ktap_bpf_prog *p = &e->img->progs[index];
	char name[32];
	int fd, err;

	snprintf(name, sizeof(name), "ktap_e%u", p->event);
	fd = bpf_prog_load(p->prog_type, buf, p->ninsns, name, e->env.kern_version, NULL, 0);
	if (fd >= 0)
		return fd;
	err = errno;
	if (err == ENOSYS || err == EPERM)
		bpf_error(e->err, sizeof(e->err), "loading an eBPF program", err);
	else
		explain_refusal(e, p, buf, name, probe, err);
	return -1;
}

static void add_link(struct ebpf_sess *e, uint32_t prog, uint32_t att, int fd, int owns)
{
	struct link *l;

	e->links = xrealloc(e->links, (e->nlinks + 1) * sizeof(*e->links));
	l = &e->links[e->nlinks++];
	memset(l, 0, sizeof(*l));
	l->prog = prog;
	l->att = att;
	l->prog_fd = fd;
	l->owns_fd = owns;
}

/* Loads program `index` for each attachment of its event: once when only map
 * fds differ, else per attachment, reusing the last load when the patched
 * instructions came out the same (a glob over tracepoints of one layout). */
static int load_for_event(struct ebpf_sess *e, uint32_t index)
{
	const struct ktap_bpf_prog *p = &e->img->progs[index];
	size_t bytes = p->ninsns * sizeof(struct ktap_bpf_insn);
	struct ktap_bpf_insn *buf = xmalloc(bytes), *last = xmalloc(bytes);
	int fd = -1, owns, each = per_attachment(p);
	uint32_t a;

	for (a = 0; a < e->natt; a++) {
		if (e->att[a].event != p->event)
			continue;
		if (relocate(e, p, a, buf) < 0)
			break;
		owns = fd < 0 || (each && memcmp(buf, last, bytes));
		if (owns && (fd = load_prog(e, index, buf, e->att[a].name)) < 0)
			break;
		memcpy(last, buf, bytes);
		add_link(e, index, a, fd, owns);
	}
	free(buf);
	free(last);
	return a < e->natt ? -1 : 0;
}

int ebpf_load(struct ebpf_sess *e)
{
	uint32_t i;

	for (i = 0; i < e->img->nprogs; i++)
		if (load_for_event(e, i) < 0)
			return -1;
	return 0;
}

/* -- attaching ------------------------------------------------------------------------------ */
/* What the module says when a registration fails: "kprobe vfs_wrte: not found (-ENOENT)". */
static void attach_error(struct ebpf_sess *e, uint8_t kind, const char *name, int err)
{
	const char *why = err == ENOENT ? "not found" : err == EINVAL ? "cannot be probed" :
			  err == EILSEQ ? "offset is not an instruction boundary" :
			  err == EBUSY ? "busy" : err == ENOMEM ? "out of memory" : strerror(err);
	const char *code = err == ENOENT ? "-ENOENT" : err == EINVAL ? "-EINVAL" :
			   err == EILSEQ ? "-EILSEQ" : err == EBUSY ? "-EBUSY" :
			   err == ENOMEM ? "-ENOMEM" : err == EPERM ? "-EPERM" :
			   err == EACCES ? "-EACCES" : err == ENODEV ? "-ENODEV" :
			   err == EOPNOTSUPP ? "-EOPNOTSUPP" : "error";

	if (err == ENOSYS)
		snprintf(e->err, sizeof(e->err), "%s %s: the kernel has no perf_event_open(2) "
			 "(needs CONFIG_PERF_EVENTS)", kind_names[kind], name);
	else
		snprintf(e->err, sizeof(e->err), "%s %s: %s (%s)", kind_names[kind], name, why, code);
}

static int open_uprobe(const struct ktap_ievent *ev, char *err, size_t errlen)
{
	char *path = uprobe_path(ev), *ref = NULL;
	uint64_t ref_ctr = 0;
	int fd;

	if (ev->nfields > 1 && ev->fields[1].len) {	/* "0x..." */
		ref = xstrndup(ev->fields[1].s, ev->fields[1].len);
		ref_ctr = strtoull(ref, NULL, 16);
	}
	fd = perf_uprobe_open(path, ev->offset, ref_ctr, ev->kind == KTAP_EV_URETPROBE, err,
			      errlen);
	free(ref);
	free(path);
	return fd;
}

static int open_perf(struct ebpf_sess *e, struct link *l)
{
	const struct attachment *a = &e->att[l->att];
	const struct ktap_ievent *ev = &e->img->events[a->event];
	uint32_t n = ev->kind == KTAP_EV_PROFILE || ev->kind == KTAP_EV_PERF ? e->env.nonline : 1, c;
	const struct ktap_perf_event *pe = ktap_perf_event_find(ev->name.s, ev->name.len);

	l->perf_fds = xmalloc(n * sizeof(int));
	for (c = 0; c < n; c++) {
		int fd;

		if (ev->kind == KTAP_EV_KPROBE || ev->kind == KTAP_EV_KRETPROBE)
			fd = perf_kprobe_open(a->target, ev->offset, ev->kind == KTAP_EV_KRETPROBE,
					      e->err, sizeof(e->err));
		else if (KTAP_EV_USER(ev->kind))
			fd = open_uprobe(ev, e->err, sizeof(e->err));
		else if (ev->kind == KTAP_EV_TRACEPOINT)
			fd = perf_tracepoint_open(a->fmt->id);
		else if (ev->kind == KTAP_EV_PERF && pe)	/* each online CPU */
			fd = perf_sample_open(pe->type, pe->config, (uint64_t)ev->period_ns,
					      ev->offset, e->env.online[c]);
		else	/* tick-N: the first online CPU; profile-N: each */
			fd = perf_timer_open(ev->period_ns, e->env.online[c]);
		if (fd < 0 && ev->kind == KTAP_EV_PERF && pe &&
		    (errno == ENOENT || errno == EOPNOTSUPP || errno == ENODEV)) {
			snprintf(e->err, sizeof(e->err), "%s: this CPU's PMU does not count %s (%s); "
				 "emulated CPUs (QEMU) mostly have no hardware counters", a->name,
				 pe->name, strerror(errno));
			return -1;
		}
		if (fd < 0) {
			if (errno != ENODEV || !e->err[0])
				attach_error(e, ev->kind, a->name, errno);
			return -1;
		}
		l->perf_fds[l->nperf++] = fd;
		if (perf_attach_prog(fd, l->prog_fd) < 0) {
			snprintf(e->err, sizeof(e->err), "%s %s: attaching its eBPF program: %s%s",
				 kind_names[ev->kind], a->name, strerror(errno),
				 errno == EINVAL ? " (needs CONFIG_BPF_EVENTS)" : "");
			return -1;
		}
	}
	return 0;
}

int ebpf_attach(struct ebpf_sess *e)
{
	uint32_t i;

	for (i = 0; i < e->nlinks; i++)
		if (open_perf(e, &e->links[i]) < 0)
			return -1;
	return 0;
}

/* Closing a perf event detaches its program and, for the kprobe PMU, removes
 * the probe: nothing stays registered in the kernel. */
void ebpf_detach(struct ebpf_sess *e)
{
	uint32_t i;

	for (i = 0; i < e->nlinks; i++) {
		while (e->links[i].nperf)
			close(e->links[i].perf_fds[--e->links[i].nperf]);
		free(e->links[i].perf_fds);
		e->links[i].perf_fds = NULL;
	}
}

void ebpf_free_progs(struct ebpf_sess *e)
{
	uint32_t i;

	ebpf_detach(e);
	for (i = 0; i < e->nlinks; i++)
		if (e->links[i].owns_fd)
			close(e->links[i].prog_fd);
	for (i = 0; i < e->natt; i++) {
		free(e->att[i].name);
		free(e->att[i].target);
		free(e->att[i].fmt);
	}
	free(e->links);
	free(e->att);
	e->links = NULL;
	e->att = NULL;
	e->nlinks = e->natt = 0;
}
