/* The source's save loop: dirty pages of one RAM block -> page records.
 *
 * The loop walks a dirty bitmap, decides per page between ZERO, PAGE
 * (normal) and XBZRLE records, keeps the XBZRLE cache in step, and writes the
 * records into a caller-owned output buffer until it is nearly full.  It
 * reads the live guest page once and takes no private copy: the bytes sent
 * and the bytes cached agree because the cache is always updated from what
 * was sent (see save_one), so a workload writing the page concurrently
 * cannot make the cache and the destination disagree.  Runs without the GIL. */
#include "loops.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>

#include "cache.h"
#include "codec.h"
#include "codec_internal.h"
#include "guest.h"

/* MODE_QEMU_COPY is QEMU's design (a private copy of the page, the zero
 * check and the encode on the copy, the copy written into the cache): the
 * same records as MODE_XBZRLE, kept so that benchmarks/pipeline.py measures
 * both designs in one run.  The migration never uses it. */
enum save_mode { MODE_PLAIN = 0, MODE_XBZRLE = 1, MODE_LAST = 2, MODE_QEMU_COPY = 3 };

static const uint8_t zero_page[XBZ_PAGE];

/* A page referenced instead of copied (the zero-copy path): its payload
 * belongs on the wire at header-buffer position `pos`, and is the guest's
 * page at `ram_offset` of the block. */
typedef struct {
    uint64_t pos, ram_offset;
} page_ref_t;

typedef struct {
    uint8_t *out;
    size_t pos, cap;
    const uint8_t *name;
    size_t name_len;
    int cont;
    /* Zero-copy: PAGE payloads are recorded in refs[] instead of copied into
     * out; `referenced` counts their bytes, so that the buffer fills (and the
     * stream is cut into sections) exactly where the copy path would cut it. */
    page_ref_t *refs;
    size_t nrefs, refs_cap, referenced;
} writer_t;

/* Wire bytes produced so far, copied or referenced. */
static inline size_t wire_used(const writer_t *w)
{
    return w->pos + w->referenced;
}

/* Page record header: be64 offset|flags, then the block name unless the
 * previous record was in the same block. */
static inline size_t put_header(writer_t *w, uint64_t offset, unsigned flags)
{
    uint8_t *p = w->out + w->pos;
    if (w->cont) {
        xbz_put_be64(p, offset | flags | XBZ_F_CONTINUE);
        return 8;
    }
    xbz_put_be64(p, offset | flags);
    p[8] = (uint8_t)w->name_len;
    memcpy(p + 9, w->name, w->name_len);
    return 9 + w->name_len;
}

static inline void emit_zero(writer_t *w, uint64_t offset, uint64_t *c)
{
    size_t h = put_header(w, offset, XBZ_F_ZERO);
    w->out[w->pos + h] = 0;
    w->pos += h + 1;
    w->cont = 1;
    c[XBZ_C_ZERO]++;
}

/* A PAGE record; returns the bytes that go on the wire (the copy in the
 * record, or the guest page itself when referenced). */
static inline const uint8_t *emit_normal(writer_t *w, uint64_t offset, const uint8_t *data,
                                         uint64_t *c)
{
    size_t h = put_header(w, offset, XBZ_F_PAGE);
    if (w->refs != NULL) {
        /* Only in modes where nothing else reads the record back (plain
         * rounds, last stage): the payload is sent from guest RAM later. */
        w->pos += h;
        w->refs[w->nrefs].pos = w->pos;
        w->refs[w->nrefs].ram_offset = offset;
        w->nrefs++;
        w->referenced += XBZ_PAGE;
        w->cont = 1;
        c[XBZ_C_NORMAL]++;
        return data;
    }
    uint8_t *copy = w->out + w->pos + h;
    memcpy(copy, data, XBZ_PAGE);
    w->pos += h + XBZ_PAGE;
    w->cont = 1;
    c[XBZ_C_NORMAL]++;
    return copy;
}

/* The digest table (see xbz_digest_hash): slot is this page's entry or NULL.
 * It takes the hash of what the destination holds once the record is
 * applied: the bytes of a PAGE record (hashed while they are in cache, just
 * before the kernel copies them), the cached copy after an XBZRLE delta
 * (the cache equals the destination), 0 after a ZERO record.  The callers
 * found the page not zero already, so the page hash is taken without the
 * digest hash's zero check (a page that turned zero meanwhile hashes to 0
 * all the same). */
