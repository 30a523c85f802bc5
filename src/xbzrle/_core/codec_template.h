/* One SIMD path of the XBZRLE encoder and the zero-page check.
 *
 * codec_kernels.c includes this file once per path, after defining:
 *   XBZ_PATH(name)          pastes the path suffix onto a function name;
 *   XBZ_PATH(diff64)(a, b)  64-bit mask, bit i set when a[i] != b[i] (64 bytes);
 *   XBZ_PATH(diff256)(a, b, m)  1 when the 256 bytes at a and b differ, and
 *                           then m[0..3] = the diff64 masks of its four words,
 *                           taken from the same single read that decided it;
 *   XBZ_PATH(zero256)(p)    1 when the 256 bytes at p are all zero;
 *   XBZ_PATH(popcount)(x)   number of set bits of x;
 *   XBZ_PATH(tzcnt)(x)      number of trailing zero bits of x, 64 when x is 0;
 *   XBZ_PATH(copy_run)(d, s, n)  exact copy of n bytes (ranges may overlap);
 *   XBZ_PATH(copy64)(d, s)  copy of 64 bytes, with the widest loads and stores;
 *   XBZ_PATH(copy_run_dense)(d, s, n)  the same, tuned for deltas where
 *                           runs of every length up to 64 are common;
 *   XBZ_GATHER              the gather function to use (normally XBZ_PATH(gather)).
 * and, once for all paths, decode_pages' list of runs (struct xbz_run_list,
 * struct listed_round, listed_*, XBZ_LIST_*), which apply_batch reads, and
 * deltas_walk_in_pairs and prefetch_span, which it shares with the
 * checker.
 * Everything here is compiled with that path's target options.
 *
 * The encoder works in three passes, so that its cost does not depend on
 * where the changes are (no branch that guesses run positions):
 *   1. scan: one streaming pass turns the page into a mask of differing
 *      bytes (a bit per byte), of which only the non-zero 64-bit words
 *      are kept, with their positions; counting bits of the mask refuses a
 *      page that cannot fit as soon as the bytes read say so, before any
 *      output;
 *   2. gather: run boundaries (bit flips of the mask) of the kept words
 *      become a list of positions, with count-trailing-zeros (or VBMI2
 *      compress);
 *   3. emit: each (start, end) pair becomes two lengths and the new bytes,
 *      written with fixed-size stores into a destination with slack.
 *
 * INVARIANT (one read per byte), on every path including the portable one:
 * the new page may be written by other threads while it is encoded (the
 * save loop encodes straight from live guest RAM).  Every structural
 * decision (where runs start and end, their lengths, whether the page
 * overflows, whether it is unchanged) comes from the mask, and each bit of
 * the mask comes from exactly one read of its byte pair: diff256 decides
 * whether a 256-byte block differs and gives its masks from the same
 * compares (the portable path reads a block found different once more, and
 * only that second read counts, the decision included); a word left out
 * of the list is all zero.  Nothing after the scan reads old or new
 * to decide anything.
 * The emit pass copies the run's bytes from new again; those may differ
 * from what the scan saw (the delta then carries a byte the writer just
 * wrote, or an unchanged byte inside a run), which is still a well-formed
 * delta: the lengths agree with the copied bytes, zero runs after the
 * first are never empty, non-zero runs never are, and decoding it changes
 * only bytes the scan saw differ.  Keep it so: never re-derive a boundary
 * or a length from a second look at the page.  Tested by
 * tests/codec/test_codec_concurrent_writer.py (a thread rewrites the pages under
 * encode on every SIMD path). */

/* Bytes of the page the scan takes at a time (a page whose length is not a
 * multiple of it ends with a partial block). */
#define XBZ_BLOCK 256

/* Masks of the final block when the page does not end on a block edge: a
 * word per 64 bytes, bits past the page end 0, words past it 0.  Each byte
 * pair is read once.  Kept out of line: inlined, GCC 12 vectorized its
 * byte loop into the scan and then sent every load of the scan's main
 * loop through the stack. */
static __attribute__((noinline)) int XBZ_PATH(diff_last_block)(const uint8_t *a,
                                                                const uint8_t *b, size_t n,
                                                                uint64_t m[4])
{
    uint64_t any = 0;
    for (size_t k = 0; k < 4; k++) {
        size_t at = 64 * k;
        uint64_t word = 0;
        if (at + 64 <= n)
            word = XBZ_PATH(diff64)(a + at, b + at);
        else if (at < n)
            word = diff_tail(a + at, b + at, n - at);
        m[k] = word;
        any |= word;
    }
    return any != 0;
}

