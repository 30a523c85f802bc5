/* XBZRLE kernels: encoder per SIMD path, strict decoder, zero-page check,
 * and the run-time choice of path.  Pure C, no Python: the save and load
 * loops call these through codec.h with the GIL released. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "codec.h"
#include "codec_internal.h"
#include "pagehash.h"

/* Longest run a 14-bit ULEB128 length can describe. */
#define XBZ_MAX_RUN 0x3fff

/* ---- helpers shared by every path (compiled for the baseline CPU) ---- */

/* Both lengths of a run (each at most XBZ_MAX_RUN) with one 4-byte store and
 * no branch on their sizes; returns the bytes they take (2 to 4).  The
 * bytes after them are slack. */
static inline size_t put_lengths(uint8_t *out, uint32_t zrun, uint32_t nzrun)
{
    uint32_t z2 = zrun > 0x7f, n2 = nzrun > 0x7f;
    /* v = lo + 128 * hi becomes lo | (hi != 0) << 7 | hi << 8, that is
     * v + 128 * hi + 128 * (hi != 0). */
    uint32_t zenc = zrun + (zrun & 0x3f80) + (z2 << 7);
    uint32_t nenc = nzrun + (nzrun & 0x3f80) + (n2 << 7);
    uint32_t both = zenc | (nenc << (8 + 8 * z2));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    both = __builtin_bswap32(both);
#endif
    memcpy(out, &both, 4);
    return 2 + z2 + n2;
}

/* Read a length as QEMU does: one byte, or two when the first has bit 7 set;
 * a second byte with bit 7 set would make it longer than 14 bits (-1).  The
 * caller guarantees two readable bytes.  Branches, rather than arithmetic,
 * let the CPU run ahead to the next length before this one is known. */
static inline int uleb_get(const uint8_t *in, uint32_t *n)
{
    if (!(in[0] & 0x80)) {
        *n = in[0];
        return 1;
    }
    if (in[1] & 0x80)
        return -1;
    *n = (uint32_t)(in[0] & 0x7f) | ((uint32_t)in[1] << 7);
    return 2;
}

/* The exact walk over a delta, one run at a time, from offset *i and page
 * position *pos: 1 with *n the length of the next non-zero run (its bytes
 * at delta + *i, its place at *pos, both advanced past the lengths), or 0 at
 * the end of the delta or at the first inconsistency (a length that does
 * not fit, a run past the page or the delta, an empty run): the apply
 * passes stop there, so a delta rewritten since its check cannot make them
 * read or write out of bounds. */
static inline int exact_next_run(const uint8_t *delta, size_t dlen, size_t page_len, size_t *i,
                                 size_t *pos, uint32_t *n)
{
    uint32_t zrun;
    int used;
    if (dlen - *i < 2)
        return 0;
    used = uleb_get(delta + *i, &zrun);
    if (used < 0 || zrun > page_len - *pos)
        return 0;
    *pos += zrun;
    *i += (size_t)used;
    if (dlen - *i < 2)
        return 0;
    used = uleb_get(delta + *i, n);
    if (used < 0 || *n == 0 || *n > page_len - *pos || *n > dlen - *i - (size_t)used)
        return 0;
    *i += (size_t)used;
    return 1;
}

/* The lengths of the run that starts at d, for the decoder's fast walks:
 * the zero run (*zlen, one or two bytes, read as QEMU reads them, so a
 * second byte with bit 7 set gives a value of 0x4000 or more), the
 * non-zero run (*c, its length byte alone), and where the next run starts
 * (returned: d + 2 or 3 + *c).  A *c of 0x80 or more means the non-zero length
 * takes two bytes (or is malformed): the caller reads it again the slow way.
 * Three bytes are read whatever the sizes; the caller guarantees them.
 *
 * No branch on the sizes: the offset of the next run is picked with a
 * conditional move (compilers turn a plain ?: here into a branch), so the
 * chain from one run to the next is a load, a test, a move and an add.  A
 * branch would be mispredicted whenever the sizes vary at random (1% random
 * bytes: zero runs of about 100 bytes, either side of 128), and QEMU's
 * decoder loses most of its time there. */
static inline const uint8_t *fast_lengths(const uint8_t *d, uint32_t *zlen, uint32_t *c)
{
    uint32_t b0 = d[0], b1 = d[1], b2 = d[2];
    uintptr_t len = b1, after = (uintptr_t)d + 2 + b1;
    uintptr_t len2 = b2, after2 = (uintptr_t)d + 3 + b2;
    /* Two bytes: (b0 & 0x7f) | b1 << 7, which is b0 - 0x80 + b1 * 0x80. */
    uintptr_t zero = b0, zero2 = b0 + (b1 << 7) - 0x80;
#if defined(__x86_64__)
    __asm__("testl $0x80, %k[flag]\n\t"
            "cmovnzq %[len2], %[len]\n\t"
            "cmovnzq %[after2], %[after]\n\t"
            "cmovnzq %[zero2], %[zero]"
            : [len] "+r"(len), [after] "+r"(after), [zero] "+r"(zero)
            : [len2] "r"(len2), [after2] "r"(after2), [zero2] "r"(zero2), [flag] "r"(b0)
            : "cc");
#else
    uintptr_t high = 0 - (uintptr_t)(b0 >> 7);
    len ^= (len ^ len2) & high;
    after ^= (after ^ after2) & high;
    zero ^= (zero ^ zero2) & high;
#endif
    *zlen = (uint32_t)zero;
    *c = (uint32_t)len;
    return (const uint8_t *)after;
}

/* The apply pass's walk (codec_template.h): the next run (APPLY_STOPPED
 * once it stopped on an inconsistent delta) and where the page stands. */
struct apply_walk {
    const uint8_t *p;
    uint8_t *dst;
};
#define APPLY_STOPPED ((const uint8_t *)UINTPTR_MAX)

/* The last place a fast step may start (4 bytes before the end), or 0 when
 * the delta is shorter than that.  A step reads at most 4 bytes (3, and a
 * 4th when a non-zero length takes two bytes), so it stays inside the
 * delta; and with 4 bytes left, both lengths have the 2 bytes QEMU asks
 * for, so the fast walk never has to check for truncation. */
static inline uintptr_t fast_walk_limit(const uint8_t *delta, const uint8_t *end)
{
    return end - delta >= 4 ? (uintptr_t)end - 4 : 0;
}

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v; /* byte i of memory sits in bits 8i..8i+7 */
}

/* Copy n bytes, correct even when the ranges overlap: every size up to 64
 * loads all it copies before storing, with two to four overlapping stores
 * and no byte written outside dst[0..n); larger ones use memmove.  Sizes
 * are tested smallest first (the common runs of sparse pages are 1 to 3
 * bytes), and 16 to 64 bytes take one branch-free case: four 16-byte
 * blocks at 0, 16, 32 and 48, each moved back to end at n at the latest. */
