/* ktap_load.c - reads a KBC image exactly like bytecode.Reader: the same
 * header checks in the same order, every count bounded by MAX_COUNT and by
 * the bytes left, and no read past the end. The byte order and word size are
 * this build's target (ktap_target.h): an image for another layout is
 * refused by name. Header byte 10 names the backend; an ebpf image has one
 * more section after the functions (docs/ebpf.md), read here the same way,
 * which only ktaprun uses (the module refuses such images at LOAD). */
#include "ktap_vm.h"
#include "ktap_bytes.h"
#include "ktap_crc32.h"

struct reader {
	struct ktap_cursor c;	/* c.bad: the image is refused, nothing more is read */
	char *err;
	size_t errlen;
};

static int fail(struct reader *r, const char *msg)
{
	if (!r->c.bad)
		ktap_snprintf(r->err, r->errlen, "bad image: %s", msg);
	r->c.bad = 1;
	return -1;
}

/* The reader fails, saying where, unless n more bytes are there. */
static void need(struct reader *r, uint64_t n)
{
	char msg[96];

	if (!r->c.bad && n > r->c.end - r->c.pos) {
		ktap_snprintf(msg, sizeof(msg), "truncated at byte %lu (needed %llu more)",
			      (unsigned long)r->c.pos, (unsigned long long)n);
		fail(r, msg);
	}
}

/* Reserves n bytes; NULL once the reader has failed. */
static const unsigned char *take(struct reader *r, uint64_t n)
{
	need(r, n);
	return ktap_take(&r->c, n);
}

static uint64_t get_bytes(struct reader *r, unsigned n)
{
	need(r, n);
	return ktap_take_uint(&r->c, n);
}

static uint8_t rd_u8(struct reader *r) { return (uint8_t)get_bytes(r, 1); }
static uint16_t rd_u16(struct reader *r) { return (uint16_t)get_bytes(r, 2); }
static uint32_t rd_u32(struct reader *r) { return (uint32_t)get_bytes(r, 4); }
static int64_t rd_i64(struct reader *r) { return (int64_t)get_bytes(r, 8); }
static uint64_t rd_word(struct reader *r) { return get_bytes(r, KTAP_WORD_SIZE); }

/* A count read from the image, bounded before anything is allocated for it. */
static uint32_t rd_count(struct reader *r, const char *what)
{
	uint64_t n = rd_word(r);
	char msg[96];

	if (r->c.bad)
		return 0;
	if (n > KTAP_MAX_COUNT || n > r->c.end - r->c.pos) {
		ktap_snprintf(msg, sizeof(msg), "%s count %llu exceeds the image size", what,
			      (unsigned long long)n);
		fail(r, msg);
		return 0;
	}
	return (uint32_t)n;
}

static void rd_string(struct reader *r, struct ktap_kstr *out)
{
	uint32_t n = rd_count(r, "string length");
	const unsigned char *b = take(r, n);

	out->s = b ? (const char *)b : "";
	out->len = b ? n : 0;
}

/* Array of n elements; n is bounded by the bytes left, so this is bounded too. */
static void *alloc_array(struct reader *r, uint32_t n, size_t elem)
{
	void *p;

	if (r->c.bad)
		return NULL;
	p = ktap_zalloc((size_t)n * elem);
	if (!p)
		fail(r, "out of memory");
	return p;
}

static const struct ktap_target_info targets[] = KTAP_TARGET_TABLE;

static const struct ktap_target_info *target_by_id(int id)
{
	unsigned i;

	for (i = 0; i < KTAP_NUM_TARGETS; i++)
		if (targets[i].id == id)
			return &targets[i];
	return NULL;
}

