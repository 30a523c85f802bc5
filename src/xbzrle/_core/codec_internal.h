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

/* The save loop's encoder: xbz_encode_with_slack of cached -> new_page,
 * asking for the next page pair's lines as it goes (ahead_old and ahead_new;
 * ahead_new NULL when there is none), and, when follow is set, copying each
 * run's bytes from the delta into cached as they are written: cached then
 * equals what a decoder rebuilds from the delta, even if new_page changed
 * meanwhile.  hash (NULL, or the page hash of cached; follow only): kept up
 * to date run by run when the delta touches few words, and *hashed then set
 * to 1; 0 means the caller must hash cached itself.  On overflow (-1) cached
 * may be partly updated. */
ssize_t xbz_encode_follow(uint8_t *cached, const uint8_t *new_page, size_t len, uint8_t *dst,
                          size_t dlen, int follow, uint64_t *hash, int *hashed,
                          const uint8_t *ahead_old, const uint8_t *ahead_new);

/* encode_pages' loop: pages first..pages-1 of old and new (size bytes each,
 * at most XBZ_MAX_PAGE_SIZE), each page's delta (limit: the page size)
 * appended at out + *used and its length (0 unchanged, -1 overflow) in
 * lengths[p], while capacity - *used leaves room for a page and
 * XBZ_ENCODE_SLACK.  Returns the first page not encoded (pages when all
 * are) and updates *used. */
size_t xbz_encode_pages_with_slack(const uint8_t *old, const uint8_t *new_page, size_t size,
                                   size_t first, size_t pages, uint8_t *out, size_t capacity,
                                   size_t *used, int *lengths);

/* Like xbz_decode_apply, but never writes outside page[0..page_len) nor
 * reads outside delta[0..dlen), even if another thread rewrites the delta
 * between the check and the apply (it stops at the first inconsistency). */
void xbz_decode_apply_within(const uint8_t *delta, size_t dlen, uint8_t *page, size_t page_len);

/* xbz_decode_apply of a checked delta to a guest page (XBZ_HASH_PAGE
 * bytes) whose page hash is *hash, keeping *hash the page's hash run by run
 * (pagehash.h): the load loop's digest table entry follows the runs
 * without reading the rest of the page, which a full hash would bring from
 * memory.  Worth it for short deltas (XBZ_HASH_APPLY_MAX bytes at most): each
 * run costs the terms of the words it touches, twice. */
#define XBZ_HASH_APPLY_MAX 128
void xbz_decode_apply_hashed(const uint8_t *delta, size_t dlen, uint8_t *page, uint64_t *hash);

/* decode_pages' two passes.  lengths[p] is the length of page p's delta (the
 * deltas follow each other from deltas on; pages with a length of 0 or less
 * carry none), page p is pages + p * page_len.  The lengths must already be
 * known to fit the deltas buffer.  check_pages returns -1 when every delta
 * is valid, else the first page whose delta is not, with *err_offset and
 * *err_reason as xbz_decode_check sets them; apply_pages applies them all,
 * with the guarantees of xbz_decode_apply_within.  runs (NULL: none) is
 * where the check pass of the x86 paths lists the runs of sparse deltas
 * (not tiny ones: a few runs a page), and the apply pass copies them from
 * there (see struct xbz_run_list in codec_kernels.c); pass the same list
 * to both, or NULL to both. */
struct xbz_run_list;
/* The calling thread's list, emptied; it keeps its memory (at most 16 MiB)
 * for the thread's next batch.  NULL when it cannot be made. */
struct xbz_run_list *xbz_run_list_of_thread(void);
ssize_t xbz_decode_check_pages(const uint8_t *deltas, const long long *lengths, size_t count,
                               size_t page_len, size_t *err_offset, const char **err_reason,
                               struct xbz_run_list *runs);
void xbz_decode_apply_pages(const uint8_t *deltas, const long long *lengths, size_t count,
                            uint8_t *pages, size_t page_len, const struct xbz_run_list *runs);

#endif