static inline void note_sent(uint64_t *slot, const uint8_t *bytes)
{
    if (slot != NULL)
        *slot = xbz_page_hash(bytes); /* known not zero, or hashing to 0 if it became so */
}

static inline void note_zero(uint64_t *slot)
{
    if (slot != NULL)
        *slot = 0;
}

/* Overflow back-off, one byte per page of the block (owned by the caller):
 * the high nibble is the back-off level, the low nibble the number of times
 * the page is still to be sent whole without running the encoder.  A page
 * whose delta overflows (rewritten wholesale) climbs a level and skips the
 * encoder the next 1, 2, 4, then 8 times it is dirty; a page that encodes
 * (or is unchanged) drops back to level 0.  Encoding a page that overflows
 * costs a whole encoder pass for nothing: the page goes out whole anyway. */
#define BACKOFF_MAX_LEVEL 4

static inline void backoff_overflowed(uint8_t *b)
{
    unsigned level = (unsigned)(*b >> 4) + 1;
    if (level > BACKOFF_MAX_LEVEL)
        level = BACKOFF_MAX_LEVEL;
    *b = (uint8_t)(level << 4 | (1u << (level - 1)));
}

/* Close an XBZRLE record whose header (h bytes) and n-byte delta are already
 * at w->out + w->pos: the encoding byte, the be16 delta length, the counts. */
static inline void finish_xbzrle(writer_t *w, size_t h, size_t n, uint64_t *c)
{
    uint8_t *rec = w->out + w->pos;
    rec[h] = XBZ_ENCODING_XBZRLE;
    rec[h + 1] = (uint8_t)(n >> 8);
    rec[h + 2] = (uint8_t)n;
    w->pos += h + 3 + n;
    w->cont = 1;
    c[XBZ_C_XBZRLE]++;
    c[XBZ_C_XBZRLE_BYTES] += (uint64_t)n + 3;
}

/* The dirty page after the one being saved, and its cached copy (its own
 * bytes again when it has none): the encoder asks for their first lines
 * while it works on this page, so that the next page's first loads do not
 * wait for their address translation and the memory behind them.  page
 * NULL: no next dirty page near. */
struct next_pair {
    const uint8_t *old, *page;
};

/* How many bitmap words past the current page the next dirty page is
 * looked for: a page further away than that is not worth the search (the
 * prefetch would only help its first lines). */
#define NEXT_PAIR_WORDS 4

/* Fill ahead with the dirty page after page p (whose bit is already clear)
 * and its cached copy, if one is near; the cache is only peeked at (no
 * counters, no ages). */
static inline void find_next_pair(struct next_pair *ahead, const uint64_t *words, size_t nwords,
                                  size_t p, size_t npages, const uint8_t *base,
                                  uint64_t addr_base, const xbz_cache *cache)
{
    size_t q = p + 1, wq = q / 64;
    size_t stop = wq + NEXT_PAIR_WORDS < nwords ? wq + NEXT_PAIR_WORDS : nwords;
    for (; wq < stop; wq++) {
        uint64_t bits = words[wq];
        if (wq == q / 64)
            bits &= ~0ULL << (q % 64);
        if (bits == 0)
            continue;
        size_t next = wq * 64 + (size_t)__builtin_ctzll(bits);
        if (next >= npages)
            return;
        uint64_t addr = addr_base + (uint64_t)next * XBZ_PAGE;
        size_t slot = xbz_cache_slot(cache, addr);
        ahead->page = base + (uint64_t)next * XBZ_PAGE;
        ahead->old = cache->addrs[slot] == addr ? xbz_cache_page(cache, slot) : ahead->page;
        return;
    }
}

/* The first dirty page at or after page q, or npages when none is left
 * (bits past the block's last page count as none). */
static inline size_t next_dirty(const uint64_t *words, size_t nwords, size_t q, size_t npages)
{
    for (size_t wq = q / 64; wq < nwords; wq++) {
        uint64_t bits = words[wq];
        if (wq == q / 64)
            bits &= ~0ULL << (q % 64);
        if (bits != 0) {
            size_t next = wq * 64 + (size_t)__builtin_ctzll(bits);
            return next < npages ? next : npages;
        }
    }
    return npages;
}

