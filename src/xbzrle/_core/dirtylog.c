/* The three dirty-page trackers behind Guest.dirty_log.
 *
 * UffdTracker: the kernel's own log.  The RAM is registered with userfaultfd
 *   in write-protect mode with asynchronous faults (the kernel resolves a
 *   write fault itself, just noting the page as written) and unpopulated
 *   pages protected too.  A sync is PAGEMAP_SCAN over the range asking for
 *   written pages and re-protecting exactly those, atomically per page table,
 *   so a racing write is either reported now or faults again and is reported
 *   next time.  Needs no cooperation from the writers.  Built lazy (as
 *   Guest RAM is), it registers nothing until the first sync, which arms the
 *   range and reports every resident page: a registered range gets no
 *   transparent huge pages on fault, so arming at creation would leave RAM
 *   on 4 KiB pages for good (five times the fault cost for a destination
 *   filling 1 GiB).  Armed over huge pages, the first write to one splits it
 *   (asynchronous write-protect resolves faults per 4 KiB page), so the log
 *   stays page-granular.
 * SoftTracker: a software bitmap that built-in workloads set after each
 *   write; a sync swaps every word with zero.
 * ScanTracker: a 64-bit hash per page; a sync rehashes every page and
 *   reports those whose hash moved.  Sees any writer, costs a full read.
 *   It sees contents, not writes: a page written and restored between two
 *   syncs looks untouched, which is wrong when a migration sent it in
 *   between (the destination holds the intermediate bytes).  follow(table)
 *   makes each sync also report a page whose hash differs from the digest
 *   table entry of what the destination holds (the save loop's table), so
 *   the same read of the RAM compares each page with both references. */
#define _GNU_SOURCE
#include "guest.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Newer than the build machine's kernel headers (Linux 6.7 UAPI). */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef PAGEMAP_SCAN
struct page_region {
    uint64_t start;
    uint64_t end;
    uint64_t categories;
};
struct pm_scan_arg {
    uint64_t size;
    uint64_t flags;
    uint64_t start;
    uint64_t end;
    uint64_t walk_end;
    uint64_t vec;
    uint64_t vec_len;
    uint64_t max_pages;
    uint64_t category_inverted;
    uint64_t category_mask;
    uint64_t category_anyof_mask;
    uint64_t return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#endif

/* ------------------------------------------------------------------ uffd */

typedef struct {
    PyObject_HEAD
    PyObject *ram; /* pinned GuestRam, NULL once closed */
    uint8_t *base;
    size_t size;
    int uffd;
    int pagemap;
    struct page_region *vec;
    size_t vec_len;
    int lost;  /* a failed sync: report every page next time */
    int armed; /* registered and protected (a lazy tracker: from its first sync) */
    pthread_mutex_t lock;
} XbzUffdTracker;

/* The descriptor every PAGEMAP_SCAN goes through, opened once. */
static int uffd_open_pagemap(XbzUffdTracker *self)
{
    if (self->pagemap < 0)
        self->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    return self->pagemap < 0 ? -1 : 0;
}

static int uffd_arm(XbzUffdTracker *self)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0 && (errno == EPERM || errno == EACCES))
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0)
        return -1;
    self->uffd = fd;
    struct uffdio_api api = {
        .api = UFFD_API,
        .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
    };
    if (ioctl(fd, UFFDIO_API, &api) < 0)
        return -1;
    struct uffdio_register reg = {
        .range = {.start = (uintptr_t)self->base, .len = self->size},
        .mode = UFFDIO_REGISTER_MODE_WP,
    };
    if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0)
        return -1;
    if (!(reg.ioctls & ((uint64_t)1 << _UFFDIO_WRITEPROTECT))) {
        errno = EOPNOTSUPP;
        return -1;
    }
    struct uffdio_writeprotect wp = {
        .range = {.start = (uintptr_t)self->base, .len = self->size},
        .mode = UFFDIO_WRITEPROTECT_MODE_WP,
    };
    if (ioctl(fd, UFFDIO_WRITEPROTECT, &wp) < 0)
        return -1;
    return uffd_open_pagemap(self);
}

/* Set in words the pages PAGEMAP_SCAN matches with ``query``'s flags and
 * categories over the whole range; 0 or -1 (errno). */
