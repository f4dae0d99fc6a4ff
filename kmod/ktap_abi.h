/* ktap_abi.h - the interface between ktapvm.ko and ktaprun (both sides include it).
 *
 * /dev/ktap is a misc device; opening it needs CAP_SYS_ADMIN. One open file is
 * one session:
 *
 *   fd = open("/dev/ktap", O_RDWR)
 *   ioctl(fd, KTAP_IOC_INFO, &info)     module ABI version, kernel release, target id
 *   ioctl(fd, KTAP_IOC_LOAD, &load)     header checks, then the full verifier
 *   ioctl(fd, KTAP_IOC_START, &start)   setup chunk, then attach every event
 *   read(fd, buf, n)                    whole output records (docs/kmod.md); blocks,
 *                                       poll() works; 0 (EOF) once the session is
 *                                       over and every record has been read
 *   ioctl(fd, KTAP_IOC_STOP)            detach, wait for handlers, run trace_end,
 *                                       append the STATUS record
 *   close(fd)                           stops the session if still running, frees it
 *
 * A session also stops by itself when a handler calls exit() or hits a runtime
 * error: the module detaches from process context (a work item) and read()
 * reaches EOF after the STATUS record. Every ioctl that fails returns -1 with
 * errno set and, where an error buffer is given, a one-line reason in it.
 *
 * Structures use fixed-size fields and native byte order: ktaprun and the module
 * run on the same machine. Pointers travel as __u64.
 */
#ifndef KTAP_ABI_H
#define KTAP_ABI_H

#ifdef __KERNEL__
#include <linux/types.h>
#include <linux/ioctl.h>
#else
/* the uapi types: typedefs of our own would clash with any libc header that
 * already pulled <linux/types.h> in (x86_64 glibc does) */
#include <linux/types.h>
#include <sys/ioctl.h>
#endif

#define KTAP_DEVICE		"/dev/ktap"
#define KTAP_MODULE_NAME	"ktapvm"
#define KTAP_ABI_VERSION	1
#define KTAP_ERRLEN		256

struct ktap_ioc_info {
	__u32 abi_version;
	__u32 target_id;		/* the KBC target id the module was built for */
	char release[65];		/* utsname()->release the module was built for */
	__u8 pad[7];
	__u64 anchor;			/* runtime address of a symbol the module links
					 * against (printk): KASLR offset for the host */
};

struct ktap_ioc_load {
	__u64 image;			/* user pointer to the KBC image */
	__u64 size;
	__u64 errbuf;			/* user pointer to KTAP_ERRLEN bytes, or 0 */
};

/* The attach table: what ktaprun resolved on the target for each image event
 * (glob expansion, tracepoint ids and field layouts). It is a packed sequence
 * of struct ktap_attach, each followed by its variable parts:
 *
 *   struct ktap_attach
 *   char name[name_len]                  symbol (kprobes) or "subsys:event"
 *   struct ktap_field fields[nfields]    tracepoints: every field, format order
 *   __s16 named[nnamed]                  tracepoints: for each name in the image
 *                                        event's field list, its index in fields[],
 *                                        or -1 if the event has no such field
 *
 * An image event may appear any number of times (one per glob match), or not
 * at all (a glob that matched nothing is ktaprun's error, not the module's).
 * Timers and trace_end need no entry; the module attaches them from the image.
 */
struct ktap_attach {
	__u32 event;			/* image event index */
	__u32 kind;			/* KBC event kind: 0 tracepoint, 1 kprobe, 2 kretprobe */
	__u64 offset;			/* kprobe offset */
	__u32 tp_id;			/* tracepoint id from tracefs events/S/E/id */
	__u16 name_len;
	__u16 nfields;
	__u16 nnamed;
	__u16 pad;
};

#define KTAP_FIELD_SIGNED	1	/* integer field is signed */
#define KTAP_FIELD_STRING	2	/* char[N] array: a string of at most `size` bytes */
#define KTAP_FIELD_DATA_LOC	4	/* __data_loc: u32 (len << 16 | offset) to a string */

struct ktap_field {
	__u16 offset;			/* within the raw tracepoint record */
	__u16 size;			/* 1, 2, 4 or 8 for integers */
	__u16 flags;			/* KTAP_FIELD_* */
	__u16 pad;
};

struct ktap_ioc_start {
	__u64 attach;			/* user pointer to the attach table */
	__u64 size;
	__u32 count;			/* number of struct ktap_attach entries */
	__u32 pad;
	__u64 errbuf;			/* user pointer to KTAP_ERRLEN bytes, or 0 */
};

#define KTAP_IOC_MAGIC	'k'
#define KTAP_IOC_INFO	_IOR(KTAP_IOC_MAGIC, 1, struct ktap_ioc_info)
#define KTAP_IOC_LOAD	_IOW(KTAP_IOC_MAGIC, 2, struct ktap_ioc_load)
#define KTAP_IOC_START	_IOW(KTAP_IOC_MAGIC, 3, struct ktap_ioc_start)
#define KTAP_IOC_STOP	_IO(KTAP_IOC_MAGIC, 4)

/* Exit statuses of ktaprun (the script's own exit(code) otherwise). */
#define KTAP_EXIT_LOAD_ERROR	1	/* bad image, verifier refusal, attach failure */
#define KTAP_EXIT_USAGE		2
#define KTAP_EXIT_RUNTIME_ERROR	3

#endif