/* Plain zero-copy rounds with a digest table, four dirty pages at a time
 * (pages[i] at page index at[i]): one read of each page tells whether it is
 * zero and gives its hash (xbz_page_hash4).  The one-page path reads a
 * zero page whole for the zero check alone (one stream from memory) and a
 * data page's first line for the zero check, then the whole page again for
 * the hash: zero pages now cost a four-stream read (256 MiB of them: 9.6-10.3
 * -> 10.2-11.2 GB/s), random pages the same as before (the hash's reads from
 * memory were already the bound).  The records are those the one-page path
 * writes for the same pages: the caller takes a group only when that path
 * would have taken all four (room for four records and four references). */
static inline void save_plain4(writer_t *w, const uint8_t *base, const size_t at[4],
                               uint64_t *hashes, uint64_t *c)
{
    const uint8_t *pages[4];
    uint64_t hash[4];
    for (int i = 0; i < 4; i++)
        pages[i] = base + (uint64_t)at[i] * XBZ_PAGE;
    unsigned zeros = xbz_page_hash4(pages, hash);
    for (int i = 0; i < 4; i++) {
        uint64_t offset = (uint64_t)at[i] * XBZ_PAGE;
        if (zeros & (1u << i))
            emit_zero(w, offset, c);
        else
            emit_normal(w, offset, pages[i], c);
        hashes[at[i]] = hash[i]; /* 0 for a zero page */
    }
}

/* Encode cached -> page into the record being written at w->out + w->pos + h
 * + 3 (the delta's place), at most a page of delta as QEMU allows, asking
 * for the next page pair's lines (ahead, see next_pair) and, in XBZRLE
 * rounds (follow), bringing the cached page up to date from the delta as it
 * is written (xbz_encode_follow).  The encoder writes in fixed-size blocks
 * past its result: with XBZ_ENCODE_SLACK bytes of room beyond the largest
 * delta it writes straight into the record, and only near the end of the
 * buffer (where that room is missing) into a scratch page, copied into the
 * record after.  The bytes past the delta are not part of the stream: the
 * next record (or the caller's section tail) overwrites them.  slot (NULL,
 * or the page's digest table entry, which holds the hash of the cached
 * page, as the cache equals the destination): when following, the encoder
 * keeps it up to date run by run if the delta is small, and *hashed says it
 * did. */
static inline ssize_t encode_into_record(writer_t *w, size_t h, uint8_t *cached,
                                         const uint8_t *page, int follow, uint64_t *slot,
                                         const struct next_pair *ahead, int *hashed)
{
    uint8_t *delta = w->out + w->pos + h + 3;
    if (w->cap - w->pos >= h + 3 + XBZ_PAGE + XBZ_ENCODE_SLACK)
        return xbz_encode_follow(cached, page, XBZ_PAGE, delta, XBZ_PAGE, follow, slot, hashed,
                                 ahead->old, ahead->page);
    uint8_t scratch[XBZ_PAGE + XBZ_ENCODE_SLACK];
    ssize_t n = xbz_encode_follow(cached, page, XBZ_PAGE, scratch, XBZ_PAGE, follow, slot, hashed,
                                  ahead->old, ahead->page);
    if (n > 0)
        memcpy(delta, scratch, (size_t)n);
    return n;
}

/* One dirty page of the save loop (backoff: this page's back-off byte or NULL).
 *
 * The guest may write the page while this runs (the rounds before the
 * switch-over).  No private copy is taken; instead every byte that reaches
 * the wire reaches the cache through the same bytes:
 *   - zero: the ZERO record and a zeroed cache slot;
 *   - miss or overflow: the page is copied once into the record, and the
 *     cache is filled from the record;
 *   - delta: encoded straight from the live page (the encoder takes each
 *     structural decision from one read of each byte, so the delta is
 *     well formed whatever the guest does); the cached copy takes each
 *     run's bytes from the delta as the encoder writes them, which is
 *     what the destination's decoder does to its page.
 * A write that lands during any of this dirties the page again, and the next
 * round sends the difference.  In the last stage (MODE_LAST) the guest is
 * stopped and the cache is left alone. */