static int uffd_walk(XbzUffdTracker *self, uint64_t *words, const struct pm_scan_arg *query)
{
    uintptr_t base = (uintptr_t)self->base, end = base + self->size, start = base;
    while (start < end) {
        struct pm_scan_arg arg = *query;
        arg.size = sizeof(arg);
        arg.start = start;
        arg.end = end;
        arg.vec = (uintptr_t)self->vec;
        arg.vec_len = self->vec_len;
        long n = ioctl(self->pagemap, PAGEMAP_SCAN, &arg);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        for (long i = 0; i < n; i++) {
            const struct page_region *r = &self->vec[i];
            if (r->start < start || r->end > end || r->end < r->start) {
                errno = ERANGE;
                return -1;
            }
            xbz_bits_set_range(words, (size_t)(r->start - base) >> XBZ_GUEST_PAGE_SHIFT,
                               (size_t)(r->end - r->start) >> XBZ_GUEST_PAGE_SHIFT);
        }
        /* A full output vector ends the walk early: resume where it stopped. */
        if (arg.walk_end <= start || arg.walk_end > end) {
            errno = EIO;
            return -1;
        }
        start = arg.walk_end;
    }
    return 0;
}

/* Collect written pages into words and re-protect them; 0 or -1 (errno). */
static int uffd_collect(XbzUffdTracker *self, uint64_t *words)
{
    const struct pm_scan_arg written = {
        .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
        .category_mask = PAGE_IS_WRITTEN,
        .return_mask = PAGE_IS_WRITTEN,
    };
    return uffd_walk(self, words, &written);
}

/* Collect the pages that hold data of their own (not the shared zero page)
 * in one of ``kinds`` (PAGE_IS_PRESENT, PAGE_IS_SWAPPED): what a lazy
 * tracker's first sync can know of the writes before it armed.  A huge page
 * counts whole. */
static int uffd_collect_resident(XbzUffdTracker *self, uint64_t *words, uint64_t kinds)
{
    const struct pm_scan_arg resident = {
        .category_inverted = PAGE_IS_PFNZERO,
        .category_mask = PAGE_IS_PFNZERO,
        .category_anyof_mask = kinds,
        .return_mask = kinds,
    };
    return uffd_walk(self, words, &resident);
}

/* A lazy tracker's first sync: the pages holding data, then the range armed.
 * Swapped pages are looked for before arming only (the protection's markers
 * on unpopulated pages read as swap entries), present ones before it too (a
 * page swapped out in between) and after it, so a write racing the arming
 * is either seen present then or faults and is reported by the next sync. */
static int uffd_arm_late(XbzUffdTracker *self, uint64_t *words)
{
    int rc = uffd_open_pagemap(self);
    if (rc == 0)
        rc = uffd_collect_resident(self, words, PAGE_IS_PRESENT | PAGE_IS_SWAPPED);
    if (rc == 0)
        rc = uffd_arm(self);
    if (rc == 0)
        rc = uffd_collect_resident(self, words, PAGE_IS_PRESENT);
    return rc;
}

/* Close whatever uffd_arm opened, so that a failed arming can be retried. */
static void uffd_disarm(XbzUffdTracker *self)
{
    if (self->uffd >= 0) {
        close(self->uffd); /* unregisters the range */
        self->uffd = -1;
    }
    if (self->pagemap >= 0) {
        close(self->pagemap);
        self->pagemap = -1;
    }
    self->armed = 0;
}

static void uffd_release(XbzUffdTracker *self)
{
    uffd_disarm(self);
    PyMem_RawFree(self->vec);
    self->vec = NULL;
    if (self->ram != NULL) {
        xbz_ram_unpin(self->ram);
        Py_CLEAR(self->ram);
    }
}

