/* Workloads: native threads standing in for vCPUs, writing guest RAM.
 *
 * A workload's whole state (kind, parameters, RNG, position, counters) is a
 * header in the first page of its region of guest RAM; its working pages
 * follow.  The thread reloads the mutable fields at every batch and stores
 * them after every operation, so a copy of the RAM taken while the workload
 * is paused resumes exactly where it stopped.  The layout (uint64 LE words):
 *
 *   0 magic  1 kind  2 pages  3 seed  4 hot_pages  5 hot_share (/65536)
 *   6 rng    7 pos   8 ops    9 bytes_written
 *
 * The immutable fields are read once, at construction, and every index is
 * bounded by them: garbage written into the header never leads a write
 * outside the region. */
#define _GNU_SOURCE
#include "guest.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#define WL_MAGIC 0x314b524f575a4258ULL /* "XBZWORK1" */
enum { WL_LOADGEN = 1, WL_SPARSE, WL_DENSE, WL_HOTCOLD, WL_IDLE };
enum { F_MAGIC, F_KIND, F_PAGES, F_SEED, F_HOT_PAGES, F_HOT_SHARE, F_RNG, F_POS, F_OPS, F_BYTES };
#define BATCH_OPS 1024

typedef struct {
    PyObject_HEAD
    PyObject *ram;    /* pinned GuestRam */
    PyObject *soft;   /* SoftTracker or NULL */
    uint64_t *marks;  /* soft->words or NULL */
    uint64_t *state;  /* header in guest RAM */
    uint8_t *region;  /* first working page */
    size_t state_page, pages, hot_pages;
    uint64_t hot_share;
    int kind;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* tells the thread to run, pause or exit */
    pthread_cond_t idle; /* tells pause() the thread left its batch */
    pthread_t thread;
    int started, running, active, exiting, closed;
    int pause_request; /* read by the thread between operations */
    double rate;       /* operations per second of running time, 0 = flat out */
    double pace_start; /* monotonic seconds; moved forward by every throttle sleep */
    uint64_t pace_ops;
    /* CPU throttle, QEMU's cpu_throttle model: run a slice, then sleep
     * pct/(100-pct) of what the slice really took.  Written by any thread,
     * read by the workload thread at every batch. */
    int throttle_pct;    /* 0 = off, 1..99 */
    double slice_start;  /* monotonic seconds */
    double throttled;    /* seconds slept for the throttle, ever */
} XbzWorkload;

#define THROTTLE_SLICE 0.010 /* seconds: QEMU's CPU_THROTTLE_TIMESLICE_NS */

static inline uint64_t load_field(const uint64_t *state, int f)
{
    return __atomic_load_n(&state[f], __ATOMIC_RELAXED);
}

static inline void store_field(uint64_t *state, int f, uint64_t v)
{
    __atomic_store_n(&state[f], v, __ATOMIC_RELAXED);
}