static inline void copy_small(uint8_t *dst, const uint8_t *src, size_t n)
{
    if (n - 1 < 3) {
        uint8_t first = src[0], middle = src[n / 2], last = src[n - 1];
        dst[0] = first;
        dst[n / 2] = middle;
        dst[n - 1] = last;
    } else if (n - 4 < 4) {
        uint32_t head, tail;
        memcpy(&head, src, 4);
        memcpy(&tail, src + n - 4, 4);
        memcpy(dst, &head, 4);
        memcpy(dst + n - 4, &tail, 4);
    } else if (n - 8 < 8) {
        uint64_t head, tail;
        memcpy(&head, src, 8);
        memcpy(&tail, src + n - 8, 8);
        memcpy(dst, &head, 8);
        memcpy(dst + n - 8, &tail, 8);
    } else if (n - 16 <= 48) {
        size_t last = n - 16;
        size_t o1 = last < 16 ? last : 16, o2 = last < 32 ? last : 32, o3 = last;
        uint8_t b0[16], b1[16], b2[16], b3[16];
        memcpy(b0, src, 16);
        memcpy(b1, src + o1, 16);
        memcpy(b2, src + o2, 16);
        memcpy(b3, src + o3, 16);
        memcpy(dst, b0, 16);
        memcpy(dst + o1, b1, 16);
        memcpy(dst + o2, b2, 16);
        memcpy(dst + o3, b3, 16);
    } else if (n > 0) {
        memmove(dst, src, n);
    }
}

/* Mask of differing bytes for a final block shorter than 64 bytes. */
static inline uint64_t diff_tail(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint64_t mask = 0;
    for (size_t i = 0; i < n; i++)
        mask |= (uint64_t)(a[i] != b[i]) << i;
    return mask;
}

static inline int is_zero_tail(const uint8_t *p, size_t n)
{
    uint64_t acc = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        acc |= load64(p + i);
    for (; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

/* ---- portable path: 64-bit words ----
 * Same encoder template, same one-read-per-byte invariant (codec_template.h):
 * diff64_portable and diff_tail read each byte pair exactly once. */

static inline int popcount_portable(uint64_t x)
{
    x -= (x >> 1) & UINT64_C(0x5555555555555555);
    x = (x & UINT64_C(0x3333333333333333)) + ((x >> 2) & UINT64_C(0x3333333333333333));
    x = (x + (x >> 4)) & UINT64_C(0x0f0f0f0f0f0f0f0f);
    return (int)((x * UINT64_C(0x0101010101010101)) >> 56);
}

static inline int tzcnt_portable(uint64_t x)
{
    return x ? __builtin_ctzll(x) : 64;
}

/* The decoder's copies (copy_small); sparse deltas are mostly one-byte
 * runs, which a first, well predicted test sends to a single store, while
 * dense ones (runs of every length from 1 to 8) would mispredict it. */
static inline void copy_run_portable(uint8_t *dst, const uint8_t *src, size_t n)
{
    if (n == 1)
        *dst = *src;
    else
        copy_small(dst, src, n);
}

static inline void copy_run_dense_portable(uint8_t *dst, const uint8_t *src, size_t n)
{
    copy_small(dst, src, n);
}

static inline void copy64_portable(uint8_t *dst, const uint8_t *src)
{
    memcpy(dst, src, 64);
}

/* Bit k set when byte k of x is non-zero (SWAR, then gather the 8 flags). */
static inline uint64_t nonzero_byte_flags(uint64_t x)
{
    const uint64_t low7 = UINT64_C(0x7f7f7f7f7f7f7f7f);
    uint64_t high = (((x & low7) + low7) | x) & ~low7;
    return ((high >> 7) * UINT64_C(0x0102040810204080)) >> 56;
}

static inline uint64_t diff64_portable(const uint8_t *a, const uint8_t *b)
{
    uint64_t mask = 0;
    for (int w = 0; w < 8; w++)
        mask |= nonzero_byte_flags(load64(a + 8 * w) ^ load64(b + 8 * w)) << (8 * w);
    return mask;
}

/* Masks of the differing bytes of a 256-byte block; 1 when any differs.  An
 * equal block (the common case) is found with a cheap XOR pass and gets no
 * masks; a block found different is read again by diff64, and only that
 * second read decides (its masks are what the function returns, even if
 * the page changed in between). */
static inline int diff256_portable(const uint8_t *a, const uint8_t *b, uint64_t m[4])
{
    uint64_t acc = 0;
    for (int w = 0; w < 32; w++)
        acc |= load64(a + 8 * w) ^ load64(b + 8 * w);
    if (acc == 0)
        return 0;
    for (int k = 0; k < 4; k++)
        m[k] = diff64_portable(a + 64 * k, b + 64 * k);
    return (m[0] | m[1] | m[2] | m[3]) != 0;
}

static inline int zero256_portable(const uint8_t *p)
{
    uint64_t acc = 0;
    for (int w = 0; w < 32; w++)
        acc |= load64(p + 8 * w);
    return acc == 0;
}

/* ---- decode_pages' list of runs ----
 * In pages out of the caches, the apply pass of sparse deltas is bound by
 * its stores: each run's line is a miss for a store.  Walking a delta, the
 * apply learns where a run goes only when it gets there, too late to ask
 * for the line.  The check pass must walk every delta first anyway (no
 * page is written before all are checked), so on the x86 paths its lanes
 * also write down, for the deltas of sixteen pages at a time, where each
 * run goes, where its bytes are and how many: the apply pass then copies
 * from that list and asks for each run's line one step (sixteen runs)
 * ahead, as the store floor of benchmarks/codec.py does.
 *
 * The list is a sequence of listed rounds, in page order, each a header
 * then `steps` records of the sixteen lanes: for step s, 16 words
 * (length << 16 | place in the page; 0 for a lane that did not walk), then
 * 16 offsets of the run's bytes from the round's base.  Only rounds whose
 * deltas the apply would otherwise walk one page at a time
 * (!deltas_walk_in_pairs) and whose fast walks were clean are listed; the
 * pages between listed rounds are walked as before.
 * A round's records are bounded by its deltas (XBZ_LIST_PER_BYTE), so the
 * list follows what the batch carries.
 * The list keeps its memory per thread between batches (runs of a 64 MiB
 * batch at 1% random bytes take about 8 MiB): fresh memory for it on every
 * batch would cost more than the list saves.  At XBZ_RUN_LIST_MAX, later
 * rounds are walked. */
#define XBZ_LIST_LANES 16
#define XBZ_RUN_LIST_MAX ((size_t)16 << 20)
/* A listed round's records take at most this many bytes per byte of its
 * deltas (a run takes at least 3 delta bytes and 8 record bytes, one
 * record per lane and step: with a third of the lanes busy, about 8). */
#define XBZ_LIST_PER_BYTE 8

struct xbz_run_list {
    uint8_t *buf;
    size_t used, cap;
    int full; /* it could not grow: no more rounds are listed */
};

struct listed_round {
    const uint8_t *base; /* the round's deltas, one after the other */
    uint32_t steps, lanes;
    size_t page[XBZ_LIST_LANES]; /* each lane's page, in page order */
    /* Offsets from base: where each lane's delta ends (the next one's
     * starts there), and where its fast walk stopped (at stop_pos in the
     * page); the exact walk applies the rest. */
    uint32_t end_at[XBZ_LIST_LANES];
    uint32_t stop_at[XBZ_LIST_LANES], stop_pos[XBZ_LIST_LANES];
};

/* Where lane l's delta starts, as an offset from the round's base. */
static inline uint32_t listed_start(const struct listed_round *round, size_t l)
{
    return l != 0 ? round->end_at[l - 1] : 0;
}

/* The end of the round's deltas, and the page after its last. */
static inline const uint8_t *listed_deltas_end(const struct listed_round *round)
{
    return round->base + round->end_at[round->lanes - 1];
}

static inline size_t listed_end_page(const struct listed_round *round)
{
    return round->page[round->lanes - 1] + 1;
}
#define XBZ_LIST_HEADER ((sizeof(struct listed_round) + 63) & ~(size_t)63)
#define XBZ_LIST_STEP (2 * XBZ_LIST_LANES * sizeof(uint32_t))

/* The records of a listed round, right after its header. */
static inline const uint32_t *listed_records(const struct listed_round *round)
{
    return (const uint32_t *)((const uint8_t *)round + XBZ_LIST_HEADER);
}

static pthread_key_t run_list_key;
static pthread_once_t run_list_once = PTHREAD_ONCE_INIT;
static int run_list_key_ok;

static void run_list_free(void *list)
{
    free(((struct xbz_run_list *)list)->buf);
    free(list);
}

static void run_list_key_make(void)
{
    run_list_key_ok = pthread_key_create(&run_list_key, run_list_free) == 0;
}

struct xbz_run_list *xbz_run_list_of_thread(void)
{
    pthread_once(&run_list_once, run_list_key_make);
    if (!run_list_key_ok)
        return NULL;
    struct xbz_run_list *list = pthread_getspecific(run_list_key);
    if (list == NULL) {
        list = calloc(1, sizeof *list);
        if (list == NULL || pthread_setspecific(run_list_key, list) != 0) {
            free(list);
            return NULL;
        }
    }
    list->used = 0;
    list->full = 0;
    return list;
}

/* Room for bytes past list->used (which does not move): where they go, or
 * NULL (and the list full) when it would grow past XBZ_RUN_LIST_MAX. */
static uint8_t *run_list_room(struct xbz_run_list *list, size_t bytes)
{
    if (list->cap - list->used >= bytes)
        return list->buf + list->used;
    size_t cap = list->cap != 0 ? list->cap : (size_t)1 << 16;
    while (cap - list->used < bytes && cap <= XBZ_RUN_LIST_MAX)
        cap *= 2;
    uint8_t *buf = cap <= XBZ_RUN_LIST_MAX ? realloc(list->buf, cap) : NULL;
    if (buf == NULL) {
        list->full = 1;
        return NULL;
    }
    list->buf = buf;
    list->cap = cap;
    return buf + list->used;
}

/* Whether deltas of `bytes` in all, for `pages` pages of page_len bytes,
 * are dense: longer than a quarter of their pages (many short runs of
 * every length). */
static inline int deltas_are_dense(size_t bytes, size_t pages, size_t page_len)
{
    return bytes > pages * (page_len / 4);
}

/* Deltas under this many bytes a page on average are tiny: a handful of
 * short runs (the seed pattern's four bytes a page take 16). */
#define XBZ_TINY_DELTA 24

/* Whether the apply pass walks such deltas two side by side: dense ones,
 * bound by their walk, which two chains overlap; tiny ones, whose few
 * stores a pair keeps twice as many of in flight, and whose records cost
 * the check more than they saved the apply (docs/codec.md, twelfth
 * session).  The others are sparse, bound by their stores: the check pass
 * of the x86 paths lists their runs, and they are otherwise walked one
 * page at a time. */
static inline int deltas_walk_in_pairs(size_t bytes, size_t pages, size_t page_len)
{
    return deltas_are_dense(bytes, pages, page_len) || bytes < pages * XBZ_TINY_DELTA;
}

/* Asks for every line of len bytes at p (a prefetch never faults, so the
 * range may run past a buffer's end). */
static inline void prefetch_span(const uint8_t *p, size_t len)
{
    for (size_t line = 0; line < len; line += 64)
        __builtin_prefetch(p + line);
}

#define XBZ_PATH(name) name##_portable
#define XBZ_GATHER gather_portable
#include "codec_template.h"
#undef XBZ_GATHER
#undef XBZ_PATH

#if defined(__x86_64__) || defined(__i386__)
#define XBZ_HAVE_X86 1

/* ---- AVX2 path: 32-byte compares ---- */
#pragma GCC push_options
#pragma GCC target("avx2,bmi,bmi2,popcnt")

static inline int popcount_avx2(uint64_t x)
{
    return __builtin_popcountll(x);
}

static inline int tzcnt_avx2(uint64_t x)
{
    return (int)_tzcnt_u64(x); /* BMI1: 64 for 0, no branch */
}

/* The decoder's copies (copy_small); sparse deltas are mostly one-byte
 * runs, which a first, well predicted test sends to a single store, while
 * dense ones (runs of every length from 1 to 8) would mispredict it. */
static inline void copy_run_avx2(uint8_t *dst, const uint8_t *src, size_t n)
{
    if (n == 1)
        *dst = *src;
    else
        copy_small(dst, src, n);
}

static inline void copy_run_dense_avx2(uint8_t *dst, const uint8_t *src, size_t n)
{
    copy_small(dst, src, n);
}

/* Two 32-byte moves (the compiler's own memcpy of 64 bytes uses four
 * 16-byte ones here). */
static inline void copy64_avx2(uint8_t *dst, const uint8_t *src)
{
    __m256i lo = _mm256_loadu_si256((const __m256i *)src);
    __m256i hi = _mm256_loadu_si256((const __m256i *)(src + 32));
    _mm256_storeu_si256((__m256i *)dst, lo);
    _mm256_storeu_si256((__m256i *)(dst + 32), hi);
}

static inline uint64_t diff64_avx2(const uint8_t *a, const uint8_t *b)
{
    __m256i a0 = _mm256_loadu_si256((const __m256i *)a);
    __m256i a1 = _mm256_loadu_si256((const __m256i *)(a + 32));
    __m256i b0 = _mm256_loadu_si256((const __m256i *)b);
    __m256i b1 = _mm256_loadu_si256((const __m256i *)(b + 32));
    uint32_t eq0 = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(a0, b0));
    uint32_t eq1 = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(a1, b1));
    return ~(((uint64_t)eq1 << 32) | eq0);
}

