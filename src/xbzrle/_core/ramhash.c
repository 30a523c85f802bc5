/* Reading a guest's RAM without writing it: the page hash, the RAM digest's
 * (page index, hash) pairs, and the map of pages the kernel never populated.
 *
 * xbz_page_hash is the one page hash of the core: the ScanTracker
 * (dirtylog.c) compares it across syncs and page_hashes feeds it to the RAM
 * digest (xbzrle.guest.digest).  xbz_digest_hash is a page's entry in a
 * digest table: the save and load loops keep one uint64 per page of what the
 * destination holds, and table_pairs turns the table into the same (index,
 * hash) pairs as page_hashes gives for a full read of that RAM. */
#define _GNU_SOURCE
#include "guest.h"

#include <fcntl.h>
#include <stdlib.h>
#include <immintrin.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "codec.h"
#include "pagehash.h"

#define PAGE XBZ_GUEST_PAGE_SIZE
#define HASH_WORDS (PAGE / 8)
_Static_assert(PAGE == XBZ_HASH_PAGE, "the page hash is defined on guest pages");

const uint64_t xbz_hash_key[XBZ_HASH_LANES] = {
    0xbe4ba423396cfeb8ULL, 0x1cad21f72c81017cULL, 0xdb979083e96dd4deULL,
    0x1f67b3b7a4a44072ULL, 0x78e5c0cc4ee679cbULL, 0x2172ffcc7dd05a82ULL,
    0x8e2443f7744608b8ULL, 0x4c263a81e69035e0ULL,
};

/* The sum of a page's terms (pagehash.h), word by word: the reference that
 * the AVX2 lanes below must equal, and the portable path. */
static uint64_t term_sum_generic(const uint8_t *page)
{
    uint64_t lanes[XBZ_HASH_LANES] = {0};
    for (size_t i = 0; i < HASH_WORDS; i++) {
        uint64_t w;
        memcpy(&w, page + 8 * i, 8);
        lanes[i % XBZ_HASH_LANES] += xbz_hash_term(w, i);
    }
    uint64_t sum = 0;
    for (int j = 0; j < XBZ_HASH_LANES; j++)
        sum += lanes[j];
    return sum;
}

/* The same sum in two AVX2 registers of four lanes each: a 64-byte stripe
 * per step; _mm256_mul_epu32 is lo32(a) * lo32(b), so lo32(k) * hi32(k) is
 * one instruction.  A page costs about a memory copy of it.  copy: NULL, or
 * where each stripe is stored as it is read (the load loop's PAGE record:
 * one read of it for the copy and the hash, the multiplies hidden under the
 * copy's memory traffic).  Inlined into each caller, so the copy is a
 * constant there. */
__attribute__((target("avx2"), always_inline)) static inline uint64_t
term_sum_stripes_avx2(const uint8_t *page, uint8_t *copy)
{
    const __m256i key0 = _mm256_loadu_si256((const __m256i *)xbz_hash_key);
    const __m256i key1 = _mm256_loadu_si256((const __m256i *)(xbz_hash_key + 4));
    __m256i m0 = _mm256_setzero_si256(), m1 = _mm256_setzero_si256();
    uint64_t stripe_key = 0;
    for (size_t at = 0; at < PAGE; at += 64) {
        stripe_key += XBZ_HASH_STRIPE;
        __m256i sk = _mm256_set1_epi64x((long long)stripe_key);
        __m256i w0 = _mm256_loadu_si256((const __m256i *)(page + at));
        __m256i w1 = _mm256_loadu_si256((const __m256i *)(page + at + 32));
        if (copy != NULL) {
            _mm256_storeu_si256((__m256i *)(copy + at), w0);
            _mm256_storeu_si256((__m256i *)(copy + at + 32), w1);
        }
        __m256i k0 = _mm256_xor_si256(_mm256_xor_si256(w0, key0), sk);
        __m256i k1 = _mm256_xor_si256(_mm256_xor_si256(w1, key1), sk);
        m0 = _mm256_add_epi64(m0, _mm256_add_epi64(_mm256_mul_epu32(k0, _mm256_srli_epi64(k0, 32)), k0));
        m1 = _mm256_add_epi64(m1, _mm256_add_epi64(_mm256_mul_epu32(k1, _mm256_srli_epi64(k1, 32)), k1));
    }
    uint64_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, m0);
    _mm256_storeu_si256((__m256i *)(lanes + 4), m1);
    uint64_t sum = 0;
    for (int j = 0; j < 8; j++)
        sum += lanes[j];
    return sum;
}

__attribute__((target("avx2"))) static uint64_t term_sum_avx2(const uint8_t *page)
{
    return term_sum_stripes_avx2(page, NULL);
}

