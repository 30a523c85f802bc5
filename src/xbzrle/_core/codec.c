/* The codec part of xbzrle._core: Python bindings over the kernels of
 * codec_kernels.c.  Every function takes any contiguous buffer without
 * copying it, releases the GIL around the byte work, and releases every
 * buffer on every path. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "codec_internal.h"
#include "parts.h"
#include "pyerrors.h"


/* ---- errors ---- */

static PyObject *array_type;        /* array.array, cached */

static PyObject *import_attr(const char *module, const char *name)
{
    PyObject *mod = PyImport_ImportModule(module);
    if (mod == NULL)
        return NULL;
    PyObject *attr = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    return attr;
}

/* Raise DecodeError(message, offset), with .page set when page >= 0. */
static void raise_decode_error(PyObject *message, size_t offset, Py_ssize_t page)
{
    if (message == NULL)
        return;
    PyObject *decode_error_type = xbz_error_type("DecodeError");
    if (decode_error_type == NULL) {
        Py_DECREF(message);
        return;
    }
    PyObject *exc = PyObject_CallFunction(decode_error_type, "On", message, (Py_ssize_t)offset);
    Py_DECREF(message);
    if (exc == NULL)
        return;
    if (page >= 0) {
        PyObject *index = PyLong_FromSsize_t(page);
        if (index == NULL || PyObject_SetAttrString(exc, "page", index) < 0) {
            Py_XDECREF(index);
            Py_DECREF(exc);
            return;
        }
        Py_DECREF(index);
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
}

static void raise_delta_error(size_t offset, const char *reason)
{
    raise_decode_error(PyUnicode_FromFormat("XBZRLE delta at offset %zu: %s", offset, reason),
                       offset, -1);
}

/* ---- argument checks ---- */

static int check_page_size(Py_ssize_t size, const char *what)
{
    if (size < 1 || size > XBZ_MAX_PAGE_SIZE) {
        PyErr_Format(PyExc_ValueError, "%s of %zd bytes: XBZRLE pages hold 1 to %d bytes", what,
                     size, XBZ_MAX_PAGE_SIZE);
        return -1;
    }
    return 0;
}

static int check_same_length(const Py_buffer *a, const Py_buffer *b, const char *what)
{
    if (a->len != b->len) {
        PyErr_Format(PyExc_ValueError, "%s differ in length (%zd and %zd bytes)", what, a->len,
                     b->len);
        return -1;
    }
    return 0;
}

static int check_whole_pages(Py_ssize_t len, Py_ssize_t page_size)
{
    if (check_page_size(page_size, "page_size") < 0)
        return -1;
    if (len % page_size != 0) {
        PyErr_Format(PyExc_ValueError,
                     "buffers of %zd bytes do not hold whole pages of %zd bytes", len, page_size);
        return -1;
    }
    return 0;
}

static int check_no_overlap(const Py_buffer *a, const Py_buffer *b)
{
    uintptr_t a0 = (uintptr_t)a->buf, b0 = (uintptr_t)b->buf;
    if (a->len > 0 && b->len > 0 && a0 < b0 + (uintptr_t)b->len && b0 < a0 + (uintptr_t)a->len) {
        PyErr_SetString(PyExc_ValueError, "the delta and the page must not share memory");
        return -1;
    }
    return 0;
}

/* A buffer argument, read in place.  Any exporter is accepted as long as its
 * bytes are one C-contiguous block; a strided view or a read-only buffer
 * where a writable one is needed is a TypeError that names the argument
 * (the pure-Python twin raises TypeError too), never a BufferError. */
static int get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *func,
                      const char *arg)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_FULL_RO) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError) || PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s(): %s must be a bytes-like object, not %.200s",
                         func, arg, Py_TYPE(obj)->tp_name);
        }
        return -1;
    }
    if (!PyBuffer_IsContiguous(view, 'C')) {
        PyErr_Format(PyExc_TypeError,
                     "%s(): %s must be a C-contiguous buffer, not a strided %.200s", func, arg,
                     Py_TYPE(obj)->tp_name);
        PyBuffer_Release(view);
        return -1;
    }
    if (writable && view->readonly) {
        PyErr_Format(PyExc_TypeError, "%s(): %s must be a writable buffer, not read-only %.200s",
                     func, arg, Py_TYPE(obj)->tp_name);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Read up to four buffer arguments; on failure none stays held. */
static int get_buffers(const char *func, int count, PyObject **objs, Py_buffer **views,
                       const int *writable, const char *const *names)
{
    for (int i = 0; i < count; i++) {
        if (get_buffer(objs[i], views[i], writable[i], func, names[i]) < 0) {
            while (i-- > 0)
                PyBuffer_Release(views[i]);
            return -1;
        }
    }
    return 0;
}

/* An integer argument held in a Py_ssize_t (page_size, pos).  A value too
 * large for it gets the caller's ValueError (what_fmt, formatted with the
 * value), the same as any other value out of range, never OverflowError. */
static int get_ssize(PyObject *obj, Py_ssize_t *value, const char *what_fmt)
{
    PyObject *index = PyNumber_Index(obj);
    if (index == NULL)
        return -1;
    Py_ssize_t v = PyLong_AsSsize_t(index);
    if (v == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            Py_DECREF(index);
            return -1;
        }
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, what_fmt, index);
        Py_DECREF(index);
        return -1;
    }
    Py_DECREF(index);
    *value = v;
    return 0;
}

