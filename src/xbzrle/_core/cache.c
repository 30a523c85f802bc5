/* The page cache part of xbzrle._core: the GIL-free xbz_cache_* functions
 * that the C save loop calls, and the PageCache type that wraps them. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "cache.h"
#include "parts.h"
#include "pyerrors.h"

/* ------------------------------------------------------------------ */
/* Pure C cache: no Python calls, no GIL needed.                       */

static unsigned log2_of(size_t power_of_two)
{
    unsigned shift = 0;
    while (((size_t)1 << shift) < power_of_two)
        shift++;
    return shift;
}

static uint8_t *slab_alloc(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : (uint8_t *)p;
}

static void slab_free(uint8_t *slab, size_t bytes)
{
    if (slab != NULL)
        munmap(slab, bytes);
}

/* Metadata for nslots slots, every slot empty; 0 ok, -1 out of memory. */
static int meta_alloc(size_t nslots, uint64_t **addrs, uint64_t **ages)
{
    *addrs = malloc(nslots * sizeof(uint64_t));
    *ages = calloc(nslots, sizeof(uint64_t));
    if (*addrs == NULL || *ages == NULL) {
        free(*addrs);
        free(*ages);
        *addrs = *ages = NULL;
        return -1;
    }
    memset(*addrs, 0xff, nslots * sizeof(uint64_t)); /* XBZ_CACHE_EMPTY */
    return 0;
}

int xbz_cache_init(xbz_cache *c, size_t nslots, size_t page_size, uint64_t lifetime)
{
    memset(c, 0, sizeof(*c));
    c->slab = slab_alloc(nslots * page_size);
    if (c->slab == NULL || meta_alloc(nslots, &c->addrs, &c->ages) < 0) {
        slab_free(c->slab, nslots * page_size);
        memset(c, 0, sizeof(*c));
        return -1;
    }
    c->nslots = nslots;
    c->page_size = page_size;
    c->page_shift = log2_of(page_size);
    c->lifetime = lifetime;
    return 0;
}

void xbz_cache_free(xbz_cache *c)
{
    slab_free(c->slab, c->nslots * c->page_size);
    free(c->addrs);
    free(c->ages);
    memset(c, 0, sizeof(*c));
}

void xbz_cache_clear(xbz_cache *c)
{
    memset(c->addrs, 0xff, c->nslots * sizeof(uint64_t));
    memset(c->ages, 0, c->nslots * sizeof(uint64_t));
    /* Stale page data is never read again: let the kernel reclaim it. */
    madvise(c->slab, c->nslots * c->page_size, MADV_DONTNEED);
    c->items = 0;
}

/* Whether an occupant last used in generation `age` is still too young to be
 * evicted.  Written as `age + lifetime > generation` without overflow; a
 * lifetime of 0 never protects (the seed's always-overwrite rule), even when
 * the generation was set back below the age. */
static int still_young(const xbz_cache *c, uint64_t age)
{
    if (c->lifetime == 0)
        return 0;
    return age > c->generation || c->generation - age < c->lifetime;
}

uint8_t *xbz_cache_lookup(xbz_cache *c, uint64_t addr)
{
    size_t slot = xbz_cache_slot(c, addr);
    if (c->addrs[slot] != addr) {
        c->misses++;
        return NULL;
    }
    c->hits++;
    c->ages[slot] = c->generation;
    return xbz_cache_page(c, slot);
}

uint8_t *xbz_cache_insert(xbz_cache *c, uint64_t addr, const uint8_t *data)
{
    size_t slot = xbz_cache_slot(c, addr);
    uint64_t occupant = c->addrs[slot];
    if (occupant == XBZ_CACHE_EMPTY) {
        c->items++;
    } else if (occupant != addr && still_young(c, c->ages[slot])) {
        c->refused++;
        return NULL;
    }
    uint8_t *page = xbz_cache_page(c, slot);
    memcpy(page, data, c->page_size);
    c->addrs[slot] = addr;
    c->ages[slot] = c->generation;
    c->inserts++;
    return page;
}