__attribute__((target("avx2"))) static uint64_t copy_term_sum_avx2(uint8_t *dst,
                                                                 const uint8_t *src)
{
    return term_sum_stripes_avx2(src, dst);
}

/* Four pages' sums at once.  A single page's sum waits on memory (about
 * 7 GB/s here: the hardware prefetcher starts over at every 4 KiB page);
 * four pages read side by side keep four streams in flight and run at
 * 10-12 GB/s (256 MiB of 4 KiB pages, a C loop over the same kernels).
 * The same loads also tell which pages are all zero (the returned bits):
 * an OR per load, free next to the memory it waits on, so every caller
 * reads a page once whether it is zero or not. */
__attribute__((target("avx2"))) static unsigned term_sums4_avx2(const uint8_t *const pages[4],
                                                                uint64_t sums[4])
{
    const __m256i key0 = _mm256_loadu_si256((const __m256i *)xbz_hash_key);
    const __m256i key1 = _mm256_loadu_si256((const __m256i *)(xbz_hash_key + 4));
    __m256i acc[4], any[4];
    for (int p = 0; p < 4; p++) {
        acc[p] = _mm256_setzero_si256();
        any[p] = _mm256_setzero_si256();
    }
    uint64_t stripe_key = 0;
    for (size_t at = 0; at < PAGE; at += 64) {
        stripe_key += XBZ_HASH_STRIPE;
        __m256i sk = _mm256_set1_epi64x((long long)stripe_key);
        for (int p = 0; p < 4; p++) {
            __m256i w0 = _mm256_loadu_si256((const __m256i *)(pages[p] + at));
            __m256i w1 = _mm256_loadu_si256((const __m256i *)(pages[p] + at + 32));
            any[p] = _mm256_or_si256(any[p], _mm256_or_si256(w0, w1));
            __m256i k0 = _mm256_xor_si256(_mm256_xor_si256(w0, key0), sk);
            __m256i k1 = _mm256_xor_si256(_mm256_xor_si256(w1, key1), sk);
            __m256i t0 = _mm256_add_epi64(_mm256_mul_epu32(k0, _mm256_srli_epi64(k0, 32)), k0);
            __m256i t1 = _mm256_add_epi64(_mm256_mul_epu32(k1, _mm256_srli_epi64(k1, 32)), k1);
            acc[p] = _mm256_add_epi64(acc[p], _mm256_add_epi64(t0, t1));
        }
    }
    for (int p = 0; p < 4; p++) {
        uint64_t lanes[4];
        _mm256_storeu_si256((__m256i *)lanes, acc[p]);
        sums[p] = lanes[0] + lanes[1] + lanes[2] + lanes[3];
    }
    unsigned zeros = 0;
    for (int p = 0; p < 4; p++)
        zeros |= (unsigned)_mm256_testz_si256(any[p], any[p]) << p;
    return zeros;
}

static unsigned term_sums4_generic(const uint8_t *const pages[4], uint64_t sums[4])
{
    unsigned zeros = 0;
    for (int p = 0; p < 4; p++) {
        sums[p] = term_sum_generic(pages[p]);
        zeros |= (unsigned)xbz_is_zero(pages[p], PAGE) << p;
    }
    return zeros;
}

static uint64_t copy_term_sum_generic(uint8_t *dst, const uint8_t *src)
{
    memcpy(dst, src, PAGE);
    return term_sum_generic(dst);
}

static uint64_t (*term_sum_impl)(const uint8_t *);
static uint64_t (*copy_term_sum_impl)(uint8_t *, const uint8_t *);
static unsigned (*term_sums4_impl)(const uint8_t *const[4], uint64_t[4]);
static uint64_t zero_page_sum; /* the terms of a zero page; set with term_sum_impl */

static uint64_t (*term_sum(void))(const uint8_t *)
{
    uint64_t (*impl)(const uint8_t *) = __atomic_load_n(&term_sum_impl, __ATOMIC_ACQUIRE);
    if (impl == NULL) {
        static const uint8_t zero[PAGE];
        const char *forced = getenv("XBZRLE_SIMD");
        __builtin_cpu_init();
        int portable = forced != NULL && strcmp(forced, "portable") == 0;
        int avx2 = __builtin_cpu_supports("avx2") && !portable;
        impl = avx2 ? term_sum_avx2 : term_sum_generic;
        /* Every thread computes and stores the same values. */
        __atomic_store_n(&zero_page_sum, term_sum_generic(zero), __ATOMIC_RELAXED);
        __atomic_store_n(&term_sums4_impl, avx2 ? term_sums4_avx2 : term_sums4_generic,
                         __ATOMIC_RELAXED);
        __atomic_store_n(&copy_term_sum_impl, avx2 ? copy_term_sum_avx2 : copy_term_sum_generic,
                         __ATOMIC_RELAXED);
        __atomic_store_n(&term_sum_impl, impl, __ATOMIC_RELEASE);
    }
    return impl;
}