#define PAGE_SIZE_RANGE_FMT "page_size of %R bytes: XBZRLE pages hold 1 to 16384 bytes"

/* limit=None means the page length; a huge int means no limit. */
static int parse_limit(PyObject *obj, size_t page_len, size_t *limit)
{
    if (obj == Py_None) {
        *limit = page_len;
        return 0;
    }
    PyObject *index = PyNumber_Index(obj);
    if (index == NULL)
        return -1;
    int overflow;
    long long value = PyLong_AsLongLongAndOverflow(index, &overflow);
    Py_DECREF(index);
    if (value == -1 && PyErr_Occurred())
        return -1;
    if (overflow < 0 || (overflow == 0 && value < 0)) {
        PyErr_Format(PyExc_ValueError, "limit must be None or >= 0, got %R", obj);
        return -1;
    }
    *limit = overflow > 0 ? SIZE_MAX : (size_t)value;
    return 0;
}

/* ---- single pages ---- */

PyDoc_STRVAR(encode_doc,
             "encode($module, /, old, new, limit=None)\n--\n\n"
             "XBZRLE delta turning page old into page new: b'' when they are equal,\n"
             "None when it would be longer than limit bytes (default: the page length).");

static PyObject *codec_encode(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"old", "new", "limit", NULL};
    static const char *const names[] = {"old", "new"};
    static const int writable[] = {0, 0};
    Py_buffer old, new_page;
    PyObject *objs[2], *limit_obj = Py_None, *result = NULL;
    size_t limit;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:encode", keywords, &objs[0], &objs[1],
                                     &limit_obj) ||
        get_buffers("encode", 2, objs, (Py_buffer *[]){&old, &new_page}, writable, names) < 0)
        return NULL;
    if (check_same_length(&old, &new_page, "old and new pages") < 0 ||
        check_page_size(old.len, "page") < 0 ||
        parse_limit(limit_obj, (size_t)old.len, &limit) < 0)
        goto done;

    /* No canonical encoding exceeds 1.5 times the page, so a larger limit
     * changes nothing and the buffer stays small.  This goes through the
     * public xbz_encode on purpose: the tests then cover what the save loop
     * calls. */
    size_t capacity = (size_t)old.len * 2 + 16;
    if (limit < capacity)
        capacity = limit;
    uint8_t stack_scratch[2 * 4096 + 16];
    uint8_t *scratch = stack_scratch;
    if (capacity > sizeof stack_scratch) {
        scratch = PyMem_RawMalloc(capacity);
        if (scratch == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    ssize_t written;
    Py_BEGIN_ALLOW_THREADS
    written = xbz_encode(old.buf, new_page.buf, (size_t)old.len, scratch, capacity);
    Py_END_ALLOW_THREADS
    if (written < 0)
        result = Py_NewRef(Py_None);
    else
        result = PyBytes_FromStringAndSize((const char *)scratch, written);
    if (scratch != stack_scratch)
        PyMem_RawFree(scratch);
done:
    PyBuffer_Release(&old);
    PyBuffer_Release(&new_page);
    return result;
}

PyDoc_STRVAR(decode_doc,
             "decode($module, /, delta, old)\n--\n\n"
             "The new page: old with the XBZRLE delta applied (DecodeError if malformed).");

static PyObject *codec_decode(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"delta", "old", NULL};
    static const char *const names[] = {"delta", "old"};
    static const int writable[] = {0, 0};
    Py_buffer delta, old;
    PyObject *objs[2], *result = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:decode", keywords, &objs[0], &objs[1]) ||
        get_buffers("decode", 2, objs, (Py_buffer *[]){&delta, &old}, writable, names) < 0)
        return NULL;
    if (check_page_size(old.len, "page") < 0)
        goto done;
    result = PyBytes_FromStringAndSize(NULL, old.len);
    if (result == NULL)
        goto done;
    size_t err_offset = 0;
    const char *err_reason = NULL;
    int rc;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
    Py_BEGIN_ALLOW_THREADS
    rc = xbz_decode_check(delta.buf, (size_t)delta.len, (size_t)old.len, &err_offset, &err_reason);
    if (rc == 0) {
        memcpy(out, old.buf, (size_t)old.len);
        xbz_decode_apply_within(delta.buf, (size_t)delta.len, out, (size_t)old.len);
    }
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        Py_CLEAR(result);
        raise_delta_error(err_offset, err_reason);
    }
