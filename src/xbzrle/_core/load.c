/* The destination's load loop: page records -> the destination's RAM.
 *
 * Parses page records from a received buffer and applies them to the RAM
 * blocks, validating each record completely before it touches memory.  It
 * stops at anything that is not a page record (EOS, MEM_SIZE, a section
 * header...) and leaves it to the Python stream parser.  Runs without the
 * GIL. */
#include "loops.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "codec.h"
#include "codec_internal.h"
#include "guest.h"
#include "pyerrors.h"

enum { L_NEED_DATA = 0, L_OTHER = 2 };

typedef struct {
    const uint8_t *name;
    size_t name_len;
    uint8_t *host;
    size_t size;
    uint8_t *maybe_data; /* optional: 0 for a page known to be zero, else 1 */
    uint64_t *hashes;    /* optional digest table: xbz_digest_hash of every page written */
    int fd;              /* -1, or a descriptor of the file `host` maps: PAGE records are
                          * written into it with pwritev (see page_batch_t) */
} load_block_t;

typedef struct {
    const char *msg;
    size_t offset;
    int write_errno;   /* a failed pwritev: its errno (msg NULL) */
    Py_ssize_t block;  /* ... and the block it wrote */
} load_error_t;

/* Full pages bound for a block file, not yet written: runs of PAGE records
 * whose pages follow each other in one file, as iovecs pointing into the
 * received buffer, written with one pwritev per run.
 *
 * Why not memcpy through the mapping: on tmpfs (and any file system) the
 * first store to a page of a new sparse file faults, allocates the page and
 * zeroes it, and only then is the page copied over; a write(2) that covers
 * the whole page allocates it without zeroing and without a fault per page.
 * The mapping and the file share the page cache, so both stay coherent, as
 * long as nothing reads or writes a page through the mapping while its
 * write is still pending here: page_batch_covers says when to flush first.
 * The iovecs point into the caller's buffer: load_pages flushes before it
 * returns, on every path. */
#ifdef IOV_MAX
#define XBZ_BATCH_PAGES (IOV_MAX < 1024 ? IOV_MAX : 1024)
#else
#define XBZ_BATCH_PAGES 16
#endif

typedef struct {
    Py_ssize_t block; /* -1: nothing pending */
    int fd;
    uint64_t start;   /* file offset of the first page */
    int n;
    struct iovec iov[XBZ_BATCH_PAGES];
    /* The digest table entries of the pages (NULL entries: no table), to be
     * set with their hashes when the batch is written (see hash_batch). */
    uint64_t *slots[XBZ_BATCH_PAGES];
    int hashes_pending;
} page_batch_t;

/* Batches of at least this many pages to hash are hashed by a second
 * thread while the first one writes them: both read the same pages from
 * memory (a stream file's mapped pages come from RAM, not from the CPU's
 * cache), and on a machine with a free core the hash then costs nothing
 * on the way (extract --checksum ram-digest; a thread start costs about
 * as much as hashing a few pages). */
#define XBZ_BATCH_HASH_THREAD_PAGES 64

typedef struct {
    const struct iovec *pages; /* a copy: a short write trims the batch's own */
    uint64_t *const *slots;
    int n;
} hash_job_t;

static void *hash_batch(void *arg)
{
    const hash_job_t *job = arg;
    xbz_page_hash_queue q = {.n = 0};
    for (int i = 0; i < job->n; i++)
        if (job->slots[i] != NULL)
            xbz_page_hash_queue_add(&q, job->pages[i].iov_base, job->slots[i]);
    xbz_page_hash_queue_flush(&q);
    return NULL;
}

static int page_batch_write(page_batch_t *batch, load_error_t *err);

/* Write what is pending, and set the digest table entries of its pages
 * (on a second thread while the write runs, when there are many).  Returns
 * 0, or -1 with err->write_errno set. */