int xbz_cache_resize(xbz_cache *c, size_t nslots)
{
    if (nslots == c->nslots)
        return 0;
    size_t page_size = c->page_size;
    uint8_t *slab = slab_alloc(nslots * page_size);
    uint64_t *addrs, *ages;
    if (slab == NULL || meta_alloc(nslots, &addrs, &ages) < 0) {
        slab_free(slab, nslots * page_size);
        return -1;
    }
    /* Growing never collides; shrinking folds old slots together and keeps
     * the most recently used page, the earlier old slot on a tie. */
    uint64_t items = 0;
    for (size_t old = 0; old < c->nslots; old++) {
        uint64_t addr = c->addrs[old];
        if (addr == XBZ_CACHE_EMPTY)
            continue;
        size_t slot = (size_t)(addr >> c->page_shift) & (nslots - 1);
        if (addrs[slot] == XBZ_CACHE_EMPTY)
            items++;
        else if (ages[slot] >= c->ages[old])
            continue;
        addrs[slot] = addr;
        ages[slot] = c->ages[old];
        memcpy(slab + slot * page_size, xbz_cache_page(c, old), page_size);
    }
    slab_free(c->slab, c->nslots * page_size);
    free(c->addrs);
    free(c->ages);
    c->slab = slab;
    c->addrs = addrs;
    c->ages = ages;
    c->nslots = nslots;
    c->items = items;
    return 0;
}

/* ------------------------------------------------------------------ */
/* The PageCache Python type.                                          */

static PyObject *parameter_error; /* xbzrle.errors.ParameterError (borrowed) */

#define ENSURE_IDLE(self, fail)                                                    \
    do {                                                                           \
        if ((self)->busy) {                                                        \
            PyErr_SetString(PyExc_RuntimeError,                                    \
                            "PageCache is in use by another thread (resize or "    \
                            "a save loop)");                                       \
            return fail;                                                           \
        }                                                                          \
    } while (0)

