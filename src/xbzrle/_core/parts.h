/* Registration hooks of the parts of xbzrle._core (see module.c). */
#ifndef XBZ_PARTS_H
#define XBZ_PARTS_H
#include <Python.h>

int xbz_codec_register(PyObject *module);
int xbz_cache_register(PyObject *module);
int xbz_guest_register(PyObject *module);
int xbz_loops_register(PyObject *module);

#endif