/* Number of runs (of set bits) in the kept words masks[0..kept), words[j]
 * telling where each word sits (a word continues a run only from the word
 * just before it). */
static inline size_t XBZ_PATH(count_runs)(const uint64_t *masks, const uint16_t *words,
                                          size_t kept)
{
    size_t runs = 0;
    for (size_t j = 0; j < kept; j++) {
        uint64_t m = masks[j];
        uint64_t carry = j > 0 ? (masks[j - 1] >> 63) & (words[j - 1] + 1u == words[j]) : 0;
        runs += (size_t)XBZ_PATH(popcount)(m & ~((m << 1) | carry));
    }
    return runs;
}

/* The scan: one streaming pass, 256 bytes at a time.  Each non-zero mask
 * word (a bit per differing byte of 64) is kept in masks, compacted, with
 * its index (64-byte word of the page) in words; equal blocks and zero
 * words leave nothing, so a page with few changes costs the gather and the
 * emit only for its few words, and nothing is cleared.  Every run costs its
 * bytes plus at least one byte for each of its two lengths, so a page that
 * cannot fit in dlen is refused as soon as the bytes read say so, before
 * any output.  Runs are only counted once the differing bytes alone come
 * near the limit (3 * differing > dlen): sparse pages pay nothing for it,
 * and a page that differs in every second byte still stops after about two
 * thirds of it (where the bytes read first prove it cannot fit).  Returns
 * the number of words kept (0: the page is unchanged), or
 * XBZ_SCAN_OVERFLOW; words[kept] is then a sentinel that follows no word,
 * and *differing_bytes the number of set bits. */
#define XBZ_SCAN_OVERFLOW ((size_t)-1)
/* Where the scan starts to ask for the next page pair (ahead_old and
 * ahead_new, when not NULL): from this offset on, each block asks for one
 * more line of each next page, in order (lines 0-12 of a 4 KiB page), and
 * the emit asks for the lines after those, one or more per run (XBZ_AHEAD
 * below).
 * The hardware prefetcher stops at each 4 KiB edge, and the first access to
 * a new page waits for its address translation (a two-level walk in a
 * virtual machine); asked for over the rest of this page's scan,
 * the next pair's first lines arrive while this page's gather and emit
 * run, and its own scan starts at the memory's pace (tenth session: the
 * seed pattern 0.875 -> 0.960 of memcmp on AVX2, the XBZRLE round 0.85-0.89
 * -> 0.98-0.99, no class slower; docs/codec.md).  Asked for only once, at
 * this offset, the first line alone came early; all at the start of the
 * page, they held up the scan's own first loads; two lines per block, or
 * from the first block on, measured lower. */
#define XBZ_AHEAD_AT 768
/* A page of at most XBZ_FEW_RUNS runs asks for XBZ_FEW_RUNS_LINES lines of
 * the next pair per run in its emit, one otherwise.  The emit of a few runs
 * is too short for one line a run to bring the next pair in: the seed
 * pattern (4 runs) then asked for 4 of the 51 lines the scan leaves.  With
 * four a run (benchmarks/codec.py, alternating builds): the seed pattern
 * 0.948 -> 0.968 of memcmp on AVX2, 0.928 -> 0.955 on VBMI2; 16 runs of
 * 8-64 bytes 0.78 -> 0.81; the XBZRLE round (benchmarks/pipeline.py)
 * 0.92-0.96 -> 0.98-1.00.  Asked that fast on pages of many short runs (1%
 * random bytes, 40 runs), the requests came in bursts and measured slower
 * (0.79 -> 0.72-0.74 in a harness), so those keep one a run; six or eight
 * a run made 16 runs slower than one (thirteenth session, docs/codec.md). */
#define XBZ_FEW_RUNS 16
#define XBZ_FEW_RUNS_LINES 4
/* The offset of a len-byte page from which its scan asks for the next
 * pair's lines (from 0 on a page no longer than XBZ_AHEAD_AT). */