/* Masks of the differing bytes of a 256-byte block; 1 when any differs.
 * Eight 32-byte compares; their AND tells an equal block with one test,
 * and only a block that differs turns them into mask words (so each byte
 * is read once, and the test and the masks come from the same compares). */
static inline int diff256_avx2(const uint8_t *a, const uint8_t *b, uint64_t m[4])
{
    /* Named vectors, not an array: GCC 12 sent each load of an array
     * version through the stack. */
#define XBZ_EQ32(i)                                                                               \
    _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(a + 32 * (i))),                        \
                      _mm256_loadu_si256((const __m256i *)(b + 32 * (i))))
    __m256i e0 = XBZ_EQ32(0), e1 = XBZ_EQ32(1), e2 = XBZ_EQ32(2), e3 = XBZ_EQ32(3);
    __m256i e4 = XBZ_EQ32(4), e5 = XBZ_EQ32(5), e6 = XBZ_EQ32(6), e7 = XBZ_EQ32(7);
#undef XBZ_EQ32
    __m256i low = _mm256_and_si256(_mm256_and_si256(e0, e1), _mm256_and_si256(e2, e3));
    __m256i high = _mm256_and_si256(_mm256_and_si256(e4, e5), _mm256_and_si256(e6, e7));
    if (_mm256_testc_si256(_mm256_and_si256(low, high), _mm256_set1_epi8(-1)))
        return 0;
