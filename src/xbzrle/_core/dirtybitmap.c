/* DirtyBitmap: the set of pages a dirty-log sync reports.  Stored as uint64
 * words so the C save loop can walk it through the buffer protocol. */
#include "guest.h"

#include <string.h>

static PyObject *array_type; /* array.array, fetched once */

void xbz_bits_set_range(uint64_t *words, size_t first, size_t count)
{
    if (count == 0)
        return;
    size_t last = first + count - 1;
    size_t w0 = first >> 6, w1 = last >> 6;
    uint64_t head = ~(uint64_t)0 << (first & 63);
    uint64_t tail = ~(uint64_t)0 >> (63 - (last & 63));
    if (w0 == w1) {
        words[w0] |= head & tail;
        return;
    }
    words[w0] |= head;
    for (size_t w = w0 + 1; w < w1; w++)
        words[w] = ~(uint64_t)0;
    words[w1] |= tail;
}

static XbzDirtyBitmap *bitmap_alloc(PyTypeObject *type, size_t npages)
{
    XbzDirtyBitmap *self = (XbzDirtyBitmap *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->npages = npages;
    self->nwords = (npages + 63) / 64;
    self->shape = (Py_ssize_t)self->nwords;
    self->words = PyMem_RawCalloc(self->nwords ? self->nwords : 1, sizeof(uint64_t));
    if (self->words == NULL) {
        Py_DECREF(self);
        PyErr_NoMemory();
        return NULL;
    }
    return self;
}

XbzDirtyBitmap *xbz_bitmap_new(size_t npages)
{
    return bitmap_alloc(&XbzDirtyBitmap_Type, npages);
}

static int page_index(XbzDirtyBitmap *self, PyObject *obj, size_t *page)
{
    Py_ssize_t i = PyNumber_AsSsize_t(obj, PyExc_IndexError);
    if (i == -1 && PyErr_Occurred())
        return -1;
    if (i < 0 || (size_t)i >= self->npages) {
        PyErr_Format(PyExc_IndexError, "page %zd outside 0..%zu", i, self->npages);
        return -1;
    }
    *page = (size_t)i;
    return 0;
}

static PyObject *bitmap_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"npages", "pages", NULL};
    Py_ssize_t npages;
    PyObject *pages = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n|O:DirtyBitmap", kwlist, &npages, &pages))
        return NULL;
    if (npages < 0) {
        PyErr_SetString(PyExc_ValueError, "npages must not be negative");
        return NULL;
    }
    XbzDirtyBitmap *self = bitmap_alloc(type, (size_t)npages);
    if (self == NULL || pages == NULL)
        return (PyObject *)self;
    PyObject *it = PyObject_GetIter(pages);
    if (it == NULL)
        goto fail;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        size_t page;
        int rc = page_index(self, item, &page);
        Py_DECREF(item);
        if (rc < 0) {
            Py_DECREF(it);
            goto fail;
        }
        self->words[page >> 6] |= (uint64_t)1 << (page & 63);
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        goto fail;
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static void bitmap_dealloc(XbzDirtyBitmap *self)
{
    PyMem_RawFree(self->words);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int bitmap_getbuffer(XbzDirtyBitmap *self, Py_buffer *view, int flags)
{
    view->obj = (PyObject *)self;
    Py_INCREF(self);
    view->buf = self->words;
    view->len = (Py_ssize_t)(self->nwords * sizeof(uint64_t));
    view->readonly = 0;
    view->itemsize = sizeof(uint64_t);
    view->format = (flags & PyBUF_FORMAT) ? "Q" : NULL;
    view->ndim = 1;
    view->shape = (flags & PyBUF_ND) ? &self->shape : NULL;
    view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? &view->itemsize : NULL;
    view->suboffsets = NULL;
    view->internal = NULL;
    self->exports++;
    return 0;
}

static void bitmap_releasebuffer(XbzDirtyBitmap *self, Py_buffer *view)
{
    self->exports--;
}

static PyBufferProcs bitmap_as_buffer = {
    (getbufferproc)bitmap_getbuffer,
    (releasebufferproc)bitmap_releasebuffer,
};

static size_t bitmap_popcount(const XbzDirtyBitmap *self)
{
    size_t n = 0;
    for (size_t w = 0; w < self->nwords; w++)
        n += (size_t)__builtin_popcountll(self->words[w]);
    return n;
}

static PyObject *bitmap_count(XbzDirtyBitmap *self, PyObject *unused)
{
    return PyLong_FromSize_t(bitmap_popcount(self));
}

static PyObject *bitmap_pages(XbzDirtyBitmap *self, PyObject *unused)
{
    size_t n = bitmap_popcount(self);
    PyObject *raw = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n * sizeof(uint64_t)));
    if (raw == NULL)
        return NULL;
    uint64_t *out = (uint64_t *)PyBytes_AS_STRING(raw);
    for (size_t w = 0; w < self->nwords; w++) {
        uint64_t bits = self->words[w];
        while (bits) {
            *out++ = (uint64_t)w * 64 + (uint64_t)__builtin_ctzll(bits);
            bits &= bits - 1;
        }
    }
    PyObject *result = PyObject_CallFunction(array_type, "sO", "Q", raw);
    Py_DECREF(raw);
    return result;
}

