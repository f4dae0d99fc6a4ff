/* ktap_shim_user.h - maps the few services ktapvm's core needs onto libc, so
 * the same loader, verifier and interpreter build as a host library for unit
 * tests, fuzzing and differential tests. ktap_shim_kernel.h is its twin. */
#ifndef KTAP_SHIM_H
#define KTAP_SHIM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The handler watchdog's clock and bound (the kernel's is 10 ms; the host
 * harness runs under sanitizers, so it allows more). */
#define KTAP_WATCHDOG_NS 1000000000LL
static inline int64_t ktap_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Only ever called at load/session-create time, never while running a handler. */
static inline void *ktap_zalloc(size_t n) { return calloc(1, n ? n : 1); }
static inline void ktap_free(void *p) { free(p); }

/* 64-bit division is a library call on 32-bit kernels; keep the one spelling. */
static inline int64_t ktap_div_s64(int64_t a, int64_t b) { return a / b; }
static inline uint64_t ktap_div_u64(uint64_t a, uint64_t b) { return a / b; }
static inline uint64_t ktap_mod_u64(uint64_t a, uint64_t b) { return a % b; }

#define __annotate_jump_table
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define ktap_snprintf snprintf
#define ktap_sort(base, n, size, cmp) qsort((base), (n), (size), (cmp))

#endif
