/* sysdep.h - the few file system calls (stat, mount, mknod) kept apart from
 * the ABI code: their libc headers drag in the kernel's <linux/...> headers,
 * and keeping them out of ktap_abi.h users avoids depending on how each libc
 * version layers those. */
#ifndef KTAPRUN_SYSDEP_H
#define KTAPRUN_SYSDEP_H

int is_dir(const char *path);
int mount_tracefs(const char *dir);
int mount_debugfs(const char *dir);
/* Creates a char device node at path from a sysfs "MAJ:MIN" dev file. */
int make_char_node(const char *path, const char *sysfs_dev);

#endif
