/* Placeholder for the guest part of xbzrle._core. */
#include "parts.h"

int xbz_guest_register(PyObject *module)
{
    (void)module;
    return 0;
}