/* mirrors Reader.header (with expect = this target); stores the backend */
static int rd_header(struct reader *r, struct ktap_image *img)
{
	const unsigned char *magic = take(r, 4), *h;
	const struct ktap_target_info *t;
	char msg[192], tname[32];
	uint64_t size;
	uint32_t crc;

	if (!magic)
		return -1;
	if (memcmp(magic, KTAP_MAGIC, 4))
		return fail(r, "not a KBC image (bad magic)");
	h = take(r, 8);
	if (!h)
		return -1;
	h -= 4;		/* index header bytes as offsets in the image */
	if (h[4] != KTAP_VERSION) {
		ktap_snprintf(msg, sizeof(msg), "format version %u, this loader reads version %u",
			      h[4], KTAP_VERSION);
		return fail(r, msg);
	}
	if (h[10] >= KTAP_NUM_BACKENDS) {
		ktap_snprintf(msg, sizeof(msg), "unknown backend code %u", h[10]);
		return fail(r, msg);
	}
	img->backend = h[10];
	if (h[6] > 1) {
		ktap_snprintf(msg, sizeof(msg), "unknown byte order code %u", h[6]);
		return fail(r, msg);
	}
	if ((h[7] != 4 && h[7] != 8) || h[8] != KTAP_INSN_SIZE || h[9] != KTAP_NUMBER_SIZE) {
		ktap_snprintf(msg, sizeof(msg),
			      "unsupported sizes (word %u, instruction %u, number %u)",
			      h[7], h[8], h[9]);
		return fail(r, msg);
	}
	t = target_by_id(h[5]);
	if (t)
		ktap_snprintf(tname, sizeof(tname), "%s", t->name);
	else
		ktap_snprintf(tname, sizeof(tname), "target id %u", h[5]);
	if (h[6] != KTAP_BIG_ENDIAN || h[7] != KTAP_WORD_SIZE) {
		ktap_snprintf(msg, sizeof(msg), "image is %s-endian %u-bit (%s), this loader is "
			      KTAP_TARGET_DESC, h[6] ? "big" : "little", h[7] * 8, tname);
		return fail(r, msg);
	}
	if (h[5] != KTAP_TARGET_ID) {
		ktap_snprintf(msg, sizeof(msg), "image is for %s, this loader is for "
			      KTAP_TARGET_NAME, tname);
		return fail(r, msg);
	}
	if ((uint64_t)rd_i64(r) != KTAP_CHECK_INT && !r->c.bad)
		return fail(r, "check integer mismatch (byte order or number format corrupt)");
	if (rd_word(r) != KTAP_CHECK_WORD && !r->c.bad)
		return fail(r, "check word mismatch (word size corrupt)");
	size = rd_word(r);
	crc = rd_u32(r);
	if (r->c.bad)
		return -1;
	if (size != r->c.end - r->c.pos) {
		ktap_snprintf(msg, sizeof(msg), "body is %lu bytes, header says %llu",
			      (unsigned long)(r->c.end - r->c.pos), (unsigned long long)size);
		return fail(r, msg);
	}
	if (ktap_crc32(0, r->c.p + r->c.pos, r->c.end - r->c.pos) != crc)
		return fail(r, "body checksum mismatch");
	return 0;
}

static void rd_limits(struct reader *r, struct ktap_image *img)
{
	uint32_t n = rd_count(r, "limits"), i;
	char msg[64];

	for (i = 0; i < n && !r->c.bad; i++) {
		int64_t v = rd_i64(r);

		if (i < KTAP_NUM_LIMITS)
			img->limits[i] = v;
	}
	if (!r->c.bad && n != KTAP_NUM_LIMITS) {
		ktap_snprintf(msg, sizeof(msg), "%u limits, expected %u", n, KTAP_NUM_LIMITS);
		fail(r, msg);
	}
}

static void rd_table_desc(struct reader *r, struct ktap_tdesc *d)
{
	d->flags = rd_u8(r);
	d->lmin = rd_i64(r);
	d->lmax = rd_i64(r);
	d->lstep = rd_i64(r);
}

static void rd_event(struct reader *r, struct ktap_ievent *e)
{
	uint32_t i;

	e->kind = rd_u8(r);
	rd_string(r, &e->spec);
	rd_string(r, &e->name);
	e->offset = rd_word(r);
	e->period_ns = rd_i64(r);
	e->handler = rd_u32(r);
	e->nfields = rd_count(r, "field");
	e->fields = alloc_array(r, e->nfields, sizeof(*e->fields));
	for (i = 0; i < e->nfields && !r->c.bad; i++)
		rd_string(r, &e->fields[i]);
}

