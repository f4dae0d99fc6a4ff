/* ktap_vm.h - ktapvm's core: image loader, verifier and interpreter.
 *
 * The core is freestanding C: everything it needs from its host (memory at
 * load time, 64-bit division, snprintf, sort) comes through ktap_shim_*.h, so
 * the same files build in the kernel module and as a host library. The
 * target's facts and the tables come from the generated headers (gen/).
 *
 * Memory rule: every allocation happens in ktap_load() and
 * ktap_session_new() (and in NEWTABLE, which the verifier confines to code
 * run by the setup chunk at session start). Handlers run in probe context and
 * only use pools sized from the image's limits.
 */
#ifndef KTAP_VM_H
#define KTAP_VM_H

#ifdef __KERNEL__
#include "ktap_shim_kernel.h"
#else
#include "ktap_shim_user.h"
#endif
#include "ktap_target.h"
#include "ktap_opcodes.h"

/* -- the loaded image ------------------------------------------------------ */
struct ktap_kstr {		/* points into the image buffer, not NUL-terminated */
	const char *s;
	uint32_t len;
};

struct ktap_const {
	uint8_t tag;		/* KTAP_K_NUMBER or KTAP_K_STRING */
	int64_t n;
	struct ktap_kstr s;
};

struct ktap_tdesc {
	uint8_t flags;
	int64_t lmin, lmax, lstep;
};

struct ktap_ievent {
	uint8_t kind;
	struct ktap_kstr spec, name;
	uint64_t offset;
	int64_t period_ns;
	uint32_t handler;
	uint32_t nfields;
	struct ktap_kstr *fields;
};

struct ktap_proto {
	uint32_t index;		/* in img->protos: the interpreter's error reports need it */
	struct ktap_kstr name;
	uint8_t kind, nparams;
	uint16_t frame_size;
	uint32_t ncode, nconsts, nupvals, nlines;
	uint32_t *code;		/* already in host order */
	struct ktap_const *consts;
	uint32_t *upvals;
	uint32_t *lines;	/* (line, col) pairs */
};

/* -- the ebpf backend's section (docs/ebpf.md) ------------------------------
 * Header byte 10 says which backend runs the handlers. An ebpf image keeps
 * every function in KBC form (ktaprun runs the setup code and trace_end from
 * it) and adds BPF maps and programs; the module refuses such images. */
enum ktap_backend { KTAP_BACKEND_KTAPVM = 0, KTAP_BACKEND_EBPF = 1, KTAP_NUM_BACKENDS };

/* Map roles, key/value kinds of table maps, kinds of global slots, and
 * relocation kinds: the numbers of docs/ebpf.md (backends/ebpf/image.py). */
enum ktap_bpf_role { KTAP_BPF_TABLE, KTAP_BPF_GLOBALS, KTAP_BPF_OUTPUT, KTAP_BPF_SCRATCH,
		     KTAP_BPF_STATE, KTAP_BPF_PROBENAMES, KTAP_BPF_COUNTERS, KTAP_BPF_DROPS,
		     KTAP_BPF_NUM_ROLES };
enum { KTAP_BPF_KEY_NUM, KTAP_BPF_KEY_STR };
enum { KTAP_BPF_VAL_NUM, KTAP_BPF_VAL_STR, KTAP_BPF_VAL_AGG };
/* a global's slot: an i64, a 0/1 boolean, or 16 bytes: the value's record tag
 * (KTAP_VAL_NIL/FALSE/TRUE/NUM), then the i64 */
enum { KTAP_BPF_SLOT_NUM, KTAP_BPF_SLOT_BOOL, KTAP_BPF_SLOT_TAGGED };
enum { KTAP_BPF_RELOC_MAP_FD, KTAP_BPF_RELOC_FIELD_POS, KTAP_BPF_RELOC_FIELD_NAMED,
       KTAP_BPF_RELOC_ATTACH_INDEX, KTAP_BPF_RELOC_WALL_OFFSET };

/* Bounds of the section beyond the loader's MAX_COUNT: the kernel's own
 * instruction limit (BPF_COMPLEXITY_LIMIT_INSNS), and map names (they name a
 * table's global, or a role). */