static inline size_t XBZ_PATH(ahead_from)(size_t len)
{
    return len > XBZ_AHEAD_AT ? XBZ_AHEAD_AT : 0;
}
/* How many lines of each next page that scan asks for: one per block. */
static inline size_t XBZ_PATH(scan_ahead_lines)(size_t len)
{
    return (len - XBZ_PATH(ahead_from)(len) + XBZ_BLOCK - 1) / XBZ_BLOCK;
}
static inline size_t XBZ_PATH(scan)(const uint8_t *old, const uint8_t *new_page, size_t len,
                                    uint64_t *masks, uint16_t *words, size_t dlen,
                                    size_t *differing_bytes, const uint8_t *ahead_old,
                                    const uint8_t *ahead_new)
{
    size_t kept = 0, differing = 0, runs = 0, w = 0, off = 0;
    int counting = 0;
    uint64_t carry = 0, m[4];
    size_t ahead_at = XBZ_PATH(ahead_from)(len);

    for (; off < len; off += XBZ_BLOCK, w += 4) {
        if (ahead_old != NULL && off >= ahead_at) {
            size_t line = (off - ahead_at) / XBZ_BLOCK * 64;
            __builtin_prefetch(ahead_old + line);
            __builtin_prefetch(ahead_new + line);
        }
        int differs = off + XBZ_BLOCK <= len
                          ? XBZ_PATH(diff256)(old + off, new_page + off, m)
                          : XBZ_PATH(diff_last_block)(old + off, new_page + off, len - off, m);
        if (!differs) {
            carry = 0;
            continue;
        }
        uint64_t m0 = m[0], m1 = m[1], m2 = m[2], m3 = m[3];
        /* Appended without a branch: a zero word is overwritten next. */
        masks[kept] = m0;
        words[kept] = (uint16_t)w;
        kept += m0 != 0;
        masks[kept] = m1;
        words[kept] = (uint16_t)(w + 1);
        kept += m1 != 0;
        masks[kept] = m2;
        words[kept] = (uint16_t)(w + 2);
        kept += m2 != 0;
        masks[kept] = m3;
        words[kept] = (uint16_t)(w + 3);
        kept += m3 != 0;
        differing += (size_t)(XBZ_PATH(popcount)(m0) + XBZ_PATH(popcount)(m1) +
                              XBZ_PATH(popcount)(m2) + XBZ_PATH(popcount)(m3));
        if (counting) {
            runs += (size_t)(XBZ_PATH(popcount)(m0 & ~((m0 << 1) | carry)) +
                             XBZ_PATH(popcount)(m1 & ~((m1 << 1) | (m0 >> 63))) +
                             XBZ_PATH(popcount)(m2 & ~((m2 << 1) | (m1 >> 63))) +
                             XBZ_PATH(popcount)(m3 & ~((m3 << 1) | (m2 >> 63))));
            if (differing + 2 * runs > dlen)
                return XBZ_SCAN_OVERFLOW;
        } else if (3 * differing > dlen) {
            counting = 1;
            runs = XBZ_PATH(count_runs)(masks, words, kept);
            if (differing + 2 * runs > dlen)
                return XBZ_SCAN_OVERFLOW;
        }
        carry = m3 >> 63;
    }
    words[kept] = UINT16_MAX; /* a sentinel for the gather: adjacent to no word */
    *differing_bytes = differing;
    return kept;
}

/* Positions where the mask flips: run starts and ends, alternating, the
 * first being a start; a run reaching the page end ends at len.  Only the
 * kept (non-zero) words are visited.  Each word writes its first four
 * positions unconditionally (slack in bounds takes the unused ones) and
 * loops only for more, so sparse pages cost no misprediction per
 * position. */