done:
    PyBuffer_Release(&delta);
    PyBuffer_Release(&old);
    return result;
}

PyDoc_STRVAR(decode_into_doc,
             "decode_into($module, /, delta, page)\n--\n\n"
             "Apply the XBZRLE delta in place onto a writable page; on DecodeError the\n"
             "page is left untouched.");

static PyObject *codec_decode_into(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"delta", "page", NULL};
    static const char *const names[] = {"delta", "page"};
    static const int writable[] = {0, 1};
    Py_buffer delta, page;
    PyObject *objs[2], *result = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:decode_into", keywords, &objs[0],
                                     &objs[1]) ||
        get_buffers("decode_into", 2, objs, (Py_buffer *[]){&delta, &page}, writable, names) < 0)
        return NULL;
    if (check_page_size(page.len, "page") < 0 || check_no_overlap(&delta, &page) < 0)
        goto done;
    size_t err_offset = 0;
    const char *err_reason = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = xbz_decode_check(delta.buf, (size_t)delta.len, (size_t)page.len, &err_offset,
                          &err_reason);
    if (rc == 0)
        xbz_decode_apply_within(delta.buf, (size_t)delta.len, page.buf, (size_t)page.len);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        raise_delta_error(err_offset, err_reason);
    else
        result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&delta);
    PyBuffer_Release(&page);
    return result;
}

/* ---- batches of pages ---- */

PyDoc_STRVAR(encode_pages_doc,
             "encode_pages($module, /, old, new, page_size=4096)\n--\n\n"
             "Encode every page of two equal buffers in one call.  Returns (deltas,\n"
             "lengths): lengths is array('i'), per page 0 unchanged, -1 overflow, else\n"
             "the length of its delta; deltas are concatenated in page order.");

/* encode_pages.  The deltas are written straight into the bytes object
 * that is returned, grown when needed and shrunk in place at the end, so a
 * delta byte is copied at most when the object grows.  It starts at a
 * quarter of the input (at least 1 MiB): reserving the worst case instead
 * (the whole input) was measured slower, as such large blocks always come
 * fresh from the kernel and every 4 KiB written then costs a page fault,
 * while smaller ones are reused from the heap. */
