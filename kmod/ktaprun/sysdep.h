/* sysdep.h - file system calls whose libc headers pull in <linux/types.h>.
 *
 * ktap_abi.h's user-space branch typedefs __u64 as uint64_t, which on 64-bit
 * hosts conflicts with <linux/types.h> (reached through <sys/stat.h> with
 * _GNU_SOURCE, and <sys/mount.h>). These helpers live in their own file that
 * never sees ktap_abi.h. */
#ifndef KTAPRUN_SYSDEP_H
#define KTAPRUN_SYSDEP_H

int is_dir(const char *path);
int mount_tracefs(const char *dir);
/* Creates a char device node at path from a sysfs "MAJ:MIN" dev file. */
int make_char_node(const char *path, const char *sysfs_dev);

#endif
