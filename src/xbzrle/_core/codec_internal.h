/* Private to the codec part: run-time choice of the SIMD path, and a
 * decoder apply step that stays inside the page whatever the delta holds.
 *
 * Paths are listed best first; every path produces identical bytes, so the
 * choice only changes speed. */
#ifndef XBZ_CODEC_INTERNAL_H
#define XBZ_CODEC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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

/* Bytes past dlen that the encoder may scribble on (it writes fixed-size
 * blocks and trims afterwards). */
#define XBZ_ENCODE_SLACK 128

/* xbz_encode writing straight into dst, which must have dlen +
 * XBZ_ENCODE_SLACK writable bytes; len must be at most XBZ_MAX_PAGE_SIZE. */
ssize_t xbz_encode_with_slack(const uint8_t *old, const uint8_t *new_page, size_t len,
                              uint8_t *dst, size_t dlen);

/* Like xbz_decode_apply, but never writes outside page[0..page_len) nor
 * reads outside delta[0..dlen), even if another thread rewrites the delta
 * between the check and the apply (it stops at the first inconsistency). */
void xbz_decode_apply_within(const uint8_t *delta, size_t dlen, uint8_t *page, size_t page_len);

/* One non-zero run of a validated delta: its bytes are delta[src..src+len)
 * and go to page[pos..pos+len). */
typedef struct {
    uint32_t src;
    uint16_t pos, len;
} xbz_run;

/* Every run of a delta takes at least 3 bytes, so a delta of dlen bytes
 * lists at most this many runs. */
#define XBZ_MAX_RUNS(dlen) ((dlen) / 3 + 1)

/* Accepts exactly the deltas xbz_decode_check accepts, and lists their runs
 * into runs (XBZ_MAX_RUNS(dlen) entries): the run count, or -1 when the
 * delta is refused (xbz_decode_check then says where and why).  Its length
 * fields are read without a branch per field, so that the lengths of a
 * delta cost no mispredictions whatever their sizes. */
ssize_t xbz_decode_runs(const uint8_t *delta, size_t dlen, size_t page_len, xbz_run *runs);

/* xbz_decode_runs on four deltas at once (faster than one after the
 * other): -1 when one is refused, count[k] then being -1 for it. */
int xbz_decode_runs4(const uint8_t *const delta[4], const size_t dlen[4], size_t page_len,
                     xbz_run *const runs[4], ssize_t count[4]);

/* Copy the listed runs of a delta onto its page.  The list alone says where
 * to read and write, so this stays inside both buffers whatever the delta
 * buffer holds by now. */
void xbz_apply_runs(const uint8_t *delta, const xbz_run *runs, size_t count, uint8_t *page);

#endif