static PyObject *encode_batch(PyObject *args, PyObject *kwargs, const char *format,
                              const char *func)
{
    static char *keywords[] = {"old", "new", "page_size", NULL};
    static const char *const names[] = {"old", "new"};
    static const int writable[] = {0, 0};
    Py_buffer old, new_page;
    Py_ssize_t page_size = 4096;
    PyObject *objs[2], *size_obj = NULL, *result = NULL, *deltas = NULL, *lengths = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, format, keywords, &objs[0], &objs[1],
                                     &size_obj) ||
        (size_obj != NULL && get_ssize(size_obj, &page_size, PAGE_SIZE_RANGE_FMT) < 0) ||
        get_buffers(func, 2, objs, (Py_buffer *[]){&old, &new_page}, writable, names) < 0)
        return NULL;
    if (check_same_length(&old, &new_page, "old and new buffers") < 0 ||
        check_whole_pages(old.len, page_size) < 0)
        goto done;
    if (array_type == NULL && (array_type = import_attr("array", "array")) == NULL)
        goto done;

    size_t pages = (size_t)(old.len / page_size), size = (size_t)page_size;
    size_t capacity = (size_t)old.len / 4 > ((size_t)1 << 20) ? (size_t)old.len / 4 : (size_t)1 << 20;
    if (capacity > (size_t)old.len)
        capacity = (size_t)old.len;
    if (capacity > (size_t)PY_SSIZE_T_MAX / 2 - size - XBZ_ENCODE_SLACK) {
        PyErr_NoMemory();
        goto done;
    }
    capacity += size + XBZ_ENCODE_SLACK;
    lengths = PyObject_CallFunction(array_type, "s", "i");
    deltas = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)capacity);
    if (lengths == NULL || deltas == NULL)
        goto done;
    if (pages > 0) {
        /* array('i', bytes(n)) would copy; growing it in place does not. */
        PyObject *zeros = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(pages * sizeof(int)));
        if (zeros == NULL)
            goto done;
        memset(PyBytes_AS_STRING(zeros), 0, pages * sizeof(int));
        PyObject *grown = PyObject_CallMethod(lengths, "frombytes", "O", zeros);
        Py_DECREF(zeros);
        if (grown == NULL)
            goto done;
        Py_DECREF(grown);
    }
    Py_buffer lengths_view;
    if (PyObject_GetBuffer(lengths, &lengths_view, PyBUF_WRITABLE) < 0)
        goto done;
    int *page_lengths = lengths_view.buf;
    size_t used = 0, p = 0;
    for (;;) {
        uint8_t *out = (uint8_t *)PyBytes_AS_STRING(deltas);
        Py_BEGIN_ALLOW_THREADS
        p = xbz_encode_pages_with_slack(old.buf, new_page.buf, size, p, pages, out, capacity,
                                        &used, page_lengths);
        Py_END_ALLOW_THREADS
        if (p == pages)
            break;
        /* Not room for one more page: grow (the GIL is needed for that). */
        size_t bigger = 2 * capacity;
        if (bigger > (size_t)PY_SSIZE_T_MAX || _PyBytes_Resize(&deltas, (Py_ssize_t)bigger) < 0) {
            if (!PyErr_Occurred())
                PyErr_NoMemory();
            PyBuffer_Release(&lengths_view);
            goto done;
        }
        capacity = bigger;
    }
    PyBuffer_Release(&lengths_view);
    if (_PyBytes_Resize(&deltas, (Py_ssize_t)used) < 0)
        goto done;
    result = PyTuple_Pack(2, deltas, lengths);
done:
    Py_XDECREF(deltas);
    Py_XDECREF(lengths);
    PyBuffer_Release(&old);
    PyBuffer_Release(&new_page);
    return result;
}

static PyObject *codec_encode_pages(PyObject *self, PyObject *args, PyObject *kwargs)
{
    return encode_batch(args, kwargs, "OO|O:encode_pages", "encode_pages");
}