static inline void save_one(writer_t *w, const uint8_t *page, uint64_t offset, uint64_t addr,
                            int mode, xbz_cache *cache, uint8_t *backoff, uint64_t *slot,
                            const struct next_pair *ahead, xbz_page_hash_queue *hashq,
                            uint64_t *c)
{
    if (xbz_is_zero(page, XBZ_PAGE)) {
        /* Refresh the cached copy too, or the next delta is against stale bytes. */
        if (mode == MODE_XBZRLE && cache != NULL)
            xbz_cache_insert(cache, addr, zero_page);
        emit_zero(w, offset, c);
        note_zero(slot);
        return;
    }
    if (mode == MODE_PLAIN || cache == NULL) {
        const uint8_t *sent = emit_normal(w, offset, page, c);
        if (slot != NULL && w->refs != NULL)
            xbz_page_hash_queue_add(hashq, sent, slot); /* from memory: four at a time */
        else
            note_sent(slot, sent);
        return;
    }
    uint8_t *cached = xbz_cache_lookup(cache, addr);
    if (cached == NULL) {
        c[XBZ_C_MISS]++;
        note_sent(slot, emit_normal(w, offset, page, c));
        if (mode == MODE_XBZRLE)
            xbz_cache_insert(cache, addr, w->out + w->pos - XBZ_PAGE);
        return;
    }
    if (backoff != NULL && (*backoff & 0x0f) != 0) {
        /* Backing off: the page goes whole without the encoder, and the
         * cache takes the bytes sent (XBZRLE rounds never use refs), so the
         * delta is right the day the encoder is tried again. */
        *backoff -= 1;
        c[XBZ_C_SKIPPED]++;
        note_sent(slot, emit_normal(w, offset, page, c));
        if (mode == MODE_XBZRLE)
            memcpy(cached, w->out + w->pos - XBZ_PAGE, XBZ_PAGE);
        return;
    }
    size_t h = put_header(w, offset, XBZ_F_XBZRLE);
    /* The encoder's own time (x-encode-time), sampled: the runs on every
     * 32nd page of the block are timed, and Python scales their sum by
     * runs / timed runs.  A clock read costs 40-100 ns here, a run
     * 0.3-1 us: timing every run would slow the loop it measures.  (Sampling
     * by page, not by the order of runs in a call, keeps the sample apart
     * from where calls start: a call's first run is a cold one.)  One page
     * never takes the encoder 50 us; a run that did was preempted, and counts
     * 50 us, not the other process's slice. */
    int timed = ((offset / XBZ_PAGE) & 31) == 0;
    struct timespec t0, t1;
    if (timed)
        clock_gettime(CLOCK_MONOTONIC, &t0);
    int hashed;
    ssize_t n = encode_into_record(w, h, cached, page, mode == MODE_XBZRLE, slot, ahead, &hashed);
    if (timed) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        int64_t run_ns = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
        c[XBZ_C_ENCODE_NS] += (uint64_t)(run_ns < 50000 ? run_ns : 50000);
        c[XBZ_C_ENCODE_TIMED]++;
    }
    if (n == 0) {
        if (backoff != NULL)
            *backoff = 0; /* it encodes again: back to trying every time */
        c[XBZ_C_UNCHANGED]++;
        return; /* nothing to send: the destination already holds these bytes (and slot
                   already holds their hash) */
    }
    if (n > 0) {
        if (backoff != NULL)
            *backoff = 0;
        finish_xbzrle(w, h, (size_t)n, c);
        /* The destination applies the delta to what the cache holds; in the last
         * stage the cache is left alone, but the guest is stopped, so the page
         * is exactly what the delta rebuilds.  (hashed: the encoder already
         * brought slot up to date with the runs it applied to the cache.) */
        if (!hashed)
            note_sent(slot, mode == MODE_XBZRLE ? cached : page);
        return;
    }
    /* Overflow: the page goes whole, and the cache takes the bytes sent. */
    if (backoff != NULL)
        backoff_overflowed(backoff);
    c[XBZ_C_OVERFLOW]++;
    c[XBZ_C_XBZRLE_BYTES] += XBZ_PAGE;
    note_sent(slot, emit_normal(w, offset, page, c));
    if (mode == MODE_XBZRLE)
        memcpy(cached, w->out + w->pos - XBZ_PAGE, XBZ_PAGE);
}