/* xbz_page_hash: the sum of the page's terms minus a zero page's (see
 * pagehash.h for why a sum, and what it sees). */
uint64_t xbz_page_hash(const uint8_t *page)
{
    uint64_t (*impl)(const uint8_t *) = term_sum();
    return impl(page) - __atomic_load_n(&zero_page_sum, __ATOMIC_RELAXED);
}

unsigned xbz_page_hash4(const uint8_t *const pages[4], uint64_t hashes[4])
{
    term_sum(); /* sets term_sums4_impl and zero_page_sum */
    unsigned zeros = __atomic_load_n(&term_sums4_impl, __ATOMIC_RELAXED)(pages, hashes);
    uint64_t zero = __atomic_load_n(&zero_page_sum, __ATOMIC_RELAXED);
    for (int p = 0; p < 4; p++)
        hashes[p] -= zero;
    return zeros;
}

void xbz_page_hash_queue_add(xbz_page_hash_queue *q, const uint8_t *page, uint64_t *slot)
{
    q->pages[q->n] = page;
    q->slots[q->n] = slot;
    if (++q->n < 4)
        return;
    uint64_t hashes[4];
    xbz_page_hash4(q->pages, hashes);
    for (int p = 0; p < 4; p++)
        *q->slots[p] = hashes[p];
    q->n = 0;
}

void xbz_page_hash_queue_flush(xbz_page_hash_queue *q)
{
    for (int p = 0; p < q->n; p++)
        *q->slots[p] = xbz_page_hash(q->pages[p]);
    q->n = 0;
}

uint64_t xbz_digest_hash(const uint8_t *page)
{
    /* A zero page hashes to 0; the zero check first skips its terms. */
    return xbz_is_zero(page, PAGE) ? 0 : xbz_page_hash(page);
}

uint64_t xbz_copy_page_hashed(uint8_t *dst, const uint8_t *src)
{
    term_sum(); /* sets copy_term_sum_impl and zero_page_sum */
    /* A zero page's terms are zero_page_sum: its hash is 0, as xbz_digest_hash gives. */
    return __atomic_load_n(&copy_term_sum_impl, __ATOMIC_RELAXED)(dst, src) -
           __atomic_load_n(&zero_page_sum, __ATOMIC_RELAXED);
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
    /* Pairs of the resident pages, their hashes taken four at a time (the
     * queue writes them in place), then the pairs whose hash is 0 dropped:
     * the zero pages (their terms cancel: the same read tells, no zero
     * check first) and, about 2^-64, a page whose terms cancel, as
     * table_pairs drops a 0 entry. */
    uint64_t *out = job->out + 2 * job->first;
    size_t n = 0;
    xbz_page_hash_queue q = {.n = 0};
    for (size_t p = job->first; p < job->last; p++) {
        if (job->resident != NULL && !(job->resident[p] & 1))
            continue; /* never populated: reads as zero, costs nothing to skip */
        out[2 * n] = job->index_base + p;
        xbz_page_hash_queue_add(&q, job->base + p * PAGE, &out[2 * n + 1]);
        n++;
    }
    xbz_page_hash_queue_flush(&q);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (out[2 * i + 1] == 0)
            continue;
        out[2 * kept] = out[2 * i];
        out[2 * kept + 1] = out[2 * i + 1];
        kept++;
    }
    job->count = kept;
    return NULL;
}

PyDoc_STRVAR(page_hashes_doc,
"page_hashes($module, ram, first_index=0, /)\n--\n\n"
"Bytes: (page index, 64-bit hash) pairs, little-endian uint64, for every non-zero\n"
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
"data_map($module, ram, swap, /)\n--\n\n"
"A bytearray of one byte per 4 KiB page of an anonymous private mapping: 0 when the page\n"
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

/* ------------------------------------------------------------ digest tables */

PyDoc_STRVAR(table_pairs_doc,
"table_pairs($module, table, first_index=0, /)\n--\n\n"
"Bytes: the (page index, hash) pairs, little-endian uint64, of the non-zero entries\n"
"of a digest table (one native uint64 per page, 0 for a zero page, as the\n"
"save and load loops keep it): by construction the bytes page_hashes gives\n"
"for a full read of the RAM the table describes.  Cost: the table's 8 bytes\n"
"per page, not the RAM's 4096.");

static PyObject *table_pairs(PyObject *self, PyObject *args)
{
    Py_buffer table;
    unsigned long long index_base = 0;
    if (!PyArg_ParseTuple(args, "y*|K", &table, &index_base))
        return NULL;
    size_t n = (size_t)table.len / 8;
    const uint64_t *entry = table.buf;
    size_t count = 0;
    for (size_t p = 0; p < n; p++)
        count += entry[p] != 0;
    PyObject *result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(count * 16));
    if (result != NULL) {
        uint64_t *out = (uint64_t *)PyBytes_AS_STRING(result);
        for (size_t p = 0; p < n; p++) {
            if (entry[p] != 0) {
                *out++ = index_base + p;
                *out++ = entry[p];
            }
        }
    }
    PyBuffer_Release(&table);
    return result;
}