#define XBZ_NE64(lo, hi)                                                                          \
    ~(((uint64_t)(uint32_t)_mm256_movemask_epi8(hi) << 32) | (uint32_t)_mm256_movemask_epi8(lo))
    m[0] = XBZ_NE64(e0, e1);
    m[1] = XBZ_NE64(e2, e3);
    m[2] = XBZ_NE64(e4, e5);
    m[3] = XBZ_NE64(e6, e7);
#undef XBZ_NE64
    return 1;
}

static inline int zero256_avx2(const uint8_t *p)
{
    __m256i acc = _mm256_setzero_si256();
    for (int i = 0; i < 256; i += 32)
        acc = _mm256_or_si256(acc, _mm256_loadu_si256((const __m256i *)(p + i)));
    return _mm256_testz_si256(acc, acc);
}

#define XBZ_PATH(name) name##_avx2
#define XBZ_GATHER gather_avx2
#include "codec_template.h"
#undef XBZ_GATHER
#undef XBZ_PATH

#pragma GCC pop_options

/* ---- AVX-512BW path: 64-byte compares straight into a 64-bit mask ---- */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx2,bmi,bmi2,popcnt")

static inline int popcount_avx512bw(uint64_t x)
{
    return __builtin_popcountll(x);
}

static inline int tzcnt_avx512bw(uint64_t x)
{
    return (int)_tzcnt_u64(x);
}

/* Runs of 1 to 3 bytes (the common case of sparse deltas) with plain byte
 * stores, others up to 64 bytes with one masked load and store. */
static inline void copy_run_avx512bw(uint8_t *dst, const uint8_t *src, size_t n)
{
    if (n == 1) {
        *dst = *src;
    } else if (n - 1 < 3) {
        uint8_t first = src[0], middle = src[n / 2], last = src[n - 1];
        dst[0] = first;
        dst[n / 2] = middle;
        dst[n - 1] = last;
    } else if (n <= 64) {
        __mmask64 k = _bzhi_u64(~UINT64_C(0), (unsigned)n);
        _mm512_mask_storeu_epi8(dst, k, _mm512_maskz_loadu_epi8(k, src));
    } else {
        memmove(dst, src, n);
    }
}

static inline void copy64_avx512bw(uint8_t *dst, const uint8_t *src)
{
    _mm512_storeu_si512(dst, _mm512_loadu_si512(src));
}

/* Dense deltas: every run up to 64 bytes with a masked load and store, no
 * branch on its length (lengths 1 to 8 are all common there).  Masked
 * stores are slow on some CPUs (Zen 4), but a mispredicted branch per run
 * costs more. */
static inline void copy_run_dense_avx512bw(uint8_t *dst, const uint8_t *src, size_t n)
{
    if (n <= 64) {
        __mmask64 k = _bzhi_u64(~UINT64_C(0), (unsigned)n);
        _mm512_mask_storeu_epi8(dst, k, _mm512_maskz_loadu_epi8(k, src));
    } else {
        memmove(dst, src, n);
    }
}

static inline uint64_t diff64_avx512bw(const uint8_t *a, const uint8_t *b)
{
    return _mm512_cmpneq_epi8_mask(_mm512_loadu_si512(a), _mm512_loadu_si512(b));
}

/* Masks of the differing bytes of a 256-byte block, stored whether or not
 * any differs (the caller keeps them only then); 1 when any differs. */
static inline int diff256_avx512bw(const uint8_t *a, const uint8_t *b, uint64_t m[4])
{
    uint64_t m0 = diff64_avx512bw(a, b), m1 = diff64_avx512bw(a + 64, b + 64);
    uint64_t m2 = diff64_avx512bw(a + 128, b + 128), m3 = diff64_avx512bw(a + 192, b + 192);
    m[0] = m0;
    m[1] = m1;
    m[2] = m2;
    m[3] = m3;
    return ((m0 | m1) | (m2 | m3)) != 0;
}

static inline int zero256_avx512bw(const uint8_t *p)
{
    __m512i acc = _mm512_or_si512(_mm512_or_si512(_mm512_loadu_si512(p), _mm512_loadu_si512(p + 64)),
                                  _mm512_or_si512(_mm512_loadu_si512(p + 128),
                                                  _mm512_loadu_si512(p + 192)));
    return _mm512_test_epi64_mask(acc, acc) == 0;
}

#define XBZ_PATH(name) name##_avx512bw
#define XBZ_GATHER gather_avx512bw
#include "codec_template.h"
#undef XBZ_GATHER
#undef XBZ_PATH

#pragma GCC pop_options

/* ---- AVX512-VBMI2 path (Ice Lake, Zen 4 and later): the AVX-512BW path
 * with a gather that packs the flip positions of a word into the list with
 * two compress instructions, with no branch per position. ---- */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vbmi2,avx2,bmi,bmi2,popcnt")

/* The gather of codec_template.h over the same list of kept words, each
 * word's flip positions packed into the list with two compress
 * instructions. */
static size_t gather_compress(const uint64_t *masks, const uint16_t *words, size_t kept,
                              size_t len, uint16_t *bounds)
{
    const __m512i lanes =
        _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14,
                         13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    size_t count = 0, prev_w = SIZE_MAX - 1;
    uint64_t prev_m = 0;
    for (size_t j = 0; j < kept; j++) {
        size_t w = words[j];
        uint64_t m = masks[j];
        uint64_t carry = (prev_m >> 63) & (prev_w + 1 == w);
        uint64_t flips = m ^ ((m << 1) | carry);
        __m512i low = _mm512_add_epi16(lanes, _mm512_set1_epi16((short)(w * 64)));
        __m512i high = _mm512_add_epi16(low, _mm512_set1_epi16(32));
        _mm512_storeu_si512(bounds + count, _mm512_maskz_compress_epi16((__mmask32)flips, low));
        count += (size_t)__builtin_popcount((uint32_t)flips);
        _mm512_storeu_si512(bounds + count,
                            _mm512_maskz_compress_epi16((__mmask32)(flips >> 32), high));
        count += (size_t)__builtin_popcount((uint32_t)(flips >> 32));
        size_t next = (w + 1) * 64 < len ? (w + 1) * 64 : len;
        bounds[count] = (uint16_t)next;
        count += (size_t)((m >> 63) & (words[j + 1] != w + 1)); /* words[kept]: sentinel */
        prev_w = w;
        prev_m = m;
    }
    return count;
}

static inline int popcount_avx512vbmi2(uint64_t x)
{
    return popcount_avx512bw(x);
}

static inline int tzcnt_avx512vbmi2(uint64_t x)
{
    return (int)_tzcnt_u64(x);
}

static inline void copy_run_avx512vbmi2(uint8_t *dst, const uint8_t *src, size_t n)
{
    copy_run_avx512bw(dst, src, n);
}

static inline void copy64_avx512vbmi2(uint8_t *dst, const uint8_t *src)
{
    copy64_avx512bw(dst, src);
}

static inline void copy_run_dense_avx512vbmi2(uint8_t *dst, const uint8_t *src, size_t n)
{
    copy_run_dense_avx512bw(dst, src, n);
}

static inline uint64_t diff64_avx512vbmi2(const uint8_t *a, const uint8_t *b)
{
    return diff64_avx512bw(a, b);
}

static inline int diff256_avx512vbmi2(const uint8_t *a, const uint8_t *b, uint64_t m[4])
{
    return diff256_avx512bw(a, b, m);
}

static inline int zero256_avx512vbmi2(const uint8_t *p)
{
    return zero256_avx512bw(p);
}

