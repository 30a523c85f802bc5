/* The XBZRLE page cache: one slab of page-sized slots, a page's slot being
 * its page number modulo the (power of two) slot count.  Entries remember the
 * dirty-sync generation they were last used in, so an insert can refuse to
 * evict a page that is still hot (aging).
 *
 * The xbz_cache_* functions take no GIL and make no Python calls: the C save
 * loop calls them with the GIL released.  The caller guarantees that no
 * resize, clear or free runs concurrently with them. */
#ifndef XBZ_CACHE_H
#define XBZ_CACHE_H
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

#define XBZ_CACHE_EMPTY UINT64_MAX
#define XBZ_CACHE_MIN_PAGE 512
#define XBZ_CACHE_MAX_PAGE 16384

typedef struct xbz_cache {
    uint8_t  *slab;       /* nslots * page_size bytes */
    uint64_t *addrs;      /* XBZ_CACHE_EMPTY when the slot is free */
    uint64_t *ages;       /* generation of last use */
    size_t    nslots;     /* power of two */
    size_t    page_size;
    uint64_t  lifetime, generation;
    uint64_t  items, hits, misses, inserts, refused;
    unsigned  page_shift; /* log2(page_size) */
} xbz_cache;

/* Allocate an empty cache; nslots and page_size powers of two.  0 ok, -1 out
 * of memory (c is then zeroed and safe to free). */
int xbz_cache_init(xbz_cache *c, size_t nslots, size_t page_size, uint64_t lifetime);
/* Release the slab and metadata; c is zeroed. */
void xbz_cache_free(xbz_cache *c);
/* Forget every entry (counters stay) and hand the slab's pages back to the OS. */
void xbz_cache_clear(xbz_cache *c);

/* addr must be page aligned and never XBZ_CACHE_EMPTY. */
static inline size_t xbz_cache_slot(const xbz_cache *c, uint64_t addr)
{
    return (size_t)(addr >> c->page_shift) & (c->nslots - 1);
}

static inline uint8_t *xbz_cache_page(const xbz_cache *c, size_t slot)
{
    return c->slab + slot * c->page_size;
}

/* Whether addr is cached; touches neither counters nor ages. */
static inline int xbz_cache_contains(const xbz_cache *c, uint64_t addr)
{
    return c->addrs[xbz_cache_slot(c, addr)] == addr;
}

/* Hit: refresh age, count a hit, return the cached page. Miss: count, return NULL. */
uint8_t *xbz_cache_lookup(xbz_cache *c, uint64_t addr);
/* Copy data (page_size bytes) into addr's slot; NULL when refused by aging. */
uint8_t *xbz_cache_insert(xbz_cache *c, uint64_t addr, const uint8_t *data);
/* Resize to nslots (power of two) keeping MRU entries; 0 ok, -1 out of memory. */
int xbz_cache_resize(xbz_cache *c, size_t nslots);

/* busy is set while a method runs with the GIL released (resize, clear); a C
 * loop that works on the cache without the GIL should set it too, so Python
 * callers get an error instead of a race. */
typedef struct { PyObject_HEAD xbz_cache cache; int busy; } XbzPageCacheObject;
extern PyTypeObject XbzPageCache_Type;

#endif
