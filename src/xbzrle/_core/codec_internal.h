/* Private to the codec part: run-time choice of the SIMD path, and a
 * decoder apply step that stays inside the page whatever the delta holds.
 *
 * Paths are listed best first; every path produces identical bytes, so the
 * choice only changes speed. */
#ifndef XBZ_CODEC_INTERNAL_H
#define XBZ_CODEC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Number of paths compiled in, and the name of path i ("avx512bw", ...). */
size_t xbz_simd_count(void);
const char *xbz_simd_name(size_t i);
/* 1 when this CPU (and OS) can run path i. */
int xbz_simd_supported(size_t i);
/* Make the named path live: 0 on success, -1 unknown name, -2 unsupported. */
int xbz_simd_select(const char *name);
/* Make the best supported path live. */
void xbz_simd_select_best(void);
/* Name of the live path. */
const char *xbz_simd_current(void);

/* Like xbz_decode_apply, but never writes outside page[0..page_len) nor
 * reads outside delta[0..dlen), even if another thread rewrites the delta
 * between the check and the apply (it stops at the first inconsistency). */
void xbz_decode_apply_within(const uint8_t *delta, size_t dlen, uint8_t *page, size_t page_len);

#endif
