/* The per-page loops of a migration, over QEMU's RAM page records: what the
 * save loop (save.c) and the load loop (load.c) share.
 *
 * The record layout: a be64 word "page offset | flags", then, unless the
 * CONTINUE flag says "same block as the previous record", a length byte and
 * the block name; then the payload (ZERO: one fill byte; PAGE: the page;
 * XBZRLE: the encoding byte 0x01, a be16 length and the delta).  The flag
 * values are exported to Python (RAM_SAVE_FLAG_*) and a test checks them
 * against xbzrle.stream.constants.
 *
 * Both loops run without the GIL; they count what they did in a
 * uint64_t[XBZ_C_COUNT] that Python receives as a LoopCounts structure with
 * the field names of xbzrle.stream.counts.BatchCounts. */
#ifndef XBZ_LOOPS_H
#define XBZ_LOOPS_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

#define XBZ_PAGE 4096u
#define XBZ_F_ZERO 0x02u
#define XBZ_F_MEM_SIZE 0x04u
#define XBZ_F_PAGE 0x08u
#define XBZ_F_EOS 0x10u
#define XBZ_F_CONTINUE 0x20u
#define XBZ_F_XBZRLE 0x40u
#define XBZ_ENCODING_XBZRLE 0x01u
/* offset|flags, name length, a name of up to 255 bytes */
#define XBZ_MAX_HEADER (8u + 1u + 255u)
/* the largest record: a header and a whole page (an XBZRLE record's 3 bytes
 * plus a delta that may not exceed a page are covered by the same bound) */
#define XBZ_MAX_RECORD (XBZ_MAX_HEADER + 3u + XBZ_PAGE)

/* Indexes of the counts array; the order of LoopCounts' fields. */
enum {
    XBZ_C_SCANNED,      /* pages handled */
    XBZ_C_ZERO,         /* ZERO records */
    XBZ_C_NORMAL,       /* PAGE records (misses and overflows included) */
    XBZ_C_XBZRLE,       /* XBZRLE records */
    XBZ_C_UNCHANGED,    /* cache hits with an empty delta: nothing sent */
    XBZ_C_OVERFLOW,     /* cache hits whose delta overflowed: sent whole */
    XBZ_C_MISS,         /* pages not in the cache */
    XBZ_C_XBZRLE_BYTES, /* XBZRLE records' bytes (delta + 3) + a page per overflow */
    XBZ_C_WIRE,         /* bytes of records produced or consumed */
    XBZ_C_SKIPPED,      /* cache hits sent whole without encoding: overflow back-off */
    XBZ_C_ENCODE_NS,    /* nanoseconds inside the XBZRLE encoder, timed runs only */
    XBZ_C_ENCODE_TIMED, /* encoder runs timed (a sample: see save_one) */
    XBZ_C_COUNT
};

static inline void xbz_put_be64(uint8_t *p, uint64_t v)
{
    v = __builtin_bswap64(v);
    __builtin_memcpy(p, &v, 8);
}

static inline uint64_t xbz_get_be64(const uint8_t *p)
{
    uint64_t v;
    __builtin_memcpy(&v, p, 8);
    return __builtin_bswap64(v);
}

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "xbz_put_be64/xbz_get_be64 assume a little-endian host"
#endif

/* A new LoopCounts from counts[XBZ_C_COUNT]; NULL with an exception. */
PyObject *xbz_loop_counts(const uint64_t *counts);

int xbz_save_register(PyObject *module);
int xbz_load_register(PyObject *module);

#endif