/* One integer of a buffer item, signed or not, of 1, 2, 4 or 8 bytes. */
static int read_buffer_int(const char *item, Py_ssize_t itemsize, int is_signed, long long *value)
{
    switch (itemsize) {
    case 1:
        *value = is_signed ? (long long)*(const int8_t *)item : (long long)*(const uint8_t *)item;
        return 0;
    case 2: {
        int16_t s;
        uint16_t u;
        memcpy(&s, item, 2);
        memcpy(&u, item, 2);
        *value = is_signed ? (long long)s : (long long)u;
        return 0;
    }
    case 4: {
        int32_t s;
        uint32_t u;
        memcpy(&s, item, 4);
        memcpy(&u, item, 4);
        *value = is_signed ? (long long)s : (long long)u;
        return 0;
    }
    case 8: {
        int64_t s;
        uint64_t u;
        memcpy(&s, item, 8);
        memcpy(&u, item, 8);
        if (!is_signed && u > (uint64_t)INT64_MAX)
            return -1;
        *value = is_signed ? (long long)s : (long long)u;
        return 0;
    }
    }
    return -1;
}

/* lengths as a C array: from a one-dimensional buffer of native-order
 * integers (array, numpy, memoryview; strided views too) without Python
 * objects, else from any sequence.  Values a long long cannot hold are a
 * ValueError (like any other impossible length), never OverflowError. */