static void rd_constant(struct reader *r, struct ktap_const *k)
{
	char msg[48];

	k->tag = rd_u8(r);
	if (k->tag == KTAP_K_STRING) {
		rd_string(r, &k->s);
	} else if (k->tag == KTAP_K_NUMBER) {
		k->n = rd_i64(r);
	} else if (!r->c.bad) {
		ktap_snprintf(msg, sizeof(msg), "unknown constant tag %u", k->tag);
		fail(r, msg);
	}
}

static void rd_proto(struct reader *r, struct ktap_proto *p)
{
	uint32_t i;

	rd_string(r, &p->name);
	p->kind = rd_u8(r);
	p->nparams = rd_u8(r);
	p->frame_size = rd_u16(r);
	p->ncode = rd_count(r, "code word");
	p->code = alloc_array(r, p->ncode, sizeof(*p->code));
	for (i = 0; i < p->ncode && !r->c.bad; i++)
		p->code[i] = rd_u32(r);
	p->nconsts = rd_count(r, "constant");
	p->consts = alloc_array(r, p->nconsts, sizeof(*p->consts));
	for (i = 0; i < p->nconsts && !r->c.bad; i++)
		rd_constant(r, &p->consts[i]);
	p->nupvals = rd_count(r, "upvalue");
	p->upvals = alloc_array(r, p->nupvals, sizeof(*p->upvals));
	for (i = 0; i < p->nupvals && !r->c.bad; i++)
		p->upvals[i] = rd_u32(r);
	p->nlines = rd_count(r, "line");
	p->lines = alloc_array(r, p->nlines, 2 * sizeof(*p->lines));
	for (i = 0; i < 2 * p->nlines && !r->c.bad; i++)
		p->lines[i] = rd_u32(r);
}

/* The helpers above stop touching memory once the reader has failed, so the
 * list readers only need to stop their loops; partial arrays are freed. */
#define READ_LIST(r, n, arr, what, fn)						\
	do {									\
		uint32_t i_;							\
		(n) = rd_count((r), (what));					\
		(arr) = alloc_array((r), (n), sizeof(*(arr)));			\
		for (i_ = 0; i_ < (n) && !(r)->c.bad; i_++)			\
			fn((r), &(arr)[i_]);					\
	} while (0)

/* -- the ebpf section (docs/ebpf.md, backends/ebpf/image.py read_section) -- */
static void rd_bpf_slot(struct reader *r, struct ktap_bpf_slot *s)
{
	s->global = rd_u32(r);
	s->offset = rd_u32(r);
	s->kind = rd_u8(r);
}

static void rd_bpf_map(struct reader *r, struct ktap_bpf_map *m)
{
	char msg[64];

	rd_string(r, &m->name);
	if (!r->c.bad && m->name.len > KTAP_BPF_MAX_NAME) {
		ktap_snprintf(msg, sizeof(msg), "map name of %u bytes (at most %u)", m->name.len,
			      KTAP_BPF_MAX_NAME);
		fail(r, msg);
	}
	m->role = rd_u8(r);
	m->type = rd_u32(r);
	m->key_size = rd_u32(r);
	m->value_size = rd_u32(r);
	m->max_entries = rd_u32(r);
	m->global = rd_u32(r);
	m->key_kind = rd_u8(r);
	m->value_kind = rd_u8(r);
	READ_LIST(r, m->nslots, m->slots, "slot", rd_bpf_slot);
}

/* 8 bytes: u8 code, u8 registers (kept as the target packs them), s16 off, s32 imm */
static void rd_bpf_insn(struct reader *r, struct ktap_bpf_insn *i)
{
	i->code = rd_u8(r);
	i->regs = rd_u8(r);
	i->off = (int16_t)rd_u16(r);
	i->imm = (int32_t)rd_u32(r);
}

static void rd_bpf_reloc(struct reader *r, struct ktap_bpf_reloc *x)
{
	x->insn = rd_u32(r);
	x->kind = rd_u8(r);
	x->arg = rd_u32(r);
}