static int page_batch_flush(page_batch_t *batch, load_error_t *err)
{
    if (!batch->hashes_pending)
        return page_batch_write(batch, err);
    batch->hashes_pending = 0;
    struct iovec queued[XBZ_BATCH_PAGES];
    memcpy(queued, batch->iov, sizeof(struct iovec) * (size_t)batch->n);
    hash_job_t job = {queued, batch->slots, batch->n};
    pthread_t helper;
    if (batch->n < XBZ_BATCH_HASH_THREAD_PAGES ||
        pthread_create(&helper, NULL, hash_batch, &job) != 0) {
        hash_batch(&job);
        return page_batch_write(batch, err);
    }
    int status = page_batch_write(batch, err);
    pthread_join(helper, NULL);
    return status;
}

/* pwritev the pending pages.  Returns 0, or -1 with err->write_errno set. */
static int page_batch_write(page_batch_t *batch, load_error_t *err)
{
    struct iovec *iov = batch->iov;
    int left = batch->n;
    off_t at = (off_t)batch->start;
    while (left > 0) {
        ssize_t done = pwritev(batch->fd, iov, left, at);
        if (done < 0 && errno == EINTR)
            continue;
        if (done <= 0) {
            /* a write that makes no progress without an errno: say so */
            err->write_errno = done < 0 ? errno : EIO;
            err->block = batch->block;
            batch->block = -1;
            batch->n = 0;
            return -1;
        }
        at += done;
        /* a short write: skip the iovecs written, trim the one cut */
        while (left > 0 && (size_t)done >= iov->iov_len) {
            done -= (ssize_t)iov->iov_len;
            iov++;
            left--;
        }
        if (left > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + done;
            iov->iov_len -= (size_t)done;
        }
    }
    batch->block = -1;
    batch->n = 0;
    return 0;
}

/* True when the page at `offset` of block `bi` is waiting in the batch. */
static inline int page_batch_covers(const page_batch_t *batch, Py_ssize_t bi, uint64_t offset)
{
    return batch->block == bi && offset >= batch->start &&
           offset - batch->start < (uint64_t)batch->n * XBZ_PAGE;
}

/* Queue the page at buf for `offset` of block bi, flushing first when it
 * does not extend the pending run.  Returns 0, or -1 (write failed). */