static long long *read_lengths(PyObject *obj, Py_ssize_t *count)
{
    long long *values = NULL;

    if (PyObject_CheckBuffer(obj)) {
        Py_buffer view;
        if (PyObject_GetBuffer(obj, &view, PyBUF_RECORDS_RO) < 0)
            return NULL;
        if (view.ndim != 1) {
            PyErr_Format(PyExc_TypeError,
                         "lengths must be one-dimensional, got a buffer of %d dimensions",
                         view.ndim);
            PyBuffer_Release(&view);
            return NULL;
        }
        const char *format = view.format ? view.format : "B";
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (*format == '@' || *format == '=' || *format == '<')
            format++;
#else
        if (*format == '@' || *format == '=' || *format == '>' || *format == '!')
            format++;
#endif
        int is_signed = format[0] != '\0' && strchr("bhilqn", format[0]) != NULL;
        int is_unsigned = format[0] != '\0' && strchr("BHILQN", format[0]) != NULL;
        if ((!is_signed && !is_unsigned) || format[1] != '\0' || view.itemsize < 1) {
            PyErr_Format(PyExc_TypeError, "lengths must hold integers, got buffer format '%s'",
                         view.format ? view.format : "B");
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_ssize_t n = view.shape[0];
        Py_ssize_t stride = view.strides != NULL ? view.strides[0] : view.itemsize;
        values = PyMem_Malloc(n ? (size_t)n * sizeof *values : 1);
        if (values == NULL) {
            PyBuffer_Release(&view);
            PyErr_NoMemory();
            return NULL;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            if (read_buffer_int((const char *)view.buf + i * stride, view.itemsize, is_signed,
                                &values[i]) < 0) {
                PyErr_Format(PyExc_ValueError, "lengths[%zd] is out of range", i);
                PyMem_Free(values);
                PyBuffer_Release(&view);
                return NULL;
            }
        }
        PyBuffer_Release(&view);
        *count = n;
        return values;
    }

    PyObject *seq = PySequence_Fast(obj, "lengths must be a sequence or buffer of integers");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    values = PyMem_Malloc(n ? (size_t)n * sizeof *values : 1);
    if (values == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *index = PyNumber_Index(PySequence_Fast_GET_ITEM(seq, i));
        if (index == NULL)
            goto fail;
        int overflow;
        values[i] = PyLong_AsLongLongAndOverflow(index, &overflow);
        if (overflow != 0)
            PyErr_Format(PyExc_ValueError, "lengths[%zd] is %R: out of range", i, index);
        Py_DECREF(index);
        if (overflow != 0 || (values[i] == -1 && PyErr_Occurred()))
            goto fail;
    }
    Py_DECREF(seq);
    *count = n;
    return values;
fail:
    PyMem_Free(values);
    Py_DECREF(seq);
    return NULL;
}

PyDoc_STRVAR(decode_pages_doc,
             "decode_pages($module, /, deltas, lengths, pages, page_size=4096)\n--\n\n"
             "Apply the deltas of encode_pages in place onto a writable buffer of pages.\n"
             "Every delta is validated before any page is written; DecodeError names\n"
             "the page (also as .page) and the offset within its delta.");

/* decode_pages: every delta checked, then every delta applied. */
static PyObject *decode_batch(PyObject *args, PyObject *kwargs, const char *format,
                              const char *func)
{
    static char *keywords[] = {"deltas", "lengths", "pages", "page_size", NULL};
    static const char *const names[] = {"deltas", "pages"};
    static const int writable[] = {0, 1};
    Py_buffer deltas, pages;
    PyObject *objs[2], *lengths_obj, *size_obj = NULL, *result = NULL;
    Py_ssize_t page_size = 4096, count = 0;
    long long *lengths = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, format, keywords, &objs[0], &lengths_obj,
                                     &objs[1], &size_obj) ||
        (size_obj != NULL && get_ssize(size_obj, &page_size, PAGE_SIZE_RANGE_FMT) < 0) ||
        get_buffers(func, 2, objs, (Py_buffer *[]){&deltas, &pages}, writable,
                    names) < 0)
        return NULL;
    if (check_whole_pages(pages.len, page_size) < 0 || check_no_overlap(&deltas, &pages) < 0)
        goto done;
    lengths = read_lengths(lengths_obj, &count);
    if (lengths == NULL)
        goto done;
    Py_ssize_t page_count = pages.len / page_size;
    if (count != page_count) {
        PyErr_Format(PyExc_ValueError, "%zd lengths for %zd pages", count, page_count);
        goto done;
    }
    /* Each length is checked against the bytes that remain, never summed
     * first: a sum can wrap (2**63 - 1 twice, then 5) and let the checker
     * walk past the delta buffer. */
    size_t remaining = (size_t)deltas.len;
    for (Py_ssize_t p = 0; p < count; p++) {
        if (lengths[p] < -1) {
            PyErr_Format(PyExc_ValueError,
                         "lengths[%zd] is %lld: expected -1 (overflow), 0 (unchanged) or a "
                         "delta length",
                         p, lengths[p]);
            goto done;
        }
        if (lengths[p] > 0 && (unsigned long long)lengths[p] > remaining) {
            PyErr_Format(PyExc_ValueError,
                         "lengths[%zd] is %lld but only %zu bytes of deltas remain", p,
                         lengths[p], remaining);
            goto done;
        }
        if (lengths[p] > 0)
            remaining -= (size_t)lengths[p];
    }
    if (remaining != 0) {
        PyErr_Format(PyExc_ValueError, "lengths add up to %zd bytes but deltas holds %zd",
                     deltas.len - (Py_ssize_t)remaining, deltas.len);
        goto done;
    }

    Py_ssize_t bad_page = -1;
    size_t err_offset = 0;
    const char *err_reason = NULL;
    Py_BEGIN_ALLOW_THREADS
    struct xbz_run_list *runs = xbz_run_list_of_thread();
    bad_page = xbz_decode_check_pages(deltas.buf, lengths, (size_t)count, (size_t)page_size,
                                      &err_offset, &err_reason, runs);
    if (bad_page < 0)
        xbz_decode_apply_pages(deltas.buf, lengths, (size_t)count, pages.buf, (size_t)page_size,
                               runs);
    Py_END_ALLOW_THREADS
    if (bad_page >= 0)
        raise_decode_error(PyUnicode_FromFormat("XBZRLE delta of page %zd at offset %zu: %s",
                                                bad_page, err_offset, err_reason),
                           err_offset, bad_page);
    else
        result = Py_NewRef(Py_None);
done:
    PyMem_Free(lengths);
    PyBuffer_Release(&deltas);
    PyBuffer_Release(&pages);
    return result;
}

