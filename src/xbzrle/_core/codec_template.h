/* One SIMD path of the XBZRLE encoder and the zero-page check.
 *
 * codec_simd.c includes this file once per path, after defining:
 *   XBZ_PATH(name)        pastes the path suffix onto a function name;
 *   XBZ_PATH(diff64)(a, b)  64-bit mask, bit i set when a[i] != b[i] (64 bytes);
 *   XBZ_PATH(same256)(a, b) 1 when the 256 bytes at a and b are equal;
 *   XBZ_PATH(zero256)(p)    1 when the 256 bytes at p are all zero.
 * Everything here is compiled with that path's target options.
 *
 * The encoder walks the page in 64-byte blocks, each summarised as a mask of
 * differing bytes; run ends are found with count-trailing-zeros on the mask,
 * so the cost per run is a few instructions whatever its position.  Unchanged
 * stretches are skipped 256 bytes at a time, which keeps unchanged pages at
 * the speed of memcmp. */

static inline uint64_t XBZ_PATH(block_diff)(const uint8_t *old, const uint8_t *new_page,
                                            size_t blk, size_t len)
{
    if (blk + 64 <= len)
        return XBZ_PATH(diff64)(old + blk, new_page + blk);
    return diff_tail(old + blk, new_page + blk, len - blk);
}

static ssize_t XBZ_PATH(encode)(const uint8_t *old, const uint8_t *new_page, size_t len,
                                uint8_t *dst, size_t dlen)
{
    size_t blk = 0, run_start = 0, d = 0;
    uint64_t diff = XBZ_PATH(block_diff)(old, new_page, 0, len);

    for (;;) {
        /* In a zero run: find the next byte that differs. */
        while (diff == 0) {
            blk += 64;
            while (blk + 256 <= len && XBZ_PATH(same256)(old + blk, new_page + blk))
                blk += 256;
            if (blk >= len)
                return (ssize_t)d; /* no trailing zero run; 0 when identical */
            diff = XBZ_PATH(block_diff)(old, new_page, blk, len);
        }
        size_t start = blk + (size_t)__builtin_ctzll(diff);
        size_t zrun = start - run_start;
        if (zrun > XBZ_MAX_RUN || d + uleb_size(zrun) > dlen)
            return -1;
        d += uleb_put(dst + d, zrun);

        /* In a non-zero run: find the next byte that is equal. */
        uint64_t same = ~diff & (~UINT64_C(0) << (start - blk));
        while (same == 0) {
            blk += 64;
            if (blk >= len)
                break;
            /* The run already holds blk - start bytes: give up as soon as it
             * cannot fit (the overflow fast path). */
            if (d + 1 + (blk - start) > dlen)
                return -1;
            diff = XBZ_PATH(block_diff)(old, new_page, blk, len);
            same = ~diff;
        }
        size_t end = same ? blk + (size_t)__builtin_ctzll(same) : len;
        size_t nzrun = end - start;
        if (nzrun > XBZ_MAX_RUN || d + uleb_size(nzrun) + nzrun > dlen)
            return -1;
        d += uleb_put(dst + d, nzrun);
        copy_small(dst + d, new_page + start, nzrun);
        d += nzrun;
        if (end >= len)
            return (ssize_t)d;
        run_start = end;
        diff &= ~UINT64_C(0) << (end - blk);
    }
}

static int XBZ_PATH(is_zero)(const uint8_t *p, size_t len)
{
    size_t i = 0;
    for (; i + 256 <= len; i += 256)
        if (!XBZ_PATH(zero256)(p + i))
            return 0;
    return is_zero_tail(p + i, len - i);
}
