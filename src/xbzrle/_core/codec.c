/* Placeholder for the codec part of xbzrle._core. */
#include "parts.h"

int xbz_codec_register(PyObject *module)
{
    (void)module;
    return 0;
}