static PyObject *codec_decode_pages(PyObject *self, PyObject *args, PyObject *kwargs)
{
    return decode_batch(args, kwargs, "OOO|O:decode_pages", "decode_pages");
}

/* ---- ULEB128, general (up to 64 bits) ---- */

PyDoc_STRVAR(uleb128_encode_doc,
             "uleb128_encode($module, n, /)\n--\n\n"
             "Unsigned LEB128 bytes of n (0 <= n < 2**64).");

static PyObject *codec_uleb128_encode(PyObject *self, PyObject *arg)
{
    PyObject *index = PyNumber_Index(arg);
    if (index == NULL)
        return NULL;
    int overflow;
    long long as_signed = PyLong_AsLongLongAndOverflow(index, &overflow);
    if (as_signed == -1 && PyErr_Occurred()) {
        Py_DECREF(index);
        return NULL;
    }
    if (overflow < 0 || (overflow == 0 && as_signed < 0)) {
        PyErr_Format(PyExc_ValueError, "ULEB128 encodes non-negative integers, got %R", index);
        Py_DECREF(index);
        return NULL;
    }
    unsigned long long n = PyLong_AsUnsignedLongLong(index);
    if (n == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "ULEB128 value over 64 bits: %R", index);
        Py_DECREF(index);
        return NULL;
    }
    Py_DECREF(index);
    uint8_t out[10];
    size_t used = 0;
    do {
        uint8_t byte = n & 0x7f;
        n >>= 7;
        out[used++] = byte | (n ? 0x80 : 0);
    } while (n);
    return PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)used);
}

PyDoc_STRVAR(uleb128_decode_doc,
             "uleb128_decode($module, buf, pos=0, /)\n--\n\n"
             "(value, next position) of the ULEB128 number at buf[pos]; DecodeError when\n"
             "it is truncated or over 64 bits.");

static PyObject *codec_uleb128_decode(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t pos = 0;
    PyObject *buf_obj, *pos_obj = NULL, *result = NULL;

    if (!PyArg_ParseTuple(args, "O|O:uleb128_decode", &buf_obj, &pos_obj) ||
        (pos_obj != NULL && get_ssize(pos_obj, &pos, "pos %R is outside the buffer") < 0) ||
        get_buffer(buf_obj, &buf, 0, "uleb128_decode", "buf") < 0)
        return NULL;
    if (pos < 0 || pos > buf.len) {
        PyErr_Format(PyExc_ValueError, "pos %zd is outside the buffer of %zd bytes", pos, buf.len);
        goto done;
    }
    const uint8_t *p = buf.buf;
    unsigned long long value = 0;
    unsigned shift = 0;
    for (Py_ssize_t i = pos;; i++, shift += 7) {
        if (i >= buf.len) {
            raise_decode_error(PyUnicode_FromFormat("ULEB128 at offset %zd: truncated", pos),
                               (size_t)pos, -1);
            goto done;
        }
        unsigned long long payload = p[i] & 0x7f;
        if (payload != 0 && (shift >= 64 || (payload << shift) >> shift != payload)) {
            raise_decode_error(
                PyUnicode_FromFormat("ULEB128 at offset %zd: value over 64 bits", pos),
                (size_t)pos, -1);
            goto done;
        }
        if (payload != 0)
            value |= payload << shift;
        if (!(p[i] & 0x80)) {
            result = Py_BuildValue("(Kn)", value, i + 1);
            goto done;
        }
    }
done:
    PyBuffer_Release(&buf);
    return result;
}

/* ---- zero pages, baseline, SIMD choice ---- */

PyDoc_STRVAR(is_zero_doc, "is_zero($module, buf, /)\n--\n\nTrue when every byte of buf is 0.");