#define KTAP_BPF_MAX_INSNS 1000000U
#define KTAP_BPF_MAX_NAME 256U

struct ktap_bpf_slot {		/* where a global lives in the globals map's value */
	uint32_t global, offset;
	uint8_t kind;
};

struct ktap_bpf_map {
	struct ktap_kstr name;
	uint8_t role;
	uint32_t type, key_size, value_size, max_entries;	/* max_entries 0: possible CPUs */
	uint32_t global;	/* role table: the global holding the table after setup */
	uint8_t key_kind, value_kind;
	uint32_t nslots;
	struct ktap_bpf_slot *slots;
};

/* struct bpf_insn as the target's kernel lays it out: `regs` holds dst_reg in
 * the low nibble on little-endian targets, the high nibble on big-endian
 * ones, and off/imm are converted to host order, so on the target this array
 * is exactly what BPF_PROG_LOAD takes. */
struct ktap_bpf_insn {
	uint8_t code, regs;
	int16_t off;
	int32_t imm;
};

struct ktap_bpf_reloc {
	uint32_t insn;
	uint8_t kind;
	uint32_t arg;
};

struct ktap_bpf_prog {
	uint32_t event;		/* index into img->events */
	uint32_t prog_type;	/* BPF_PROG_TYPE_* */
	uint32_t ninsns, nrelocs, nlines;
	struct ktap_bpf_insn *insns;
	struct ktap_bpf_reloc *relocs;
	uint32_t *lines;	/* (line, col) pairs, one per instruction */
};

struct ktap_image {
	unsigned char *data;	/* private copy of the image; kstrs point here */
	size_t size;
	uint8_t backend;	/* enum ktap_backend, header byte 10 */
	struct ktap_kstr source;
	int64_t limits[KTAP_NUM_LIMITS];
	uint32_t nglobals, ntables, nformats, nevents, nprotos;
	struct ktap_kstr *globals;
	struct ktap_tdesc *tables;
	struct ktap_kstr *formats;
	struct ktap_ievent *events;
	struct ktap_proto *protos;
	/* the ebpf section (backend KTAP_BACKEND_EBPF only) */
	uint32_t nmaps, nprogs;
	struct ktap_bpf_map *maps;
	struct ktap_bpf_prog *progs;
};

int ktap_load(const void *data, size_t size, struct ktap_image **out, char *err, size_t errlen);
void ktap_image_free(struct ktap_image *img);

/* Returns KTAP_OK or a reason code; *proto and *pc locate the fault (-1 if none). */
int ktap_verify(const struct ktap_image *img, char *msg, size_t msglen, int *proto, int *pc);
extern const char *const ktap_reason_names[KTAP_NUM_REASONS];
/* The operand and size table of every opcode (opcodes.py). */
extern const struct ktap_opinfo ktap_opinfo[KTAP_NUM_OPS];

/* -- runtime values -------------------------------------------------------- */
enum ktap_type { KTAP_T_NIL, KTAP_T_BOOL, KTAP_T_NUM, KTAP_T_STR, KTAP_T_TABLE,
		 KTAP_T_AGG, KTAP_T_STACK, KTAP_T_TIME };

struct ktap_str;
struct ktap_table;
struct ktap_agg;

struct ktap_value {
	uint8_t t;
	union {
		int64_t n;		/* numbers and booleans */
		struct ktap_str *s;	/* strings and stacks (interned) */
		struct ktap_table *tab;
		struct ktap_agg *agg;
	} u;
};

/* log2 buckets: 0, +-2^k. Index 64 is 0, 65+k is 2^k, 63-k is -2^k. */
#define KTAP_LOG2_BUCKETS 128

/* An aggregate (a table entry fed with `<<<`) is kept per CPU: each CPU
 * feeds its own shard of the entry, and every read (count(), print, hist,
 * dumps) merges the shards. The shards live in the table (ktap_table.c). */
struct ktap_agg {
	struct ktap_table *t;
	uint32_t slot;		/* the entry's index in t */
};