static PyObject *bitmap_add(XbzDirtyBitmap *self, PyObject *arg)
{
    size_t page;
    if (page_index(self, arg, &page) < 0)
        return NULL;
    self->words[page >> 6] |= (uint64_t)1 << (page & 63);
    Py_RETURN_NONE;
}

static PyObject *bitmap_discard(XbzDirtyBitmap *self, PyObject *arg)
{
    size_t page;
    if (page_index(self, arg, &page) < 0)
        return NULL;
    self->words[page >> 6] &= ~((uint64_t)1 << (page & 63));
    Py_RETURN_NONE;
}

static PyObject *bitmap_clear(XbzDirtyBitmap *self, PyObject *unused)
{
    memset(self->words, 0, self->nwords * sizeof(uint64_t));
    Py_RETURN_NONE;
}

static PyObject *bitmap_fill(XbzDirtyBitmap *self, PyObject *unused)
{
    xbz_bits_set_range(self->words, 0, self->npages);
    Py_RETURN_NONE;
}

static PyObject *bitmap_copy(XbzDirtyBitmap *self, PyObject *unused)
{
    XbzDirtyBitmap *copy = bitmap_alloc(Py_TYPE(self), self->npages);
    if (copy != NULL)
        memcpy(copy->words, self->words, self->nwords * sizeof(uint64_t));
    return (PyObject *)copy;
}

static PyObject *bitmap_full(PyTypeObject *type, PyObject *arg)
{
    Py_ssize_t npages = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (npages == -1 && PyErr_Occurred())
        return NULL;
    if (npages < 0) {
        PyErr_SetString(PyExc_ValueError, "npages must not be negative");
        return NULL;
    }
    XbzDirtyBitmap *self = bitmap_alloc(type, (size_t)npages);
    if (self != NULL)
        xbz_bits_set_range(self->words, 0, (size_t)npages);
    return (PyObject *)self;
}

static int bitmap_contains(XbzDirtyBitmap *self, PyObject *key)
{
    if (!PyLong_Check(key))
        return 0;
    int overflow;
    long long i = PyLong_AsLongLongAndOverflow(key, &overflow);
    if (i == -1 && PyErr_Occurred())
        return -1;
    if (overflow || i < 0 || (unsigned long long)i >= self->npages)
        return 0;
    size_t page = (size_t)i;
    return (int)((self->words[page >> 6] >> (page & 63)) & 1);
}

static int same_shape(PyObject *a, PyObject *b)
{
    if (!PyObject_TypeCheck(a, &XbzDirtyBitmap_Type) ||
        !PyObject_TypeCheck(b, &XbzDirtyBitmap_Type))
        return 0;
    if (((XbzDirtyBitmap *)a)->npages != ((XbzDirtyBitmap *)b)->npages) {
        PyErr_SetString(PyExc_ValueError, "bitmaps cover different numbers of pages");
        return -1;
    }
    return 1;
}

static PyObject *bitmap_or(PyObject *a, PyObject *b)
{
    int ok = same_shape(a, b);
    if (ok < 0)
        return NULL;
    if (ok == 0)
        Py_RETURN_NOTIMPLEMENTED;
    XbzDirtyBitmap *out = (XbzDirtyBitmap *)bitmap_copy((XbzDirtyBitmap *)a, NULL);
    if (out == NULL)
        return NULL;
    const uint64_t *src = ((XbzDirtyBitmap *)b)->words;
    for (size_t w = 0; w < out->nwords; w++)
        out->words[w] |= src[w];
    return (PyObject *)out;
}