/* An int in [0, 2**64) that is not a bool; ParameterError otherwise. */
static int as_u64(PyObject *obj, const char *what, uint64_t *out)
{
    if (!PyLong_Check(obj) || PyBool_Check(obj)) {
        PyErr_Format(parameter_error, "%s must be an int, not %.100s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    unsigned long long value = PyLong_AsUnsignedLongLong(obj);
    if (value == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(parameter_error, "%s must be between 0 and 2**64-1, got %R", what, obj);
        return -1;
    }
    *out = value;
    return 0;
}

static int valid_page_size(PyObject *obj, size_t *out)
{
    uint64_t value;
    if (as_u64(obj, "page_size", &value) < 0)
        return -1;
    if (value < XBZ_CACHE_MIN_PAGE || value > XBZ_CACHE_MAX_PAGE || (value & (value - 1))) {
        PyErr_Format(parameter_error,
                     "page_size must be a power of two between %d and %d, got %R",
                     XBZ_CACHE_MIN_PAGE, XBZ_CACHE_MAX_PAGE, obj);
        return -1;
    }
    *out = (size_t)value;
    return 0;
}

/* Slot count for a capacity: whole pages, rounded down to a power of two. */
static int slots_for_size(PyObject *obj, size_t page_size, size_t *out)
{
    if (PyLong_Check(obj) && !PyBool_Check(obj)) {
        int overflow = 0;
        long long value = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (value == -1 && PyErr_Occurred())
            return -1;
        if (overflow < 0 || (overflow == 0 && value < (long long)page_size)) {
            PyErr_Format(parameter_error,
                         "size_bytes must be at least one page (%zu bytes), got %R",
                         page_size, obj);
            return -1;
        }
    }
    uint64_t size;
    if (as_u64(obj, "size_bytes", &size) < 0)
        return -1;
    uint64_t pages = size / page_size;
    size_t slots = 1;
    while (slots <= pages / 2)
        slots *= 2;
    *out = slots;
    return 0;
}

static int parse_addr(XbzPageCacheObject *self, PyObject *obj, uint64_t *addr)
{
    if (as_u64(obj, "address", addr) < 0)
        return -1;
    if (*addr & (self->cache.page_size - 1)) {
        char hex[32];
        snprintf(hex, sizeof(hex), "%#llx", (unsigned long long)*addr);
        PyErr_Format(parameter_error, "address %s is not aligned to the %zu-byte page size",
                     hex, self->cache.page_size);
        return -1;
    }
    return 0;
}

/* A view of exactly one page; the caller releases it. */
static int get_page(XbzPageCacheObject *self, PyObject *obj, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
        return -1;
    if ((size_t)view->len != self->cache.page_size) {
        PyErr_Format(parameter_error, "data must be exactly one page (%zu bytes), got %zd",
                     self->cache.page_size, view->len);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int two_args(const char *method, Py_ssize_t nargs)
{
    if (nargs == 2)
        return 1;
    PyErr_Format(PyExc_TypeError, "%s() takes exactly 2 arguments (addr, data), got %zd",
                 method, nargs);
    return 0;
}

static PyObject *PageCache_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"size_bytes", "page_size", "lifetime", NULL};
    PyObject *size_obj, *page_obj = NULL, *lifetime_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OO:PageCache", kwlist, &size_obj,
                                     &page_obj, &lifetime_obj))
        return NULL;
    size_t page_size = 4096, nslots;
    uint64_t lifetime = 2;
    if (page_obj != NULL && valid_page_size(page_obj, &page_size) < 0)
        return NULL;
    if (lifetime_obj != NULL && as_u64(lifetime_obj, "lifetime", &lifetime) < 0)
        return NULL;
    if (slots_for_size(size_obj, page_size, &nslots) < 0)
        return NULL;
    XbzPageCacheObject *self = (XbzPageCacheObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (xbz_cache_init(&self->cache, nslots, page_size, lifetime) < 0) {
        Py_DECREF(self);
        return PyErr_Format(PyExc_MemoryError, "cannot allocate a %zu-byte page cache",
                            nslots * page_size);
    }
    return (PyObject *)self;
}

static void PageCache_dealloc(XbzPageCacheObject *self)
{
    xbz_cache_free(&self->cache);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *PageCache_repr(XbzPageCacheObject *self)
{
    const xbz_cache *c = &self->cache;
    return PyUnicode_FromFormat("<PageCache %zu slots x %zu bytes, %llu items, lifetime %llu, "
                                "generation %llu>",
                                c->nslots, c->page_size, (unsigned long long)c->items,
                                (unsigned long long)c->lifetime,
                                (unsigned long long)c->generation);
}

static PyObject *PageCache_lookup(XbzPageCacheObject *self, PyObject *addr_obj)
{
    uint64_t addr;
    ENSURE_IDLE(self, NULL);
    if (parse_addr(self, addr_obj, &addr) < 0)
        return NULL;
    const uint8_t *page = xbz_cache_lookup(&self->cache, addr);
    if (page == NULL)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)page, (Py_ssize_t)self->cache.page_size);
}

static PyObject *PageCache_insert(XbzPageCacheObject *self, PyObject *const *args,
                                  Py_ssize_t nargs)
{
    uint64_t addr;
    Py_buffer view;
    if (!two_args("insert", nargs))
        return NULL;
    ENSURE_IDLE(self, NULL);
    if (parse_addr(self, args[0], &addr) < 0 || get_page(self, args[1], &view) < 0)
        return NULL;
    const uint8_t *page = xbz_cache_insert(&self->cache, addr, view.buf);
    PyBuffer_Release(&view);
    return PyBool_FromLong(page != NULL);
}

