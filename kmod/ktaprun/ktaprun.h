/* ktaprun.h - the on-target runner's internal interfaces.
 *
 * ktaprun is built per target against kmod's core headers and the generated
 * ones: the image reader (ktap_load.c), the target facts (KTAP_BIG_ENDIAN,
 * KTAP_WORD_SIZE, KTAP_TARGET_ID) and the record codes (ktap_records.h) come
 * from there, so the runner reads images and records exactly as the module
 * does, in the target's byte order, even when a test builds it natively on a
 * host of the other byte order.
 */
#ifndef KTAPRUN_H
#define KTAPRUN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ktap_vm.h"
#include "ktap_abi.h"
#include "ktap_records.h"

#define KTAPRUN_VERSION "0.1"

/* -- text buffer (sb.c) --------------------------------------------------- */
struct sb {
	char *b;
	size_t len, cap;
};

void sb_put(struct sb *s, const char *p, size_t n);
void sb_puts(struct sb *s, const char *p);
void sb_putc(struct sb *s, char c);
void sb_fill(struct sb *s, char c, size_t n);
void sb_printf(struct sb *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_free(struct sb *s);

/* Characters as Python counts them after decoding UTF-8 with surrogateescape:
 * a valid sequence is one character, every other byte is one. */
size_t utf8_chars(const char *p, size_t n);
/* Bytes of the valid UTF-8 sequence at p[i], or 1 (an ASCII byte, or one that
 * is no UTF-8: the host decodes it as a lone surrogate escape). */
size_t utf8_step(const unsigned char *p, size_t n, size_t i);
/* Bytes taken by the first `chars` characters of p[0..n). */
size_t utf8_prefix(const char *p, size_t n, size_t chars);

/* -- output records (records.c, docs/kmod.md) ----------------------------- */
/* One decoded value. Strings, stack addresses and histogram pairs stay in the
 * record buffer (target byte order) and are read on demand with rd_i64(). */
struct kval {
	uint8_t tag;
	int64_t n;			/* number; table descriptor index */
	const unsigned char *p;		/* string bytes, or stack addresses (u64 each) */
	uint32_t len;			/* string length, or stack depth */
	int64_t count, sum, min, max;	/* aggregate */
	const unsigned char *log2, *lin;	/* (i64, i64) pairs */
	uint32_t nlog2, nlin;
};

struct kstatus {
	int64_t exit_code;
	uint8_t state;			/* KTAP_STATUS_* */
	uint32_t line, col, func;
	const unsigned char *msg;
	uint32_t msglen;
	uint32_t ndrops;
	const unsigned char *drops;	/* ndrops x (u32 len, bytes, i64 count) */
};

struct krec {
	uint8_t kind;
	uint32_t index;			/* printf format, table descriptor, CALL's global */
	int64_t n;			/* print_hist's n, CALL's built-in */
	uint32_t nvals;			/* values, or 2 x entries (key, value, ...) */
	struct kval *vals;
	struct kstatus status;
};

int64_t rd_i64(const unsigned char *p);
uint32_t rd_u32(const unsigned char *p);
/* Size of the whole record starting at p if at least 5 bytes are there, else 0. */
uint32_t record_size(const unsigned char *p, size_t avail);
/* Decodes one whole record of `size` bytes; returns 0 or -1 (malformed). */
int record_decode(const unsigned char *p, uint32_t size, struct krec *rec);
void record_free(struct krec *rec);

/* -- formatting (format.c): mirrors toolchain/ktap/refvm/output.py -------- */
struct symtab;

struct formatter {
	const struct ktap_image *img;
	const struct symtab *syms;	/* NULL: stacks print as raw hex */
	int json;			/* --format json (format_json.c) */
};

void format_record(const struct formatter *f, const struct krec *rec, struct sb *out);
/* A stack frame's text, a printf record's text and an aggregate's average,
 * shared with the JSON formatter. */
void format_frame(const struct formatter *f, uint64_t addr, struct sb *o);
void format_time(const struct kval *v, struct sb *o);
void format_printf(const struct formatter *f, const struct krec *r, struct sb *o);
int64_t kval_avg(const struct kval *v);
/* The status record's drops, sorted by reason (free() the array). */
struct drop {
	const unsigned char *reason;
	uint32_t len;
	int64_t count;
};
struct drop *status_drops(const struct kstatus *st);
/* -- JSON lines (format_json.c): mirrors toolchain/ktap/refvm/jsonout.py --- */
void format_record_json(const struct formatter *f, const struct krec *rec, struct sb *out);
/* The status object that ends a JSON stream. */
void format_status_json(const struct kstatus *st, struct sb *out);
/* The status record as stderr lines (runtime error, or drop report), and the
 * exit status ktaprun ends with. */
int format_status(const struct ktap_image *img, const struct kstatus *st, struct sb *err);

/* -- kernel symbols (symbols.c) ------------------------------------------- */
struct symtab *symtab_load(const char *kallsyms_path);	/* NULL if unreadable */
void symtab_free(struct symtab *t);
/* "name+0xoff", or 0 when no symbol covers addr. */
int symtab_name(const struct symtab *t, uint64_t addr, struct sb *out);

/* -- record stream (stream.c): whole records in, formatted text out ------- */
struct stream {
	const struct formatter *fmt;
	int raw;			/* copy records to stdout instead of formatting */
	unsigned char *buf;
	size_t len, cap;
	int have_status;
	struct kstatus status;
	unsigned char *status_copy;	/* the status record outlives the buffer */
	int bad;
};

void stream_init(struct stream *s, const struct formatter *fmt, int raw);
/* Feeds bytes; prints every whole record. Returns -1 on a malformed stream. */
int stream_feed(struct stream *s, const void *data, size_t n);
/* Ends the stream: reports the status on stderr, returns the exit status. */
int stream_finish(struct stream *s, const char *what);
void stream_free(struct stream *s);

/* -- attaching (attach.c) -------------------------------------------------- */
struct attach_table {
	unsigned char *data;
	size_t size;
	uint32_t count;
};

/* Names the probes of one image event match on this kernel. */
struct names {
	char **v;
	size_t n, cap;
};

void names_add(struct names *l, const char *s, size_t len);
void names_free(struct names *l);
/* Where tracefs is (mounted on first use; KTAPRUN_TRACEFS overrides). */
const char *tracefs_root(void);
/* Globs expanded against tracefs or the kernel's functions (sorted, without
 * duplicates, kprobe-blacklisted functions left out); a name without glob
 * characters as written. -1 with a reason when a glob matches nothing. */
int attach_match(const struct ktap_ievent *ev, struct names *out, char *err, size_t errlen);

/* A tracepoint's id and the fields argN counts (common_* fields and arrays
 * other than char[] left out), with their names. */
struct tp_format {
	uint32_t id;
	uint16_t n;
	struct ktap_field f[128];	/* the module's limit (KTAPVM_MAX_TP_FIELDS) */
	char name[128][64];
};

int tp_read_format(const char *tp, struct tp_format *fmt, char *err, size_t errlen);

/* Resolves every probe event of img against tracefs/kallsyms. On failure
 * writes a one-line reason into err and returns -1. */
int attach_build(const struct ktap_image *img, struct attach_table *out, char *err, size_t errlen);
void attach_free(struct attach_table *t);
void attach_print(const struct attach_table *t, FILE *to);

/* -- user-space probes (uprobes.c) ----------------------------------------- */
/* Checks the board's file against the image event's build-id and defines the
 * probe in uprobe_events; tp gets its "group:event" for tp_read_format. */
int uprobe_define(const struct ktap_ievent *ev, char *tp, size_t tplen, char *err, size_t errlen);
/* The probed file's path on the board (malloc'd). */
char *uprobe_path(const struct ktap_ievent *ev);
/* The board's file checked alone (the eBPF backend attaches through the uprobe PMU). */
int uprobe_check(const struct ktap_ievent *ev, char *err, size_t errlen);
/* Removes every definition this process made (after the module let go). */
void uprobes_remove(void);

/* -- helpers (util.c) ------------------------------------------------------ */
unsigned char *read_whole(const char *path, size_t *len);	/* NULL + errno */
void *xmalloc(size_t n);
void *xrealloc(void *p, size_t n);
void *xcalloc(size_t n, size_t size);		/* zeroed */
char *xstrndup(const char *s, size_t n);

#endif