#define XBZ_PATH(name) name##_avx512vbmi2
#define XBZ_GATHER gather_compress
#include "codec_template.h"
#undef XBZ_GATHER
#undef XBZ_PATH

#pragma GCC pop_options

static int cpu_has_avx512vbmi2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vbmi2") && __builtin_cpu_supports("avx2") &&
           __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt");
}

static int cpu_has_avx512bw(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2") &&
           __builtin_cpu_supports("popcnt");
}

static int cpu_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2") &&
           __builtin_cpu_supports("popcnt");
}
#endif /* x86 */

static int cpu_has_portable(void)
{
    return 1;
}

/* ---- run-time dispatch ---- */

struct simd_path {
    const char *name;
    ssize_t (*encode)(const uint8_t *, const uint8_t *, size_t, uint8_t *, size_t);
    size_t (*encode_pages)(const uint8_t *, const uint8_t *, size_t, size_t, size_t, uint8_t *,
                           size_t, size_t *, int *);
    ssize_t (*encode_follow)(uint8_t *, const uint8_t *, size_t, uint8_t *, size_t, int,
                             uint64_t *, int *, const uint8_t *, const uint8_t *);
    int (*is_zero)(const uint8_t *, size_t);
    void (*apply)(const uint8_t *, size_t, uint8_t *, size_t);
    void (*apply_batch)(const uint8_t *, const long long *, size_t, uint8_t *, size_t,
                        const struct xbz_run_list *);
    ssize_t (*check_pages)(const uint8_t *, const long long *, size_t, size_t, size_t *,
                           const char **, struct xbz_run_list *);
    int (*cpu_has)(void);
};

static ssize_t check_pages_pairs(const uint8_t *deltas, const long long *lengths, size_t count,
                                 size_t page_len, size_t *err_offset, const char **err_reason,
                                 struct xbz_run_list *runs);
#ifdef XBZ_HAVE_X86
static ssize_t check_pages_avx2(const uint8_t *deltas, const long long *lengths, size_t count,
                                size_t page_len, size_t *err_offset, const char **err_reason,
                                struct xbz_run_list *runs);
#endif

static const struct simd_path simd_paths[] = {
#ifdef XBZ_HAVE_X86
    {"avx512vbmi2", encode_avx512vbmi2, encode_pages_avx512vbmi2,
     encode_follow_avx512vbmi2, is_zero_avx512vbmi2, apply_avx512vbmi2,
     apply_batch_avx512vbmi2, check_pages_avx2, cpu_has_avx512vbmi2},
    {"avx512bw", encode_avx512bw, encode_pages_avx512bw,
     encode_follow_avx512bw, is_zero_avx512bw, apply_avx512bw, apply_batch_avx512bw,
     check_pages_avx2, cpu_has_avx512bw},
    {"avx2", encode_avx2, encode_pages_avx2,
     encode_follow_avx2, is_zero_avx2, apply_avx2, apply_batch_avx2,
     check_pages_avx2, cpu_has_avx2},
#endif
    {"portable", encode_portable, encode_pages_portable,
     encode_follow_portable, is_zero_portable, apply_portable, apply_batch_portable,
     check_pages_pairs, cpu_has_portable},
};

#define SIMD_PATH_COUNT (sizeof simd_paths / sizeof simd_paths[0])

/* The live path; read and written atomically so that select() may run
 * while other threads encode. */
static const struct simd_path *live_path = &simd_paths[SIMD_PATH_COUNT - 1];

static inline const struct simd_path *current_path(void)
{
    return __atomic_load_n(&live_path, __ATOMIC_ACQUIRE);
}

size_t xbz_simd_count(void)
{
    return SIMD_PATH_COUNT;
}

const char *xbz_simd_name(size_t i)
{
    return i < SIMD_PATH_COUNT ? simd_paths[i].name : NULL;
}

int xbz_simd_supported(size_t i)
{
    return i < SIMD_PATH_COUNT && simd_paths[i].cpu_has();
}

int xbz_simd_select(const char *name)
{
    for (size_t i = 0; i < SIMD_PATH_COUNT; i++) {
        if (strcmp(simd_paths[i].name, name) != 0)
            continue;
        if (!simd_paths[i].cpu_has())
            return -2;
        __atomic_store_n(&live_path, &simd_paths[i], __ATOMIC_RELEASE);
        return 0;
    }
    return -1;
}

void xbz_simd_select_best(void)
{
    for (size_t i = 0; i < SIMD_PATH_COUNT; i++) {
        if (simd_paths[i].cpu_has()) {
            __atomic_store_n(&live_path, &simd_paths[i], __ATOMIC_RELEASE);
            return;
        }
    }
}

const char *xbz_simd_current(void)
{
    return current_path()->name;
}

/* ---- public kernels (codec.h) ---- */

ssize_t xbz_encode_with_slack(const uint8_t *old, const uint8_t *new_page, size_t len,
                              uint8_t *dst, size_t dlen)
{
    if (len == 0)
        return 0;
    return current_path()->encode(old, new_page, len, dst, dlen);
}

size_t xbz_encode_pages_with_slack(const uint8_t *old, const uint8_t *new_page, size_t size,
                                   size_t first, size_t pages, uint8_t *out, size_t capacity,
                                   size_t *used, int *lengths)
{
    return current_path()->encode_pages(old, new_page, size, first, pages, out, capacity, used,
                                        lengths);
}

ssize_t xbz_encode_follow(uint8_t *cached, const uint8_t *new_page, size_t len, uint8_t *dst,
                          size_t dlen, int follow, uint64_t *hash, int *hashed,
                          const uint8_t *ahead_old, const uint8_t *ahead_new)
{
    *hashed = 0;
    if (len == 0)
        return 0;
    return current_path()->encode_follow(cached, new_page, len, dst, dlen, follow, hash, hashed,
                                         ahead_old, ahead_new);
}

ssize_t xbz_encode(const uint8_t *old, const uint8_t *new_page, size_t len, uint8_t *dst,
                   size_t dlen)
{
    /* No canonical encoding exceeds 1.5 times the page, so capping the
     * scratch at twice the page changes no result. */
    uint8_t scratch[2 * XBZ_MAX_PAGE_SIZE + 16 + XBZ_ENCODE_SLACK];
    size_t capacity = dlen < 2 * len + 16 ? dlen : 2 * len + 16;
    if (len > XBZ_MAX_PAGE_SIZE)
        return -1;
    ssize_t written = xbz_encode_with_slack(old, new_page, len, scratch, capacity);
    if (written > 0)
        memcpy(dst, scratch, (size_t)written);
    return written;
}

int xbz_is_zero(const uint8_t *p, size_t len)
{
    return current_path()->is_zero(p, len);
}

/* The fast half of the checker: a walk over the delta that either vouches
 * for the part it walked (fast_walk_clean) or says "maybe not", fast in the
 * common case where every length takes one or two bytes and non-zero runs
 * are shorter than 128 bytes (fast_lengths).  The checks that need not stop
 * the walk are folded into one word: a zero run length of 0x4000 or more
 * (a second byte with bit 7 set), an empty run (length - 1 wraps), all set
 * bits above bit 13.  The page position only grows and no step adds more
 * than 2 * 0x7fff to it, so it is compared with the page length once, at
 * the end.  Any of these, or a run whose data ends past the delta, sends
 * the whole delta to the exact checker, which finds the first fault and its
 * offset as QEMU would.  The walk stops 4 bytes before the delta end, so it
 * never reads past it; the exact checker goes on from there. */