static PyObject *PageCache_update(XbzPageCacheObject *self, PyObject *const *args,
                                  Py_ssize_t nargs)
{
    uint64_t addr;
    Py_buffer view;
    if (!two_args("update", nargs))
        return NULL;
    ENSURE_IDLE(self, NULL);
    if (parse_addr(self, args[0], &addr) < 0 || get_page(self, args[1], &view) < 0)
        return NULL;
    xbz_cache *c = &self->cache;
    size_t slot = xbz_cache_slot(c, addr);
    if (c->addrs[slot] != addr) {
        PyBuffer_Release(&view);
        PyErr_SetObject(PyExc_KeyError, args[0]);
        return NULL;
    }
    memcpy(xbz_cache_page(c, slot), view.buf, c->page_size);
    c->ages[slot] = c->generation;
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *PageCache_resize(XbzPageCacheObject *self, PyObject *size_obj)
{
    size_t nslots;
    int rc;
    ENSURE_IDLE(self, NULL);
    if (slots_for_size(size_obj, self->cache.page_size, &nslots) < 0)
        return NULL;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = xbz_cache_resize(&self->cache, nslots);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (rc < 0)
        return PyErr_Format(PyExc_MemoryError, "cannot allocate a %zu-byte page cache",
                            nslots * self->cache.page_size);
    return PyLong_FromSize_t(self->cache.nslots);
}

static PyObject *PageCache_clear(XbzPageCacheObject *self, PyObject *unused)
{
    ENSURE_IDLE(self, NULL);
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    xbz_cache_clear(&self->cache);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    Py_RETURN_NONE;
}

static size_t memory_used(const xbz_cache *c)
{
    return c->nslots * (c->page_size + 2 * sizeof(uint64_t));
}

static PyObject *PageCache_stats(XbzPageCacheObject *self, PyObject *unused)
{
    const xbz_cache *c = &self->cache;
    return Py_BuildValue("{sn sn sn sK sK sK sK sK sK sK sn}",
                         "size", (Py_ssize_t)(c->nslots * c->page_size),
                         "slots", (Py_ssize_t)c->nslots,
                         "page_size", (Py_ssize_t)c->page_size,
                         "lifetime", (unsigned long long)c->lifetime,
                         "generation", (unsigned long long)c->generation,
                         "items", (unsigned long long)c->items,
                         "hits", (unsigned long long)c->hits,
                         "misses", (unsigned long long)c->misses,
                         "inserts", (unsigned long long)c->inserts,
                         "refused", (unsigned long long)c->refused,
                         "memory_used", (Py_ssize_t)memory_used(c));
}

static int PageCache_contains(XbzPageCacheObject *self, PyObject *addr_obj)
{
    uint64_t addr;
    ENSURE_IDLE(self, -1);
    if (parse_addr(self, addr_obj, &addr) < 0)
        return -1;
    return xbz_cache_contains(&self->cache, addr);
}

static Py_ssize_t PageCache_len(XbzPageCacheObject *self)
{
    return (Py_ssize_t)self->cache.items;
}

static PyObject *get_generation(XbzPageCacheObject *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->cache.generation);
}

static int set_generation(XbzPageCacheObject *self, PyObject *value, void *closure)
{
    uint64_t generation;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete generation");
        return -1;
    }
    if (as_u64(value, "generation", &generation) < 0)
        return -1;
    self->cache.generation = generation;
    return 0;
}

/* One getter per read-only field; closure is the field's offset in xbz_cache. */
static PyObject *get_u64_field(XbzPageCacheObject *self, void *offset)
{
    const char *base = (const char *)&self->cache;
    return PyLong_FromUnsignedLongLong(*(const uint64_t *)(base + (size_t)offset));
}

static PyObject *get_size(XbzPageCacheObject *self, void *closure)
{
    return PyLong_FromSize_t(self->cache.nslots * self->cache.page_size);
}

static PyObject *get_slots(XbzPageCacheObject *self, void *closure)
{
    return PyLong_FromSize_t(self->cache.nslots);
}