/* QEMU's design, for the benchmark only (see MODE_QEMU_COPY). */
static inline void save_one_copy(writer_t *w, const uint8_t *page, uint64_t offset,
                                 uint64_t addr, xbz_cache *cache, uint8_t *scratch,
                                 uint64_t *slot, uint64_t *c)
{
    memcpy(scratch, page, XBZ_PAGE);
    if (xbz_is_zero(scratch, XBZ_PAGE)) {
        xbz_cache_insert(cache, addr, zero_page);
        emit_zero(w, offset, c);
        note_zero(slot);
        return;
    }
    /* Every record below leaves the destination with the scratch copy's bytes. */
    uint8_t *cached = xbz_cache_lookup(cache, addr);
    if (cached == NULL) {
        c[XBZ_C_MISS]++;
        note_sent(slot, scratch);
        xbz_cache_insert(cache, addr, scratch);
        emit_normal(w, offset, scratch, c);
        return;
    }
    size_t h = put_header(w, offset, XBZ_F_XBZRLE);
    uint8_t *rec = w->out + w->pos;
    ssize_t n = xbz_encode(cached, scratch, XBZ_PAGE, rec + h + 3, XBZ_PAGE);
    if (n == 0) {
        c[XBZ_C_UNCHANGED]++;
        return;
    }
    note_sent(slot, scratch);
    memcpy(cached, scratch, XBZ_PAGE);
    if (n < 0) {
        c[XBZ_C_OVERFLOW]++;
        c[XBZ_C_XBZRLE_BYTES] += XBZ_PAGE;
        emit_normal(w, offset, scratch, c);
        return;
    }
    finish_xbzrle(w, h, (size_t)n, c);
}

PyDoc_STRVAR(save_pages_doc,
"save_pages($module, out, pos, ram, bitmap, start_page, name, addr_base, mode, cache,\n"
"           cont, refs=None, backoff=None, hashes=None, /)\n--\n\n"
"Returns (pos, next_page, cont, counts[, nrefs]).\n\n"
"Write page records for the dirty pages of one RAM block into out[pos:],\n"
"clearing their bits, until out has no room for another record or the\n"
"bitmap is exhausted.  mode: 0 plain, 1 XBZRLE, 2 XBZRLE last stage (cache\n"
"left alone), 3 XBZRLE the way QEMU does it (private copy; benchmarks only).  cache: PageCache or None.  cont: the previous record was in\n"
"this block (CONTINUE).  counts: a LoopCounts.\n\n"
"refs (a writable buffer, modes 0 and 2 only): zero-copy.  PAGE payloads are\n"
"not copied into out; each is recorded as a pair of native uint64 (position\n"
"in out where the payload belongs, offset of the page in ram) and the call\n"
"returns nrefs as a fifth item.  out then holds the headers and the other\n"
"records; write_records() sends both interleaved.  The buffer fills as if\n"
"the pages were copied, so the stream is byte for byte the copy path's.\n\n"
"backoff: None, or a writable buffer of one byte per page of the block for\n"
"the overflow back-off (all zero when a migration starts; the loop keeps it;\n"
"modes 1 and 2).\n\n"
"hashes: None, or a writable digest table of the block (one native uint64\n"
"per page): for each page it sends, the loop stores the hash of what the\n"
"destination holds once the record is applied (0 for a zero page); see\n"
"table_pairs().");

