/* ktap_crc32.h - zlib's CRC-32, the one copy shared by the module's loader,
 * ktaprun's frames, the fuzzer and the board init (guest/init.c includes it by
 * a relative path, so it needs nothing but the C library's integer types).
 *
 * Bitwise rather than table-driven: images are small, frames short, and a
 * table would be 1 KiB more in every static binary and in the module. */
#ifndef KTAP_CRC32_H
#define KTAP_CRC32_H

#ifdef __KERNEL__
#include <linux/types.h>
#else
#include <stddef.h>
#include <stdint.h>
#endif

/* Continues `crc` (0 to start) over n bytes, as zlib's crc32() does. */
static inline uint32_t ktap_crc32(uint32_t crc, const void *data, size_t n)
{
	const unsigned char *p = data;
	int k;

	crc = ~crc;
	while (n--) {
		crc ^= *p++;
		for (k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
	}
	return ~crc;
}

#endif