static inline size_t XBZ_PATH(gather)(const uint64_t *masks, const uint16_t *words, size_t kept,
                                      size_t len, uint16_t *bounds)
{
    size_t count = 0, prev_w = SIZE_MAX - 1;
    uint64_t prev_m = 0;
    for (size_t j = 0; j < kept; j++) {
        size_t w = words[j];
        uint64_t m = masks[j];
        /* The bit before the word: set when the previous word is kept,
         * adjacent, and its last byte differs. */
        uint64_t carry = (prev_m >> 63) & (prev_w + 1 == w);
        uint64_t flips = m ^ ((m << 1) | carry);
        size_t n = (size_t)XBZ_PATH(popcount)(flips);
        uint16_t base = (uint16_t)(w * 64);
        uint16_t *out = bounds + count;
        /* tzcnt is ctz(flips) when flips != 0, and a harmless 64 when it
         * is 0 (an unused slot). */
        out[0] = (uint16_t)(base + XBZ_PATH(tzcnt)(flips));
        flips &= flips - 1;
        out[1] = (uint16_t)(base + XBZ_PATH(tzcnt)(flips));
        flips &= flips - 1;
        out[2] = (uint16_t)(base + XBZ_PATH(tzcnt)(flips));
        flips &= flips - 1;
        out[3] = (uint16_t)(base + XBZ_PATH(tzcnt)(flips));
        flips &= flips - 1;
        if (n > 4) {
            for (size_t i = 4; i < n; i++) {
                out[i] = (uint16_t)(base + __builtin_ctzll(flips));
                flips &= flips - 1;
            }
        }
        count += n;
        /* A run reaching the end of this word ends at the next word's
         * start (or at len), unless that word is kept and reports it. */
        size_t next = (w + 1) * 64 < len ? (w + 1) * 64 : len;
        bounds[count] = (uint16_t)next;
        count += (size_t)((m >> 63) & (words[j + 1] != w + 1)); /* words[kept]: sentinel */
        prev_w = w;
        prev_m = m;
    }
    return count;
}

/* How many words' terms (two per word: before and after) a delta may cost
 * the page hash that follows it (encode_follow) before one pass over the
 * whole page is cheaper: about the cost of hashing a page held in cache. */
#ifndef XBZ_HASH_FOLLOW_WORDS
#define XBZ_HASH_FOLLOW_WORDS 64
#endif

/* dst must have dlen + XBZ_ENCODE_SLACK writable bytes.  ahead: ahead_old
 * and ahead_new are the next page pair of a batch, of which the emit asks
 * for one line per run (see encode_pages below).  follow: NULL, or old
 * itself (writable), which then takes each run's bytes from the delta as
 * they are written (see encode_follow below). */
