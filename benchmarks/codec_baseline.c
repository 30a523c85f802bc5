/* The baselines of the codec benchmark (benchmarks/codec.py), built by
 * benchmarks/codec_baseline.py with the system compiler and called through
 * ctypes, one call per batch of pages.  Not part of the package.
 *
 * memcmp_pages: libc memcmp of two equal sets of pages, which reads exactly
 * the bytes an encoder must read: the memory limit.
 *
 * run_places, store_floor: the floor of any decoder of a set of deltas, one
 * byte stored at each run's first and last place, the places known
 * beforehand: the lines a decoder must write, with nothing else done.
 * checked_store_floor: the floor of a decoder that checks every delta
 * before it writes any page (decode_pages' guarantee): each run's length
 * read, then each run's first and last byte read again and stored where
 * store_floor stores.
 *
 * qemu_plain_*: a model of QEMU's plain (non-SIMD) XBZRLE encoder and
 * decoder, written from the algorithm of QEMU's migration/xbzrle.c, so that
 * the benchmark shows our codec next to QEMU's in the same run on the same
 * pages.  It follows QEMU's design step by step so that its
 * speed is QEMU's: a zero run is found a byte at a time up to a word
 * boundary counted from the page end, then a 64-bit word at a time, then
 * a byte at a time; a non-zero run likewise, its word loop stopping at the
 * first word that holds an equal byte (the "has a zero byte" bit trick on
 * the XOR); each length is written as soon as its run ends, overflow is
 * checked before each length and before each copy, and the data goes out
 * with memcpy.  The decoder reads a length, checks it, and copies, run by
 * run, in one pass. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

typedef uint64_t word_t;
#define WORD sizeof(word_t)

static inline word_t load_word(const uint8_t *p)
{
    word_t w;
    memcpy(&w, p, WORD);
    return w;
}

/* ULEB128 of a value below 2**14, one or two bytes, as QEMU writes it. */
static inline size_t put_small(uint8_t *out, uint32_t n)
{
    if (n < 0x80) {
        out[0] = (uint8_t)n;
        return 1;
    }
    out[0] = (uint8_t)((n & 0x7f) | 0x80);
    out[1] = (uint8_t)(n >> 7);
    return 2;
}

/* The reading side: -1 when a second byte would still have bit 7 set. */
static inline int get_small(const uint8_t *in, uint32_t *n)
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

/* QEMU's xbzrle_encode_buffer: the delta of old -> new_page (len bytes, a
 * multiple of 8) into dst, at most dlen bytes; 0 when equal, -1 on
 * overflow.  Writes nothing past dst + dlen. */
static ssize_t qemu_plain_encode(const uint8_t *old, const uint8_t *new_page, size_t len,
                              uint8_t *dst, size_t dlen)
{
    const word_t ones = (word_t)0x0101010101010101ULL, highs = ones << 7;
    size_t pos = 0, out = 0;

    while (pos < len) {
        if (out + 2 > dlen)
            return -1;

        /* Zero run: bytes until the rest is a whole number of words. */
        size_t zrun = 0, unaligned = (len - pos) % WORD;
        while (unaligned > 0 && old[pos] == new_page[pos]) {
            pos++;
            zrun++;
            unaligned--;
        }
        if (unaligned == 0) {
            while (pos < len && load_word(old + pos) == load_word(new_page + pos)) {
                pos += WORD;
                zrun += WORD;
            }
            while (pos < len && old[pos] == new_page[pos]) {
                pos++;
                zrun++;
            }
        }
        if (zrun == len)
            return 0; /* the page did not change */
        if (pos == len)
            return (ssize_t)out; /* a trailing zero run is not sent */
        out += put_small(dst + out, (uint32_t)zrun);

        if (out + 2 > dlen)
            return -1;

        /* Non-zero run: bytes up to a word boundary, then whole words
         * until one of them holds an equal byte, then bytes again. */
        size_t start = pos, nzrun = 0;
        unaligned = (len - pos) % WORD;
        while (unaligned > 0 && old[pos] != new_page[pos]) {
            pos++;
            nzrun++;
            unaligned--;
        }
        if (unaligned == 0) {
            while (pos < len) {
                word_t x = load_word(old + pos) ^ load_word(new_page + pos);
                if ((x - ones) & ~x & highs) {
                    while (old[pos] != new_page[pos]) {
                        pos++;
                        nzrun++;
                    }
                    break;
                }
                pos += WORD;
                nzrun += WORD;
            }
        }
        out += put_small(dst + out, (uint32_t)nzrun);
        if (out + nzrun > dlen)
            return -1;
        memcpy(dst + out, new_page + start, nzrun);
        out += nzrun;
    }
    return (ssize_t)out;
}