static inline int page_batch_add(page_batch_t *batch, Py_ssize_t bi, int fd, uint64_t offset,
                                 const uint8_t *page, uint64_t *slot, load_error_t *err)
{
    if (batch->block != -1 &&
        (batch->block != bi || batch->n == XBZ_BATCH_PAGES ||
         offset != batch->start + (uint64_t)batch->n * XBZ_PAGE)) {
        if (page_batch_flush(batch, err) < 0)
            return -1;
    }
    if (batch->block == -1) {
        batch->block = bi;
        batch->fd = fd;
        batch->start = offset;
    }
    batch->iov[batch->n].iov_base = (void *)page;
    batch->iov[batch->n].iov_len = XBZ_PAGE;
    batch->slots[batch->n] = slot;
    batch->hashes_pending |= slot != NULL;
    batch->n++;
    return 0;
}

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
        if (kind == XBZ_F_PAGE && b->fd < 0 && offset < b->size && b->size - offset >= XBZ_PAGE &&
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

/* The head of the record at buf[p]: its page offset and flags.  Returns 0
 * when fewer than 8 bytes are left, -1 when it is not a page record (ZERO,
 * PAGE or XBZRLE: the loops stop there and leave it to the parser), 1
 * otherwise.  One reading of the header for the load and the scan loops. */
static inline int page_record_head(const uint8_t *buf, size_t p, size_t end, uint64_t *offset,
                                   unsigned *flags)
{
    if (end - p < 8)
        return 0;
    uint64_t word = xbz_get_be64(buf + p);
    *flags = (unsigned)(word & (XBZ_PAGE - 1));
    *offset = word & ~(uint64_t)(XBZ_PAGE - 1);
    unsigned kind = *flags & ~XBZ_F_CONTINUE;
    return kind == XBZ_F_ZERO || kind == XBZ_F_PAGE || kind == XBZ_F_XBZRLE ? 1 : -1;
}

/* Parse and apply page records from buf[pos:end].  Returns the status; *pos
 * advances past every record applied; *last is the CONTINUE block. */
static int load_loop(const uint8_t *buf, size_t *pos_io, size_t end, load_block_t *blocks,
                     size_t nblocks, Py_ssize_t *last, int xbzrle_ok, uint64_t *c,
                     page_batch_t *batch, load_error_t *err)
{
    size_t pos = *pos_io;
    int status = L_NEED_DATA;
    for (;;) {
        size_t p = pos;
        uint64_t offset;
        unsigned flags;
        int head = page_record_head(buf, p, end, &offset, &flags);
        if (head == 0)
            break;
        unsigned kind = flags & ~XBZ_F_CONTINUE;
        if (head < 0) {
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
        /* The digest table's entry takes the hash of the page just written, while
         * it is in cache (a ZERO record: 0, the zero page's entry). */
        uint64_t *slot = b->hashes ? b->hashes + offset / XBZ_PAGE : NULL;
        /* ZERO and XBZRLE records read the old page through the mapping: its
         * pending write goes first (a PAGE record's own batching keeps order). */
        if (kind != XBZ_F_PAGE && page_batch_covers(batch, bi, offset) &&
            page_batch_flush(batch, err) < 0)
            return -1;
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
            if (slot)
                *slot = fill ? xbz_digest_hash(host) : 0;
            c[XBZ_C_ZERO]++;
        } else if (kind == XBZ_F_PAGE) {
            if (end - p < XBZ_PAGE)
                break;
            if (b->fd >= 0) {
                /* the slot takes the hash of the same bytes when they are written */
                if (page_batch_add(batch, bi, b->fd, offset, buf + p, slot, err) < 0)
                    return -1;
            } else if (slot) {
                /* one read of the record: copy and hash together */
                *slot = xbz_copy_page_hashed(host, buf + p);
            } else {
                memcpy(host, buf + p, XBZ_PAGE);
            }
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
            if (slot != NULL && len <= XBZ_HASH_APPLY_MAX) {
                xbz_decode_apply_hashed(buf + p + 3, len, host, slot);
            } else {
                xbz_decode_apply(buf + p + 3, len, host);
                if (slot)
                    *slot = xbz_digest_hash(host);
            }
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
"load_pages($module, buf, pos, blocks, last, xbzrle_ok, base_offset, /)\n--\n\n"
"Apply page records from buf[pos:] to the destination's RAM; returns\n"
"(pos, last, status, counts), counts a LoopCounts.  blocks: a\n"
"sequence of (name: bytes, ram: writable buffer[, maybe_data[, hashes[, fd]]]):\n"
"maybe_data, None or a writable buffer of one byte per page, 0 = known zero,\n"
"kept up to date; hashes, None or a digest table (one native uint64 per\n"
"page, see table_pairs) whose entry of every page written takes the page's\n"
"hash (0 for a zero page); fd, -1 or a descriptor of the file that ram maps\n"
"(MAP_SHARED): full pages are then written into it with pwritev, the rest\n"
"through ram, and every write is done when the call returns; a failed\n"
"write raises OSError(errno, strerror, block name).  last: index of the block\n"
"CONTINUE refers to, or -1.  status: 0 need more data, 2 a record that is\n"
"not a page (EOS, MEM_SIZE...: left for the stream parser).\n"
"Raises StreamError with the stream offset (base_offset + position) on a\n"
"malformed record; nothing of that record is written.");

/* The block list both entry points take: a sequence of tuples, one per RAM
 * block, in the order the indexes (last, prev_block) refer to.  With ram
 * (load_pages): (name: bytes, ram: writable buffer[, maybe_data[, hashes]]),
 * the buffers held until block_list_release.  Without (scan_pages): (name:
 * bytes, size: int); the names stay alive in the sequence for the call. */
typedef struct {
    PyObject *seq;
    Py_ssize_t n, got;   /* blocks, entries taken so far */
    load_block_t *blocks;
    Py_buffer *held; /* with ram: 4 per block (name, ram, maybe_data, hashes) */
} block_list_t;

static void block_list_release(block_list_t *bl)
{
    if (bl->held != NULL) {
        /* the entry that failed may hold some buffers too: every unused one has obj NULL */
        for (Py_ssize_t i = 0; i < 4 * (bl->n + 1); i++) {
            if (bl->held[i].obj != NULL)
                PyBuffer_Release(&bl->held[i]);
        }
    }
    PyMem_Free(bl->held);
    PyMem_Free(bl->blocks);
    Py_XDECREF(bl->seq);
}

/* An optional buffer of a block entry: None leaves *out NULL; a buffer must
 * be writable and hold at least `need` bytes. */
static int block_list_optional(PyObject *obj, Py_buffer *view, size_t need, const char *what,
                               void **out)
{
    if (obj == NULL || obj == Py_None)
        return 0;
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE) < 0)
        return -1;
    if ((size_t)view->len < need) {
        PyErr_Format(PyExc_ValueError, "load_pages: %s shorter than the block", what);
        return -1;
    }
    *out = view->buf;
    return 0;
}

static int block_list_take(block_list_t *bl, PyObject *obj, int with_ram)
{
    *bl = (block_list_t){NULL, 0, 0, NULL, NULL};
    bl->seq = PySequence_Fast(obj, with_ram ? "blocks must be a sequence of (name, buffer)"
                                            : "blocks must be a sequence of (name, size)");
    if (bl->seq == NULL)
        return -1;
    bl->n = PySequence_Fast_GET_SIZE(bl->seq);
    bl->blocks = PyMem_Calloc((size_t)bl->n + 1, sizeof(*bl->blocks));
    bl->held = with_ram ? PyMem_Calloc(4 * ((size_t)bl->n + 1), sizeof(Py_buffer)) : NULL;
    if (bl->blocks == NULL || (with_ram && bl->held == NULL)) {
        PyErr_NoMemory();
        return -1;
    }
    for (; bl->got < bl->n; bl->got++) {
        PyObject *item = PySequence_Fast_GET_ITEM(bl->seq, bl->got);
        load_block_t *b = &bl->blocks[bl->got];
        if (!with_ram) {
            PyObject *name;
            unsigned long long size;
            if (!PyArg_ParseTuple(item, "SK", &name, &size))
                return -1;
            *b = (load_block_t){(const uint8_t *)PyBytes_AS_STRING(name),
                                (size_t)PyBytes_GET_SIZE(name), NULL, (size_t)size, NULL, NULL,
                                -1};
            continue;
        }
        Py_buffer *h = &bl->held[4 * bl->got];
        PyObject *maybe_obj = NULL, *hashes_obj = NULL;
        void *maybe = NULL, *hashes = NULL;
        int fd = -1;
        if (!PyArg_ParseTuple(item, "y*w*|OOi", &h[0], &h[1], &maybe_obj, &hashes_obj, &fd))
            return -1;
        if (fd < -1) {
            PyErr_SetString(PyExc_ValueError, "load_pages: a file descriptor is -1 or >= 0");
            return -1;
        }
        size_t npages = (size_t)h[1].len / XBZ_PAGE;
        if (block_list_optional(maybe_obj, &h[2], npages, "maybe_data map", &maybe) < 0 ||
            block_list_optional(hashes_obj, &h[3], npages * 8, "digest table", &hashes) < 0)
            return -1;
        *b = (load_block_t){h[0].buf, (size_t)h[0].len, h[1].buf, (size_t)h[1].len, maybe,
                            hashes, fd};
    }
    return 0;
}

static PyObject *load_pages(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t pos, last, base_offset;
    PyObject *blocks_obj, *result = NULL;
    int xbzrle_ok;
    uint64_t c[XBZ_C_COUNT] = {0};
    block_list_t bl;

    if (!PyArg_ParseTuple(args, "y*nOnpn", &buf, &pos, &blocks_obj, &last, &xbzrle_ok,
                          &base_offset))
        return NULL;
    if (block_list_take(&bl, blocks_obj, 1) < 0)
        goto done;
    load_block_t *blocks = bl.blocks;
    Py_ssize_t n = bl.n;
    if (pos < 0 || pos > buf.len || last >= n) {
        PyErr_SetString(PyExc_ValueError, "load_pages: position or last block out of range");
        goto done;
    }
    size_t p = (size_t)pos;
    load_error_t err = {NULL, 0, 0, -1};
    int status;
    page_batch_t *batch = PyMem_Malloc(sizeof(*batch));
    if (batch == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    batch->block = -1;
    batch->n = 0;
    batch->hashes_pending = 0;
    Py_BEGIN_ALLOW_THREADS
    populate_ahead(buf.buf, p, (size_t)buf.len, blocks, (size_t)n, last);
    status = load_loop(buf.buf, &p, (size_t)buf.len, blocks, (size_t)n, &last, xbzrle_ok, c,
                       batch, &err);
    /* The batch points into buf: written before buf goes back to the caller,
     * whatever stopped the loop. */
    if (batch->block != -1 && page_batch_flush(batch, &err) < 0)
        status = -1;
    Py_END_ALLOW_THREADS
    PyMem_Free(batch);
    if (status < 0 && err.write_errno != 0) {
        /* OSError(errno, strerror, block name): the caller knows the file */
        PyObject *name = PyUnicode_DecodeUTF8((const char *)blocks[err.block].name,
                                              (Py_ssize_t)blocks[err.block].name_len,
                                              "surrogateescape");
        if (name != NULL) {
            errno = err.write_errno;
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
            Py_DECREF(name);
        }
        goto done;
    }
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
    block_list_release(&bl);
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

enum { S_ZERO = 0, S_NORMAL, S_XBZRLE };

static void scan_loop(const uint8_t *buf, size_t *pos_io, size_t end, const load_block_t *blocks,
                      size_t nblocks, Py_ssize_t *last, int ordered, Py_ssize_t *prev_bi,
                      uint64_t *prev_off, uint64_t pages[3], uint64_t bytes[3])
{
    size_t pos = *pos_io;
    for (;;) {
        size_t p = pos;
        uint64_t offset;
        unsigned flags;
        if (page_record_head(buf, p, end, &offset, &flags) <= 0)
            break;
        unsigned kind = flags & ~XBZ_F_CONTINUE;
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
        const load_block_t *b = &blocks[bi];
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
"scan_pages($module, buf, pos, blocks, last, ordered, prev_block, prev_offset, /)\n--\n\n"
"Count the page records of buf[pos:] without applying them (xbzrle analyze);\n"
"returns (pos, last, prev_block, prev_offset, pages, wire_bytes).\n"
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
    PyObject *blocks_obj, *result = NULL;
    block_list_t bl;

    if (!PyArg_ParseTuple(args, "y*nOnpnK", &buf, &pos, &blocks_obj, &last, &ordered, &prev_bi,
                          &prev_off))
        return NULL;
    if (block_list_take(&bl, blocks_obj, 0) < 0)
        goto done;
    load_block_t *blocks = bl.blocks;
    Py_ssize_t n = bl.n;
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
    block_list_release(&bl);
    PyBuffer_Release(&buf);
    return result;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif

PyDoc_STRVAR(populate_read_doc,
"populate_read($module, mapping, offset, length, /)\n--\n\n"
"Map the pages of mapping[offset:offset + length] (a file mapping) with\n"
"MADV_POPULATE_READ, from the page holding offset, without holding the GIL,\n"
"so that another thread can map the next piece of a stream file while the\n"
"caller applies this one.  Raises OSError where the kernel cannot (a page\n"
"it cannot read, or past the end of a file cut short): nothing is accessed,\n"
"so no SIGBUS.");

static PyObject *populate_read(PyObject *self, PyObject *args)
{
    Py_buffer map;
    Py_ssize_t offset, length;
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "y*nn", &map, &offset, &length))
        return NULL;
    if (offset < 0 || length < 0 || offset > map.len || length > map.len - offset) {
        PyErr_SetString(PyExc_ValueError, "populate_read: range out of the mapping");
        goto done;
    }
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)map.buf + (uintptr_t)offset;
    uintptr_t first = start - start % (uintptr_t)page;
    int rc = 0, err = 0;
    if (length > 0) {
        Py_BEGIN_ALLOW_THREADS
        rc = madvise((void *)first, (size_t)(start - first) + (size_t)length, MADV_POPULATE_READ);
        err = errno;
        Py_END_ALLOW_THREADS
    }
    if (rc < 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&map);
    return result;
}

static PyMethodDef load_methods[] = {
    {"load_pages", load_pages, METH_VARARGS, load_pages_doc},
    {"scan_pages", scan_pages, METH_VARARGS, scan_pages_doc},
    {"populate_read", populate_read, METH_VARARGS, populate_read_doc},
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