static void rd_bpf_prog(struct reader *r, struct ktap_bpf_prog *p)
{
	uint32_t i;
	char msg[80];

	p->event = rd_u32(r);
	p->prog_type = rd_u32(r);
	p->ninsns = rd_count(r, "eBPF instruction");
	if (!r->c.bad && p->ninsns > KTAP_BPF_MAX_INSNS) {
		ktap_snprintf(msg, sizeof(msg), "%u eBPF instructions in one program (at most %u)",
			      p->ninsns, KTAP_BPF_MAX_INSNS);
		fail(r, msg);
	}
	p->insns = alloc_array(r, p->ninsns, sizeof(*p->insns));
	for (i = 0; i < p->ninsns && !r->c.bad; i++)
		rd_bpf_insn(r, &p->insns[i]);
	READ_LIST(r, p->nrelocs, p->relocs, "relocation", rd_bpf_reloc);
	p->nlines = rd_count(r, "line");
	p->lines = alloc_array(r, p->nlines, 2 * sizeof(*p->lines));
	for (i = 0; i < 2 * p->nlines && !r->c.bad; i++)
		p->lines[i] = rd_u32(r);
}

static void rd_bpf_section(struct reader *r, struct ktap_image *img)
{
	READ_LIST(r, img->nmaps, img->maps, "map", rd_bpf_map);
	READ_LIST(r, img->nprogs, img->progs, "program", rd_bpf_prog);
}

static void rd_body(struct reader *r, struct ktap_image *img)
{
	char msg[64];
	uint32_t i;

	rd_string(r, &img->source);
	rd_limits(r, img);
	READ_LIST(r, img->nglobals, img->globals, "global", rd_string);
	READ_LIST(r, img->ntables, img->tables, "table", rd_table_desc);
	READ_LIST(r, img->nformats, img->formats, "format", rd_string);
	READ_LIST(r, img->nevents, img->events, "event", rd_event);
	READ_LIST(r, img->nprotos, img->protos, "function", rd_proto);
	for (i = 0; !r->c.bad && img->protos && i < img->nprotos; i++)
		img->protos[i].index = i;
	if (img->backend == KTAP_BACKEND_EBPF)
		rd_bpf_section(r, img);
	if (!r->c.bad && r->c.pos != r->c.end) {
		ktap_snprintf(msg, sizeof(msg), "%lu trailing bytes",
			      (unsigned long)(r->c.end - r->c.pos));
		fail(r, msg);
	}
}

void ktap_image_free(struct ktap_image *img)
{
	uint32_t i;

	if (!img)
		return;
	for (i = 0; img->events && i < img->nevents; i++)
		ktap_free(img->events[i].fields);
	for (i = 0; img->protos && i < img->nprotos; i++) {
		ktap_free(img->protos[i].code);
		ktap_free(img->protos[i].consts);
		ktap_free(img->protos[i].upvals);
		ktap_free(img->protos[i].lines);
	}
	for (i = 0; img->maps && i < img->nmaps; i++)
		ktap_free(img->maps[i].slots);
	for (i = 0; img->progs && i < img->nprogs; i++) {
		ktap_free(img->progs[i].insns);
		ktap_free(img->progs[i].relocs);
		ktap_free(img->progs[i].lines);
	}
	ktap_free(img->maps);
	ktap_free(img->progs);
	ktap_free(img->globals);
	ktap_free(img->tables);
	ktap_free(img->formats);
	ktap_free(img->events);
	ktap_free(img->protos);
	ktap_free(img->data);
	ktap_free(img);
}

int ktap_load(const void *data, size_t size, struct ktap_image **out, char *err, size_t errlen)
{
	struct ktap_image *img = ktap_zalloc(sizeof(*img));
	struct reader r = { 0 };

	*out = NULL;
	r.err = err;
	r.errlen = errlen;
	if (!img || !(img->data = ktap_zalloc(size))) {
		ktap_free(img);
		ktap_snprintf(err, errlen, "bad image: out of memory");
		return -1;
	}
	/* A private copy: the caller's buffer may be user memory or go away. */
	memcpy(img->data, data, size);
	img->size = size;
	r.c.p = img->data;
	r.c.end = size;
	if (rd_header(&r, img) == 0)
		rd_body(&r, img);
	if (r.c.bad) {
		/* lists are zero-filled, so half-read entries free cleanly */
		ktap_image_free(img);
		return -1;
	}
	*out = img;
	return 0;
}