static PyObject *bitmap_ior(PyObject *a, PyObject *b)
{
    int ok = same_shape(a, b);
    if (ok < 0)
        return NULL;
    if (ok == 0)
        Py_RETURN_NOTIMPLEMENTED;
    XbzDirtyBitmap *self = (XbzDirtyBitmap *)a;
    const uint64_t *src = ((XbzDirtyBitmap *)b)->words;
    for (size_t w = 0; w < self->nwords; w++)
        self->words[w] |= src[w];
    Py_INCREF(a);
    return a;
}

static PyObject *bitmap_richcompare(PyObject *a, PyObject *b, int op)
{
    if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(b, &XbzDirtyBitmap_Type))
        Py_RETURN_NOTIMPLEMENTED;
    XbzDirtyBitmap *x = (XbzDirtyBitmap *)a, *y = (XbzDirtyBitmap *)b;
    int equal = x->npages == y->npages &&
                memcmp(x->words, y->words, x->nwords * sizeof(uint64_t)) == 0;
    return PyBool_FromLong(op == Py_EQ ? equal : !equal);
}

static PyObject *bitmap_repr(XbzDirtyBitmap *self)
{
    return PyUnicode_FromFormat("DirtyBitmap(npages=%zu, count=%zu)", self->npages,
                                bitmap_popcount(self));
}

static PyObject *bitmap_get_npages(XbzDirtyBitmap *self, void *closure)
{
    return PyLong_FromSize_t(self->npages);
}

static PyMethodDef bitmap_methods[] = {
    {"count", (PyCFunction)bitmap_count, METH_NOARGS,
     "count($self, /)\n--\n\nNumber of pages set."},
    {"pages", (PyCFunction)bitmap_pages, METH_NOARGS,
     "pages($self, /)\n--\n\nThe set pages in ascending order, as array('Q')."},
    {"add", (PyCFunction)bitmap_add, METH_O, "add($self, page, /)\n--\n\nSet one page."},
    {"discard", (PyCFunction)bitmap_discard, METH_O,
     "discard($self, page, /)\n--\n\nClear one page."},
    {"clear", (PyCFunction)bitmap_clear, METH_NOARGS,
     "clear($self, /)\n--\n\nClear every page."},
    {"fill", (PyCFunction)bitmap_fill, METH_NOARGS,
     "fill($self, /)\n--\n\nSet every page."},
    {"copy", (PyCFunction)bitmap_copy, METH_NOARGS,
     "copy($self, /)\n--\n\nAn independent copy."},
    {"full", (PyCFunction)bitmap_full, METH_O | METH_CLASS,
     "full($type, npages, /)\n--\n\n"
     "A bitmap of npages pages, all set (a migration's first round)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef bitmap_getset[] = {
    {"npages", (getter)bitmap_get_npages, NULL, "number of pages covered", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods bitmap_as_sequence = {
    .sq_contains = (objobjproc)bitmap_contains,
};

static PyNumberMethods bitmap_as_number = {
    .nb_or = bitmap_or,
    .nb_inplace_or = bitmap_ior,
};

PyTypeObject XbzDirtyBitmap_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "xbzrle._core.DirtyBitmap",
    .tp_basicsize = sizeof(XbzDirtyBitmap),
    .tp_dealloc = (destructor)bitmap_dealloc,
    .tp_repr = (reprfunc)bitmap_repr,
    .tp_as_number = &bitmap_as_number,
    .tp_as_sequence = &bitmap_as_sequence,
    .tp_as_buffer = &bitmap_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "DirtyBitmap(npages, pages=())\n--\n\n"
              "A page set as uint64 words; bit i of word w is page w*64+i.  Buffer: the words (format 'Q', little-endian).",
    .tp_richcompare = bitmap_richcompare,
    .tp_methods = bitmap_methods,
    .tp_getset = bitmap_getset,
    .tp_new = bitmap_new,
};

int xbz_bitmap_register(PyObject *module)
{
    PyObject *array_module = PyImport_ImportModule("array");
    if (array_module == NULL)
        return -1;
    array_type = PyObject_GetAttrString(array_module, "array");
    Py_DECREF(array_module);
    if (array_type == NULL)
        return -1;
    return PyModule_AddType(module, &XbzDirtyBitmap_Type);
}
