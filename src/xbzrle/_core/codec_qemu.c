/* Model of QEMU's plain XBZRLE codec (see codec_qemu.h), the baseline of
 * the codec benchmark.  It follows QEMU's design step by step so that its
 * speed is QEMU's: a zero run is found a byte at a time up to a word
 * boundary counted from the page end, then a 64-bit word at a time, then
 * a byte at a time; a non-zero run likewise, its word loop stopping at the
 * first word that holds an equal byte (the "has a zero byte" bit trick on
 * the XOR); each length is written as soon as its run ends, overflow is
 * checked before each length and before each copy, and the data goes out
 * with memcpy.  The decoder reads a length, checks it, and copies, run by
 * run, in one pass. */
#include "codec_qemu.h"

#include <string.h>

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

ssize_t xbz_qemu_plain_encode(const uint8_t *old, const uint8_t *new_page, size_t len,
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

ssize_t xbz_qemu_plain_decode(const uint8_t *delta, size_t dlen, uint8_t *page, size_t page_len)
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