static PyObject *save_pages(PyObject *self, PyObject *args)
{
    Py_buffer out, ram, bitmap, name;
    Py_ssize_t pos, start_page;
    unsigned long long addr_base;
    int mode, cont;
    PyObject *cache_obj, *refs_obj = Py_None, *backoff_obj = Py_None, *hashes_obj = Py_None;
    PyObject *result = NULL;
    Py_buffer refs = {0}, backoff_buf = {0}, hashes_buf = {0};
    uint64_t c[XBZ_C_COUNT] = {0};

    if (!PyArg_ParseTuple(args, "w*ny*w*ny*KiOp|OOO", &out, &pos, &ram, &bitmap, &start_page,
                          &name, &addr_base, &mode, &cache_obj, &cont, &refs_obj,
                          &backoff_obj, &hashes_obj))
        return NULL;
    uint64_t *hashes = NULL;
    if (hashes_obj != Py_None) {
        if (PyObject_GetBuffer(hashes_obj, &hashes_buf, PyBUF_WRITABLE) < 0)
            goto done;
        hashes = hashes_buf.buf;
    }
    uint8_t *backoff = NULL;
    if (backoff_obj != Py_None) {
        if (PyObject_GetBuffer(backoff_obj, &backoff_buf, PyBUF_WRITABLE) < 0)
            goto done;
        backoff = backoff_buf.buf;
    }
    if (refs_obj != Py_None) {
        if (PyObject_GetBuffer(refs_obj, &refs, PyBUF_WRITABLE) < 0)
            goto done;
        if (mode != MODE_PLAIN && mode != MODE_LAST) {
            /* XBZRLE rounds fill the cache from the record: it must hold the bytes. */
            PyErr_SetString(PyExc_ValueError,
                            "save_pages: refs (zero-copy) only in plain rounds and the last stage");
            goto done;
        }
    }

    XbzPageCacheObject *cache_owner = NULL;
    xbz_cache *cache = NULL;
    size_t npages = (size_t)ram.len / XBZ_PAGE;
    size_t nwords = (npages + 63) / 64;
    if (cache_obj != Py_None) {
        if (!PyObject_TypeCheck(cache_obj, &XbzPageCache_Type)) {
            PyErr_SetString(PyExc_TypeError,
                            "cache must be an xbzrle.PageCache of the compiled backend");
            goto done;
        }
        cache_owner = (XbzPageCacheObject *)cache_obj;
        cache = &cache_owner->cache;
        if (cache->page_size != XBZ_PAGE) {
            PyErr_SetString(PyExc_ValueError, "cache page size must be 4096");
            goto done;
        }
        if (cache_owner->busy) {
            PyErr_SetString(PyExc_RuntimeError,
                            "PageCache is in use by another thread (resize or a save loop)");
            goto done;
        }
    }
    if (ram.len % XBZ_PAGE != 0 || (size_t)bitmap.len < nwords * 8 || name.len > 255 ||
        mode < MODE_PLAIN || mode > MODE_QEMU_COPY || pos < 0 || pos > out.len || start_page < 0 ||
        (backoff != NULL && (size_t)backoff_buf.len < npages) ||
        (hashes != NULL && ((size_t)hashes_buf.len / 8 < npages ||
                            (uintptr_t)hashes % sizeof(uint64_t) != 0))) {
        PyErr_SetString(PyExc_ValueError,
                        "save_pages: bad arguments (ram not whole pages, bitmap too short, "
                        "name over 255 bytes, bad mode or position, backoff shorter than "
                        "the block's pages, hashes not 8 aligned bytes per page)");
        goto done;
    }

    writer_t w = {out.buf, (size_t)pos, (size_t)out.len, name.buf, (size_t)name.len, cont,
                  NULL, 0, 0, 0};
    if (refs.buf != NULL) {
        w.refs = refs.buf;
        w.refs_cap = (size_t)refs.len / sizeof(page_ref_t);
    }
    uint64_t *words = bitmap.buf;
    const uint8_t *base = ram.buf;
    size_t page = (size_t)start_page;
    uint8_t scratch[XBZ_PAGE] __attribute__((aligned(64)));
    /* Zero-copy plain rounds hash the guest pages they send (read from
     * memory) four at a time: see xbz_page_hash4. */
    xbz_page_hash_queue hashq = {.n = 0};
    if (mode == MODE_QEMU_COPY && cache == NULL)
        mode = MODE_PLAIN;
    if (cache_owner != NULL)
        cache_owner->busy = 1;
    /* Plain zero-copy rounds with a table go four pages at a time (see
     * save_plain4): the one-page path's branch for them is save_one's
     * (mode == MODE_PLAIN || cache == NULL) with refs and a table. */
    int group_plain = (mode == MODE_PLAIN || cache == NULL) && w.refs != NULL && hashes != NULL;
    Py_BEGIN_ALLOW_THREADS
    size_t wi = page / 64;
    while (wi < nwords && wire_used(&w) <= w.cap && w.cap - wire_used(&w) >= XBZ_MAX_RECORD &&
           (w.refs == NULL || w.nrefs < w.refs_cap)) {
        uint64_t bits = words[wi];
        if (page % 64)
            bits &= ~0ULL << (page % 64);
        if (bits == 0) {
            wi++;
            page = wi * 64;
            continue;
        }
        size_t p = wi * 64 + (size_t)__builtin_ctzll(bits);
        if (p >= npages) {
            words[wi] &= (p % 64) ? ((1ULL << (p % 64)) - 1) : 0;
            wi = nwords;
            page = npages;
            break;
        }
        if (group_plain && w.nrefs + 4 <= w.refs_cap &&
            w.cap - wire_used(&w) >= 4 * (size_t)XBZ_MAX_RECORD) {
            size_t at[4] = {p, 0, 0, 0};
            int k = 1;
            for (; k < 4; k++) {
                at[k] = next_dirty(words, nwords, at[k - 1] + 1, npages);
                if (at[k] >= npages)
                    break;
            }
            if (k == 4) {
                for (int i = 0; i < 4; i++)
                    words[at[i] / 64] &= ~(1ULL << (at[i] % 64));
                save_plain4(&w, base, at, hashes, c);
                c[XBZ_C_SCANNED] += 4;
                page = at[3] + 1;
                wi = page / 64;
                continue;
            }
        }
        words[wi] &= ~(1ULL << (p % 64));
        uint64_t offset = (uint64_t)p * XBZ_PAGE;
        if (mode == MODE_QEMU_COPY) {
            save_one_copy(&w, base + offset, offset, addr_base + offset, cache, scratch,
                          hashes != NULL ? hashes + p : NULL, c);
        } else {
            struct next_pair ahead = {NULL, NULL};
            if (cache != NULL && mode != MODE_PLAIN)
                find_next_pair(&ahead, words, nwords, p, npages, base, addr_base, cache);
            save_one(&w, base + offset, offset, addr_base + offset, mode, cache,
                     backoff != NULL ? backoff + p : NULL, hashes != NULL ? hashes + p : NULL,
                     &ahead, &hashq, c);
        }
        c[XBZ_C_SCANNED]++;
        page = p + 1;
        if (page % 64 == 0)
            wi++;
    }
    if (wi >= nwords)
        page = npages;
    xbz_page_hash_queue_flush(&hashq);
    Py_END_ALLOW_THREADS
    if (cache_owner != NULL)
        cache_owner->busy = 0;

    c[XBZ_C_WIRE] = wire_used(&w) - (size_t)pos;
    PyObject *counts = xbz_loop_counts(c);
    if (counts != NULL) {
        if (w.refs != NULL)
            result = Py_BuildValue("nnONn", (Py_ssize_t)w.pos, (Py_ssize_t)page,
                                   w.cont ? Py_True : Py_False, counts, (Py_ssize_t)w.nrefs);
        else
            result = Py_BuildValue("nnON", (Py_ssize_t)w.pos, (Py_ssize_t)page,
                                   w.cont ? Py_True : Py_False, counts);
    }
done:
    if (refs.buf != NULL)
        PyBuffer_Release(&refs);
    if (backoff_buf.buf != NULL)
        PyBuffer_Release(&backoff_buf);
    if (hashes_buf.buf != NULL)
        PyBuffer_Release(&hashes_buf);
    PyBuffer_Release(&out);
    PyBuffer_Release(&ram);
    PyBuffer_Release(&bitmap);
    PyBuffer_Release(&name);
    return result;
}

