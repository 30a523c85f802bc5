/* The terms of the core's page hash (xbz_page_hash, ramhash.c).
 *
 * A page's hash is a sum, modulo 2^64, of one term per 64-bit word, each
 * term a function of the word and of its position only, minus the same sum
 * for a zero page (so a zero page hashes to 0).  Because the terms are
 * independent, a hash follows a change of a few bytes without reading the
 * rest of the page: subtract the terms of the words they touch, change the
 * bytes, add the terms back (the save loop does this for each run of an
 * XBZRLE delta as the cached copy takes it).
 *
 * The term of word w at position i: k = w ^ key[i % 8] ^ (i / 8 + 1) *
 * XBZ_HASH_STRIPE, then lo32(k) * hi32(k) + k.  Written as
 * (lo32(k) + 2^32) * (hi32(k) + 1) - 2^32, a change confined to one half of
 * the word (any change of one byte) multiplies a non-zero difference below
 * 2^32 by a factor of at most 2^33 with fewer than 32 factors of two, so it
 * always changes the term, and the hash.  Other changes go unseen with a
 * probability of about 2^-64 for accidents (lost or torn pages); the hash
 * does not resist an adversary. */
#ifndef XBZ_PAGEHASH_H
#define XBZ_PAGEHASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define XBZ_HASH_PAGE 4096 /* the hashed page: a guest page */
#define XBZ_HASH_LANES 8   /* 64-bit lanes: one 64-byte stripe */
#define XBZ_HASH_STRIPE 0x9e3779b97f4a7c15ULL

extern const uint64_t xbz_hash_key[XBZ_HASH_LANES];

static inline uint64_t xbz_hash_term(uint64_t w, size_t i)
{
    uint64_t k = w ^ xbz_hash_key[i % XBZ_HASH_LANES] ^ (uint64_t)(i / XBZ_HASH_LANES + 1) *
                                                              XBZ_HASH_STRIPE;
    return (k & 0xffffffffULL) * (k >> 32) + k;
}

/* The sum of the terms of the words that bytes [start, start + n) of page
 * touch (n >= 1; page is 8-byte aligned). */
static inline uint64_t xbz_hash_terms(const uint8_t *page, size_t start, size_t n)
{
    uint64_t sum = 0;
    for (size_t i = start / 8, last = (start + n - 1) / 8; i <= last; i++) {
        uint64_t w;
        memcpy(&w, page + 8 * i, 8);
        sum += xbz_hash_term(w, i);
    }
    return sum;
}

#endif