struct fast_walk {
    const uint8_t *p; /* the next run */
    size_t pos;
    uint32_t faults;
};

static inline void fast_walk_start(struct fast_walk *w, const uint8_t *delta)
{
    w->p = delta;
    w->pos = 0;
    w->faults = 0;
}

/* How far ahead of the run it reads decode_pages' check walk asks for the
 * delta bytes.  With 64 MiB of pages the deltas of a batch come from
 * memory (16 runs of 8-64 bytes: 9 MiB of deltas), and the walk is a chain
 * in which each step's load waits for the line the step before pointed
 * to: the hardware prefetcher, which stops at every 4 KiB edge, does not
 * keep ahead of it.  One prefetch per run (a line already asked for costs
 * nothing more) took the check pass from 102-126 to 79-108 ns per page on
 * 1% random and 16 runs, and 50% random from 1370 to 1160 (docs/codec.md).
 * A prefetch never faults, so asking past the end of the deltas is
 * harmless; nothing is read from there. */
#define XBZ_CHECK_AHEAD 512

/* One run; the caller checked w->p <= limit.  first: this is the first run
 * (whose zero run may be empty).  ahead (a constant at each call): ask for
 * the delta bytes XBZ_CHECK_AHEAD further on. */
static inline void fast_walk_step(struct fast_walk *w, int first, int ahead)
{
    uint32_t zlen, c;
    if (ahead)
        __builtin_prefetch(w->p + XBZ_CHECK_AHEAD);
    const uint8_t *next = fast_lengths(w->p, &zlen, &c);
    if (__builtin_expect(c >= 0x80, 0)) {
        uint32_t z2 = w->p[0] >> 7, n = 0;
        if (uleb_get(w->p + 1 + z2, &n) < 0)
            w->faults |= 0x80000000u;
        c = n;
        next = w->p + 3 + z2 + n;
    }
    w->faults |= zlen | (c - 1) | (first ? 0 : zlen - 1);
    w->pos += zlen + c;
    w->p = next;
}

/* 1 when the walk found nothing wrong up to w->p (which is then <= end). */
static inline int fast_walk_clean(const struct fast_walk *w, const uint8_t *end, size_t page_len)
{
    return (w->faults & ~(uint32_t)0x3fff) == 0 && w->pos <= page_len &&
           (uintptr_t)w->p <= (uintptr_t)end;
}

/* The order of checks follows QEMU's decoder, so both accept and refuse the
 * same deltas; each error points at the length field that caused it.  The
 * fast walk above vouches for a prefix of the delta (or for none of it);
 * this exact loop checks the rest, or all of it when the fast walk saw
 * anything wrong, so its first refusal is QEMU's. */
static int check_exact(const uint8_t *delta, size_t dlen, size_t page_len, size_t i, size_t pos,
                       size_t *err_offset, const char **err_reason)
{
    uint32_t n;
    int used;

#define XBZ_REFUSE(where, why)                                                                    \
    do {                                                                                          \
        *err_offset = (where);                                                                    \
        *err_reason = (why);                                                                      \
        return -1;                                                                                \
    } while (0)

    while (i < dlen) {
        if (dlen - i < 2)
            XBZ_REFUSE(i, "truncated zero run length (fewer than 2 bytes left)");
        used = uleb_get(delta + i, &n);
        if (used < 0)
            XBZ_REFUSE(i, "zero run length over two bytes");
        if (n == 0 && i != 0)
            XBZ_REFUSE(i, "zero run of length 0 (only the first run may be empty)");
        if (n > page_len - pos)
            XBZ_REFUSE(i, "zero run past the page end");
        pos += n;
        i += (size_t)used;

        if (dlen - i < 2)
            XBZ_REFUSE(i, "truncated non-zero run length (fewer than 2 bytes left)");
        used = uleb_get(delta + i, &n);
        if (used < 0)
            XBZ_REFUSE(i, "non-zero run length over two bytes");
        if (n == 0)
            XBZ_REFUSE(i, "non-zero run of length 0");
        if (n > page_len - pos)
            XBZ_REFUSE(i, "non-zero run past the page end");
        if (n > dlen - i - (size_t)used)
            XBZ_REFUSE(i, "non-zero run data past the end of the delta");
        pos += n;
        i += (size_t)used + n;
    }
#undef XBZ_REFUSE
    return 0;
}

int xbz_decode_check(const uint8_t *delta, size_t dlen, size_t page_len, size_t *err_offset,
                     const char **err_reason)
{
    struct fast_walk w;
    const uint8_t *end = delta + dlen;
    uintptr_t limit = fast_walk_limit(delta, end);
    size_t i = 0, pos = 0;
    fast_walk_start(&w, delta);
    if (dlen <= ((size_t)1 << 40) && (uintptr_t)w.p <= limit) { /* 2**40: pos cannot wrap */
        fast_walk_step(&w, 1, 0);
        while ((uintptr_t)w.p <= limit)
            fast_walk_step(&w, 0, 0);
        if (fast_walk_clean(&w, end, page_len)) {
            i = (size_t)(w.p - delta);
            pos = w.pos;
        }
    }
    return check_exact(delta, dlen, page_len, i, pos, err_offset, err_reason);
}

/* The checker of decode_pages: the deltas of two pages walked side by side
 * (see apply_pages in codec_template.h for why), each then finished or
 * re-checked exactly, in page order. */
static inline int check_finish(const struct fast_walk *w, const uint8_t *delta,
                               const uint8_t *end, size_t page_len, size_t *err_offset,
                               const char **err_reason)
{
    size_t i = 0, pos = 0;
    if (fast_walk_clean(w, end, page_len)) {
        if (w->p == end)
            return 0; /* the fast walk checked it all */
        i = (size_t)(w->p - delta);
        pos = w->pos;
    }
    return check_exact(delta, (size_t)(end - delta), page_len, i, pos, err_offset, err_reason);
}

static ssize_t check_pages_pairs(const uint8_t *deltas, const long long *lengths, size_t count,
                                 size_t page_len, size_t *err_offset, const char **err_reason,
                                 struct xbz_run_list *runs)
{
    (void)runs; /* no list on this path: its apply walks every delta */
    size_t p = 0;
    for (;;) {
        while (p < count && lengths[p] <= 0)
            p++;
        if (p >= count)
            return -1;
        size_t q = p + 1;
        while (q < count && lengths[q] <= 0)
            q++;
        const uint8_t *a_end = deltas + lengths[p];
        if (q >= count)
            return xbz_decode_check(deltas, (size_t)lengths[p], page_len, err_offset,
                                    err_reason) < 0 ? (ssize_t)p : -1;
        const uint8_t *b_end = a_end + lengths[q];
        if (lengths[p] > ((long long)1 << 40) || lengths[q] > ((long long)1 << 40)) {
            if (xbz_decode_check(deltas, (size_t)lengths[p], page_len, err_offset, err_reason) < 0)
                return (ssize_t)p;
            if (xbz_decode_check(a_end, (size_t)lengths[q], page_len, err_offset, err_reason) < 0)
                return (ssize_t)q;
            deltas = b_end;
            p = q + 1;
            continue;
        }
        struct fast_walk a, b;
        uintptr_t a_limit = fast_walk_limit(deltas, a_end), b_limit = fast_walk_limit(a_end, b_end);
        fast_walk_start(&a, deltas);
        fast_walk_start(&b, a_end);
        if ((uintptr_t)a.p <= a_limit)
            fast_walk_step(&a, 1, 1);
        if ((uintptr_t)b.p <= b_limit)
            fast_walk_step(&b, 1, 1);
        while ((uintptr_t)a.p <= a_limit && (uintptr_t)b.p <= b_limit) {
            fast_walk_step(&a, 0, 1);
            fast_walk_step(&b, 0, 1);
        }
        while ((uintptr_t)a.p <= a_limit)
            fast_walk_step(&a, 0, 1);
        while ((uintptr_t)b.p <= b_limit)
            fast_walk_step(&b, 0, 1);
        if (check_finish(&a, deltas, a_end, page_len, err_offset, err_reason) < 0)
            return (ssize_t)p;
        if (check_finish(&b, a_end, b_end, page_len, err_offset, err_reason) < 0)
            return (ssize_t)q;
        deltas = b_end;
        p = q + 1;
    }
}

