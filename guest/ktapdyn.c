/*
 * ktapdyn: the boards' one dynamically linked program, for probes on shared
 * libraries. It links against the target's own glibc and against
 * libktapdyn.so (guest/ktapdyn_lib.c); both lie in the initramfs's /lib,
 * with the loader at the path the program names.
 *
 *   ktapdyn getppid N    N calls of libc's getppid()
 *   ktapdyn lib N        N calls of ktapdyn_lib_tick(i), i = 1..N, in
 *                        libktapdyn.so (it returns i + 1), then one of
 *                        ktapdyn_lib_say("hello from ktapdyn")
 *
 * Exit status: 0 success, 2 usage error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int ktapdyn_lib_tick(int i);
int ktapdyn_lib_say(const char *msg);

int main(int argc, char **argv)
{
	char *end;
	long i, n, sum = 0;

	if (argc != 3 || (strcmp(argv[1], "getppid") && strcmp(argv[1], "lib"))) {
		fprintf(stderr, "usage: ktapdyn getppid N | ktapdyn lib N\n");
		return 2;
	}
	n = strtol(argv[2], &end, 10);
	if (*end || end == argv[2] || n < 0) {
		fprintf(stderr, "ktapdyn: bad count '%s'\n", argv[2]);
		return 2;
	}
	for (i = 1; i <= n; i++)
		sum += argv[1][0] == 'g' ? (getppid() > 0) : ktapdyn_lib_tick((int)i);
	if (argv[1][0] == 'l')
		ktapdyn_lib_say("hello from ktapdyn");
	printf("calls=%ld sum=%ld\n", n, sum);
	return 0;
}
