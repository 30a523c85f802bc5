/* XBZRLE codec: the C API the save and load loops call directly.
 *
 * A delta is a sequence of (zero run length, non-zero run length, bytes)
 * triples, lengths in ULEB128 limited to 14 bits (one or two bytes), exactly
 * as QEMU encodes it.  None of these functions needs the GIL. */
#ifndef XBZ_CODEC_H
#define XBZ_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define XBZ_MAX_PAGE_SIZE 16384

/* XOR delta of old -> new (len bytes) into dst (dlen capacity). Returns the encoded
 * length, 0 when identical, -1 when the encoding would exceed dlen. No GIL needed.
 * new_page may be written by other threads meanwhile: each structural decision
 * comes from one read of each byte, so the delta is always well formed and only
 * touches bytes that differed when read (see the invariant in codec_template.h). */
ssize_t xbz_encode(const uint8_t *old, const uint8_t *new_page, size_t len,
                   uint8_t *dst, size_t dlen);
/* 0 when delta is valid for a page of page_len bytes; else -1 and *err_offset,
 * *err_reason (static string) are set. */
int xbz_decode_check(const uint8_t *delta, size_t dlen, size_t page_len,
                     size_t *err_offset, const char **err_reason);
/* Apply a delta that xbz_decode_check accepted. */
void xbz_decode_apply(const uint8_t *delta, size_t dlen, uint8_t *page);
/* 1 when all len bytes are zero. */
int xbz_is_zero(const uint8_t *p, size_t len);

#endif
