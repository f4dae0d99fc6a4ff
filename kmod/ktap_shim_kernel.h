/* ktap_shim_kernel.h - the kernel side of the shim (see ktap_shim_user.h).
 * Used when ktapvm is built inside the module (__KERNEL__ defined). */
#ifndef KTAP_SHIM_H
#define KTAP_SHIM_H

#include <linux/types.h>
#include <linux/kernel.h>
#include <linux/string.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/math64.h>
#include <linux/sort.h>
#include <linux/timekeeping.h>

#include <linux/timex.h>

/* The handler watchdog: a cheap NMI-safe clock, checked every few budget
 * charges against a fixed bound.
 *
 * Handlers run with interrupts off. On a kernel whose clocksource is jiffies
 * (the x86_64 board: no PIT/HPET to calibrate the TSC against), the clock
 * stands still for the whole handler and the watchdog would never fire. The
 * module checks that at load (ktapvm_check_clock()) and, if so, counts
 * get_cycles() ticks instead: ktap_wd_cycles_per_us of them per microsecond,
 * calibrated against the clock with interrupts on. 0: use the clock. */
#define KTAP_WATCHDOG_NS 10000000LL
extern u64 ktap_wd_cycles_per_us;
static inline int64_t ktap_now_ns(void)
{
	if (unlikely(ktap_wd_cycles_per_us))
		return (int64_t)div64_u64((u64)get_cycles(), ktap_wd_cycles_per_us) * 1000;
	return (int64_t)ktime_get_mono_fast_ns();
}

/* Load time only: images and pools may be large, so allow vmalloc fallback. */
static inline void *ktap_zalloc(size_t n)
{
	/* a script asking for too much gets a clean error, not a warning */
	return kvzalloc(n ? n : 1, GFP_KERNEL | __GFP_NOWARN);
}
static inline void ktap_free(void *p) { kvfree(p); }

static inline int64_t ktap_div_s64(int64_t a, int64_t b) { return div64_s64(a, b); }
static inline uint64_t ktap_div_u64(uint64_t a, uint64_t b) { return div64_u64(a, b); }
static inline uint64_t ktap_mod_u64(uint64_t a, uint64_t b)
{
	u64 rem;

	div64_u64_rem(a, b, &rem);
	return rem;
}

#define ktap_snprintf snprintf
#define ktap_sort(base, n, size, cmp) sort((base), (n), (size), (cmp), NULL)

#endif