/* writev() (or, into a pipe with splice_pages, vmsplice()) every iovec of
 * iov[0:n], resuming after partial writes; on a
 * non-blocking descriptor (a socket with a timeout) wait for room at most
 * timeout_ms each time (-1: no limit).  Returns 0, or -1 with errno set
 * (ETIMEDOUT when no byte could be written for timeout_ms). */
static int writev_all(int fd, struct iovec *iov, int n, int timeout_ms, int splice_pages)
{
    while (n > 0) {
        int batch = n < IOV_MAX ? n : IOV_MAX;
        ssize_t done = splice_pages ? vmsplice(fd, iov, (unsigned long)batch, 0)
                                    : writev(fd, iov, batch);
        if (done < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd pfd = {fd, POLLOUT, 0};
                int r = poll(&pfd, 1, timeout_ms);
                if (r == 0) {
                    errno = ETIMEDOUT;
                    return -1;
                }
                if (r < 0 && errno != EINTR)
                    return -1;
                continue;
            }
            return -1;
        }
        while (n > 0 && (size_t)done >= iov->iov_len) {
            done -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0 && done > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + done;
            iov->iov_len -= (size_t)done;
        }
    }
    return 0;
}

PyDoc_STRVAR(write_records_doc,
"write_records($module, fd, out, end, refs, nrefs, ram, timeout_ms=-1, splice=False,\n"
"              /)\n--\n\n"
"Returns the bytes written.\n\n"
"Send what save_pages(..., refs=...) produced: out[0:end] with each referenced\n"
"page of ram inserted at its position, in writev() calls (no copy in user\n"
"space: the kernel reads the payloads straight from guest RAM), or, with\n"
"splice and fd a pipe, in vmsplice() calls (no copy at all on this side: the\n"
"pipe references the guest's pages and its reader copies them out; out may be\n"
"reused at once, its bytes were copied aside).  splice is for a pipe whose\n"
"reader the caller waits for before it lets the guest run again.  The bytes are\n"
"those of the copy path.  A page the guest writes between the save loop's\n"
"zero check and this call goes out with whatever it holds when the kernel\n"
"(or the pipe's reader) copies it, as in QEMU, which also sends from guest RAM: the write dirtied\n"
"the page, so the next round sends it again (the last stage runs with the\n"
"guest stopped).  timeout_ms bounds a wait for room on a non-blocking fd.\n"
"Raises OSError (TimeoutError on a stall) without closing fd.");

