/* Python exception types of xbzrle.errors, looked up from C in one place.
 *
 * Every part of the core that raises a package error (StreamError,
 * ParameterError, DecodeError...) gets its type here: imported once, kept
 * for the life of the process, so raising never re-imports a module and a
 * renamed class fails at import time of _core rather than on the first
 * error. */
#ifndef XBZ_PYERRORS_H
#define XBZ_PYERRORS_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* xbzrle.errors.<name> (a borrowed, process-lifetime reference), or NULL
 * with an exception set.  Needs the GIL. */
PyObject *xbz_error_type(const char *name);

/* Raise xbzrle.errors.<name>(message, offset): the signature of the stream
 * and decode errors, which carry the byte offset of the fault.  Always
 * returns NULL so callers can `return xbz_raise_at(...)`. */
PyObject *xbz_raise_at(const char *name, const char *message, Py_ssize_t offset);

#endif