typedef struct {
    const uint8_t *base;
    const uint8_t *data_map; /* NULL: every page may hold data */
    uint64_t *table;
    size_t first, last;
} fill_job_t;

static void *fill_worker(void *arg)
{
    fill_job_t *job = arg;
    xbz_page_hash_queue q = {.n = 0};
    for (size_t p = job->first; p < job->last; p++) {
        if (job->data_map != NULL && !job->data_map[p])
            job->table[p] = 0;
        else
            xbz_page_hash_queue_add(&q, job->base + p * PAGE, &job->table[p]);
    }
    xbz_page_hash_queue_flush(&q);
    return NULL;
}

PyDoc_STRVAR(table_fill_doc,
"table_fill($module, ram, table, data_map=None, /)\n--\n\n"
"Set every entry of a digest table (one native uint64 per page of ram) from\n"
"what ram holds now: the starting point of a table that the load loop then\n"
"keeps.  data_map (one byte per page, 0 = known zero, as data_map() gives):\n"
"pages known to be zero are not read.  Two threads.");

static PyObject *table_fill(PyObject *self, PyObject *args)
{
    Py_buffer ram, table, map = {0};
    PyObject *map_obj = Py_None, *result = NULL;
    if (!PyArg_ParseTuple(args, "y*w*|O", &ram, &table, &map_obj))
        return NULL;
    size_t npages = (size_t)ram.len / PAGE;
    if (map_obj != Py_None && PyObject_GetBuffer(map_obj, &map, PyBUF_SIMPLE) < 0)
        goto done;
    if ((size_t)ram.len % PAGE != 0 || (size_t)table.len / 8 < npages ||
        (map.buf != NULL && (size_t)map.len < npages)) {
        PyErr_SetString(PyExc_ValueError,
                        "table_fill: RAM not whole pages, or table or data_map too short");
        goto done;
    }
    fill_job_t jobs[2] = {
        {ram.buf, map.buf, table.buf, 0, npages / 2},
        {ram.buf, map.buf, table.buf, npages / 2, npages},
    };
    Py_BEGIN_ALLOW_THREADS
    pthread_t helper;
    int threaded = npages >= 4096 && pthread_create(&helper, NULL, fill_worker, &jobs[1]) == 0;
    fill_worker(&jobs[0]);
    if (threaded)
        pthread_join(helper, NULL);
    else
        fill_worker(&jobs[1]);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    if (map.buf != NULL)
        PyBuffer_Release(&map);
    PyBuffer_Release(&table);
    PyBuffer_Release(&ram);
    return result;
}

/* One page given as a buffer of exactly a page -> hash(page) as a Python int. */
static PyObject *hash_one_page(PyObject *arg, uint64_t (*hash)(const uint8_t *))
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len != (Py_ssize_t)PAGE) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "a page is %zu bytes", (size_t)PAGE);
        return NULL;
    }
    uint64_t h = hash(view.buf);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(h);
}

static uint64_t page_hash_generic(const uint8_t *page)
{
    term_sum(); /* sets zero_page_sum */
    return term_sum_generic(page) - __atomic_load_n(&zero_page_sum, __ATOMIC_RELAXED);
}

static PyObject *page_hash_portable(PyObject *self, PyObject *arg)
{
    return hash_one_page(arg, page_hash_generic);
}

static PyObject *page_digest_hash(PyObject *self, PyObject *arg)
{
    return hash_one_page(arg, xbz_digest_hash);
}

static PyMethodDef ramhash_methods[] = {
    {"page_hash_portable", page_hash_portable, METH_O,
     "page_hash_portable($module, page, /)\n--\n\n"
     "The page hash (int) by the portable code (tests compare it with the SIMD path's "
     "guest_page_hash)."},
    {"data_map", data_map, METH_VARARGS, data_map_doc},
    {"page_hashes", page_hashes, METH_VARARGS, page_hashes_doc},
    {"table_pairs", table_pairs, METH_VARARGS, table_pairs_doc},
    {"table_fill", table_fill, METH_VARARGS, table_fill_doc},
    {"page_digest_hash", page_digest_hash, METH_O,
     "page_digest_hash($module, page, /)\n--\n\n"
     "The page's digest-table entry (int: 0 for a zero page, else its 64-bit hash, "
     "never 0)."},
    {NULL, NULL, 0, NULL},
};

int xbz_ramhash_register(PyObject *module)
{
    return PyModule_AddFunctions(module, ramhash_methods);
}
