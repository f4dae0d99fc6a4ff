/* sysdep.c - see sysdep.h: no ktap_abi.h here. */
#include <stdio.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "sysdep.h"

int is_dir(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int mount_tracefs(const char *dir)
{
	return mount("tracefs", dir, "tracefs", 0, NULL);
}

int mount_debugfs(const char *dir)
{
	return mount("debugfs", dir, "debugfs", 0, NULL);
}

int make_char_node(const char *path, const char *sysfs_dev)
{
	unsigned maj, min;
	FILE *f = fopen(sysfs_dev, "r");
	int ok = f && fscanf(f, "%u:%u", &maj, &min) == 2;

	if (f)
		fclose(f);
	return ok ? mknod(path, S_IFCHR | 0600, makedev(maj, min)) : -1;
}