static PyObject *codec_is_zero(PyObject *self, PyObject *arg)
{
    Py_buffer buf;
    if (get_buffer(arg, &buf, 0, "is_zero", "buf") < 0)
        return NULL;
    int zero;
    Py_BEGIN_ALLOW_THREADS
    zero = xbz_is_zero(buf.buf, (size_t)buf.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    return PyBool_FromLong(zero);
}

PyDoc_STRVAR(simd_paths_doc,
             "simd_paths($module, /)\n--\n\nThe SIMD paths this CPU supports, best first.");

static PyObject *codec_simd_paths(PyObject *self, PyObject *unused)
{
    PyObject *names = PyList_New(0);
    for (size_t i = 0; names != NULL && i < xbz_simd_count(); i++) {
        if (!xbz_simd_supported(i))
            continue;
        PyObject *name = PyUnicode_FromString(xbz_simd_name(i));
        if (name == NULL || PyList_Append(names, name) < 0)
            Py_CLEAR(names);
        Py_XDECREF(name);
    }
    return names;
}

PyDoc_STRVAR(simd_path_doc, "simd_path($module, /)\n--\n\nThe live SIMD path.");

static PyObject *codec_simd_path(PyObject *self, PyObject *unused)
{
    return PyUnicode_FromString(xbz_simd_current());
}

/* Make a path live, with an exception of type error_type when impossible. */
static int select_path(const char *name, PyObject *error_type, const char *source)
{
    int rc = xbz_simd_select(name);
    if (rc == 0)
        return 0;
    PyObject *supported = codec_simd_paths(NULL, NULL);
    if (supported == NULL)
        return -1;
    if (rc == -1)
        PyErr_Format(error_type, "%s%s: unknown SIMD path (this CPU supports %R)", source, name,
                     supported);
    else
        PyErr_Format(error_type, "%s%s: this CPU does not support it (it supports %R)", source,
                     name, supported);
    Py_DECREF(supported);
    return -1;
}

PyDoc_STRVAR(select_simd_doc,
             "select_simd($module, name, /)\n--\n\n"
             "Make the named SIMD path live for the whole process (ValueError if this\n"
             "CPU cannot run it).  For tests and benchmarks: all paths give the same bytes.");

static PyObject *codec_select_simd(PyObject *self, PyObject *arg)
{
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL)
        return NULL;
    if (select_path(name, PyExc_ValueError, "SIMD path ") < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef codec_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))codec_encode, METH_VARARGS | METH_KEYWORDS,
     encode_doc},
    {"decode", (PyCFunction)(void (*)(void))codec_decode, METH_VARARGS | METH_KEYWORDS,
     decode_doc},
    {"decode_into", (PyCFunction)(void (*)(void))codec_decode_into,
     METH_VARARGS | METH_KEYWORDS, decode_into_doc},
    {"encode_pages", (PyCFunction)(void (*)(void))codec_encode_pages,
     METH_VARARGS | METH_KEYWORDS, encode_pages_doc},
    {"decode_pages", (PyCFunction)(void (*)(void))codec_decode_pages,
     METH_VARARGS | METH_KEYWORDS, decode_pages_doc},
    {"uleb128_encode", codec_uleb128_encode, METH_O, uleb128_encode_doc},
    {"uleb128_decode", codec_uleb128_decode, METH_VARARGS, uleb128_decode_doc},
    {"is_zero", codec_is_zero, METH_O, is_zero_doc},
    {"simd_paths", codec_simd_paths, METH_NOARGS, simd_paths_doc},
    {"simd_path", codec_simd_path, METH_NOARGS, simd_path_doc},
    {"select_simd", codec_select_simd, METH_O, select_simd_doc},
    {NULL, NULL, 0, NULL},
};

int xbz_codec_register(PyObject *module)
{
    const char *forced = getenv("XBZRLE_SIMD");
    if (forced != NULL && forced[0] != '\0') {
        if (select_path(forced, PyExc_ImportError, "XBZRLE_SIMD=") < 0)
            return -1;
    } else {
        xbz_simd_select_best();
    }
    if (PyModule_AddIntConstant(module, "MAX_PAGE_SIZE", XBZ_MAX_PAGE_SIZE) < 0)
        return -1;
    return PyModule_AddFunctions(module, codec_methods);
}