/* -- event context: filled by the caller (kprobe/tracepoint glue, or the host harness) */
struct ktap_fieldval {
	uint8_t t;		/* KTAP_T_NIL, KTAP_T_NUM or KTAP_T_STR */
	int64_t n;
	const char *s;
	uint32_t len;
};

/* The kernel's task comm: a fixed 16-byte buffer, NUL-terminated within it. */
#define KTAP_COMM_BYTES 16

struct ktap_event {
	int64_t pid, tid, uid, cpu;
	int has_retval;
	int64_t retval;
	/* execname: either comm (KTAP_COMM_BYTES bytes, compared whole against
	 * the last one seen, so the common case needs no strlen or hash), or
	 * execname/execname_len when comm is NULL */
	const char *comm;
	const char *execname;
	uint32_t execname_len;
	const char *probename;
	uint32_t probename_len;
	uint32_t shard;			/* the CPU whose aggregate shards `<<<` feeds */
	const int64_t *args;		/* kprobe arguments arg1.. */
	uint32_t nargs;
	const uint64_t *stack;		/* innermost first */
	uint32_t nstack;
	const char *ustack;		/* user frames, "PATH+0xOFFSET\n" each, innermost first */
	uint32_t ustack_len;
	int is_tracepoint;
	const struct ktap_fieldval *fields;	/* tracepoint fields in format order (argN) */
	uint32_t nfields;
	const struct ktap_fieldval *named;	/* resolved for the image event's field list */
	uint32_t nnamed;
};

/* Reads a NUL-terminated string at addr (kernel or user memory) into buf;
 * returns its length (<= max) or -1 if unreadable. Must not sleep. */
typedef int (*ktap_read_str_fn)(void *ctx, int user, uint64_t addr, char *buf, uint32_t max);

/* -- sessions ------------------------------------------------------------- */
enum ktap_run { KTAP_RUN_OK, KTAP_RUN_EXIT, KTAP_RUN_ERROR, KTAP_RUN_DROP };
enum ktap_drop { KTAP_DROP_TABLE_FULL, KTAP_DROP_STRINGS_FULL, KTAP_DROP_OUTPUT_FULL,
		 KTAP_DROP_REENTERED, KTAP_NUM_DROPS };
extern const char *const ktap_drop_names[KTAP_NUM_DROPS];

struct ktap_session;

/* ncpus: how many aggregate shards (CPUs) each `<<<` entry has; events name
 * theirs in ktap_event.shard (taken modulo ncpus). */
struct ktap_session *ktap_session_new(const struct ktap_image *img, uint32_t ncpus, char *err,
				      size_t errlen);
void ktap_session_free(struct ktap_session *s);
void ktap_set_reader(struct ktap_session *s, ktap_read_str_fn fn, void *ctx);
void ktap_set_clock(struct ktap_session *s, int64_t ns);	/* walltime, gettimeofday_*() */
void ktap_set_mono(struct ktap_session *s, int64_t ns);	/* nsecs */

int ktap_run_setup(struct ktap_session *s);
/* Runs the handler of image event `event_index` for one fired event. */
int ktap_fire(struct ktap_session *s, uint32_t event_index, const struct ktap_event *ev);
int ktap_run_end(struct ktap_session *s);	/* every trace_end handler, in image order */

/* Output: records accumulate in a bounded buffer until the reader drains it. */
const unsigned char *ktap_output(struct ktap_session *s, size_t *len);
void ktap_output_consumed(struct ktap_session *s);
/* Counts events the caller dropped before they reached the core (the module:
 * a handler that would have run inside another handler on the same CPU). */
void ktap_add_drops(struct ktap_session *s, int reason, uint64_t n);
/* Appends the final status record (exit code, error, drop counters). */
void ktap_finish(struct ktap_session *s);

#ifndef __KERNEL__
/* -- syncing a session with BPF maps (ktap_sync.c, built into ktaprun only) --
 * The ebpf backend runs the setup code and trace_end in this interpreter, in
 * user space, and the handlers as BPF programs: ktaprun copies globals and
 * tables into the maps after setup and back before trace_end, and stops the
 * session as a handler's exit() or runtime error would. None of this may run
 * while a handler runs. */

