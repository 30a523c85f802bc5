/* A test guest that keeps its memory dirty, as the seed's load generator does.
 *
 * Pages that change by a few bytes per round are exactly what XBZRLE sends
 * as small deltas.  The sparse markers give later rounds some pages that are
 * written once and never again, so a reader must keep earlier rounds' data. */

#ifndef LOAD_BASE
#define LOAD_BASE 0x00400000u   /* 4 MiB: above the kernel image */
#endif
#ifndef LOAD_SPAN
#define LOAD_SPAN (16u << 20)   /* the seed's 16 MiB */
#endif
#ifndef MARK_BASE
#define MARK_BASE 0x01600000u   /* 22 MiB: beyond the loaded span */
#endif
#define MARK_COUNT 48u
#define MARK_STRIDE 0x20000u    /* one marked page every 128 KiB */
#define STRIDE 1024u

typedef unsigned int u32;

void guest_main(void);

static void mark_sparse_pages(void)
{
    for (u32 i = 0; i < MARK_COUNT; i++) {
        volatile u32 *page = (volatile u32 *)(MARK_BASE + i * MARK_STRIDE);
        page[i % 1024u] = 0x58425a00u | i;   /* "XBZ" + index, at a varying spot */
    }
}

void guest_main(void)
{
    volatile unsigned char *buf = (volatile unsigned char *)LOAD_BASE;
    mark_sparse_pages();
    for (;;) {
        for (u32 i = 0; i < LOAD_SPAN / STRIDE; i++)
            buf[i * STRIDE]++;
    }
}