/* QEMU's xbzrle_decode_buffer: applies delta onto page in one pass,
 * checking as it goes (a refused delta may leave the page half written, as
 * in QEMU).  Returns the decoded length or -1. */
static ssize_t qemu_plain_decode(const uint8_t *delta, size_t dlen, uint8_t *page,
                                 size_t page_len)
{
    size_t i = 0, pos = 0;
    uint32_t count;
    int used;

    while (i < dlen) {
        if (dlen - i < 2)
            return -1;
        used = get_small(delta + i, &count);
        if (used < 0 || (i != 0 && count == 0))
            return -1;
        i += (size_t)used;
        pos += count;
        if (pos > page_len)
            return -1;

        if (dlen - i < 2)
            return -1;
        used = get_small(delta + i, &count);
        if (used < 0 || count == 0)
            return -1;
        i += (size_t)used;
        if (pos + count > page_len || i + count > dlen)
            return -1;
        memcpy(page + pos, delta + i, count);
        pos += count;
        i += count;
    }
    return (ssize_t)pos;
}

/* ---- batch entry points (one ctypes call per batch) ---- */

/* Number of equal page pairs of a and b (len bytes, whole pages). */
size_t memcmp_pages(const uint8_t *a, const uint8_t *b, size_t len, size_t page_size)
{
    size_t equal = 0;
    for (size_t off = 0; off + page_size <= len; off += page_size)
        equal += memcmp(a + off, b + off, page_size) == 0;
    return equal;
}

/* encode_pages with QEMU's encoder: one length per page in lengths (0
 * unchanged, -1 overflow, else the delta length, limit the page size), the
 * deltas one after the other in out, which holds len bytes (no page's delta
 * exceeds the page).  Returns the delta bytes written. */
size_t qemu_plain_encode_pages(const uint8_t *old, const uint8_t *new_page, size_t len,
                               size_t page_size, uint8_t *out, int32_t *lengths)
{
    size_t used = 0;
    for (size_t p = 0; (p + 1) * page_size <= len; p++) {
        ssize_t n = qemu_plain_encode(old + p * page_size, new_page + p * page_size, page_size,
                                      out + used, page_size);
        lengths[p] = (int32_t)n;
        used += n > 0 ? (size_t)n : 0;
    }
    return used;
}

/* decode_pages with QEMU's decoder: applies the deltas (lengths[p] > 0,
 * one after the other in deltas, dlen bytes) in one pass per page.
 * Returns -1; the first page whose delta QEMU refuses (earlier pages are
 * then written, that one maybe half); or -2 when the lengths ask for more
 * than dlen bytes (nothing written). */
ssize_t qemu_plain_decode_pages(const uint8_t *deltas, size_t dlen, const int32_t *lengths,
                                size_t count, uint8_t *pages, size_t page_size)
{
    size_t remaining = dlen;
    for (size_t p = 0; p < count; p++) {
        if (lengths[p] > 0 && (size_t)lengths[p] > remaining)
            return -2;
        remaining -= lengths[p] > 0 ? (size_t)lengths[p] : 0;
    }
    for (size_t p = 0; p < count; p++) {
        if (lengths[p] <= 0)
            continue;
        if (qemu_plain_decode(deltas, (size_t)lengths[p], pages + p * page_size, page_size) < 0)
            return (ssize_t)p;
        deltas += lengths[p];
    }
    return -1;
}

