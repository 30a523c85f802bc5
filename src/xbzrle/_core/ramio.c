/* Placeholder for the ramio part of xbzrle._core. */
#include "parts.h"

int xbz_ramio_register(PyObject *module)
{
    (void)module;
    return 0;
}
