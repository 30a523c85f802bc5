/* The one compiled module, xbzrle._core.  Each part (codec, cache, guest,
 * loops) registers its functions and types here; they share C headers so the
 * per-page loops can call the codec and the cache directly. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "parts.h"

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "xbzrle._core",
    "Compiled core of xbzrle: codec, page cache, guest RAM, save/load loops.",
    -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void)
{
    PyObject *m = PyModule_Create(&core_module);
    if (m == NULL)
        return NULL;
    if (xbz_codec_register(m) < 0 || xbz_cache_register(m) < 0 ||
        xbz_guest_register(m) < 0 || xbz_loops_register(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