/* ---- the store floor of a decoder ---- */

/* Where a decoder of these deltas must store: for each run, the offsets
 * (from the start of the pages) of its first and last byte, as pairs in
 * places (room for 2 * the return value), and the offset of its bytes in
 * the deltas, in sources (room for the return value); either may be NULL.
 * Returns the number of runs, or -1 when a delta does not parse.  Not
 * timed: the floors below store to places known beforehand. */
ssize_t run_places(const uint8_t *deltas, const int32_t *lengths, size_t count,
                   size_t page_size, uint32_t *places, uint32_t *sources)
{
    const uint8_t *first_delta = deltas;
    size_t runs = 0;
    for (size_t p = 0; p < count; p++) {
        if (lengths[p] <= 0)
            continue;
        const uint8_t *at = deltas, *end = deltas + lengths[p];
        size_t pos = 0;
        uint32_t zrun, nzrun;
        while (at < end) {
            int used = get_small(at, &zrun);
            if (used < 0)
                return -1;
            at += used;
            used = get_small(at, &nzrun);
            if (used < 0 || nzrun == 0 || pos + zrun + nzrun > page_size)
                return -1;
            at += used;
            pos += zrun;
            if (places != NULL) {
                places[2 * runs] = (uint32_t)(p * page_size + pos);
                places[2 * runs + 1] = (uint32_t)(p * page_size + pos + nzrun - 1);
            }
            if (sources != NULL)
                sources[runs] = (uint32_t)(at - first_delta);
            runs++;
            pos += nzrun;
            at += nzrun;
        }
        deltas = end;
    }
    return (ssize_t)runs;
}

/* One byte stored at each run's first and last place (places from
 * run_places), each run's lines asked for (prefetch for writing) `ahead`
 * runs before its stores, or not at all when ahead is 0; the bytes are 1,
 * or, with deltas, each run's own first and last byte (sources from
 * run_sources), read from the deltas as a decode's copy reads them. */
static inline void store_run_ends(uint8_t *pages, const uint32_t *places, size_t runs,
                                  size_t ahead, const uint8_t *deltas, const uint32_t *sources)
{
    for (size_t i = 0; i < runs; i++) {
        if (ahead != 0 && i + ahead < runs) {
            __builtin_prefetch(pages + places[2 * (i + ahead)], 1, 3);
            __builtin_prefetch(pages + places[2 * (i + ahead) + 1], 1, 3);
        }
        uint32_t first = places[2 * i], last = places[2 * i + 1];
        pages[first] = deltas != NULL ? deltas[sources[i]] : 1;
        pages[last] = deltas != NULL ? deltas[sources[i] + (last - first)] : 1;
    }
}

/* Any decoder of the deltas writes at least the lines of store_run_ends,
 * besides parsing, checking and copying: its floor, whatever its code. */
void store_floor(uint8_t *pages, const uint32_t *places, size_t runs, size_t ahead)
{
    store_run_ends(pages, places, runs, ahead, NULL, NULL);
}

/* A decoder that checks every delta before it writes any page must read
 * every length before its first store: here the last byte of each run's
 * length (just before the run's bytes, sources from run_places).  Only
 * then can it copy, so it reads each run's bytes again: here its first and
 * last byte, stored at the run's first and last place (the stores of
 * store_floor, with the bytes a decode writes there).  The rest of each
 * copy is left out (a run of up to 64 bytes lies within the lines of its
 * first and last byte, in the deltas as in the page), so this stays under
 * any such decoder, whatever its copy.  Returns the sum of the length
 * bytes read, so that the reads stay. */
unsigned checked_store_floor(uint8_t *pages, const uint8_t *deltas, const uint32_t *places,
                             const uint32_t *sources, size_t runs, size_t ahead)
{
    unsigned read = 0;
    for (size_t i = 0; i < runs; i++)
        read += deltas[sources[i] - 1];
    store_run_ends(pages, places, runs, ahead, deltas, sources);
    return read;
}