#ifdef XBZ_HAVE_X86
#pragma GCC push_options
#pragma GCC target("avx2,bmi,bmi2,popcnt")

/* Walks at once: two groups of eight, one walk per 32-bit lane (one group
 * waits on its gathers; three or four were no faster than two). */
#define XBZ_CHECK_GROUPS 2
#define XBZ_CHECK_LANES (8 * XBZ_CHECK_GROUPS)
/* The deltas of the walks at once span less than this, so that every
 * offset, limit and next offset (at most 0x8003 past a limit) fits a signed
 * 32-bit lane. */
#define XBZ_CHECK_SPAN ((size_t)1 << 30)

_Static_assert(XBZ_CHECK_LANES == XBZ_LIST_LANES, "a listed round holds one round of lanes");
_Static_assert(XBZ_MAX_PAGE_SIZE < 0x10000, "a listed run's place and length take 16 bits each");

/* Eight walks of the check: each lane's next run (at, an offset from the
 * group's base), its limit (the last offset a step may start at, -1 for a
 * lane that never walks), page position and faults, as in struct
 * fast_walk. */
struct check_lanes {
    __m256i at, limit, pos, faults;
};

static inline __m256i check_walking_avx2(const struct check_lanes *g)
{
    return _mm256_andnot_si256(_mm256_cmpgt_epi32(g->at, g->limit), _mm256_set1_epi32(-1));
}

/* One step of fast_walk_step in each walking lane.  The gather reads the
 * four bytes at the run (the most a step reads; nothing for the lanes that
 * stopped); the lengths and the next offset are picked with compares and
 * blends.  first (a constant): the first run, whose zero run may be
 * empty. */
static inline __attribute__((always_inline)) void
check_step_avx2(struct check_lanes *g, const uint8_t *base, __m256i walking, int first,
                uint32_t *record)
{
    const __m256i low8 = _mm256_set1_epi32(0xff), x7f = _mm256_set1_epi32(0x7f);
    const __m256i one = _mm256_set1_epi32(1);
    /* Byte 1, then byte 2, of each lane moved to its low byte (pshufb
     * indexes bytes within each 16-byte half and writes 0 where the index
     * has bit 7 set). */
#define XBZ_PICK(k)                                                                               \
    _mm256_setr_epi8(k, -128, -128, -128, 4 + k, -128, -128, -128, 8 + k, -128, -128, -128, 12 + k, \
                     -128, -128, -128, k, -128, -128, -128, 4 + k, -128, -128, -128, 8 + k, -128,     \
                     -128, -128, 12 + k, -128, -128, -128)
    const __m256i pick1 = XBZ_PICK(1), pick2 = XBZ_PICK(2);
#undef XBZ_PICK
    __m256i w = _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), (const int *)base, g->at,
                                            walking, 1);
    __m256i b0 = _mm256_and_si256(w, low8), b1 = _mm256_shuffle_epi8(w, pick1);
    __m256i b2 = _mm256_shuffle_epi8(w, pick2), b3 = _mm256_srli_epi32(w, 24);
    /* A zero run length of two bytes: (b0 & 0x7f) | b1 << 7, that is
     * b0 - 0x80 + 0x80 * b1. */
    __m256i zwide = _mm256_cmpgt_epi32(b0, x7f);
    __m256i zlen = _mm256_blendv_epi8(
        b0, _mm256_add_epi32(_mm256_sub_epi32(b0, _mm256_set1_epi32(0x80)), _mm256_slli_epi32(b1, 7)),
        zwide);
    __m256i c = _mm256_blendv_epi8(b1, b2, zwide), chigh = _mm256_blendv_epi8(b2, b3, zwide);
    /* A non-zero run length of two bytes (a run of 128 bytes or more); its
     * second byte with bit 7 set is a fault. */
    __m256i cwide = _mm256_cmpgt_epi32(c, x7f);
    c = _mm256_blendv_epi8(c, _mm256_or_si256(_mm256_and_si256(c, x7f), _mm256_slli_epi32(chigh, 7)),
                           cwide);
    /* 2 + (zwide ? 1 : 0) + (cwide ? 1 : 0) length bytes, then c data bytes. */
    __m256i next = _mm256_sub_epi32(
        _mm256_sub_epi32(_mm256_add_epi32(_mm256_add_epi32(g->at, _mm256_set1_epi32(2)), c), zwide),
        cwide);
    __m256i fault = _mm256_or_si256(zlen, _mm256_sub_epi32(c, one));
    if (!first)
        fault = _mm256_or_si256(fault, _mm256_sub_epi32(zlen, one));
    fault = _mm256_or_si256(fault, _mm256_and_si256(cwide, _mm256_cmpgt_epi32(chigh, x7f)));
    __m256i pos = _mm256_add_epi32(g->pos, _mm256_and_si256(walking, _mm256_add_epi32(zlen, c)));
    /* The position is 32 bits wide: one of 2**20 or more (never valid)
     * shows above bit 13 of pos >> 6, so it is a fault before it can wrap
     * into a valid one.  A valid one (at most 2**14) never shows there. */
    fault = _mm256_or_si256(fault, _mm256_srli_epi32(pos, 6));
    g->faults = _mm256_or_si256(g->faults, _mm256_and_si256(walking, fault));
    if (record != NULL) {
        /* The run in the list (struct xbz_run_list): length << 16 | place,
         * 0 where the lane does not walk; then where its bytes are. */
        __m256i place = _mm256_sub_epi32(pos, c);
        _mm256_storeu_si256((__m256i *)record,
                            _mm256_and_si256(walking, _mm256_or_si256(_mm256_slli_epi32(c, 16),
                                                                      place)));
        _mm256_storeu_si256((__m256i *)(record + XBZ_LIST_LANES), _mm256_sub_epi32(next, c));
    }
    g->pos = pos;
    g->at = _mm256_blendv_epi8(g->at, next, walking);
}

/* decode_pages' checker on AVX2: the fast walk of fast_walk_step on the
 * deltas of sixteen pages at once, one per lane, in two groups of eight
 * whose steps are independent (a step waits on its gather, so one group's
 * step overlaps the other's).  The scalar walk is a chain of about 25
 * instructions per run; a step here costs about as many vector
 * instructions for eight runs.  Then each page, in page order, is finished
 * or re-checked exactly by check_finish, as after the scalar walk, so the
 * first refusal, its page, offset and reason are the same.  On the way it
 * lists the runs of sparse rounds in runs (struct xbz_run_list), for the
 * apply pass. */