static inline __attribute__((always_inline)) ssize_t
XBZ_PATH(encode_core)(const uint8_t *old, const uint8_t *new_page, size_t len, uint8_t *dst,
                      size_t dlen, int ahead, const uint8_t *ahead_old,
                      const uint8_t *ahead_new, uint8_t *follow, uint64_t *follow_hash,
                      int *follow_hashed)
{
    uint64_t masks[XBZ_MAX_PAGE_SIZE / 64 + 4]; /* + 4: slack of the branchless append */
    uint16_t words[XBZ_MAX_PAGE_SIZE / 64 + 4];
    uint16_t bounds[XBZ_MAX_PAGE_SIZE + 2 + 64]; /* 64: slack for fixed and vector stores */

    size_t differing;
    size_t kept = XBZ_PATH(scan)(old, new_page, len, masks, words, dlen, &differing,
                                 ahead ? ahead_old : NULL, ahead ? ahead_new : NULL);
    if (kept == 0)
        return 0;
    if (kept == XBZ_SCAN_OVERFLOW)
        return -1; /* refused while reading: nothing written */
    size_t count = XBZ_GATHER(masks, words, kept, len, bounds);
    /* follow: each run is copied into it from the delta just written
     * (dst + d), never from new_page again: the guest may have written the
     * page since the run was copied into the delta, and follow must hold
     * what the destination rebuilds.  (A race that window is too short for
     * the tests to hit; keep the source of this copy as it is.)
     * follow_hash: the page hash of follow, kept up to date run by run
     * while the runs touch few words (XBZ_HASH_FOLLOW_WORDS); else it is
     * left alone and *follow_hashed says so. */
    uint64_t hash = 0;
    int hashing = follow_hash != NULL && len == XBZ_HASH_PAGE &&
                  differing / 8 + count <= XBZ_HASH_FOLLOW_WORDS;
    if (follow_hash != NULL)
        hash = *follow_hash;
#define XBZ_FOLLOW_RUN()                                                                          \
    do {                                                                                          \
        if (follow != NULL) {                                                                     \
            if (hashing)                                                                          \
                hash -= xbz_hash_terms(follow, start, nzrun);                                     \
            XBZ_PATH(copy_run)(follow + start, dst + d, nzrun);                                   \
            if (hashing)                                                                          \
                hash += xbz_hash_terms(follow, start, nzrun);                                     \
        }                                                                                         \
    } while (0)

    size_t d = 0, prev_end = 0;
    /* Run k / 2 asks for lines_per_run lines of the next pair, from the
     * first line the scan did not ask for (XBZ_AHEAD_AT) on. */
    size_t ahead_line = ahead ? XBZ_PATH(scan_ahead_lines)(len) : 0;
    size_t lines_per_run = count / 2 <= XBZ_FEW_RUNS ? XBZ_FEW_RUNS_LINES : 1;
#define XBZ_AHEAD(k)                                                                              \
    do {                                                                                          \
        size_t at_ = ((k) / 2 * lines_per_run + ahead_line) * 64;                                 \
        for (size_t line_ = 0; ahead && line_ < lines_per_run && at_ < len; line_++, at_ += 64) { \
            __builtin_prefetch(ahead_old + at_);                                                  \
            __builtin_prefetch(ahead_new + at_);                                                  \
        }                                                                                         \
    } while (0)
    /* count / 2 runs, each costing its bytes and at most four length
     * bytes: when even that fits, no run can overflow (nor be longer than
     * a length can say, on pages up to XBZ_MAX_RUN), and the loop needs no
     * check. */
    if (differing + 2 * count <= dlen && len <= XBZ_MAX_RUN) {
        for (size_t k = 0; k < count; k += 2) {
            size_t start = bounds[k], end = bounds[k + 1], nzrun = end - start;
            XBZ_AHEAD(k);
            d += put_lengths(dst + d, (uint32_t)(start - prev_end), (uint32_t)nzrun);
            if (nzrun <= 64 && start + 64 <= len)
                XBZ_PATH(copy64)(dst + d, new_page + start);
            else
                memcpy(dst + d, new_page + start, nzrun);
            XBZ_FOLLOW_RUN();
            d += nzrun;
            prev_end = end;
        }
        if (hashing)
            *follow_hash = hash;
        if (follow_hashed != NULL)
            *follow_hashed = hashing;
        return (ssize_t)d;
    }
    for (size_t k = 0; k < count; k += 2) {
        size_t start = bounds[k], end = bounds[k + 1], nzrun = end - start;
        XBZ_AHEAD(k);
        d += put_lengths(dst + d, (uint32_t)(start - prev_end), (uint32_t)nzrun);
        if (nzrun > XBZ_MAX_RUN || d + nzrun > dlen)
            return -1;
        if (nzrun <= 64 && start + 64 <= len)
            XBZ_PATH(copy64)(dst + d, new_page + start); /* fixed stores; extra bytes are slack */
        else
            memcpy(dst + d, new_page + start, nzrun);
        XBZ_FOLLOW_RUN();
        d += nzrun;
        prev_end = end;
    }
    if (hashing)
        *follow_hash = hash;
    if (follow_hashed != NULL)
        *follow_hashed = hashing;
#undef XBZ_FOLLOW_RUN
#undef XBZ_AHEAD
    return (ssize_t)d;
}

static ssize_t XBZ_PATH(encode)(const uint8_t *old, const uint8_t *new_page, size_t len,
                                uint8_t *dst, size_t dlen)
{
    return XBZ_PATH(encode_core)(old, new_page, len, dst, dlen, 0, NULL, NULL, NULL, NULL, NULL);
}

/* The save loop's encoder (xbz_encode_follow): the delta of cached -> new
 * into dst, with the next page pair asked for (ahead_new NULL: no next
 * pair), and, when follow is set, the cached page brought up to date in
 * the same pass: each run's bytes are copied into it from the delta just
 * written, never from the page again, so the cache ends holding exactly
 * what the destination rebuilds from this delta, whatever the guest wrote
 * meanwhile.  (Decoding the delta into the cache afterwards gives the same
 * bytes, at the price of a second walk and a check; the scan's mask is the
 * one structure both follow.)  An overflow (-1) may leave the cached page
 * partly updated: the caller then replaces it whole. */
static ssize_t XBZ_PATH(encode_follow)(uint8_t *cached, const uint8_t *new_page, size_t len,
                                       uint8_t *dst, size_t dlen, int follow, uint64_t *hash,
                                       int *hashed, const uint8_t *ahead_old,
                                       const uint8_t *ahead_new)
{
    *hashed = 0;
    return XBZ_PATH(encode_core)(cached, new_page, len, dst, dlen, ahead_new != NULL, ahead_old,
                                 ahead_new, follow ? cached : NULL, follow ? hash : NULL,
                                 hashed);
}

