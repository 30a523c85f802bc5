/* The one lookup of xbzrle.errors classes from C (see pyerrors.h). */
#include "pyerrors.h"

#include <string.h>

/* A handful of names is all the core raises; a fixed table keeps it simple. */
#define MAX_TYPES 8

static struct {
    const char *name; /* a string literal of the caller */
    PyObject *type;
} known[MAX_TYPES];

PyObject *xbz_error_type(const char *name)
{
    int i;
    for (i = 0; i < MAX_TYPES && known[i].name != NULL; i++) {
        if (strcmp(known[i].name, name) == 0)
            return known[i].type;
    }
    if (i == MAX_TYPES) {
        PyErr_Format(PyExc_SystemError, "xbz_error_type: more than %d error types", MAX_TYPES);
        return NULL;
    }
    PyObject *module = PyImport_ImportModule("xbzrle.errors");
    if (module == NULL)
        return NULL;
    PyObject *type = PyObject_GetAttrString(module, name);
    Py_DECREF(module);
    if (type == NULL)
        return NULL;
    if (!PyExceptionClass_Check(type)) {
        PyErr_Format(PyExc_TypeError, "xbzrle.errors.%s is not an exception class", name);
        Py_DECREF(type);
        return NULL;
    }
    known[i].name = name;
    known[i].type = type; /* kept: the module lives as long as the process */
    return type;
}

PyObject *xbz_raise_at(const char *name, const char *message, Py_ssize_t offset)
{
    PyObject *type = xbz_error_type(name);
    if (type == NULL)
        return NULL;
    PyObject *exc = PyObject_CallFunction(type, "sn", message, offset);
    if (exc != NULL) {
        PyErr_SetObject(type, exc);
        Py_DECREF(exc);
    }
    return NULL;
}
