/* What the save and load loops share on the Python side: the LoopCounts
 * structure they return, and the record flags exported for the test that
 * keeps them equal to xbzrle.stream.constants. */
#include "loops.h"

#include "parts.h"

static PyStructSequence_Field count_fields[] = {
    {"scanned", "dirty pages handled (save) or page records applied (load)"},
    {"zero", "ZERO records"},
    {"normal", "PAGE records, cache misses and overflows included"},
    {"xbzrle", "XBZRLE records"},
    {"unchanged", "cache hits with an empty delta: nothing sent"},
    {"overflow", "cache hits whose delta overflowed: sent whole"},
    {"cache_miss", "pages not in the cache (inserted when allowed)"},
    {"xbzrle_bytes", "XBZRLE record bytes (delta + 3) plus a page per overflow"},
    {"wire_bytes", "bytes of records produced (save) or consumed (load)"},
    {"skipped_overflow", "cache hits sent whole without running the encoder: the page "
                         "overflowed recently (overflow back-off)"},
    {"encode_ns", "nanoseconds the save loop spent inside the XBZRLE encoder in the runs "
                  "it timed (a sample; 0 for the load loop)"},
    {"encode_timed", "encoder runs timed: those on every 32nd page of the block"},
    {NULL, NULL},
};

static PyStructSequence_Desc counts_desc = {
    "xbzrle._core.LoopCounts",
    "LoopCounts(sequence, dict={})\n--\n\n"
    "What one call of the save or load loop did; the fields of "
    "xbzrle.stream.counts.BatchCounts.",
    count_fields,
    XBZ_C_COUNT,
};

static PyTypeObject *counts_type;

PyObject *xbz_loop_counts(const uint64_t *counts)
{
    PyObject *result = PyStructSequence_New(counts_type);
    if (result == NULL)
        return NULL;
    for (int i = 0; i < XBZ_C_COUNT; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(counts[i]);
        if (v == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyStructSequence_SET_ITEM(result, i, v);
    }
    return result;
}

int xbz_loops_register(PyObject *module)
{
    counts_type = PyStructSequence_NewType(&counts_desc);
    if (counts_type == NULL)
        return -1;
    if (PyModule_AddObjectRef(module, "LoopCounts", (PyObject *)counts_type) < 0)
        return -1;
    static const struct { const char *name; long value; } flags[] = {
        {"RAM_SAVE_FLAG_ZERO", XBZ_F_ZERO},
        {"RAM_SAVE_FLAG_MEM_SIZE", XBZ_F_MEM_SIZE},
        {"RAM_SAVE_FLAG_PAGE", XBZ_F_PAGE},
        {"RAM_SAVE_FLAG_EOS", XBZ_F_EOS},
        {"RAM_SAVE_FLAG_CONTINUE", XBZ_F_CONTINUE},
        {"RAM_SAVE_FLAG_XBZRLE", XBZ_F_XBZRLE},
        {"ENCODING_FLAG_XBZRLE", XBZ_ENCODING_XBZRLE},
    };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        if (PyModule_AddIntConstant(module, flags[i].name, flags[i].value) < 0)
            return -1;
    }
    if (PyModule_AddIntConstant(module, "SAVE_MAX_RECORD", XBZ_MAX_RECORD) < 0)
        return -1;
    return xbz_save_register(module) < 0 || xbz_load_register(module) < 0 ? -1 : 0;
}