/* encode_pages' loop (xbz_encode_pages_with_slack): pages first..pages-1
 * of size bytes each, the deltas appended at out + *used while a whole page
 * and the slack still fit in capacity; returns the first page not encoded.
 * The hardware prefetcher stops at each 4 KiB edge and must find the stream
 * again, so the scan asks for the next pair's first lines (XBZ_AHEAD_AT),
 * and the emit for one more line of it per run, so that its loads overlap
 * this page's gather and emit instead of waiting for them (docs/codec.md
 * has the figures).  One loop per path, with the encoder inlined: no call
 * through the path table per page. */
static size_t XBZ_PATH(encode_pages)(const uint8_t *old, const uint8_t *new_page, size_t size,
                                     size_t first, size_t pages, uint8_t *out, size_t capacity,
                                     size_t *used, int *lengths)
{
    size_t p = first, u = *used;
    const uint8_t *a = old + p * size, *b = new_page + p * size;
    for (; p < pages && capacity - u >= size + XBZ_ENCODE_SLACK; p++, a += size, b += size) {
        /* The last page asks for its own lines again (no-ops). */
        size_t next = p + 1 < pages ? size : 0;
        ssize_t written =
            XBZ_PATH(encode_core)(a, b, size, out + u, size, 1, a + next, b + next, NULL, NULL, NULL);
        lengths[p] = (int)written;
        u += written > 0 ? (size_t)written : 0;
    }
    *used = u;
    return p;
}

static int XBZ_PATH(is_zero)(const uint8_t *p, size_t len)
{
    size_t i = 0;
    for (; i + 256 <= len; i += 256)
        if (!XBZ_PATH(zero256)(p + i))
            return 0;
    return is_zero_tail(p + i, len - i);
}

/* ---- the apply pass of the decoder (see xbz_decode_apply_within) ----
 * Called only on deltas that passed xbz_decode_check, but it re-checks
 * every bound it relies on (predicted branches, never taken in practice),
 * so that a delta rewritten by another thread since its check cannot make
 * it read outside the delta or write outside the page: it stops at the
 * first inconsistency.  Like the checker, it walks with fast_lengths (no
 * branch on the length sizes) while 4 bytes are left, then finishes with
 * the exact loop. */

/* One run; the caller checked w->p <= limit (fast_walk_limit: the delta
 * ends at limit + 4).  page_end: the end of the page. */
static inline void XBZ_PATH(apply_step)(struct apply_walk *w, uintptr_t limit,
                                        const uint8_t *page_end, int dense)
{
    uint32_t zlen, c;
    const uint8_t *at_run = w->p;
    const uint8_t *next = fast_lengths(at_run, &zlen, &c);
    if (__builtin_expect(c >= 0x80, 0)) {
        uint32_t z2 = at_run[0] >> 7, n = 0;
        if (uleb_get(at_run + 1 + z2, &n) < 0)
            n = 0x7fffffff; /* stops below */
        c = n;
        next = at_run + 3 + z2 + n;
    }
    uint8_t *dst = w->dst + zlen;
    /* w->dst <= page_end and zlen, c < 2**31: no sum wraps. */
    if (__builtin_expect(((uintptr_t)dst + c > (uintptr_t)page_end) |
                         ((uintptr_t)next > limit + 4), 0)) {
        w->p = APPLY_STOPPED;
        return;
    }
    if (dense)
        XBZ_PATH(copy_run_dense)(dst, next - c, c);
    else
        XBZ_PATH(copy_run)(dst, next - c, c);
    w->dst = dst + c;
    w->p = next;
}

/* The exact loop, from offset i and page position pos. */
static void XBZ_PATH(apply_tail)(const uint8_t *delta, size_t dlen, uint8_t *page,
                                 size_t page_len, size_t i, size_t pos)
{
    uint32_t n;
    while (exact_next_run(delta, dlen, page_len, &i, &pos, &n)) {
        XBZ_PATH(copy_run)(page + pos, delta + i, n);
        pos += n;
        i += n;
    }
}

static inline void XBZ_PATH(apply_finish)(const struct apply_walk *w, const uint8_t *delta,
                                          const uint8_t *end, uint8_t *page, size_t page_len)
{
    if (w->p != APPLY_STOPPED && w->p != end)
        XBZ_PATH(apply_tail)(delta, (size_t)(end - delta), page, page_len,
                             (size_t)(w->p - delta), (size_t)(w->dst - page));
}

