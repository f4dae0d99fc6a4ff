/* serve.h - `ktaprun --serve`: the serial agent (serve.c). */
#ifndef KTAPRUN_SERVE_H
#define KTAPRUN_SERVE_H

/* Serves the host on DEV[:BAUD] (a tty, set raw) or "-" (stdin/stdout) until
 * the link ends; returns ktaprun's exit status. */
int serve_main(const char *spec);
/* SHA-256 of a file as 64 hex digits plus NUL; -1 with errno on failure. */
int sha256_file(const char *path, char out[65], long long *size);

#endif