static ssize_t check_pages_avx2(const uint8_t *deltas, const long long *lengths, size_t count,
                                size_t page_len, size_t *err_offset, const char **err_reason,
                                struct xbz_run_list *runs)
{
    size_t p = 0;
    while (p < count) {
        size_t page[XBZ_CHECK_LANES];
        const uint8_t *start[XBZ_CHECK_LANES];
        int32_t off[XBZ_CHECK_LANES], lim[XBZ_CHECK_LANES];
        const uint8_t *base = deltas;
        size_t n = 0, span = 0;
        for (; n < XBZ_CHECK_LANES && p < count; p++) {
            if (lengths[p] <= 0)
                continue;
            size_t len = (size_t)lengths[p];
            if (len >= XBZ_CHECK_SPAN - span)
                break; /* left to the next round (alone, below, if it is that long) */
            page[n] = p;
            start[n] = deltas;
            off[n] = (int32_t)span;
            lim[n] = len >= 4 ? (int32_t)(span + len - 4) : -1;
            span += len;
            deltas += len;
            n++;
        }
        if (n == 0) {
            if (p >= count)
                break;
            if (xbz_decode_check(deltas, (size_t)lengths[p], page_len, err_offset, err_reason) < 0)
                return (ssize_t)p;
            deltas += lengths[p];
            p++;
            continue;
        }
        for (size_t i = n; i < XBZ_CHECK_LANES; i++) {
            off[i] = 0;
            lim[i] = -1;
        }
        const int sparse = !deltas_are_dense(span, n, page_len);
        /* The lanes' gathers wait on the deltas, sixteen streams that the
         * hardware prefetcher does not keep ahead of: ask for the next
         * round's deltas (which follow, about as long as this round's)
         * while this round walks.  Not for dense ones, which the
         * prefetcher follows and where this costs more than it saves
         * (docs/codec.md, eleventh session). */
        if (sparse)
            prefetch_span(deltas, span);
        /* List this round's runs when the apply would otherwise walk its
         * deltas one page at a time and the list has room; `record` is
         * where the next step's records go (NULL: not listing). */
        size_t steps = 0;
        uint32_t *record = NULL;
        if (runs != NULL && !runs->full && !deltas_walk_in_pairs(span, n, page_len)) {
            uint8_t *room = run_list_room(runs, XBZ_LIST_HEADER + XBZ_LIST_STEP);
            record = room != NULL ? (uint32_t *)(room + XBZ_LIST_HEADER) : NULL;
        }
        struct check_lanes g[XBZ_CHECK_GROUPS];
        __m256i walking[XBZ_CHECK_GROUPS];
        for (int k = 0; k < XBZ_CHECK_GROUPS; k++) {
            g[k].at = _mm256_loadu_si256((const __m256i *)(off + 8 * k));
            g[k].limit = _mm256_loadu_si256((const __m256i *)(lim + 8 * k));
            g[k].pos = _mm256_setzero_si256();
            g[k].faults = _mm256_setzero_si256();
            walking[k] = check_walking_avx2(&g[k]);
            check_step_avx2(&g[k], base, walking[k], 1, record != NULL ? record + 8 * k : NULL);
        }
        steps = 1;
        for (;;) {
            __m256i any = _mm256_setzero_si256();
            for (int k = 0; k < XBZ_CHECK_GROUPS; k++) {
                walking[k] = check_walking_avx2(&g[k]);
                any = _mm256_or_si256(any, walking[k]);
            }
            if (_mm256_testz_si256(any, any))
                break;
            /* The list holds at most XBZ_LIST_PER_BYTE times the round's
             * deltas: a round whose lanes mostly wait on one long delta is
             * walked instead (a step takes a record of every lane). */
            if (record != NULL && (steps + 1) * XBZ_LIST_STEP > XBZ_LIST_PER_BYTE * span)
                record = NULL;
            if (record != NULL) {
                uint8_t *room = run_list_room(runs, XBZ_LIST_HEADER + (steps + 1) * XBZ_LIST_STEP);
                record = room != NULL
                             ? (uint32_t *)(room + XBZ_LIST_HEADER + steps * XBZ_LIST_STEP)
                             : NULL;
            }
            for (int k = 0; k < XBZ_CHECK_GROUPS; k++)
                check_step_avx2(&g[k], base, walking[k], 0,
                                record != NULL ? record + 8 * k : NULL);
            steps++;
        }
        uint32_t at[XBZ_CHECK_LANES], pos[XBZ_CHECK_LANES], faults[XBZ_CHECK_LANES];
        for (int k = 0; k < XBZ_CHECK_GROUPS; k++) {
            _mm256_storeu_si256((__m256i *)(at + 8 * k), g[k].at);
            _mm256_storeu_si256((__m256i *)(pos + 8 * k), g[k].pos);
            _mm256_storeu_si256((__m256i *)(faults + 8 * k), g[k].faults);
        }
        for (size_t i = 0; i < n; i++) {
            struct fast_walk w = {base + at[i], pos[i], faults[i]};
            const uint8_t *end = start[i] + lengths[page[i]];
            /* A walk that needs the exact checker lists nothing. */
            if (!fast_walk_clean(&w, end, page_len))
                record = NULL;
            if (check_finish(&w, start[i], end, page_len, err_offset, err_reason) < 0)
                return (ssize_t)page[i];
        }
        if (record != NULL) {
            struct listed_round *round = (struct listed_round *)(runs->buf + runs->used);
            round->base = base;
            round->steps = (uint32_t)steps;
            round->lanes = (uint32_t)n;
            for (size_t i = 0; i < n; i++) {
                round->page[i] = page[i];
                round->end_at[i] = (uint32_t)(off[i] + lengths[page[i]]);
                round->stop_at[i] = at[i];
                round->stop_pos[i] = pos[i];
            }
            runs->used += XBZ_LIST_HEADER + steps * XBZ_LIST_STEP;
        }
    }
    return -1;
}

#pragma GCC pop_options
#endif

ssize_t xbz_decode_check_pages(const uint8_t *deltas, const long long *lengths, size_t count,
                               size_t page_len, size_t *err_offset, const char **err_reason,
                               struct xbz_run_list *runs)
{
    return current_path()->check_pages(deltas, lengths, count, page_len, err_offset, err_reason,
                                       runs);
}

void xbz_decode_apply_pages(const uint8_t *deltas, const long long *lengths, size_t count,
                            uint8_t *pages, size_t page_len, const struct xbz_run_list *runs)
{
    current_path()->apply_batch(deltas, lengths, count, pages, page_len, runs);
}

void xbz_decode_apply_within(const uint8_t *delta, size_t dlen, uint8_t *page, size_t page_len)
{
    current_path()->apply(delta, dlen, page, page_len);
}

void xbz_decode_apply(const uint8_t *delta, size_t dlen, uint8_t *page)
{
    xbz_decode_apply_within(delta, dlen, page, SIZE_MAX);
}

void xbz_decode_apply_hashed(const uint8_t *delta, size_t dlen, uint8_t *page, uint64_t *hash)
{
    uint64_t h = *hash;
    size_t i = 0, pos = 0;
    uint32_t n;
    while (exact_next_run(delta, dlen, XBZ_HASH_PAGE, &i, &pos, &n)) {
        h -= xbz_hash_terms(page, pos, n);
        memcpy(page + pos, delta + i, n);
        h += xbz_hash_terms(page, pos, n);
        pos += n;
        i += n;
    }
    *hash = h;
}