static void XBZ_PATH(apply)(const uint8_t *delta, size_t dlen, uint8_t *page, size_t page_len)
{
    const uint8_t *end = delta + dlen;
    uintptr_t limit = fast_walk_limit(delta, end);
    /* xbz_decode_apply passes SIZE_MAX: the page end is then the end of
     * the address space, and only the delta bounds the walk. */
    const uint8_t *page_end =
        page_len > UINTPTR_MAX - (uintptr_t)page ? APPLY_STOPPED : page + page_len;
    struct apply_walk w = {delta, page};
    while ((uintptr_t)w.p <= limit)
        XBZ_PATH(apply_step)(&w, limit, page_end, 0);
    XBZ_PATH(apply_finish)(&w, delta, end, page, page_len);
}

/* Two deltas walked side by side (deltas_walk_in_pairs), with the dense
 * copy. */
static inline void XBZ_PATH(apply_pair)(const uint8_t *a_delta, const uint8_t *a_end,
                                        uint8_t *a_page, const uint8_t *b_end, uint8_t *b_page,
                                        size_t page_len)
{
    const uint8_t *a_page_end = a_page + page_len, *b_page_end = b_page + page_len;
    uintptr_t a_limit = fast_walk_limit(a_delta, a_end), b_limit = fast_walk_limit(a_end, b_end);
    struct apply_walk a = {a_delta, a_page}, b = {a_end, b_page};
    while ((uintptr_t)a.p <= a_limit && (uintptr_t)b.p <= b_limit) {
        XBZ_PATH(apply_step)(&a, a_limit, a_page_end, 1);
        XBZ_PATH(apply_step)(&b, b_limit, b_page_end, 1);
    }
    while ((uintptr_t)a.p <= a_limit)
        XBZ_PATH(apply_step)(&a, a_limit, a_page_end, 1);
    while ((uintptr_t)b.p <= b_limit)
        XBZ_PATH(apply_step)(&b, b_limit, b_page_end, 1);
    XBZ_PATH(apply_finish)(&a, a_delta, a_end, a_page, page_len);
    XBZ_PATH(apply_finish)(&b, a_end, b_end, b_page, page_len);
}

/* decode_pages' apply pass.  Each walk is a chain (a run's offset needs
 * the previous run's lengths).  Dense deltas (two together longer than half
 * a page: many short runs of every length) are bound by that chain, and two
 * walked side by side overlap.  Sparse ones are bound by their stores, each
 * a miss in pages out of the caches: walked one page after the other, their
 * stores climb through one page at a time, which the hardware prefetcher
 * follows, while two pages side by side were 10% slower on 1% random bytes
 * at 64 MiB (docs/codec.md, eleventh session).  Tiny ones (a few runs a
 * page) are walked side by side again, which was 6-8% faster on the seed
 * pattern's four bytes a page (twelfth session): a pair keeps twice as
 * many of their few stores in flight. */
static void XBZ_PATH(apply_pages)(const uint8_t *deltas, const long long *lengths, size_t count,
                                  uint8_t *pages, size_t page_len)
{
    size_t p = 0;
    for (;;) {
        while (p < count && lengths[p] <= 0)
            p++;
        if (p >= count)
            return;
        size_t q = p + 1;
        while (q < count && lengths[q] <= 0)
            q++;
        const uint8_t *a_end = deltas + lengths[p];
        if (q >= count) {
            XBZ_PATH(apply)(deltas, (size_t)lengths[p], pages + p * page_len, page_len);
            return;
        }
        const uint8_t *b_end = a_end + lengths[q];
        if (deltas_walk_in_pairs((size_t)(b_end - deltas), 2, page_len)) {
            XBZ_PATH(apply_pair)(deltas, a_end, pages + p * page_len, b_end,
                                 pages + q * page_len, page_len);
            deltas = b_end;
            p = q + 1;
        } else {
            XBZ_PATH(apply)(deltas, (size_t)lengths[p], pages + p * page_len, page_len);
            deltas = a_end;
            p = q;
        }
    }
}

/* The pages of a listed round's lanes (lanes past round->lanes: its first
 * page, whose records there are empty). */
static inline void XBZ_PATH(listed_pages)(const struct listed_round *round, uint8_t *pages,
                                          size_t page_len, uint8_t *page[XBZ_LIST_LANES])
{
    for (size_t l = 0; l < XBZ_LIST_LANES; l++)
        page[l] = pages + round->page[l < round->lanes ? l : 0] * page_len;
}

