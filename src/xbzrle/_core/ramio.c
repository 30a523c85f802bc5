/* The per-page loops of a migration: the source's save loop and the
 * destination's load loop, both over QEMU's RAM page records.
 *
 * The save loop walks a dirty bitmap, decides per page between ZERO, PAGE
 * (normal) and XBZRLE records, keeps the XBZRLE cache in step, and writes the
 * records into a caller-owned output buffer until it is nearly full.  Every
 * decision for a page is taken on a private copy of it, so a workload writing
 * the page concurrently cannot make the bytes sent, the bytes cached and the
 * bytes the destination ends with disagree (the page is dirty again, and the
 * next round sends the difference).
 *
 * The load loop parses page records from a received buffer and applies them
 * to the destination's RAM, validating each record completely before it
 * touches memory.  It stops at anything that is not a page record and lets the
 * Python stream parser handle it.
 *
 * Both loops run without the GIL. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cache.h"
#include "codec.h"
#include "parts.h"

#define PAGE 4096u
#define F_ZERO 0x02u
#define F_MEM_SIZE 0x04u
#define F_PAGE 0x08u
#define F_EOS 0x10u
#define F_CONTINUE 0x20u
#define F_XBZRLE 0x40u
#define ENCODING_XBZRLE 0x01u
#define MAX_HEADER (8u + 1u + 255u)
#define MAX_RECORD (MAX_HEADER + 3u + PAGE)

enum save_mode { MODE_PLAIN = 0, MODE_XBZRLE = 1, MODE_LAST = 2 };

enum { C_SCANNED, C_ZERO, C_NORMAL, C_XBZRLE, C_UNCHANGED, C_OVERFLOW, C_MISS,
       C_XBZRLE_BYTES, C_WIRE, C_COUNT };

static const uint8_t zero_page[PAGE];

static inline void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static inline uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

typedef struct {
    uint8_t *out;
    size_t pos, cap;
    const uint8_t *name;
    size_t name_len;
    int cont;
} writer_t;

/* Page record header: be64 offset|flags, then the block name unless the
 * previous record was in the same block. */
static inline size_t put_header(writer_t *w, uint64_t offset, unsigned flags)
{
    uint8_t *p = w->out + w->pos;
    if (w->cont) {
        put_be64(p, offset | flags | F_CONTINUE);
        return 8;
    }
    put_be64(p, offset | flags);
    p[8] = (uint8_t)w->name_len;
    memcpy(p + 9, w->name, w->name_len);
    return 9 + w->name_len;
}

static inline void emit_zero(writer_t *w, uint64_t offset, uint64_t *c)
{
    size_t h = put_header(w, offset, F_ZERO);
    w->out[w->pos + h] = 0;
    w->pos += h + 1;
    w->cont = 1;
    c[C_ZERO]++;
}

static inline void emit_normal(writer_t *w, uint64_t offset, const uint8_t *data, uint64_t *c)
{
    size_t h = put_header(w, offset, F_PAGE);
    memcpy(w->out + w->pos + h, data, PAGE);
    w->pos += h + PAGE;
    w->cont = 1;
    c[C_NORMAL]++;
}

static PyObject *cache_type_error(void)
{
    PyErr_SetString(PyExc_TypeError, "cache must be an xbzrle.PageCache of the compiled backend");
    return NULL;
}