static inline uint64_t next_random(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A uniform index below n from 64 random bits. */
static inline size_t below(uint64_t r, size_t n)
{
    return (size_t)(((unsigned __int128)r * n) >> 64);
}

static inline void flip_word(uint8_t *page, uint64_t r)
{
    uint64_t word;
    uint8_t *at = page + (r & 511) * 8;
    memcpy(&word, at, 8);
    word ^= (r >> 9) | 1; /* never zero: the page always changes */
    memcpy(at, &word, 8);
}

/* Run up to n operations; stop early once *stop is set.  Returns the count. */
static uint64_t run_ops(XbzWorkload *w, uint64_t n, const int *stop)
{
    if (w->kind == WL_IDLE)
        return 0;
    uint64_t *st = w->state;
    uint64_t rng = load_field(st, F_RNG), pos = load_field(st, F_POS);
    uint64_t ops = load_field(st, F_OPS), bytes = load_field(st, F_BYTES);
    uint64_t i;
    for (i = 0; i < n; i++) {
        if (stop != NULL && __atomic_load_n(stop, __ATOMIC_RELAXED))
            break;
        size_t page;
        uint8_t *p;
        switch (w->kind) {
        case WL_LOADGEN: /* the seed's generator: +1 on every 1024th byte, in order */
            page = pos < w->pages ? (size_t)pos : 0;
            p = w->region + (page << XBZ_GUEST_PAGE_SHIFT);
            for (size_t off = 0; off < XBZ_GUEST_PAGE_SIZE; off += 1024)
                p[off]++;
            pos = page + 1 == w->pages ? 0 : page + 1;
            bytes += XBZ_GUEST_PAGE_SIZE / 1024;
            break;
        case WL_DENSE:
            page = below(next_random(&rng), w->pages);
            p = w->region + (page << XBZ_GUEST_PAGE_SHIFT);
            for (size_t off = 0; off < XBZ_GUEST_PAGE_SIZE; off += 8) {
                uint64_t v = next_random(&rng);
                memcpy(p + off, &v, 8);
            }
            bytes += XBZ_GUEST_PAGE_SIZE;
            break;
        case WL_HOTCOLD: {
            uint64_t r = next_random(&rng);
            size_t cold = w->pages - w->hot_pages;
            if ((r & 0xffff) < w->hot_share || cold == 0)
                page = below(next_random(&rng), w->hot_pages);
            else
                page = w->hot_pages + below(next_random(&rng), cold);
            flip_word(w->region + (page << XBZ_GUEST_PAGE_SHIFT), next_random(&rng));
            bytes += 8;
            break;
        }
        default: /* WL_SPARSE */
            page = below(next_random(&rng), w->pages);
            flip_word(w->region + (page << XBZ_GUEST_PAGE_SHIFT), next_random(&rng));
            bytes += 8;
            break;
        }
        ops++;
        store_field(st, F_RNG, rng);
        store_field(st, F_POS, pos);
        store_field(st, F_OPS, ops);
        store_field(st, F_BYTES, bytes);
        /* Mark after writing: a sync clearing the bit earlier misses nothing. */
        if (w->marks != NULL)
            xbz_soft_mark(w->marks, w->state_page + 1 + page);
    }
    if (w->marks != NULL && i > 0)
        xbz_soft_mark(w->marks, w->state_page);
    return i;
}

static double now_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

/* Wait on w->wake (lock held) for at most `seconds`, capped at 0.1 s so a
 * changed rate or throttle is seen soon. */
static void wait_seconds(XbzWorkload *w, double seconds)
{
    if (seconds > 0.1)
        seconds = 0.1;
    double at = now_seconds() + seconds;
    struct timespec until;
    until.tv_sec = (time_t)at;
    until.tv_nsec = (long)((at - (double)until.tv_sec) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&w->wake, &w->lock, &until);
}

/* The throttle's sleep after a slice (lock held).  The sleep is
 * pct/(100-pct) of the time the slice really ran, so a batch that overran
 * the slice still leaves the guest exactly (100-pct)% of the time.  A pause,
 * an exit or a lifted throttle ends it early.  The time slept is not guest
 * time: the pacing clock of a fixed-rate workload moves forward by it, so a
 * rate is "operations per second the vCPU runs" and a throttled workload
 * does not catch up afterwards (a throttled vCPU loses that time too). */
static void throttle_sleep(XbzWorkload *w)
{
    int pct = __atomic_load_n(&w->throttle_pct, __ATOMIC_RELAXED);
    double start = now_seconds();
    double ran = start - w->slice_start;
    if (pct <= 0 || ran < THROTTLE_SLICE)
        return;
    double until = start + ran * pct / (100.0 - pct);
    double now = start;
    while (w->running && !w->exiting &&
           __atomic_load_n(&w->throttle_pct, __ATOMIC_RELAXED) > 0 && now < until) {
        wait_seconds(w, until - now);
        now = now_seconds();
    }
    w->pace_start += now - start;
    w->throttled += now - start;
    w->slice_start = now;
}

static void *workload_main(void *arg)
{
    XbzWorkload *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->exiting) {
        if (!w->running) {
            pthread_cond_wait(&w->wake, &w->lock);
            continue;
        }
        throttle_sleep(w);
        if (!w->running)
            continue;
        uint64_t batch = BATCH_OPS;
        if (w->rate > 0) {
            double due = (now_seconds() - w->pace_start) * w->rate - (double)w->pace_ops;
            if (due < 1) {
                wait_seconds(w, (1 - due) / w->rate);
                continue;
            }
            if (due < (double)batch)
                batch = (uint64_t)due;
        }
        w->active = 1;
        pthread_mutex_unlock(&w->lock);
        uint64_t done = run_ops(w, batch, &w->pause_request);
        pthread_mutex_lock(&w->lock);
        w->pace_ops += done;
        w->active = 0;
        pthread_cond_broadcast(&w->idle);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static PyObject *workload_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ram", "offset", "tracker", NULL};
    PyObject *ram, *tracker = Py_None;
    Py_ssize_t offset;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "On|O:WorkloadThread", kwlist, &ram, &offset,
                                     &tracker))
        return NULL;
    if (tracker != Py_None && !PyObject_TypeCheck(tracker, &XbzSoftTracker_Type)) {
        PyErr_SetString(PyExc_TypeError, "tracker must be a SoftTracker or None");
        return NULL;
    }
    if (xbz_ram_pin(ram) < 0)
        return NULL;
    XbzGuestRam *mem = (XbzGuestRam *)ram;
    size_t npages = mem->size >> XBZ_GUEST_PAGE_SHIFT;
    if (offset < 0 || (size_t)offset % XBZ_GUEST_PAGE_SIZE != 0 ||
        (size_t)offset >= mem->size) {
        xbz_ram_unpin(ram);
        PyErr_SetString(PyExc_ValueError, "workload offset must be a page inside the block");
        return NULL;
    }
    uint64_t *state = (uint64_t *)(mem->base + offset);
    size_t state_page = (size_t)offset >> XBZ_GUEST_PAGE_SHIFT;
    uint64_t kind = load_field(state, F_KIND), pages = load_field(state, F_PAGES);
    uint64_t hot_pages = load_field(state, F_HOT_PAGES), hot_share = load_field(state, F_HOT_SHARE);
    const char *problem = NULL;
    if (load_field(state, F_MAGIC) != WL_MAGIC)
        problem = "no workload state at this offset";
    else if (kind < WL_LOADGEN || kind > WL_IDLE)
        problem = "unknown workload kind in the state header";
    else if (pages == 0 || pages > npages - state_page - 1)
        problem = "workload region does not fit in the block";
    else if (kind == WL_HOTCOLD && (hot_pages == 0 || hot_pages > pages || hot_share > 65536))
        problem = "bad hot set in the state header";
    else if (tracker != Py_None && ((XbzSoftTracker *)tracker)->npages != npages)
        problem = "tracker covers a different number of pages";
    if (problem != NULL) {
        xbz_ram_unpin(ram);
        PyErr_SetString(PyExc_ValueError, problem);
        return NULL;
    }
    XbzWorkload *self = (XbzWorkload *)type->tp_alloc(type, 0);
    if (self == NULL) {
        xbz_ram_unpin(ram);
        return NULL;
    }
    Py_INCREF(ram);
    self->ram = ram;
    if (tracker != Py_None) {
        Py_INCREF(tracker);
        self->soft = tracker;
        self->marks = ((XbzSoftTracker *)tracker)->words;
    }
    self->state = state;
    self->state_page = state_page;
    self->region = mem->base + offset + XBZ_GUEST_PAGE_SIZE;
    self->pages = (size_t)pages;
    self->hot_pages = (size_t)hot_pages;
    self->hot_share = hot_share;
    self->kind = (int)kind;
    pthread_mutex_init(&self->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&self->wake, &attr);
    pthread_condattr_destroy(&attr);
    pthread_cond_init(&self->idle, NULL);
    return (PyObject *)self;
}