static PyObject *get_page_size(XbzPageCacheObject *self, void *closure)
{
    return PyLong_FromSize_t(self->cache.page_size);
}

static PyObject *get_memory_used(XbzPageCacheObject *self, void *closure)
{
    return PyLong_FromSize_t(memory_used(&self->cache));
}

#define U64_FIELD(name, doc)                                                       \
    {#name, (getter)get_u64_field, NULL, doc, (void *)offsetof(xbz_cache, name)}

static PyGetSetDef PageCache_getset[] = {
    {"size", (getter)get_size, NULL, "Capacity in bytes: slots * page_size.", NULL},
    {"slots", (getter)get_slots, NULL, "Number of slots (a power of two).", NULL},
    {"page_size", (getter)get_page_size, NULL, "Bytes per page.", NULL},
    {"generation", (getter)get_generation, (setter)set_generation,
     "Current dirty-sync round; the migration bumps it at every sync.", NULL},
    {"memory_used", (getter)get_memory_used, NULL, "Bytes reserved: slab plus metadata.",
     NULL},
    U64_FIELD(lifetime, "Generations an entry is protected from eviction after its last use."),
    U64_FIELD(items, "Occupied slots."),
    U64_FIELD(hits, "Lookups that found their page."),
    U64_FIELD(misses, "Lookups that did not."),
    U64_FIELD(inserts, "Inserts that stored a page."),
    U64_FIELD(refused, "Inserts refused because the occupant was still young."),
    {NULL},
};

static PyMethodDef PageCache_methods[] = {
    {"lookup", (PyCFunction)PageCache_lookup, METH_O,
     "lookup($self, addr, /)\n--\n\n"
     "A copy of the cached page (bytes), refreshing its age; None on a miss."},
    {"insert", (PyCFunction)(void (*)(void))PageCache_insert, METH_FASTCALL,
     "insert($self, addr, data, /)\n--\n\n"
     "Store a page: True when stored, False when aging refuses to evict the slot's "
     "occupant."},
    {"update", (PyCFunction)(void (*)(void))PageCache_update, METH_FASTCALL,
     "update($self, addr, data, /)\n--\n\n"
     "Overwrite a cached page in place (returns None); KeyError if absent."},
    {"resize", (PyCFunction)PageCache_resize, METH_O,
     "resize($self, size_bytes, /)\n--\n\n"
     "Change capacity keeping entries (the most recently used on a collision); returns "
     "the new slot count (int)."},
    {"clear", (PyCFunction)PageCache_clear, METH_NOARGS,
     "clear($self, /)\n--\n\nForget every page; counters stay."},
    {"stats", (PyCFunction)PageCache_stats, METH_NOARGS,
     "stats($self, /)\n--\n\nSizes and counters in one dict (str -> int)."},
    {NULL},
};

static PySequenceMethods PageCache_as_sequence = {
    .sq_length = (lenfunc)PageCache_len,
    .sq_contains = (objobjproc)PageCache_contains,
};

PyTypeObject XbzPageCache_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "xbzrle.PageCache",
    .tp_basicsize = sizeof(XbzPageCacheObject),
    .tp_dealloc = (destructor)PageCache_dealloc,
    .tp_repr = (reprfunc)PageCache_repr,
    .tp_as_sequence = &PageCache_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "PageCache(size_bytes, page_size=4096, lifetime=2)\n--\n\n"
              "XBZRLE page cache: one slab of page slots indexed by page number modulo the "
              "slot count, with generation-based aging.",
    .tp_methods = PageCache_methods,
    .tp_getset = PageCache_getset,
    .tp_new = PageCache_new,
};

int xbz_cache_register(PyObject *module)
{
    parameter_error = xbz_error_type("ParameterError");
    if (parameter_error == NULL)
        return -1;
    if (PyType_Ready(&XbzPageCache_Type) < 0)
        return -1;
    return PyModule_AddType(module, &XbzPageCache_Type);
}