/* "nil", "boolean", "number", ...: KTAP_T_* by name, for messages. */
extern const char *const ktap_type_names[];

/* A value as a map holds it. Strings point into the session's pool and stay
 * valid until the session changes. */
struct ktap_sync_val {
	uint8_t t;			/* KTAP_T_NUM, _BOOL, _STR, _AGG (reads give any type) */
	int64_t n;			/* number; boolean 0 or 1 */
	const char *s;			/* string bytes, len of them */
	uint32_t len;
	int64_t count, sum, min, max;	/* aggregate, merged over the CPUs */
	uint64_t *log2;			/* aggregate: KTAP_LOG2_BUCKETS counters, or NULL */
	uint64_t *linear;		/* aggregate: ktap_table_nlinear() counters, or NULL */
};

/* (a) Global g's value (-1: no such global); setting takes a number, a
 * boolean or nil (-1 for any other type). */
int ktap_global_get(const struct ktap_session *s, uint32_t g, struct ktap_sync_val *v);
int ktap_global_set(struct ktap_session *s, uint32_t g, const struct ktap_sync_val *v);
/* (b) The table global g holds, or NULL; what a map needs to know of it. */
struct ktap_table *ktap_global_table(const struct ktap_session *s, uint32_t g);
uint32_t ktap_table_desc(const struct ktap_table *t);	/* image table descriptor */
uint32_t ktap_table_nlinear(const struct ktap_table *t);	/* linear counters, 0: none */
uint32_t ktap_table_count(const struct ktap_table *t);
/* (c) Live entries in key insertion order: first, then next, until -1. For
 * an aggregate value, the caller points val->log2/linear at its buffers (or
 * NULL) before the call and gets the merged buckets there. */
int32_t ktap_table_first(const struct ktap_table *t);
int32_t ktap_table_next(const struct ktap_table *t, int32_t slot);
void ktap_table_entry(const struct ktap_table *t, int32_t slot, struct ktap_sync_val *key,
		      struct ktap_sync_val *val);
/* (d) Empties t as if it were new (so entries inserted next take slots in
 * insertion order), then inserts one entry at a time: a number or string key;
 * a number, string or aggregate value (count, sum, min, max and the buckets
 * go into CPU 0's shard, so every merged read gives exactly these numbers).
 * 0, or -1 when the table or the string pool is full or a type is wrong. */
void ktap_table_reset(struct ktap_session *s, struct ktap_table *t);
int ktap_table_insert(struct ktap_session *s, struct ktap_table *t,
		      const struct ktap_sync_val *key, const struct ktap_sync_val *val);
/* (e) Stops the session as a handler would have: state KTAP_RUN_EXIT with
 * exit_code, or KTAP_RUN_ERROR with the error's place and message. Then
 * ktap_run_end() runs trace_end after exit() only, and ktap_finish() reports
 * it, exactly as after the interpreter's own exit() or error. */
void ktap_session_stop(struct ktap_session *s, int state, int64_t exit_code, uint32_t line,
		       uint32_t col, uint32_t func, const char *msg, uint32_t len);
/* (f) A program's CALL record (docs/ebpf.md): built-in id (KTAP_B_PRINT,
 * _HIST, _LHIST or _PRINT_HIST) on the table global g holds, with the n
 * arguments after the table (nil, booleans, numbers, strings), exactly as a
 * handler's CALLB: its DUMP/HIST/LHIST/PRINT_HIST record goes to the output.
 * The caller first makes the table what its map holds. Returns KTAP_RUN_OK;
 * KTAP_RUN_DROP (counted: the output buffer or the string pool was full);
 * KTAP_RUN_ERROR (the built-in's runtime error, placed at the handler's call
 * of it: the session is stopped as by a handler's error); the session's stop
 * state if it had stopped (nothing runs); or -1, nothing done, for an id that
 * is none of the four, a wrong number of arguments, an argument of another
 * type, or a global that holds no table. */
#define KTAP_CALL_MAX_ARGS 15
int ktap_table_call(struct ktap_session *s, uint32_t g, unsigned id,
		    const struct ktap_sync_val *args, uint32_t n);
#endif

#endif