/* Join the thread and let go of the RAM; safe to call twice. */
static void workload_shutdown(XbzWorkload *self)
{
    if (self->closed)
        return;
    self->closed = 1;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    self->exiting = 1;
    self->running = 0;
    __atomic_store_n(&self->pause_request, 1, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&self->wake);
    pthread_mutex_unlock(&self->lock);
    if (self->started)
        pthread_join(self->thread, NULL);
    Py_END_ALLOW_THREADS
    self->marks = NULL;
    Py_CLEAR(self->soft);
    if (self->ram != NULL) {
        xbz_ram_unpin(self->ram);
        Py_CLEAR(self->ram);
    }
}

static void workload_dealloc(XbzWorkload *self)
{
    workload_shutdown(self);
    pthread_cond_destroy(&self->wake);
    pthread_cond_destroy(&self->idle);
    pthread_mutex_destroy(&self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_open(XbzWorkload *self)
{
    if (self->closed) {
        PyErr_SetString(PyExc_ValueError, "workload is closed");
        return -1;
    }
    return 0;
}

static PyObject *workload_resume(XbzWorkload *self, PyObject *unused)
{
    if (check_open(self) < 0)
        return NULL;
    int rc = 0;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    if (!self->started && self->kind != WL_IDLE) {
        /* Signals belong to Python's main thread, never to a vCPU. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        rc = pthread_create(&self->thread, NULL, workload_main, self);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        self->started = rc == 0;
    }
    if (rc == 0 && !self->running) {
        self->running = 1;
        __atomic_store_n(&self->pause_request, 0, __ATOMIC_RELAXED);
        self->pace_start = self->slice_start = now_seconds();
        self->pace_ops = 0;
        pthread_cond_broadcast(&self->wake);
    }
    pthread_mutex_unlock(&self->lock);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *workload_pause(XbzWorkload *self, PyObject *unused)
{
    if (self->closed)
        Py_RETURN_NONE;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    self->running = 0;
    __atomic_store_n(&self->pause_request, 1, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&self->wake);
    while (self->active)
        pthread_cond_wait(&self->idle, &self->lock);
    pthread_mutex_unlock(&self->lock);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *workload_step(XbzWorkload *self, PyObject *arg)
{
    if (check_open(self) < 0)
        return NULL;
    unsigned long long n = PyLong_AsUnsignedLongLong(arg);
    if (n == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    uint64_t done = 0;
    int busy;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    busy = self->running || self->active;
    if (!busy)
        done = run_ops(self, n, NULL);
    pthread_mutex_unlock(&self->lock);
    Py_END_ALLOW_THREADS
    if (busy) {
        PyErr_SetString(PyExc_RuntimeError, "workload is running: pause it before step()");
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(done);
}

static PyObject *workload_close(XbzWorkload *self, PyObject *unused)
{
    workload_shutdown(self);
    Py_RETURN_NONE;
}

static PyObject *workload_get_rate(XbzWorkload *self, void *closure)
{
    return PyFloat_FromDouble(self->rate);
}

static int workload_set_rate(XbzWorkload *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete rate");
        return -1;
    }
    double rate = PyFloat_AsDouble(value);
    if (rate == -1.0 && PyErr_Occurred())
        return -1;
    if (!(rate >= 0) || rate > 1e12) {
        PyErr_SetString(PyExc_ValueError, "rate must be between 0 (flat out) and 1e12");
        return -1;
    }
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    self->rate = rate;
    self->pace_start = now_seconds();
    self->pace_ops = 0;
    pthread_cond_broadcast(&self->wake);
    pthread_mutex_unlock(&self->lock);
    Py_END_ALLOW_THREADS
    return 0;
}

static PyObject *workload_get_throttle(XbzWorkload *self, void *closure)
{
    return PyLong_FromLong(__atomic_load_n(&self->throttle_pct, __ATOMIC_RELAXED));
}

/* Applied on the fly: the thread sees it at its next batch, a lifted
 * throttle ends a sleep at once; the workload never stops for it. */
static int workload_set_throttle(XbzWorkload *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete throttle");
        return -1;
    }
    long pct = PyLong_AsLong(value);
    if (pct == -1 && PyErr_Occurred())
        return -1;
    if (pct < 0 || pct > 99) {
        PyErr_SetString(PyExc_ValueError, "throttle must be a percentage from 0 (off) to 99");
        return -1;
    }
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    if (__atomic_load_n(&self->throttle_pct, __ATOMIC_RELAXED) == 0)
        self->slice_start = now_seconds(); /* a new throttle starts a fresh slice */
    __atomic_store_n(&self->throttle_pct, (int)pct, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&self->wake);
    pthread_mutex_unlock(&self->lock);
    Py_END_ALLOW_THREADS
    return 0;
}

static PyObject *workload_get_throttled(XbzWorkload *self, void *closure)
{
    double seconds;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    seconds = self->throttled;
    pthread_mutex_unlock(&self->lock);
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(seconds);
}

static PyObject *workload_get_counter(XbzWorkload *self, void *closure)
{
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(load_field(self->state, (int)(intptr_t)closure));
}

static PyObject *workload_get_running(XbzWorkload *self, void *closure)
{
    return PyBool_FromLong(self->running);
}

static PyObject *workload_get_closed(XbzWorkload *self, void *closure)
{
    return PyBool_FromLong(self->closed);
}

static PyMethodDef workload_methods[] = {
    {"resume", (PyCFunction)workload_resume, METH_NOARGS,
     "resume($self, /)\n--\n\nStart or resume the thread."},
    {"pause", (PyCFunction)workload_pause, METH_NOARGS,
     "pause($self, /)\n--\n\nQuiesce: when this returns, the thread writes nothing until resume()."},
    {"step", (PyCFunction)workload_step, METH_O,
     "step($self, n, /)\n--\n\n"
     "Run exactly n operations in the caller's thread (GIL released); paused only.\n"
     "Returns the number run."},
    {"close", (PyCFunction)workload_close, METH_NOARGS,
     "close($self, /)\n--\n\nEnd the thread and release the RAM."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef workload_getset[] = {
    {"rate", (getter)workload_get_rate, (setter)workload_set_rate,
     "operations (page writes) per second, 0 = flat out", NULL},
    {"ops", (getter)workload_get_counter, NULL, "operations done (from guest RAM)",
     (void *)(intptr_t)F_OPS},
    {"bytes_written", (getter)workload_get_counter, NULL, "bytes stored (from guest RAM)",
     (void *)(intptr_t)F_BYTES},
    {"throttle", (getter)workload_get_throttle, (setter)workload_set_throttle,
     "CPU throttle percentage, 0 (off) to 99: sleep pct/(100-pct) after each 10 ms slice",
     NULL},
    {"throttled_seconds", (getter)workload_get_throttled, NULL,
     "seconds the thread has slept for the throttle", NULL},
    {"running", (getter)workload_get_running, NULL, "True between resume() and pause()", NULL},
    {"closed", (getter)workload_get_closed, NULL, "True once closed", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject XbzWorkload_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "xbzrle._core.WorkloadThread",
    .tp_basicsize = sizeof(XbzWorkload),
    .tp_dealloc = (destructor)workload_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "WorkloadThread(ram, offset, tracker=None)\n--\n\n"
              "Runs the workload whose state header is at offset in ram; created paused.",
    .tp_methods = workload_methods,
    .tp_getset = workload_getset,
    .tp_new = workload_new,
};

int xbz_workload_register(PyObject *module)
{
    if (PyModule_AddType(module, &XbzWorkload_Type) < 0)
        return -1;
    PyObject *magic = PyLong_FromUnsignedLongLong(WL_MAGIC);
    if (magic == NULL)
        return -1;
    int rc = PyModule_AddObjectRef(module, "WORKLOAD_MAGIC", magic);
    Py_DECREF(magic);
    return rc;
}
