/* Placeholder for the cache part of xbzrle._core. */
#include "parts.h"

int xbz_cache_register(PyObject *module)
{
    (void)module;
    return 0;
}