/* The runs of one listed round (struct listed_round in codec_kernels.c),
 * on the lanes' pages (page), each run's lines asked for one step (sixteen
 * runs) ahead; the last step asks for the first runs of the next round
 * (NULL: none; next_page: its lanes' pages).  The list is private memory
 * filled by the check pass from the same reads that checked the deltas;
 * each copy is still bounded by the page and the round's deltas, and the
 * rest of each delta (after its fast walk) goes through the exact loop. */
static void XBZ_PATH(apply_listed)(const struct listed_round *round, uint8_t *const *page,
                                   const struct listed_round *next_round,
                                   uint8_t *const *next_page, size_t page_len)
{
    const uint32_t *records = listed_records(round);
    const uint8_t *base = round->base;
    const size_t span = (size_t)(listed_deltas_end(round) - base);
    for (uint32_t s = 0; s < round->steps; s++) {
        const uint32_t *place = records + (size_t)s * 2 * XBZ_LIST_LANES;
        const uint32_t *from = place + XBZ_LIST_LANES;
        const uint32_t *ahead = place + 2 * XBZ_LIST_LANES;
        uint8_t *const *ahead_page = page;
        if (s + 1 == round->steps) {
            ahead = next_round != NULL ? listed_records(next_round) : place;
            ahead_page = next_round != NULL ? next_page : page;
        }
        for (size_t l = 0; l < XBZ_LIST_LANES; l++) {
            uint32_t next_at = ahead[l] & 0xffff, next_len = ahead[l] >> 16;
            __builtin_prefetch(ahead_page[l] + next_at, 1, 3);
            __builtin_prefetch(ahead_page[l] + next_at + next_len - (next_len != 0), 1, 3);
            uint32_t at = place[l] & 0xffff, n = place[l] >> 16;
            if (n != 0 && at + n <= page_len && from[l] + (size_t)n <= span)
                XBZ_PATH(copy_run)(page[l] + at, base + from[l], n);
        }
    }
    for (size_t l = 0; l < round->lanes; l++) {
        uint32_t start = listed_start(round, l);
        if (round->stop_at[l] != round->end_at[l])
            XBZ_PATH(apply_tail)(base + start, round->end_at[l] - start, page[l], page_len,
                                 round->stop_at[l] - start, round->stop_pos[l]);
    }
}

/* decode_pages' apply pass: the listed rounds from their lists, the pages
 * between them walked (apply_pages).  Each round's lanes' pages are found
 * once, when the round before asks for its first runs. */
static void XBZ_PATH(apply_batch)(const uint8_t *deltas, const long long *lengths, size_t count,
                                  uint8_t *pages, size_t page_len,
                                  const struct xbz_run_list *runs)
{
    uint8_t *lanes_a[XBZ_LIST_LANES], *lanes_b[XBZ_LIST_LANES];
    uint8_t **page = lanes_a, **next_page = lanes_b;
    size_t next = 0;
    if (runs != NULL && runs->used != 0)
        XBZ_PATH(listed_pages)((const struct listed_round *)runs->buf, pages, page_len, page);
    for (size_t at = 0; runs != NULL && at < runs->used;) {
        const struct listed_round *round = (const struct listed_round *)(runs->buf + at);
        const uint8_t *round_end = listed_deltas_end(round);
        at += XBZ_LIST_HEADER + (size_t)round->steps * XBZ_LIST_STEP;
        const struct listed_round *next_round =
            at < runs->used ? (const struct listed_round *)(runs->buf + at) : NULL;
        if (next_round != NULL)
            XBZ_PATH(listed_pages)(next_round, pages, page_len, next_page);
        XBZ_PATH(apply_pages)(deltas, lengths + next, round->page[0] - next,
                              pages + next * page_len, page_len);
        /* The check pass read the deltas long ago: ask for the next
         * round's again while this one is copied. */
        if (next_round != NULL)
            prefetch_span(next_round->base, (size_t)(listed_deltas_end(next_round) -
                                                     next_round->base));
        XBZ_PATH(apply_listed)(round, page, next_round, next_page, page_len);
        next = listed_end_page(round);
        deltas = round_end;
        uint8_t **swap = page;
        page = next_page;
        next_page = swap;
    }
    XBZ_PATH(apply_pages)(deltas, lengths + next, count - next, pages + next * page_len,
                          page_len);
}