static PyObject *stream_error(const char *msg, Py_ssize_t offset)
{
    PyObject *mod = PyImport_ImportModule("xbzrle.errors");
    if (mod == NULL)
        return NULL;
    PyObject *cls = PyObject_GetAttrString(mod, "StreamError");
    Py_DECREF(mod);
    if (cls == NULL)
        return NULL;
    PyObject *exc = PyObject_CallFunction(cls, "sn", msg, offset);
    Py_DECREF(cls);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* One dirty page of the save loop.  Returns 0, or -1 when out of room. */
static inline void save_one(writer_t *w, const uint8_t *page, uint64_t offset, uint64_t addr,
                            int mode, xbz_cache *cache, uint8_t *scratch, uint64_t *c)
{
    if (mode == MODE_PLAIN || cache == NULL) {
        if (xbz_is_zero(page, PAGE))
            emit_zero(w, offset, c);
        else
            emit_normal(w, offset, page, c);
        return;
    }
    /* A private copy: every decision below is taken on the same bytes. */
    memcpy(scratch, page, PAGE);
    if (xbz_is_zero(scratch, PAGE)) {
        /* Refresh the cached copy too, or the next delta is against stale bytes. */
        if (mode == MODE_XBZRLE)
            xbz_cache_insert(cache, addr, zero_page);
        emit_zero(w, offset, c);
        return;
    }
    uint8_t *cached = xbz_cache_lookup(cache, addr);
    if (cached == NULL) {
        c[C_MISS]++;
        if (mode == MODE_XBZRLE)
            xbz_cache_insert(cache, addr, scratch);
        emit_normal(w, offset, scratch, c);
        return;
    }
    size_t h = put_header(w, offset, F_XBZRLE);
    uint8_t *rec = w->out + w->pos;
    ssize_t n = xbz_encode(cached, scratch, PAGE, rec + h + 3, PAGE);
    if (n == 0) {
        c[C_UNCHANGED]++;
        return; /* nothing to send: the destination already holds these bytes */
    }
    if (mode == MODE_XBZRLE)
        memcpy(cached, scratch, PAGE);
    if (n < 0) {
        c[C_OVERFLOW]++;
        c[C_XBZRLE_BYTES] += PAGE;
        emit_normal(w, offset, scratch, c);
        return;
    }
    rec[h] = ENCODING_XBZRLE;
    rec[h + 1] = (uint8_t)(n >> 8);
    rec[h + 2] = (uint8_t)n;
    w->pos += h + 3 + (size_t)n;
    w->cont = 1;
    c[C_XBZRLE]++;
    c[C_XBZRLE_BYTES] += (uint64_t)n + 3;
}

static PyObject *counts_tuple(const uint64_t *c)
{
    PyObject *t = PyTuple_New(C_COUNT);
    if (t == NULL)
        return NULL;
    for (int i = 0; i < C_COUNT; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(c[i]);
        if (v == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

PyDoc_STRVAR(save_pages_doc,
"save_pages(out, pos, ram, bitmap, start_page, name, addr_base, mode, cache, cont)\n"
"    -> (pos, next_page, cont, counts)\n\n"
"Write page records for the dirty pages of one RAM block into out[pos:],\n"
"clearing their bits, until out has no room for another record or the\n"
"bitmap is exhausted.  mode: 0 plain, 1 XBZRLE, 2 XBZRLE last stage (cache\n"
"left alone).  cache: PageCache or None.  cont: the previous record was in\n"
"this block (CONTINUE).  counts: scanned, zero, normal, xbzrle, unchanged,\n"
"overflow, cache_miss, xbzrle_bytes, wire_bytes.");

static PyObject *save_pages(PyObject *self, PyObject *args)
{
    Py_buffer out, ram, bitmap, name;
    Py_ssize_t pos, start_page;
    unsigned long long addr_base;
    int mode, cont;
    PyObject *cache_obj, *result = NULL;
    uint64_t c[C_COUNT] = {0};

    if (!PyArg_ParseTuple(args, "w*ny*w*ny*KiOp", &out, &pos, &ram, &bitmap, &start_page,
                          &name, &addr_base, &mode, &cache_obj, &cont))
        return NULL;

    xbz_cache *cache = NULL;
    size_t npages = (size_t)ram.len / PAGE;
    size_t nwords = (npages + 63) / 64;
    if (cache_obj != Py_None) {
        if (!PyObject_TypeCheck(cache_obj, &XbzPageCache_Type)) {
            cache_type_error();
            goto done;
        }
        cache = &((XbzPageCacheObject *)cache_obj)->cache;
        if (cache->page_size != PAGE) {
            PyErr_SetString(PyExc_ValueError, "cache page size must be 4096");
            goto done;
        }
    }
    if (ram.len % PAGE != 0 || (size_t)bitmap.len < nwords * 8 || name.len > 255 ||
        mode < MODE_PLAIN || mode > MODE_LAST || pos < 0 || pos > out.len || start_page < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "save_pages: bad arguments (ram not whole pages, bitmap too short, "
                        "name over 255 bytes, bad mode or position)");
        goto done;
    }

    writer_t w = {out.buf, (size_t)pos, (size_t)out.len, name.buf, (size_t)name.len, cont};
    uint64_t *words = bitmap.buf;
    const uint8_t *base = ram.buf;
    size_t page = (size_t)start_page;
    uint8_t *scratch = NULL;
    if (cache != NULL && mode != MODE_PLAIN) {
        scratch = PyMem_RawMalloc(PAGE);
        if (scratch == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }

    Py_BEGIN_ALLOW_THREADS
    size_t wi = page / 64;
    while (wi < nwords && w.cap - w.pos >= MAX_RECORD) {
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
        words[wi] &= ~(1ULL << (p % 64));
        uint64_t offset = (uint64_t)p * PAGE;
        save_one(&w, base + offset, offset, addr_base + offset, mode, cache, scratch, c);
        c[C_SCANNED]++;
        page = p + 1;
        if (page % 64 == 0)
            wi++;
    }
    if (wi >= nwords)
        page = npages;
    Py_END_ALLOW_THREADS

    PyMem_RawFree(scratch);
    c[C_WIRE] = w.pos - (size_t)pos;
    PyObject *counts = counts_tuple(c);
    if (counts != NULL)
        result = Py_BuildValue("nnON", (Py_ssize_t)w.pos, (Py_ssize_t)page,
                               w.cont ? Py_True : Py_False, counts);
done:
    PyBuffer_Release(&out);
    PyBuffer_Release(&ram);
    PyBuffer_Release(&bitmap);
    PyBuffer_Release(&name);
    return result;
}

/* ---------------------------------------------------------------- load -- */

enum { L_NEED_DATA = 0, L_OTHER = 2 };

typedef struct {
    const uint8_t *name;
    size_t name_len;
    uint8_t *host;
    size_t size;
    uint8_t *maybe_data; /* optional: 0 for a page known to be zero, else 1 */
} load_block_t;

typedef struct {
    const char *msg;
    size_t offset;
} load_error_t;

/* Parse and apply page records from buf[pos:end].  Returns the status; *pos
 * advances past every record applied; *last is the CONTINUE block. */
static int load_loop(const uint8_t *buf, size_t *pos_io, size_t end, load_block_t *blocks,
                     size_t nblocks, Py_ssize_t *last, int xbzrle_ok, uint64_t *c,
                     load_error_t *err)
{
    size_t pos = *pos_io;
    int status = L_NEED_DATA;
    for (;;) {
        size_t p = pos;
        if (end - p < 8)
            break;
        uint64_t word = get_be64(buf + p);
        unsigned flags = (unsigned)(word & (PAGE - 1));
        uint64_t offset = word & ~(uint64_t)(PAGE - 1);
        unsigned kind = flags & ~F_CONTINUE;
        if (kind != F_ZERO && kind != F_PAGE && kind != F_XBZRLE) {
            status = L_OTHER;
            break;
        }
        p += 8;
        Py_ssize_t bi;
        if (flags & F_CONTINUE) {
            if (*last < 0) {
                err->msg = "page record with CONTINUE but no previous block";
                err->offset = pos;
                return -1;
            }
            bi = *last;
        } else {
            if (end - p < 1)
                break;
            size_t len = buf[p];
            if (end - p < 1 + len)
                break;
            bi = -1;
            for (size_t i = 0; i < nblocks; i++) {
                if (blocks[i].name_len == len && memcmp(blocks[i].name, buf + p + 1, len) == 0) {
                    bi = (Py_ssize_t)i;
                    break;
                }
            }
            if (bi < 0) {
                err->msg = "page record names an unknown RAM block";
                err->offset = p;
                return -1;
            }
            p += 1 + len;
        }
        load_block_t *b = &blocks[bi];
        if (offset >= b->size || b->size - offset < PAGE) {
            err->msg = "page offset lies outside its RAM block";
            err->offset = pos;
            return -1;
        }
        uint8_t *host = b->host + offset;
        uint8_t *maybe = b->maybe_data ? b->maybe_data + offset / PAGE : NULL;
        if (kind == F_ZERO) {
            if (end - p < 1)
                break;
            uint8_t fill = buf[p];
            p += 1;
            /* A page known to be zero is not even read: reading never-touched
             * memory faults, and would populate nothing but cost time. */
            if (fill != 0 || ((maybe == NULL || *maybe) && !xbz_is_zero(host, PAGE))) {
                memset(host, fill, PAGE);
                if (maybe)
                    *maybe = 1;
            }
            c[C_ZERO]++;
        } else if (kind == F_PAGE) {
            if (end - p < PAGE)
                break;
            memcpy(host, buf + p, PAGE);
            if (maybe)
                *maybe = 1;
            p += PAGE;
            c[C_NORMAL]++;
        } else {
            if (end - p < 3)
                break;
            if (buf[p] != ENCODING_XBZRLE) {
                err->msg = "XBZRLE page with a wrong encoding byte (expected 0x01)";
                err->offset = p;
                return -1;
            }
            if (!xbzrle_ok) {
                err->msg = "received an XBZRLE page but the xbzrle capability is not enabled "
                           "on the destination";
                err->offset = pos;
                return -1;
            }
            size_t len = ((size_t)buf[p + 1] << 8) | buf[p + 2];
            if (len > PAGE) {
                err->msg = "XBZRLE page length over the page size";
                err->offset = p + 1;
                return -1;
            }
            if (end - p - 3 < len)
                break;
            size_t eoff;
            const char *reason;
            if (xbz_decode_check(buf + p + 3, len, PAGE, &eoff, &reason) != 0) {
                err->msg = reason;
                err->offset = p + 3 + eoff;
                return -1;
            }
            xbz_decode_apply(buf + p + 3, len, host);
            if (maybe)
                *maybe = 1;
            p += 3 + len;
            c[C_XBZRLE]++;
        }
        *last = bi;
        c[C_SCANNED]++;
        c[C_WIRE] += p - pos;
        pos = p;
    }
    *pos_io = pos;
    return status;
}

PyDoc_STRVAR(load_pages_doc,
"load_pages(buf, pos, blocks, last, xbzrle_ok, base_offset) -> (pos, last, status, counts)\n\n"
"Apply page records from buf[pos:] to the destination's RAM.  blocks: a\n"
"sequence of (name: bytes, ram: writable buffer[, maybe_data: writable buffer\n"
"of one byte per page, 0 = known zero, kept up to date]).  last: index of the block\n"
"CONTINUE refers to, or -1.  status: 0 need more data, 2 a record that is\n"
"not a page (EOS, MEM_SIZE...: left for the stream parser).\n"
"Raises StreamError with the stream offset (base_offset + position) on a\n"
"malformed record; nothing of that record is written.");

static PyObject *load_pages(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t pos, last, base_offset;
    PyObject *blocks_obj, *result = NULL, *seq = NULL;
    int xbzrle_ok;
    uint64_t c[C_COUNT] = {0};

    if (!PyArg_ParseTuple(args, "y*nOnpn", &buf, &pos, &blocks_obj, &last, &xbzrle_ok,
                          &base_offset))
        return NULL;
    seq = PySequence_Fast(blocks_obj, "blocks must be a sequence of (name, buffer)");
    if (seq == NULL) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    load_block_t *blocks = PyMem_Calloc((size_t)n + 1, sizeof(*blocks));
    Py_buffer *names = PyMem_Calloc((size_t)n + 1, sizeof(Py_buffer));
    Py_buffer *rams = PyMem_Calloc((size_t)n + 1, sizeof(Py_buffer));
    Py_buffer *maps = PyMem_Calloc((size_t)n + 1, sizeof(Py_buffer));
    Py_ssize_t got = 0;
    if (blocks == NULL || names == NULL || rams == NULL || maps == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, got);
        maps[got].obj = NULL;
        if (!PyArg_ParseTuple(item, "y*w*|w*", &names[got], &rams[got], &maps[got]))
            goto done;
        blocks[got] = (load_block_t){names[got].buf, (size_t)names[got].len, rams[got].buf,
                                     (size_t)rams[got].len, NULL};
        if (maps[got].obj != NULL) {
            if ((size_t)maps[got].len < (size_t)rams[got].len / PAGE) {
                PyErr_SetString(PyExc_ValueError, "load_pages: maybe_data map shorter than the block");
                got++;
                goto done;
            }
            blocks[got].maybe_data = maps[got].buf;
        }
    }
    if (pos < 0 || pos > buf.len || last >= n) {
        PyErr_SetString(PyExc_ValueError, "load_pages: position or last block out of range");
        goto done;
    }
    size_t p = (size_t)pos;
    load_error_t err = {NULL, 0};
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = load_loop(buf.buf, &p, (size_t)buf.len, blocks, (size_t)n, &last, xbzrle_ok, c,
                       &err);
    Py_END_ALLOW_THREADS
    if (status < 0) {
        char msg[256];
        PyOS_snprintf(msg, sizeof msg, "stream offset %zd: %s",
                      base_offset + (Py_ssize_t)err.offset, err.msg);
        stream_error(msg, base_offset + (Py_ssize_t)err.offset);
        goto done;
    }
    PyObject *counts = counts_tuple(c);
    if (counts != NULL)
        result = Py_BuildValue("nniN", (Py_ssize_t)p, last, status, counts);
done:
    for (Py_ssize_t i = 0; i < got; i++) {
        PyBuffer_Release(&names[i]);
        PyBuffer_Release(&rams[i]);
        if (maps[i].obj != NULL)
            PyBuffer_Release(&maps[i]);
    }
    PyMem_Free(maps);
    PyMem_Free(blocks);
    PyMem_Free(names);
    PyMem_Free(rams);
    Py_DECREF(seq);
    PyBuffer_Release(&buf);
    return result;
}

/* -------------------------------------------------------------- digest -- */

/* A fast 64-bit page hash: four independent multiply-rotate lanes over the
 * page's 64-bit words, then mixed.  Not cryptographic: it exists to catch a
 * migration that lost or garbled a page, at memory speed. */
#define K1 0x9E3779B185EBCA87ULL
#define K2 0xC2B2AE3D27D4EB4FULL
#define K3 0x165667B19E3779F9ULL

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t lane(uint64_t acc, uint64_t w)
{
    return rotl64(acc + w * K2, 31) * K1;
}

static uint64_t page_hash(const uint8_t *p, uint64_t index)
{
    uint64_t a = K1 + K2 + index, b = K2 + index, c = index, d = index - K1;
    const uint64_t *w = (const uint64_t *)p;
    for (size_t i = 0; i < PAGE / 8; i += 4) {
        uint64_t w0, w1, w2, w3;
        memcpy(&w0, w + i, 8);
        memcpy(&w1, w + i + 1, 8);
        memcpy(&w2, w + i + 2, 8);
        memcpy(&w3, w + i + 3, 8);
        a = lane(a, w0);
        b = lane(b, w1);
        c = lane(c, w2);
        d = lane(d, w3);
    }
    uint64_t h = rotl64(a, 1) + rotl64(b, 7) + rotl64(c, 12) + rotl64(d, 18);
    h ^= h >> 33;
    h *= K2;
    h ^= h >> 29;
    h *= K3;
    h ^= h >> 32;
    return h;
}

typedef struct {
    const uint8_t *base;
    const unsigned char *resident; /* NULL: treat every page as resident */
    size_t first, last;             /* page range [first, last) */
    uint64_t index_base;            /* page index of base's first page */
    uint64_t *out;                  /* 2 words per non-zero page: index, hash */
    size_t count;
} digest_job_t;

static void *digest_worker(void *arg)
{
    digest_job_t *job = arg;
    size_t n = 0;
    for (size_t p = job->first; p < job->last; p++) {
        if (job->resident != NULL && !(job->resident[p] & 1))
            continue; /* never populated: reads as zero, costs nothing to skip */
        const uint8_t *page = job->base + p * PAGE;
        if (xbz_is_zero(page, PAGE))
            continue;
        job->out[2 * (job->first + n)] = job->index_base + p;
        job->out[2 * (job->first + n) + 1] = page_hash(page, job->index_base + p);
        n++;
    }
    job->count = n;
    return NULL;
}

PyDoc_STRVAR(page_hashes_doc,
"page_hashes(ram, first_index=0) -> bytes\n\n"
"(page index, 64-bit hash) pairs, little-endian uint64, for every non-zero\n"
"page of ram, in page order.  Zero pages are left out, so never-touched\n"
"memory is skipped without being read (mincore) and two RAMs with equal\n"
"contents give equal results however they were populated.  Two threads.\n"
"first_index numbers ram's first page, so a large RAM can be hashed in\n"
"pieces (only the pieces that hold data) with the same result.");

static PyObject *page_hashes(PyObject *self, PyObject *args)
{
    Py_buffer ram;
    unsigned long long index_base = 0;
    if (!PyArg_ParseTuple(args, "y*|K", &ram, &index_base))
        return NULL;
    PyObject *result = NULL;
    size_t npages = (size_t)ram.len / PAGE;
    uint64_t *out = NULL;
    unsigned char *resident = NULL;
    if ((size_t)ram.len % PAGE != 0) {
        PyErr_SetString(PyExc_ValueError, "page_hashes: RAM must be whole 4 KiB pages");
        goto done;
    }
    out = PyMem_RawMalloc(npages ? npages * 16 : 16);
    if (out == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    long host_page = sysconf(_SC_PAGESIZE);
    if (host_page == (long)PAGE && ((uintptr_t)ram.buf % PAGE) == 0 && npages) {
        resident = PyMem_RawMalloc(npages);
        if (resident != NULL && mincore(ram.buf, (size_t)ram.len, resident) != 0) {
            PyMem_RawFree(resident);
            resident = NULL;
        }
    }
    digest_job_t jobs[2] = {
        {ram.buf, resident, 0, npages / 2, index_base, out, 0},
        {ram.buf, resident, npages / 2, npages, index_base, out, 0},
    };
    size_t total = 0;
    Py_BEGIN_ALLOW_THREADS
    pthread_t helper;
    int threaded = npages >= 4096 && pthread_create(&helper, NULL, digest_worker, &jobs[1]) == 0;
    digest_worker(&jobs[0]);
    if (threaded)
        pthread_join(helper, NULL);
    else
        digest_worker(&jobs[1]);
    /* Close the gap between the two halves' results. */
    memmove(out + 2 * jobs[0].count, out + 2 * jobs[1].first, jobs[1].count * 16);
    total = jobs[0].count + jobs[1].count;
    Py_END_ALLOW_THREADS
#if PY_BIG_ENDIAN
#error "page_hashes assumes a little-endian host"
#endif
    result = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)(total * 16));
done:
    PyMem_RawFree(out);
    PyMem_RawFree(resident);
    PyBuffer_Release(&ram);
    return result;
}

/* ------------------------------------------------------------ data map -- */

PyDoc_STRVAR(data_map_doc,
"data_map(ram, swap) -> bytearray\n\n"
"One byte per 4 KiB page of an anonymous private mapping: 0 when the page\n"
"is not present (and, if swap is true, not swapped out either), so it reads\n"
"as zero; 1 otherwise.  From /proc/self/pagemap, without touching the pages.\n"
"Pass swap=True whenever swap is configured: userfaultfd's markers on\n"
"never-touched pages look like swap entries, so without swap they are told\n"
"apart from data only by the absence of swap.  When pagemap cannot be read,\n"
"every byte is 1 (no page is assumed zero).");

static PyObject *data_map(PyObject *self, PyObject *args)
{
    Py_buffer ram;
    int swap;
    if (!PyArg_ParseTuple(args, "y*p", &ram, &swap))
        return NULL;
    size_t npages = (size_t)ram.len / PAGE;
    PyObject *out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)npages);
    if (out == NULL) {
        PyBuffer_Release(&ram);
        return NULL;
    }
    uint8_t *map = (uint8_t *)PyByteArray_AS_STRING(out);
    memset(map, 1, npages);
    int ok = 0;
    if (sysconf(_SC_PAGESIZE) == (long)PAGE && ((uintptr_t)ram.buf % PAGE) == 0 && npages) {
        Py_BEGIN_ALLOW_THREADS
        int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            enum { CHUNK = 4096 };
            uint64_t entries[CHUNK];
            ok = 1;
            for (size_t first = 0; first < npages && ok; first += CHUNK) {
                size_t n = npages - first < CHUNK ? npages - first : CHUNK;
                off_t where = (off_t)(((uintptr_t)ram.buf / PAGE + first) * 8);
                if (pread(fd, entries, n * 8, where) != (ssize_t)(n * 8)) {
                    ok = 0;
                    break;
                }
                for (size_t i = 0; i < n; i++)
                    map[first + i] = (entries[i] >> 63) || (swap && ((entries[i] >> 62) & 1));
            }
            close(fd);
        }
        if (!ok)
            memset(map, 1, npages);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&ram);
    return out;
}

static PyMethodDef ramio_methods[] = {
    {"data_map", data_map, METH_VARARGS, data_map_doc},
    {"page_hashes", page_hashes, METH_VARARGS, page_hashes_doc},
    {"save_pages", save_pages, METH_VARARGS, save_pages_doc},
    {"load_pages", load_pages, METH_VARARGS, load_pages_doc},
    {NULL, NULL, 0, NULL},
};

int xbz_ramio_register(PyObject *module)
{
    if (PyModule_AddFunctions(module, ramio_methods) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "SAVE_PLAIN", MODE_PLAIN) < 0 ||
        PyModule_AddIntConstant(module, "SAVE_XBZRLE", MODE_XBZRLE) < 0 ||
        PyModule_AddIntConstant(module, "SAVE_LAST", MODE_LAST) < 0 ||
        PyModule_AddIntConstant(module, "SAVE_MAX_RECORD", MAX_RECORD) < 0 ||
        PyModule_AddIntConstant(module, "LOAD_NEED_DATA", L_NEED_DATA) < 0 ||
        PyModule_AddIntConstant(module, "LOAD_OTHER", L_OTHER) < 0)
        return -1;
    return 0;
}
