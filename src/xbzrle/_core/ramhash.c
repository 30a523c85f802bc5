/* Reading a guest's RAM without writing it: the page hash, the RAM digest's
 * (page index, hash) pairs, and the map of pages the kernel never populated.
 *
 * xbz_page_hash is the one page hash of the core: the ScanTracker
 * (dirtylog.c) compares it across syncs and page_hashes feeds it to the RAM
 * digest (xbzrle.guest.digest). */
#define _GNU_SOURCE
#include "guest.h"

#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "codec.h"

#define PAGE XBZ_GUEST_PAGE_SIZE
#define HASH_M1 0xff51afd7ed558ccdULL
#define HASH_M2 0xc4ceb9fe1a85ec53ULL

static inline uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

/* Each word goes through acc = rotl(acc + w * M2, 31) * M1 in one of four
 * lanes: every step is a bijection of the word, so a page differing from
 * another in a single word always hashes differently.  Four lanes keep the
 * multiplier busy: the hash runs at memory speed.  Not cryptographic: it
 * catches lost or garbled pages, it does not resist an adversary. */
uint64_t xbz_page_hash(const uint8_t *page)
{
    uint64_t a = 0x243f6a8885a308d3ULL, b = 0x13198a2e03707344ULL;
    uint64_t c = 0xa4093822299f31d0ULL, d = 0x082efa98ec4e6c89ULL;
    for (size_t i = 0; i < PAGE; i += 32) {
        uint64_t w[4];
        memcpy(w, page + i, sizeof(w));
        a = rotl64(a + w[0] * HASH_M2, 31) * HASH_M1;
        b = rotl64(b + w[1] * HASH_M2, 31) * HASH_M1;
        c = rotl64(c + w[2] * HASH_M2, 31) * HASH_M1;
        d = rotl64(d + w[3] * HASH_M2, 31) * HASH_M1;
    }
    uint64_t h = a ^ rotl64(b, 16) ^ rotl64(c, 32) ^ rotl64(d, 48);
    h ^= h >> 33;
    h *= HASH_M1;
    h ^= h >> 33;
    return h;
}

/* ----------------------------------------------------------- digest pairs */

typedef struct {
    const uint8_t *base;
    const unsigned char *resident; /* NULL: treat every page as resident */
    size_t first, last;             /* page range [first, last) */
    uint64_t index_base;            /* page index of the buffer's first page */
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
        job->out[2 * (job->first + n) + 1] = xbz_page_hash(page);
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
"first_index numbers the first page, so a large RAM can be hashed in pieces\n"
"(only those that hold data) with the same result.");

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

/* ------------------------------------------------------------ data map */

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

static PyMethodDef ramhash_methods[] = {
    {"data_map", data_map, METH_VARARGS, data_map_doc},
    {"page_hashes", page_hashes, METH_VARARGS, page_hashes_doc},
    {NULL, NULL, 0, NULL},
};

int xbz_ramhash_register(PyObject *module)
{
    return PyModule_AddFunctions(module, ramhash_methods);
}
