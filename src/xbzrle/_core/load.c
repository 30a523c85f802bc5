/* The destination's load loop: page records -> the destination's RAM.
 *
 * Parses page records from a received buffer and applies them to the RAM
 * blocks, validating each record completely before it touches memory.  It
 * stops at anything that is not a page record (EOS, MEM_SIZE, a section
 * header...) and leaves it to the Python stream parser.  Runs without the
 * GIL. */
#include "loops.h"

#include <string.h>
#include <sys/mman.h>

#include "codec.h"
#include "pyerrors.h"

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

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

static void populate(uint8_t *start, size_t len)
{
    /* Errors do not matter: a page not populated here faults in when written. */
    if (len != 0 && ((uintptr_t)start % XBZ_PAGE) == 0)
        (void)madvise(start, len, MADV_POPULATE_WRITE);
}

/* Populate, one madvise per run of adjacent pages, the pages that the PAGE
 * records in buf[pos:end] are about to write and that are not there yet.
 * Writing a never-touched page costs a page fault each; populating a run
 * costs one system call and the same kernel work without the fault entry and
 * exit (a quarter of the load loop's time on a fresh destination).  Only
 * pages that a PAGE record writes are populated, so memory still follows
 * what the stream carries.  Headers are read, not validated: load_loop
 * validates every record before it writes; a record this scan does not
 * understand ends the scan. */
