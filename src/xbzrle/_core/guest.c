/* Guest RAM: one anonymous private mapping per RAM block, exported through
 * the buffer protocol without copying.  Pages never written are never
 * populated, so they read as zero and cost no memory. */
#define _GNU_SOURCE
#include "guest.h"

#include <errno.h>
#include <sys/mman.h>

#include "parts.h"

int xbz_ram_pin(PyObject *ram)
{
    if (!PyObject_TypeCheck(ram, &XbzGuestRam_Type)) {
        PyErr_SetString(PyExc_TypeError, "expected a GuestRam");
        return -1;
    }
    XbzGuestRam *self = (XbzGuestRam *)ram;
    if (self->base == NULL || self->closing) {
        PyErr_SetString(PyExc_ValueError, "guest RAM is closed");
        return -1;
    }
    self->users++;
    return 0;
}

static void ram_unmap(XbzGuestRam *self);

static void ram_unmap_if_unused(XbzGuestRam *self)
{
    if (self->closing && self->exports == 0 && self->users == 0)
        ram_unmap(self);
}

void xbz_ram_unpin(PyObject *ram)
{
    ((XbzGuestRam *)ram)->users--;
    ram_unmap_if_unused((XbzGuestRam *)ram);
}

static PyObject *ram_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *positional_only[] = {"", NULL}; /* size is positional: no keywords */
    unsigned long long size;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "K:GuestRam", positional_only, &size))
        return NULL;
    if (size == 0 || size % XBZ_GUEST_PAGE_SIZE != 0 || size > ((unsigned long long)1 << 46)) {
        PyErr_Format(PyExc_ValueError, "RAM size %llu is not a positive multiple of %zu",
                     size, XBZ_GUEST_PAGE_SIZE);
        return NULL;
    }
    XbzGuestRam *self = (XbzGuestRam *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    void *base = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(self);
        return NULL;
    }
    /* 4 KiB pages unless the caller asks for huge ones (RamBlock does, and
     * turns a destination back to 4 KiB pages where filling huge ones is
     * dear: xbzrle.guest.hugepages).  Dirty tracking stays
     * page-granular either way: the kernel tracker arms late and splits a
     * huge page at its first write (dirtylog.c). */
    (void)madvise(base, (size_t)size, MADV_NOHUGEPAGE);
    self->base = base;
    self->size = (size_t)size;
    return (PyObject *)self;
}

static void ram_unmap(XbzGuestRam *self)
{
    if (self->base != NULL) {
        munmap(self->base, self->size);
        self->base = NULL;
    }
}

static int ram_traverse(XbzGuestRam *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dict);
    return 0;
}

static int ram_clear(XbzGuestRam *self)
{
    Py_CLEAR(self->dict);
    return 0;
}

static void ram_dealloc(XbzGuestRam *self)
{
    PyObject_GC_UnTrack(self);
    ram_clear(self);
    ram_unmap(self);
    /* A static type: subtype_dealloc drops a Python subclass's reference. */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int ram_getbuffer(XbzGuestRam *self, Py_buffer *view, int flags)
{
    if (self->base == NULL || self->closing) {
        PyErr_SetString(PyExc_ValueError, "guest RAM is closed");
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->base, (Py_ssize_t)self->size, 0,
                          flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static void ram_releasebuffer(XbzGuestRam *self, Py_buffer *view)
{
    self->exports--;
    ram_unmap_if_unused(self);
}

static PyBufferProcs ram_as_buffer = {
    (getbufferproc)ram_getbuffer,
    (releasebufferproc)ram_releasebuffer,
};

static PyObject *ram_close(XbzGuestRam *self, PyObject *unused)
{
    self->closing = 1;
    ram_unmap_if_unused(self);
    Py_RETURN_NONE;
}

static PyObject *ram_get_size(XbzGuestRam *self, void *closure)
{
    return PyLong_FromSize_t(self->size);
}

static PyObject *ram_get_npages(XbzGuestRam *self, void *closure)
{
    return PyLong_FromSize_t(self->size >> XBZ_GUEST_PAGE_SHIFT);
}

static PyObject *ram_get_address(XbzGuestRam *self, void *closure)
{
    if (self->base == NULL || self->closing) {
        PyErr_SetString(PyExc_ValueError, "guest RAM is closed");
        return NULL;
    }
    return PyLong_FromVoidPtr(self->base);
}

static PyObject *ram_get_closed(XbzGuestRam *self, void *closure)
{
    return PyBool_FromLong(self->base == NULL || self->closing);
}

static PyObject *ram_advise(XbzGuestRam *self, int advice)
{
    if (self->base == NULL || self->closing) {
        PyErr_SetString(PyExc_ValueError, "guest RAM is closed");
        return NULL;
    }
    if (madvise(self->base, self->size, advice) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *ram_advise_huge_pages(XbzGuestRam *self, PyObject *unused)
{
    return ram_advise(self, MADV_HUGEPAGE);
}

static PyObject *ram_advise_small_pages(XbzGuestRam *self, PyObject *unused)
{
    return ram_advise(self, MADV_NOHUGEPAGE);
}

static PyMethodDef ram_methods[] = {
    {"advise_huge_pages", (PyCFunction)ram_advise_huge_pages, METH_NOARGS,
     "advise_huge_pages($self, /)\n--\n\n"
     "Ask for transparent huge pages where the memory is not populated yet "
     "(MADV_HUGEPAGE; it starts on 4 KiB pages).  OSError if the kernel refuses."},
    {"advise_small_pages", (PyCFunction)ram_advise_small_pages, METH_NOARGS,
     "advise_small_pages($self, /)\n--\n\n"
     "Ask for 4 KiB pages where the memory is not populated yet (MADV_NOHUGEPAGE; "
     "huge pages already there stay).  OSError if the kernel refuses."},
    {"close", (PyCFunction)ram_close, METH_NOARGS,
     "close($self, /)\n--\n\nUnmap the memory now, or when the last view, tracker or workload lets go."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef ram_getset[] = {
    {"size", (getter)ram_get_size, NULL, "size in bytes", NULL},
    {"npages", (getter)ram_get_npages, NULL, "number of 4 KiB pages", NULL},
    {"address", (getter)ram_get_address, NULL, "host address of the first byte", NULL},
    {"closed", (getter)ram_get_closed, NULL, "True once unmapped", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject XbzGuestRam_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "xbzrle._core.GuestRam",
    .tp_basicsize = sizeof(XbzGuestRam),
    .tp_dealloc = (destructor)ram_dealloc,
    .tp_as_buffer = &ram_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "GuestRam(size, /)\n--\n\n"
              "Zero-filled anonymous memory, page aligned, lazily populated.",
    .tp_traverse = (traverseproc)ram_traverse,
    .tp_clear = (inquiry)ram_clear,
    .tp_methods = ram_methods,
    .tp_getset = ram_getset,
    .tp_dictoffset = offsetof(XbzGuestRam, dict),
    .tp_new = ram_new,
};

int xbz_guest_register(PyObject *module)
{
    if (PyModule_AddType(module, &XbzGuestRam_Type) < 0)
        return -1;
    if (xbz_bitmap_register(module) < 0 || xbz_dirtylog_register(module) < 0 ||
        xbz_workload_register(module) < 0 || xbz_ramhash_register(module) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "GUEST_PAGE_SIZE", (long)XBZ_GUEST_PAGE_SIZE) < 0)
        return -1;
    return 0;
}
