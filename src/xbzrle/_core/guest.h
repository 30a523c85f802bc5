/* Guest RAM, dirty-page tracking and workloads: declarations shared by the
 * guest part's C files (guest.c, dirtybitmap.c, dirtylog.c, workload.c).
 *
 * Nothing here is needed by the save/load loops: they take a RAM block and a
 * DirtyBitmap through the buffer protocol (a DirtyBitmap exports uint64
 * little-endian words, bit i of word w being page w * 64 + i). */
#ifndef XBZ_GUEST_H
#define XBZ_GUEST_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the dirty bitmap and workload state layouts assume a little-endian host"
#endif

#define XBZ_GUEST_PAGE_SHIFT 12
#define XBZ_GUEST_PAGE_SIZE ((size_t)1 << XBZ_GUEST_PAGE_SHIFT)

/* One anonymous private mapping: the memory of a RAM block. */
typedef struct {
    PyObject_HEAD
    uint8_t *base;        /* NULL once closed */
    size_t size;
    Py_ssize_t exports;   /* live buffer views */
    Py_ssize_t users;     /* trackers and workloads holding raw pointers */
    int closing;          /* close() asked: unmap once exports and users are gone */
    PyObject *dict;       /* lets Python subclasses add attributes */
} XbzGuestRam;

extern PyTypeObject XbzGuestRam_Type;

/* Pin ram's memory for a C user (tracker, workload): 0, or -1 with an
 * exception if ram is not an open GuestRam.  Balance with xbz_ram_unpin. */
int xbz_ram_pin(PyObject *ram);
void xbz_ram_unpin(PyObject *ram);

/* A set of pages as a bitmap of uint64 words. */
typedef struct {
    PyObject_HEAD
    uint64_t *words;
    size_t nwords;
    size_t npages;
    Py_ssize_t shape;     /* nwords, for buffer views */
    Py_ssize_t exports;
} XbzDirtyBitmap;

extern PyTypeObject XbzDirtyBitmap_Type;

/* A new, all-clear bitmap of npages pages (NULL with MemoryError). */
XbzDirtyBitmap *xbz_bitmap_new(size_t npages);
/* Set pages [first, first + count) in a word array; no bounds check. */
void xbz_bits_set_range(uint64_t *words, size_t first, size_t count);

/* The software dirty bitmap that built-in workloads set as they write.  A
 * writer sets a page's bit after writing the page (release); a sync swaps
 * each word with zero (acquire), so a write is either in this sync's bits or
 * in the next one's. */
typedef struct {
    PyObject_HEAD
    uint64_t *words;
    size_t nwords;
    size_t npages;
} XbzSoftTracker;

extern PyTypeObject XbzSoftTracker_Type;

static inline void xbz_soft_mark(uint64_t *words, size_t page)
{
    __atomic_fetch_or(&words[page >> 6], (uint64_t)1 << (page & 63), __ATOMIC_RELEASE);
}

/* The core's one 64-bit page hash (ramhash.c, terms in pagehash.h): the
 * ScanTracker's change detector and the RAM digest's per-page value.  0 for
 * a zero page. */
uint64_t xbz_page_hash(const uint8_t *page);
/* xbz_page_hash of four pages at once, read side by side (faster from
 * memory than four calls); returns which of them are all zero, from the
 * same reads (bit p set for pages[p], whose hash is then 0): the save
 * loop's plain rounds need no zero check of their own. */
unsigned xbz_page_hash4(const uint8_t *const pages[4], uint64_t hashes[4]);
/* Pages whose hashes may be taken a little later, four at a time: add
 * queues a page and where its hash goes (written once four are queued);
 * flush hashes what is left.  The caller flushes before it reads a slot or
 * lets the pages go. */
typedef struct {
    const uint8_t *pages[4];
    uint64_t *slots[4];
    int n;
} xbz_page_hash_queue;
void xbz_page_hash_queue_add(xbz_page_hash_queue *q, const uint8_t *page, uint64_t *slot);
void xbz_page_hash_queue_flush(xbz_page_hash_queue *q);
/* A page's entry in a digest table (one uint64 per page, kept by the save
 * and load loops): xbz_page_hash, with a zero page told by the cheaper zero
 * check.  The RAM digest leaves out the pages whose entry is 0. */
uint64_t xbz_digest_hash(const uint8_t *page);
/* Copies a page (4 KiB, no overlap) and returns xbz_digest_hash of it,
 * reading src once. */
uint64_t xbz_copy_page_hashed(uint8_t *dst, const uint8_t *src);

int xbz_bitmap_register(PyObject *module);
int xbz_ramhash_register(PyObject *module);
int xbz_dirtylog_register(PyObject *module);
int xbz_workload_register(PyObject *module);

#endif