static void populate_ahead(const uint8_t *buf, size_t pos, size_t end, load_block_t *blocks,
                           size_t nblocks, Py_ssize_t last)
{
    uint8_t *run = NULL;
    size_t run_len = 0;
    while (end - pos >= 8) {
        uint64_t word = xbz_get_be64(buf + pos);
        unsigned flags = (unsigned)(word & (XBZ_PAGE - 1));
        uint64_t offset = word & ~(uint64_t)(XBZ_PAGE - 1);
        unsigned kind = flags & ~XBZ_F_CONTINUE;
        size_t p = pos + 8;
        if (kind != XBZ_F_ZERO && kind != XBZ_F_PAGE && kind != XBZ_F_XBZRLE)
            break;
        if (!(flags & XBZ_F_CONTINUE)) {
            if (end - p < 1 || end - p - 1 < buf[p])
                break;
            size_t len = buf[p];
            last = -1;
            for (size_t i = 0; i < nblocks; i++) {
                if (blocks[i].name_len == len && memcmp(blocks[i].name, buf + p + 1, len) == 0) {
                    last = (Py_ssize_t)i;
                    break;
                }
            }
            p += 1 + len;
        }
        if (last < 0)
            break;
        load_block_t *b = &blocks[last];
        size_t payload;
        if (kind == XBZ_F_ZERO) {
            payload = 1;
        } else if (kind == XBZ_F_PAGE) {
            payload = XBZ_PAGE;
        } else {
            if (end - p < 3)
                break;
            payload = 3 + (((size_t)buf[p + 1] << 8) | buf[p + 2]);
        }
        if (end - p < payload)
            break;
        if (kind == XBZ_F_PAGE && offset < b->size && b->size - offset >= XBZ_PAGE &&
            (b->maybe_data == NULL || !b->maybe_data[offset / XBZ_PAGE])) {
            uint8_t *host = b->host + offset;
            if (run != NULL && run + run_len == host) {
                run_len += XBZ_PAGE;
            } else {
                populate(run, run_len);
                run = host;
                run_len = XBZ_PAGE;
            }
        }
        pos = p + payload;
    }
    populate(run, run_len);
}

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
        uint64_t word = xbz_get_be64(buf + p);
        unsigned flags = (unsigned)(word & (XBZ_PAGE - 1));
        uint64_t offset = word & ~(uint64_t)(XBZ_PAGE - 1);
        unsigned kind = flags & ~XBZ_F_CONTINUE;
        if (kind != XBZ_F_ZERO && kind != XBZ_F_PAGE && kind != XBZ_F_XBZRLE) {
            status = L_OTHER;
            break;
        }
        p += 8;
        Py_ssize_t bi;
        if (flags & XBZ_F_CONTINUE) {
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
        if (offset >= b->size || b->size - offset < XBZ_PAGE) {
            err->msg = "page offset lies outside its RAM block";
            err->offset = pos;
            return -1;
        }
        uint8_t *host = b->host + offset;
        uint8_t *maybe = b->maybe_data ? b->maybe_data + offset / XBZ_PAGE : NULL;
        if (kind == XBZ_F_ZERO) {
            if (end - p < 1)
                break;
            uint8_t fill = buf[p];
            p += 1;
            /* A page known to be zero is not even read: reading never-touched
             * memory faults, and would populate nothing but cost time. */
            if (fill != 0 || ((maybe == NULL || *maybe) && !xbz_is_zero(host, XBZ_PAGE))) {
                memset(host, fill, XBZ_PAGE);
                if (maybe)
                    *maybe = 1;
            }
            c[XBZ_C_ZERO]++;
        } else if (kind == XBZ_F_PAGE) {
            if (end - p < XBZ_PAGE)
                break;
            memcpy(host, buf + p, XBZ_PAGE);
            if (maybe)
                *maybe = 1;
            p += XBZ_PAGE;
            c[XBZ_C_NORMAL]++;
        } else {
            if (end - p < 3)
                break;
            if (buf[p] != XBZ_ENCODING_XBZRLE) {
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
            if (len > XBZ_PAGE) {
                err->msg = "XBZRLE page length over the page size";
                err->offset = p + 1;
                return -1;
            }
            if (end - p - 3 < len)
                break;
            size_t eoff;
            const char *reason;
            if (xbz_decode_check(buf + p + 3, len, XBZ_PAGE, &eoff, &reason) != 0) {
                err->msg = reason;
                err->offset = p + 3 + eoff;
                return -1;
            }
            xbz_decode_apply(buf + p + 3, len, host);
            if (maybe)
                *maybe = 1;
            p += 3 + len;
            c[XBZ_C_XBZRLE]++;
        }
        *last = bi;
        c[XBZ_C_SCANNED]++;
        c[XBZ_C_WIRE] += p - pos;
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
    uint64_t c[XBZ_C_COUNT] = {0};

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
            if ((size_t)maps[got].len < (size_t)rams[got].len / XBZ_PAGE) {
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
    populate_ahead(buf.buf, p, (size_t)buf.len, blocks, (size_t)n, last);
    status = load_loop(buf.buf, &p, (size_t)buf.len, blocks, (size_t)n, &last, xbzrle_ok, c,
                       &err);
    Py_END_ALLOW_THREADS
    if (status < 0) {
        char msg[256];
        PyOS_snprintf(msg, sizeof msg, "stream offset %zd: %s",
                      base_offset + (Py_ssize_t)err.offset, err.msg);
        xbz_raise_at("StreamError", msg, base_offset + (Py_ssize_t)err.offset);
        goto done;
    }
    PyObject *counts = xbz_loop_counts(c);
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


/* The analyzer's count-only scan: the page records of buf[pos:end] are
 * parsed as the stream parser's Python path parses them (flags, block name,
 * offset inside the block, XBZRLE encoding byte and length), nothing is
 * written.  It stops, leaving the record to the Python parser, at any record
 * that path would reject (so the error text and offset are the parser's
 * own), at any record that is not a page, at an incomplete record and, when
 * ordered, at a record whose (block index, offset) is not after the previous
 * one's: the analyzer starts a new round there. */
typedef struct {
    const uint8_t *name;
    size_t name_len;
    uint64_t size;
} scan_block_t;

enum { S_ZERO = 0, S_NORMAL, S_XBZRLE };

static void scan_loop(const uint8_t *buf, size_t *pos_io, size_t end, const scan_block_t *blocks,
                      size_t nblocks, Py_ssize_t *last, int ordered, Py_ssize_t *prev_bi,
                      uint64_t *prev_off, uint64_t pages[3], uint64_t bytes[3])
{
    size_t pos = *pos_io;
    for (;;) {
        size_t p = pos;
        if (end - p < 8)
            break;
        uint64_t word = xbz_get_be64(buf + p);
        unsigned flags = (unsigned)(word & (XBZ_PAGE - 1));
        uint64_t offset = word & ~(uint64_t)(XBZ_PAGE - 1);
        unsigned kind = flags & ~XBZ_F_CONTINUE;
        if (kind != XBZ_F_ZERO && kind != XBZ_F_PAGE && kind != XBZ_F_XBZRLE)
            break;
        p += 8;
        Py_ssize_t bi;
        if (flags & XBZ_F_CONTINUE) {
            bi = *last;
        } else {
            if (end - p < 1)
                break;
            size_t len = buf[p];
            if (end - p < 1 + len)
                break;
            bi = -1;
            if (*last >= 0 && blocks[*last].name_len == len &&
                memcmp(blocks[*last].name, buf + p + 1, len) == 0) {
                bi = *last;
            } else {
                for (size_t i = 0; i < nblocks; i++) {
                    if (blocks[i].name_len == len &&
                        memcmp(blocks[i].name, buf + p + 1, len) == 0) {
                        bi = (Py_ssize_t)i;
                        break;
                    }
                }
            }
            p += 1 + len;
        }
        if (bi < 0)
            break; /* CONTINUE with no block, or an unknown name: the parser's error */
        const scan_block_t *b = &blocks[bi];
        if (offset >= b->size || b->size - offset < XBZ_PAGE)
            break;
        if (ordered && *prev_bi != -2 &&
            (bi < *prev_bi || (bi == *prev_bi && offset <= *prev_off)))
            break;
        int k;
        if (kind == XBZ_F_ZERO) {
            if (end - p < 1)
                break;
            p += 1;
            k = S_ZERO;
        } else if (kind == XBZ_F_PAGE) {
            if (end - p < XBZ_PAGE)
                break;
            p += XBZ_PAGE;
            k = S_NORMAL;
        } else {
            if (end - p < 3 || buf[p] != XBZ_ENCODING_XBZRLE)
                break;
            size_t len = ((size_t)buf[p + 1] << 8) | buf[p + 2];
            if (len > XBZ_PAGE || end - p - 3 < len)
                break;
            p += 3 + len;
            k = S_XBZRLE;
        }
        pages[k]++;
        bytes[k] += p - pos;
        *last = bi;
        *prev_bi = bi;
        *prev_off = offset;
        pos = p;
    }
    *pos_io = pos;
}

PyDoc_STRVAR(scan_pages_doc,
"scan_pages(buf, pos, blocks, last, ordered, prev_block, prev_offset)\n"
"    -> (pos, last, prev_block, prev_offset, pages, wire_bytes)\n\n"
"Count the page records of buf[pos:] without applying them (xbzrle analyze).\n"
"blocks: a sequence of (name: bytes, size: int).  last: the CONTINUE block\n"
"index or -1.  prev_block/prev_offset: the position of the previous page\n"
"record (prev_block -2: none); with ordered, the scan stops at a record not\n"
"after it.  pages and wire_bytes: (zero, normal, xbzrle) tuples.  The scan\n"
"stops, without raising, at anything the stream parser must handle itself:\n"
"a record that is not a page, incomplete, or malformed.");

static PyObject *scan_pages(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t pos, last, prev_bi;
    unsigned long long prev_off;
    int ordered;
    PyObject *blocks_obj, *result = NULL, *seq = NULL;

    if (!PyArg_ParseTuple(args, "y*nOnpnK", &buf, &pos, &blocks_obj, &last, &ordered, &prev_bi,
                          &prev_off))
        return NULL;
    seq = PySequence_Fast(blocks_obj, "blocks must be a sequence of (name, size)");
    if (seq == NULL) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    scan_block_t *blocks = PyMem_Calloc((size_t)n + 1, sizeof(*blocks));
    if (blocks == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *name;
        unsigned long long size;
        /* The names stay alive in the list for the whole call (no GIL release). */
        if (!PyArg_ParseTuple(item, "SK", &name, &size))
            goto done;
        blocks[i] = (scan_block_t){(const uint8_t *)PyBytes_AS_STRING(name),
                                   (size_t)PyBytes_GET_SIZE(name), (uint64_t)size};
    }
    if (pos < 0 || pos > buf.len || last < -1 || last >= n || prev_bi < -2 || prev_bi >= n) {
        PyErr_SetString(PyExc_ValueError, "scan_pages: position or block index out of range");
        goto done;
    }
    size_t p = (size_t)pos;
    uint64_t pages[3] = {0}, bytes[3] = {0}, poff = prev_off;
    scan_loop(buf.buf, &p, (size_t)buf.len, blocks, (size_t)n, &last, ordered, &prev_bi, &poff,
              pages, bytes);
    result = Py_BuildValue("nnnK(KKK)(KKK)", (Py_ssize_t)p, last, prev_bi,
                           (unsigned long long)poff, (unsigned long long)pages[0],
                           (unsigned long long)pages[1], (unsigned long long)pages[2],
                           (unsigned long long)bytes[0], (unsigned long long)bytes[1],
                           (unsigned long long)bytes[2]);
done:
    PyMem_Free(blocks);
    Py_DECREF(seq);
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef load_methods[] = {
    {"load_pages", load_pages, METH_VARARGS, load_pages_doc},
    {"scan_pages", scan_pages, METH_VARARGS, scan_pages_doc},
    {NULL, NULL, 0, NULL},
};

int xbz_load_register(PyObject *module)
{
    if (PyModule_AddFunctions(module, load_methods) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "LOAD_NEED_DATA", L_NEED_DATA) < 0 ||
        PyModule_AddIntConstant(module, "LOAD_OTHER", L_OTHER) < 0)
        return -1;
    return xbz_error_type("StreamError") == NULL ? -1 : 0;
}
