/* A model of QEMU's plain (non-SIMD) XBZRLE encoder and decoder, written
 * from the algorithm of QEMU's migration/xbzrle.c, for the codec benchmark
 * only: it shows our codec next to QEMU's in the same run on the same
 * pages.  Nothing in the save or load loop uses it. */
#ifndef XBZ_CODEC_QEMU_H
#define XBZ_CODEC_QEMU_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* QEMU's xbzrle_encode_buffer: the delta of old -> new_page (len bytes,
 * a multiple of 8) into dst, at most dlen bytes; 0 when equal, -1 on
 * overflow.  Writes nothing past dst + dlen. */
ssize_t xbz_qemu_plain_encode(const uint8_t *old, const uint8_t *new_page, size_t len,
                              uint8_t *dst, size_t dlen);

/* QEMU's xbzrle_decode_buffer: applies delta (dlen bytes) onto page
 * (page_len bytes) in one pass, checking as it goes (a refused delta may
 * leave the page half written, as in QEMU).  Returns the decoded length
 * (the end of the last run) or -1. */
ssize_t xbz_qemu_plain_decode(const uint8_t *delta, size_t dlen, uint8_t *page, size_t page_len);

#endif