static PyObject *uffd_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ram", "vec_len", "lazy", NULL};
    PyObject *ram;
    Py_ssize_t vec_len = 16384;
    int lazy = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|np:UffdTracker", kwlist, &ram, &vec_len,
                                     &lazy))
        return NULL;
    if (vec_len < 1) {
        PyErr_SetString(PyExc_ValueError, "vec_len must be at least 1");
        return NULL;
    }
    if (xbz_ram_pin(ram) < 0)
        return NULL;
    XbzUffdTracker *self = (XbzUffdTracker *)type->tp_alloc(type, 0);
    if (self == NULL) {
        xbz_ram_unpin(ram);
        return NULL;
    }
    Py_INCREF(ram);
    self->ram = ram;
    self->base = ((XbzGuestRam *)ram)->base;
    self->size = ((XbzGuestRam *)ram)->size;
    self->uffd = self->pagemap = -1;
    pthread_mutex_init(&self->lock, NULL);
    self->vec_len = (size_t)vec_len;
    self->vec = PyMem_RawMalloc(self->vec_len * sizeof(struct page_region));
    if (self->vec == NULL) {
        PyErr_NoMemory();
        Py_DECREF(self);
        return NULL;
    }
    if (lazy)
        return (PyObject *)self;
    int rc, err = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = uffd_arm(self);
    self->armed = rc == 0;
    if (rc == 0) {
        /* Probe PAGEMAP_SCAN (Linux 6.7+) now rather than at the first sync. */
        uint64_t *words = PyMem_RawCalloc((self->size >> XBZ_GUEST_PAGE_SHIFT) / 64 + 1, 8);
        if (words == NULL) {
            rc = -1;
            errno = ENOMEM;
        } else {
            rc = uffd_collect(self, words);
            PyMem_RawFree(words);
        }
    }
    if (rc < 0)
        err = errno;
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void uffd_dealloc(XbzUffdTracker *self)
{
    uffd_release(self);
    pthread_mutex_destroy(&self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *uffd_sync(XbzUffdTracker *self, PyObject *unused)
{
    if (self->ram == NULL) {
        PyErr_SetString(PyExc_ValueError, "tracker is closed");
        return NULL;
    }
    size_t npages = self->size >> XBZ_GUEST_PAGE_SHIFT;
    XbzDirtyBitmap *bitmap = xbz_bitmap_new(npages);
    if (bitmap == NULL)
        return NULL;
    int rc, err = 0;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    if (self->ram == NULL) {
        rc = -1;
        errno = EBADF;
    } else if (!self->armed) {
        rc = uffd_arm_late(self, bitmap->words);
        if (rc == 0)
            self->armed = 1;
        else {
            int arm_errno = errno;
            uffd_disarm(self);
            errno = arm_errno;
        }
    } else {
        rc = uffd_collect(self, bitmap->words);
    }
    if (rc < 0) {
        err = errno;
        self->lost = 1;
    } else if (self->lost) {
        xbz_bits_set_range(bitmap->words, 0, npages);
        self->lost = 0;
    }
    pthread_mutex_unlock(&self->lock);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        Py_DECREF(bitmap);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return (PyObject *)bitmap;
}

static PyObject *uffd_close(XbzUffdTracker *self, PyObject *unused)
{
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    Py_END_ALLOW_THREADS
    uffd_release(self);
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

static PyMethodDef uffd_methods[] = {
    {"sync", (PyCFunction)uffd_sync, METH_NOARGS,
     "sync($self, /)\n--\n\nPages written since the previous sync, as a DirtyBitmap; re-arms them."},
    {"close", (PyCFunction)uffd_close, METH_NOARGS,
     "close($self, /)\n--\n\nStop tracking and release the RAM."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject XbzUffdTracker_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "xbzrle._core.UffdTracker",
    .tp_basicsize = sizeof(XbzUffdTracker),
    .tp_dealloc = (destructor)uffd_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "UffdTracker(ram, vec_len=16384, lazy=False)\n--\n\n"
              "Kernel dirty log (userfaultfd async write-protect + PAGEMAP_SCAN).  OSError if the kernel lacks it.  lazy: "
              "arm at the first sync, which reports every resident page.",
    .tp_methods = uffd_methods,
    .tp_new = uffd_new,
};

/* ------------------------------------------------------------------ scan */

typedef struct {
    PyObject_HEAD
    PyObject *ram;
    uint8_t *base;
    size_t npages;
    uint64_t *hashes;   /* each page's hash at the last sync (a zero page's is 0) */
    Py_buffer table;    /* follow(): what the destination holds (a digest table) */
    int following;      /* table holds a buffer */
    pthread_mutex_t lock;
} XbzScanTracker;

static void scan_release(XbzScanTracker *self)
{
    PyMem_RawFree(self->hashes);
    self->hashes = NULL;
    if (self->following) {
        PyBuffer_Release(&self->table);
        self->following = 0;
    }
    if (self->ram != NULL) {
        xbz_ram_unpin(self->ram);
        Py_CLEAR(self->ram);
    }
}

static PyObject *scan_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ram", "baseline", NULL};
    PyObject *ram;
    const char *baseline = "zero";
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|s:ScanTracker", kwlist, &ram, &baseline))
        return NULL;
    int from_zero = strcmp(baseline, "zero") == 0;
    if (!from_zero && strcmp(baseline, "current") != 0) {
        PyErr_SetString(PyExc_ValueError, "baseline must be 'zero' or 'current'");
        return NULL;
    }
    if (xbz_ram_pin(ram) < 0)
        return NULL;
    XbzScanTracker *self = (XbzScanTracker *)type->tp_alloc(type, 0);
    if (self == NULL) {
        xbz_ram_unpin(ram);
        return NULL;
    }
    Py_INCREF(ram);
    self->ram = ram;
    self->base = ((XbzGuestRam *)ram)->base;
    self->npages = ((XbzGuestRam *)ram)->size >> XBZ_GUEST_PAGE_SHIFT;
    pthread_mutex_init(&self->lock, NULL);
    self->hashes = PyMem_RawMalloc(self->npages * sizeof(uint64_t));
    if (self->hashes == NULL) {
        PyErr_NoMemory();
        Py_DECREF(self);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    if (from_zero) {
        /* A fresh mapping is all zero (a zero page hashes to 0): no need to touch it. */
        memset(self->hashes, 0, self->npages * sizeof(uint64_t));
    } else {
        for (size_t i = 0; i < self->npages; i++)
            self->hashes[i] = xbz_page_hash(self->base + (i << XBZ_GUEST_PAGE_SHIFT));
    }
    Py_END_ALLOW_THREADS
    return (PyObject *)self;
}

static void scan_dealloc(XbzScanTracker *self)
{
    scan_release(self);
    pthread_mutex_destroy(&self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *scan_sync(XbzScanTracker *self, PyObject *unused)
{
    if (self->ram == NULL) {
        PyErr_SetString(PyExc_ValueError, "tracker is closed");
        return NULL;
    }
    XbzDirtyBitmap *bitmap = xbz_bitmap_new(self->npages);
    if (bitmap == NULL)
        return NULL;
    int closed;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    closed = self->hashes == NULL;
    const uint8_t *held = self->following ? self->table.buf : NULL;
    for (size_t i = 0; !closed && i < self->npages; i += 4) {
        /* Four pages hashed side by side (xbz_page_hash4), the last ones
         * one by one. */
        uint64_t h[4];
        size_t n = self->npages - i < 4 ? self->npages - i : 4;
        const uint8_t *pages[4];
        for (size_t k = 0; k < n; k++)
            pages[k] = self->base + ((i + k) << XBZ_GUEST_PAGE_SHIFT);
        if (n == 4)
            xbz_page_hash4(pages, h);
        else
            for (size_t k = 0; k < n; k++)
                h[k] = xbz_page_hash(pages[k]);
        for (size_t k = 0; k < n; k++) {
            size_t page = i + k;
            int report = h[k] != self->hashes[page];
            self->hashes[page] = h[k];
            if (held != NULL && !report) {
                /* The destination's entry: the hash of what it holds (0 for a
                 * zero page, as the page hash gives; equal hashes mean equal
                 * pages, up to the 2^-64 the tracker accepts). */
                uint64_t entry;
                memcpy(&entry, held + 8 * page, 8);
                report = h[k] != entry;
            }
            if (report)
                bitmap->words[page >> 6] |= (uint64_t)1 << (page & 63);
        }
    }
    pthread_mutex_unlock(&self->lock);
    Py_END_ALLOW_THREADS
    if (closed) {
        Py_DECREF(bitmap);
        PyErr_SetString(PyExc_ValueError, "tracker is closed");
        return NULL;
    }
    return (PyObject *)bitmap;
}

static PyObject *scan_follow(XbzScanTracker *self, PyObject *arg)
{
    Py_buffer view = {0};
    int follow = arg != Py_None;
    if (follow) {
        if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
            return NULL;
        if ((size_t)view.len != self->npages * 8) {
            PyBuffer_Release(&view);
            PyErr_Format(PyExc_ValueError, "a digest table of %zu pages is %zu bytes, not %zd",
                         self->npages, self->npages * 8, view.len);
            return NULL;
        }
    }
    Py_buffer old = {0};
    int had;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    Py_END_ALLOW_THREADS
    if (self->hashes == NULL) {
        pthread_mutex_unlock(&self->lock);
        if (follow)
            PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "tracker is closed");
        return NULL;
    }
    had = self->following;
    old = self->table;
    self->table = view;
    self->following = follow;
    pthread_mutex_unlock(&self->lock);
    if (had)
        PyBuffer_Release(&old);
    Py_RETURN_NONE;
}

static PyObject *scan_close(XbzScanTracker *self, PyObject *unused)
{
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    Py_END_ALLOW_THREADS
    scan_release(self);
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

static PyObject *scan_page_hash(PyObject *unused, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len != (Py_ssize_t)XBZ_GUEST_PAGE_SIZE) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "a page is %zu bytes", XBZ_GUEST_PAGE_SIZE);
        return NULL;
    }
    uint64_t h = xbz_page_hash(view.buf);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(h);
}

static PyMethodDef scan_methods[] = {
    {"sync", (PyCFunction)scan_sync, METH_NOARGS,
     "sync($self, /)\n--\n\nPages whose contents changed since the previous sync, as a DirtyBitmap."},
    {"follow", (PyCFunction)scan_follow, METH_O,
     "follow($self, table, /)\n--\n\n"
     "Also report, at each sync, every page whose hash differs from its\n"
     "entry in table (a digest table, one native uint64 per page: 0 for a zero page),\n"
     "kept by the save loop as what the destination holds; follow(None) stops."},
    {"close", (PyCFunction)scan_close, METH_NOARGS,
     "close($self, /)\n--\n\nStop tracking and release the RAM."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject XbzScanTracker_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "xbzrle._core.ScanTracker",
    .tp_basicsize = sizeof(XbzScanTracker),
    .tp_dealloc = (destructor)scan_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "ScanTracker(ram, baseline='zero')\n--\n\n"
              "Per-page hash compare; 'zero' assumes "
              "the RAM is still all zero, 'current' hashes it now.",
    .tp_methods = scan_methods,
    .tp_new = scan_new,
};

/* ------------------------------------------------------------------ soft */

static PyObject *soft_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *positional_only[] = {"", NULL}; /* npages is positional: no keywords */
    Py_ssize_t npages;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n:SoftTracker", positional_only, &npages))
        return NULL;
    if (npages < 0) {
        PyErr_SetString(PyExc_ValueError, "npages must not be negative");
        return NULL;
    }
    XbzSoftTracker *self = (XbzSoftTracker *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->npages = (size_t)npages;
    self->nwords = (self->npages + 63) / 64;
    self->words = PyMem_RawCalloc(self->nwords ? self->nwords : 1, sizeof(uint64_t));
    if (self->words == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void soft_dealloc(XbzSoftTracker *self)
{
    PyMem_RawFree(self->words);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *soft_sync(XbzSoftTracker *self, PyObject *unused)
{
    XbzDirtyBitmap *bitmap = xbz_bitmap_new(self->npages);
    if (bitmap == NULL)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    for (size_t w = 0; w < self->nwords; w++) {
        if (__atomic_load_n(&self->words[w], __ATOMIC_RELAXED) != 0)
            bitmap->words[w] = __atomic_exchange_n(&self->words[w], 0, __ATOMIC_ACQ_REL);
    }
    Py_END_ALLOW_THREADS
    return (PyObject *)bitmap;
}

static PyObject *soft_mark(XbzSoftTracker *self, PyObject *args)
{
    Py_ssize_t first, count = 1;
    if (!PyArg_ParseTuple(args, "n|n:mark", &first, &count))
        return NULL;
    if (first < 0 || count < 0 || (size_t)first > self->npages ||
        (size_t)count > self->npages - (size_t)first) {
        PyErr_SetString(PyExc_IndexError, "pages outside the tracked range");
        return NULL;
    }
    for (size_t p = (size_t)first; p < (size_t)(first + count); p++)
        xbz_soft_mark(self->words, p);
    Py_RETURN_NONE;
}

static PyObject *soft_close(XbzSoftTracker *self, PyObject *unused)
{
    Py_RETURN_NONE;
}

static PyMethodDef soft_methods[] = {
    {"sync", (PyCFunction)soft_sync, METH_NOARGS,
     "sync($self, /)\n--\n\nPages marked since the previous sync, as a DirtyBitmap; clears the marks."},
    {"mark", (PyCFunction)soft_mark, METH_VARARGS,
     "mark($self, first, count=1, /)\n--\n\nMark pages first .. first+count-1 written."},
    {"close", (PyCFunction)soft_close, METH_NOARGS,
     "close($self, /)\n--\n\nNothing to release (for symmetry)."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject XbzSoftTracker_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "xbzrle._core.SoftTracker",
    .tp_basicsize = sizeof(XbzSoftTracker),
    .tp_dealloc = (destructor)soft_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "SoftTracker(npages, /)\n--\n\n"
              "A bitmap that built-in workloads set as they write.",
    .tp_methods = soft_methods,
    .tp_new = soft_new,
};

static PyMethodDef dirtylog_functions[] = {
    {"guest_page_hash", scan_page_hash, METH_O,
     "guest_page_hash($module, page, /)\n--\n\n"
     "The scan tracker's 64-bit hash of one 4 KiB page."},
    {NULL, NULL, 0, NULL},
};

int xbz_dirtylog_register(PyObject *module)
{
    if (PyModule_AddType(module, &XbzUffdTracker_Type) < 0 ||
        PyModule_AddType(module, &XbzScanTracker_Type) < 0 ||
        PyModule_AddType(module, &XbzSoftTracker_Type) < 0)
        return -1;
    return PyModule_AddFunctions(module, dirtylog_functions);
}