static PyObject *write_records(PyObject *self, PyObject *args)
{
    int fd, timeout_ms = -1, splice = 0;
    Py_buffer out, refs, ram;
    Py_ssize_t end, nrefs;
    PyObject *result = NULL;
    struct iovec *iov = NULL;

    if (!PyArg_ParseTuple(args, "iy*ny*ny*|ip", &fd, &out, &end, &refs, &nrefs, &ram,
                          &timeout_ms, &splice))
        return NULL;
    const page_ref_t *r = refs.buf;
    if (end < 0 || end > out.len || nrefs < 0 ||
        (size_t)nrefs > (size_t)refs.len / sizeof(page_ref_t)) {
        PyErr_SetString(PyExc_ValueError, "write_records: end or nrefs out of range");
        goto done;
    }
    uint64_t prev = 0;
    for (Py_ssize_t i = 0; i < nrefs; i++) {
        if (r[i].pos < prev || r[i].pos > (uint64_t)end || r[i].ram_offset % XBZ_PAGE ||
            r[i].ram_offset > (uint64_t)ram.len - XBZ_PAGE || (size_t)ram.len < XBZ_PAGE) {
            PyErr_SetString(PyExc_ValueError, "write_records: a page reference out of range");
            goto done;
        }
        prev = r[i].pos;
    }
    iov = PyMem_Malloc(sizeof(struct iovec) * (2 * (size_t)nrefs + 1));
    if (iov == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int n = 0;
    prev = 0;
    struct stat st;
    uint8_t *heads = out.buf;
    size_t heads_len = 0;
    /* Into a pipe (exec:), the pages are not even copied: vmsplice() hangs the
     * guest's pages themselves in the pipe, and the reader copies them out.  The
     * headers go in from a private copy made for this call (the caller reuses
     * out at once), unmapped right away: the pipe holds its own references. */
    int splice_pages = splice && fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode) && end > 0;
    if (splice_pages) {
        heads_len = ((size_t)end + 4095) & ~(size_t)4095;
        heads = mmap(NULL, heads_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (heads == MAP_FAILED) {
            heads = out.buf;
            splice_pages = 0;
        } else {
            memcpy(heads, out.buf, (size_t)end);
        }
    }
    for (Py_ssize_t i = 0; i < nrefs; i++) {
        if (r[i].pos > prev)
            iov[n++] = (struct iovec){heads + prev, r[i].pos - prev};
        iov[n++] = (struct iovec){(uint8_t *)ram.buf + r[i].ram_offset, XBZ_PAGE};
        prev = r[i].pos;
    }
    if ((uint64_t)end > prev)
        iov[n++] = (struct iovec){heads + prev, (uint64_t)end - prev};
    int rc, err;
    Py_BEGIN_ALLOW_THREADS
    rc = writev_all(fd, iov, n, timeout_ms, splice_pages);
    err = errno;
    if (splice_pages)
        munmap(heads, heads_len);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        errno = err;
        PyErr_SetFromErrno(err == ETIMEDOUT ? PyExc_TimeoutError : PyExc_OSError);
        goto done;
    }
    result = PyLong_FromSize_t((size_t)end + (size_t)nrefs * XBZ_PAGE);
done:
    PyMem_Free(iov);
    PyBuffer_Release(&out);
    PyBuffer_Release(&refs);
    PyBuffer_Release(&ram);
    return result;
}

static PyMethodDef save_methods[] = {
    {"save_pages", save_pages, METH_VARARGS, save_pages_doc},
    {"write_records", write_records, METH_VARARGS, write_records_doc},
    {NULL, NULL, 0, NULL},
};

int xbz_save_register(PyObject *module)
{
    if (PyModule_AddFunctions(module, save_methods) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "SAVE_PLAIN", MODE_PLAIN) < 0 ||
        PyModule_AddIntConstant(module, "SAVE_XBZRLE", MODE_XBZRLE) < 0 ||
        PyModule_AddIntConstant(module, "SAVE_LAST", MODE_LAST) < 0 ||
        PyModule_AddIntConstant(module, "SAVE_QEMU_COPY", MODE_QEMU_COPY) < 0 ||
        PyModule_AddIntConstant(module, "SAVE_REF_SIZE", (long)sizeof(page_ref_t)) < 0)
        return -1;
    return 0;
}
