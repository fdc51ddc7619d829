/*
 * omnipkg_atomic.c - hardware atomics on 64-bit words in shared memory,
 * and the control blocks of omnipkg.h, for Python.
 *
 * One module for every interpreter we serve: it is compiled once against
 * the stable ABI of Python 3.8 (Py_LIMITED_API), so the same
 * omnipkg_atomic.abi3.so loads in 3.8 ... 3.13.  The daemon ships it to
 * its workers (<runtime dir>/worker/client/); omnipkg.isolation.
 * omnipkg_atomic finds it for other processes (see that module).
 *
 *   >>> import mmap, omnipkg_atomic as oa
 *   >>> m = mmap.mmap(-1, 4096)
 *   >>> oa.cas64_buf(m, 8, 0, 5), oa.add64_buf(m, 8, 2), oa.load64_buf(m, 8)
 *   (True, 5, 7)
 *
 * Words are signed 64-bit integers in the host's byte order (as numpy's
 * int64 and omnipkg 3.4.1's control block); a value outside int64 raises
 * OverflowError.  The address forms trust the caller with the address
 * (only 0 and misalignment are refused); the buffer forms take anything
 * with a writable contiguous buffer (mmap, memoryview, bytearray, ndarray)
 * and refuse a bad offset (IndexError), a misaligned word (ValueError) or
 * a buffer they cannot use (TypeError): they never touch a byte outside it.
 *
 * The buffer protocol became part of the limited API in 3.11; its struct
 * and its two functions have not changed since 3.3 and are exported by
 * every interpreter, so they are declared here for 3.8 ... 3.10.
 */
#define Py_LIMITED_API 0x03080000
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "client_ctl.h"
#include "omnipkg.h"

#if Py_LIMITED_API + 0 < 0x030B0000 && !defined(PyBUF_SIMPLE)
typedef struct {
	void *buf;
	PyObject *obj;
	Py_ssize_t len;
	Py_ssize_t itemsize;
	int readonly;
	int ndim;
	char *format;
	Py_ssize_t *shape;
	Py_ssize_t *strides;
	Py_ssize_t *suboffsets;
	void *internal;
} Py_buffer;
PyAPI_FUNC(int) PyObject_GetBuffer(PyObject *obj, Py_buffer *view, int flags);
PyAPI_FUNC(void) PyBuffer_Release(Py_buffer *view);
#define PyBUF_SIMPLE 0
#define PyBUF_WRITABLE 0x0001
#endif

#define SLICE_MS 50   /* a wait releases the GIL in slices, checking signals between */
#define GIL_TRIES 128 /* first, tries with the GIL held (a few us): most writes end by then */

/* ------------------------------------------------------------ arguments */

static int atom_i64(PyObject *o, int64_t *v)
{
	long long x = PyLong_AsLongLong(o);

	if (x == -1 && PyErr_Occurred())
		return -1;
	*v = (int64_t)x;
	return 0;
}

static int64_t *atom_addr(PyObject *o)
{
	void *p = PyLong_AsVoidPtr(o);

	if (!p) {
		if (!PyErr_Occurred())
			PyErr_SetString(PyExc_ValueError, "address 0");
		return NULL;
	}
	if ((uintptr_t)p & 7) {
		PyErr_SetString(PyExc_ValueError, "address is not 8-byte aligned");
		return NULL;
	}
	return p;
}

/* The buffer of obj (writable when asked), into *v: the caller releases it. */
static int atom_view(PyObject *obj, int writable, Py_buffer *v)
{
	if (PyObject_GetBuffer(obj, v, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) == 0)
		return 0;
	if (PyErr_ExceptionMatches(PyExc_TypeError) || PyErr_ExceptionMatches(PyExc_BufferError)) {
		PyObject *t, *val, *tb;

		PyErr_Fetch(&t, &val, &tb);
		PyErr_Format(PyExc_TypeError, "needs a %scontiguous buffer (mmap, memoryview, "
			     "bytearray, ndarray): %S", writable ? "writable " : "",
			     val ? val : Py_None);
		Py_XDECREF(t);
		Py_XDECREF(val);
		Py_XDECREF(tb);
	}
	return -1;
}

/* The word at offset off of obj's buffer; *v to be released by the caller. */
static int64_t *atom_word(PyObject *obj, PyObject *off, int writable, Py_buffer *v)
{
	Py_ssize_t o = PyLong_AsSsize_t(off);
	char *p;

	if (o == -1 && PyErr_Occurred())
		return NULL;
	if (atom_view(obj, writable, v) < 0)
		return NULL;
	if (o < 0 || v->len < 8 || o > v->len - 8) {
		PyErr_Format(PyExc_IndexError, "offset %zd: a word must lie within the buffer's "
			     "%zd bytes", o, v->len);
		PyBuffer_Release(v);
		return NULL;
	}
	p = (char *)v->buf + o;
	if ((uintptr_t)p & 7) {
		PyErr_Format(PyExc_ValueError, "offset %zd: the word is not 8-byte aligned", o);
		PyBuffer_Release(v);
		return NULL;
	}
	return (int64_t *)p;
}

/* ------------------------------------------------------------ atomics */

static PyObject *atom_do_cas(int64_t *p, PyObject *e, PyObject *d)
{
	int64_t expected, desired;

	if (atom_i64(e, &expected) < 0 || atom_i64(d, &desired) < 0)
		return NULL;
	return PyBool_FromLong(__atomic_compare_exchange_n(p, &expected, desired, 0,
							   __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
}

static PyObject *atom_do_add(int64_t *p, PyObject *d)
{
	int64_t delta;

	if (atom_i64(d, &delta) < 0)
		return NULL;
	/* wraps like the hardware: two's complement, no overflow check */
	return PyLong_FromLongLong((long long)(int64_t)__atomic_fetch_add(
		(uint64_t *)p, (uint64_t)delta, __ATOMIC_SEQ_CST));
}

static PyObject *atom_do_store(int64_t *p, PyObject *val)
{
	int64_t v;

	if (atom_i64(val, &v) < 0)
		return NULL;
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
	Py_RETURN_NONE;
}

static PyObject *atom_cas64(PyObject *self, PyObject *args)
{
	PyObject *a, *e, *d;
	int64_t *p;

	if (!PyArg_UnpackTuple(args, "cas64", 3, 3, &a, &e, &d) || !(p = atom_addr(a)))
		return NULL;
	return atom_do_cas(p, e, d);
}

static PyObject *atom_load64(PyObject *self, PyObject *a)
{
	int64_t *p = atom_addr(a);

	return p ? PyLong_FromLongLong((long long)__atomic_load_n(p, __ATOMIC_ACQUIRE)) : NULL;
}

static PyObject *atom_store64(PyObject *self, PyObject *args)
{
	PyObject *a, *v;
	int64_t *p;

	if (!PyArg_UnpackTuple(args, "store64", 2, 2, &a, &v) || !(p = atom_addr(a)))
		return NULL;
	return atom_do_store(p, v);
}

static PyObject *atom_add64(PyObject *self, PyObject *args)
{
	PyObject *a, *d;
	int64_t *p;

	if (!PyArg_UnpackTuple(args, "add64", 2, 2, &a, &d) || !(p = atom_addr(a)))
		return NULL;
	return atom_do_add(p, d);
}

static PyObject *atom_cas64_buf(PyObject *self, PyObject *args)
{
	PyObject *b, *o, *e, *d, *r;
	Py_buffer v;
	int64_t *p;

	if (!PyArg_UnpackTuple(args, "cas64_buf", 4, 4, &b, &o, &e, &d) ||
	    !(p = atom_word(b, o, 1, &v)))
		return NULL;
	r = atom_do_cas(p, e, d);
	PyBuffer_Release(&v);
	return r;
}

static PyObject *atom_load64_buf(PyObject *self, PyObject *args)
{
	PyObject *b, *o, *r;
	Py_buffer v;
	int64_t *p;

	if (!PyArg_UnpackTuple(args, "load64_buf", 2, 2, &b, &o) || !(p = atom_word(b, o, 0, &v)))
		return NULL;
	r = PyLong_FromLongLong((long long)__atomic_load_n(p, __ATOMIC_ACQUIRE));
	PyBuffer_Release(&v);
	return r;
}

static PyObject *atom_store64_buf(PyObject *self, PyObject *args)
{
	PyObject *b, *o, *val, *r;
	Py_buffer v;
	int64_t *p;

	if (!PyArg_UnpackTuple(args, "store64_buf", 3, 3, &b, &o, &val) ||
	    !(p = atom_word(b, o, 1, &v)))
		return NULL;
	r = atom_do_store(p, val);
	PyBuffer_Release(&v);
	return r;
}

static PyObject *atom_add64_buf(PyObject *self, PyObject *args)
{
	PyObject *b, *o, *d, *r;
	Py_buffer v;
	int64_t *p;

	if (!PyArg_UnpackTuple(args, "add64_buf", 3, 3, &b, &o, &d) || !(p = atom_word(b, o, 1, &v)))
		return NULL;
	r = atom_do_add(p, d);
	PyBuffer_Release(&v);
	return r;
}

static PyObject *atom_fence(PyObject *self, PyObject *unused)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	Py_RETURN_NONE;
}

/* ------------------------------------------------------------ control blocks */

static PyObject *ctl_error(int r)
{
	PyObject *args;
	const char *msg;

	switch (-r) {
	case EAGAIN:
		msg = "a writer holds the control block (or it is being formatted)";
		break;
	case ETIMEDOUT:
		msg = "a live writer held the control block past the timeout";
		break;
	case ESTALE:
		msg = "the control block's seq moved on from the one expected";
		break;
	case EPROTO:
		msg = "not a control block (bad magic or layout version)";
		break;
	case EINVAL:
		msg = "not a control block that fits in the buffer";
		break;
	case EOPNOTSUPP:
		msg = "a file-lock (standard mode) control block: use omnipkg.ctlblock";
		break;
	case EOWNERDEAD:
		msg = "the claim was taken over: its holder was taken for dead";
		break;
	case ERANGE:
		PyErr_SetString(PyExc_IndexError, "past the end of the control block's record");
		return NULL;
	default:
		msg = strerror(-r);
	}
	if ((args = Py_BuildValue("(is)", -r, msg))) {
		PyErr_SetObject(PyExc_OSError, args);
		Py_DECREF(args);
	}
	return NULL;
}

/* A block's buffer: 8-byte aligned, writable unless may_read_only. */
static int ctl_view(PyObject *obj, int may_read_only, Py_buffer *v)
{
	if (atom_view(obj, 1, v) < 0) {
		if (!may_read_only)
			return -1;
		PyErr_Clear();
		if (atom_view(obj, 0, v) < 0)
			return -1;
	}
	if ((uintptr_t)v->buf & 7) {
		PyErr_SetString(PyExc_ValueError, "a control block must start 8-byte aligned");
		PyBuffer_Release(v);
		return -1;
	}
	return 0;
}

/* seconds (None or < 0: no limit) into milliseconds (-1: no limit). */
static int ctl_timeout(PyObject *o, int *ms)
{
	double s;

	*ms = -1;
	if (!o || o == Py_None)
		return 0;
	s = PyFloat_AsDouble(o);
	if (s == -1.0 && PyErr_Occurred())
		return -1;
	if (s >= 0)
		*ms = s * 1000 > INT32_MAX / 2 ? INT32_MAX / 2 : (int)(s * 1000 + 0.5);
	return 0;
}

/* Waits in slices with the GIL released: fn(arg, slice_ms) until it gives
 * something else than -EAGAIN/-ETIMEDOUT, or timeout_ms (-1: none) passes.
 * -EINTR when a signal handler raised. */
static int ctl_wait(int (*fn)(void *arg, int ms), void *arg, int timeout_ms)
{
	int left = timeout_ms, r;

	r = fn(arg, 0);                    /* the common case: no wait, GIL held */
	for (int i = 0; r == -EAGAIN && left != 0 && i < GIL_TRIES; i++) {
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#elif defined(__aarch64__)
		__asm__ __volatile__("yield");
#endif
		r = fn(arg, 0);
	}
	while ((r == -EAGAIN || r == -ETIMEDOUT) && left != 0) {
		int slice = left < 0 || left > SLICE_MS ? SLICE_MS : left;

		Py_BEGIN_ALLOW_THREADS
		r = fn(arg, slice);
		Py_END_ALLOW_THREADS
		if (left > 0)
			left -= slice;
		if (PyErr_CheckSignals() < 0)
			return -EINTR;
		if (r == -ETIMEDOUT && left == 0)
			break;
	}
	if (r == -EAGAIN && timeout_ms != 0)
		r = -ETIMEDOUT;
	return r;
}

struct ctl_read_args {
	void *base;
	size_t len;
	uint64_t off;
	char *dst;
	size_t n;
	int may_write;
	omni_ctl_snapshot snap;
};

static int ctl_read_fn(void *arg, int ms)
{
	struct ctl_read_args *a = arg;

	return client_ctl_read(a->base, a->len, a->off, a->dst, a->n, ms, a->may_write, &a->snap);
}

static PyObject *ctl_read(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "buf", "offset", "length", "timeout", NULL };
	PyObject *obj, *tmo = NULL, *data = NULL, *res = NULL;
	Py_ssize_t off = 0, length = -1;
	struct ctl_read_args a;
	uint64_t rs;
	Py_buffer v;
	int ms, r;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O|nnO:ctl_read", names, &obj, &off, &length,
					 &tmo) ||
	    ctl_timeout(tmo, &ms) < 0 || ctl_view(obj, 1, &v) < 0)
		return NULL;
	a.base = v.buf;
	a.len = (size_t)v.len;
	a.may_write = !v.readonly;
	if ((r = omni_ctl_check(v.buf, a.len)) < 0) {
		ctl_error(r);
		goto out;
	}
	if (off < 0 || length < -1) {
		PyErr_SetString(PyExc_IndexError, "offset and length must not be negative");
		goto out;
	}
	a.off = (uint64_t)off;
	rs = ((const omni_ctl_header *)v.buf)->record_size;
	if (a.off > rs || (length != -1 && (uint64_t)length > rs - a.off)) {
		ctl_error(-ERANGE);
		goto out;
	}
	if (length == -1)
		length = (Py_ssize_t)(rs - a.off);
	a.n = (size_t)length;
	if (!(data = PyBytes_FromStringAndSize(NULL, length)))
		goto out;
	a.dst = PyBytes_AsString(data);
	r = ctl_wait(ctl_read_fn, &a, ms);
	if (r == -EINTR)
		goto out;
	if (r < 0) {
		ctl_error(r);
		goto out;
	}
	res = Py_BuildValue("(OKKOK)", data, (unsigned long long)a.snap.seq,
			    (unsigned long long)a.snap.generation, a.snap.torn ? Py_True : Py_False,
			    (unsigned long long)a.snap.torn_count);
out:
	Py_XDECREF(data);
	PyBuffer_Release(&v);
	return res;
}

struct ctl_begin_args {
	void *base;
	size_t len;
	uint64_t expected;
	omni_ctl_ticket t;
};

static int ctl_begin_fn(void *arg, int ms)
{
	struct ctl_begin_args *a = arg;

	return omni_ctl_begin(a->base, a->len, a->expected, ms, &a->t);
}

static PyObject *ctl_begin(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "buf", "expected", "timeout", NULL };
	PyObject *obj, *tmo = NULL, *res = NULL;
	long long expected = -1;
	struct ctl_begin_args a;
	Py_buffer v;
	int ms, r;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O|LO:ctl_begin", names, &obj, &expected, &tmo) ||
	    ctl_timeout(tmo, &ms) < 0 || ctl_view(obj, 0, &v) < 0)
		return NULL;
	a.base = v.buf;
	a.len = (size_t)v.len;
	a.expected = expected < 0 ? OMNI_CTL_ANY : (uint64_t)expected;
	r = ctl_wait(ctl_begin_fn, &a, a.expected == OMNI_CTL_ANY ? ms : 0);
	if (r == -ETIMEDOUT && ms == 0)
		r = -EAGAIN;
	if (r == 0)
		res = Py_BuildValue("(KO)", (unsigned long long)a.t.word,
				    a.t.prev_torn ? Py_True : Py_False);
	else if (r != -EINTR)
		ctl_error(r);
	PyBuffer_Release(&v);
	return res;
}

static PyObject *ctl_end(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "buf", "word", "torn", NULL };
	PyObject *obj;
	unsigned long long word;
	omni_ctl_ticket t = { 0, 0 };
	int torn = 0, r;
	Py_buffer v;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "OK|p:ctl_end", names, &obj, &word, &torn) ||
	    ctl_view(obj, 0, &v) < 0)
		return NULL;
	if (v.len < OMNI_CTL_HEADER_SIZE) {
		PyBuffer_Release(&v);
		return ctl_error(-EINVAL);
	}
	t.word = word;
	r = omni_ctl_end(v.buf, &t, torn ? OMNI_CTL_TORN : 0);
	PyBuffer_Release(&v);
	if (r < 0)
		return ctl_error(r);
	Py_RETURN_NONE;
}

static PyObject *ctl_format(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "buf", "filelock", NULL };
	PyObject *obj;
	int filelock = 0, r;
	Py_buffer v;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O|p:ctl_format", names, &obj, &filelock) ||
	    ctl_view(obj, 0, &v) < 0)
		return NULL;
	r = omni_ctl_format(v.buf, (size_t)v.len, filelock ? OMNI_CTL_FILELOCK : 0);
	PyBuffer_Release(&v);
	if (r < 0)
		return ctl_error(r);
	return PyBool_FromLong(r == 0);
}

static PyObject *ctl_check(PyObject *self, PyObject *obj)
{
	uint64_t rs;
	Py_buffer v;
	int r;

	if (ctl_view(obj, 1, &v) < 0)
		return NULL;
	r = omni_ctl_check(v.buf, (size_t)v.len);
	rs = r == 0 ? ((const omni_ctl_header *)v.buf)->record_size : 0;
	PyBuffer_Release(&v);
	if (r < 0)
		return ctl_error(r);
	return PyLong_FromUnsignedLongLong(rs);
}

static PyObject *ctl_recover(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "buf", "pid", "start", NULL };
	PyObject *obj;
	int pid = 0, r;
	unsigned long long start = 0;
	Py_buffer v;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O|iK:ctl_recover", names, &obj, &pid, &start) ||
	    ctl_view(obj, 0, &v) < 0)
		return NULL;
	r = omni_ctl_recover(v.buf, (size_t)v.len, pid, start);
	PyBuffer_Release(&v);
	if (r < 0)
		return ctl_error(r);
	return PyBool_FromLong(r);
}

static PyObject *ctl_proc_start(PyObject *self, PyObject *arg)
{
	long pid = PyLong_AsLong(arg);
	uint64_t start;
	int r;

	if (pid == -1 && PyErr_Occurred())
		return NULL;
	if (pid <= 0 || pid > INT32_MAX) {
		PyErr_SetString(PyExc_ValueError, "pid must be a positive int");
		return NULL;
	}
	r = omni_ctl_proc_start((int)pid, &start);
	if (r == -ESRCH)
		Py_RETURN_NONE;
	if (r < 0)
		return ctl_error(r);
	return PyLong_FromUnsignedLongLong(start);
}

/* ------------------------------------------------------------ module */

static PyMethodDef atom_methods[] = {
	{ "cas64", atom_cas64, METH_VARARGS,
	  "cas64(addr, expected, desired) -> bool\n\nAtomically: if the word at addr is expected, "
	  "it becomes desired (True); else nothing changes (False).  Sequentially consistent." },
	{ "load64", atom_load64, METH_O, "load64(addr) -> int\n\nThe word at addr (acquire)." },
	{ "store64", atom_store64, METH_VARARGS,
	  "store64(addr, value)\n\nWrites value to the word at addr (release)." },
	{ "add64", atom_add64, METH_VARARGS,
	  "add64(addr, delta) -> int\n\nAtomically adds delta to the word at addr (wrapping at "
	  "64 bits) and returns the value it held before (fetch-and-add).  Sequentially "
	  "consistent." },
	{ "cas64_buf", atom_cas64_buf, METH_VARARGS,
	  "cas64_buf(buf, offset, expected, desired) -> bool\n\ncas64 on the word at byte "
	  "offset of buf's writable buffer." },
	{ "load64_buf", atom_load64_buf, METH_VARARGS,
	  "load64_buf(buf, offset) -> int\n\nload64 on the word at byte offset of buf." },
	{ "store64_buf", atom_store64_buf, METH_VARARGS,
	  "store64_buf(buf, offset, value)\n\nstore64 on the word at byte offset of buf." },
	{ "add64_buf", atom_add64_buf, METH_VARARGS,
	  "add64_buf(buf, offset, delta) -> int\n\nadd64 on the word at byte offset of buf: "
	  "the value before." },
	{ "fence", atom_fence, METH_NOARGS, "fence()\n\nA full memory barrier." },
	{ "ctl_format", (PyCFunction)(void (*)(void))ctl_format, METH_VARARGS | METH_KEYWORDS,
	  "ctl_format(buf, filelock=False) -> bool\n\nFormats buf (all zero) as an empty control "
	  "block (omnipkg.h); True when formatted now, False when it already was." },
	{ "ctl_check", ctl_check, METH_O,
	  "ctl_check(buf) -> int\n\nThe record size of the control block in buf; OSError when "
	  "buf holds none (EAGAIN: not formatted yet)." },
	{ "ctl_read", (PyCFunction)(void (*)(void))ctl_read, METH_VARARGS | METH_KEYWORDS,
	  "ctl_read(buf, offset=0, length=-1, timeout=None) -> (bytes, seq, generation, torn, "
	  "torn_count)\n\nA copy of the record's bytes as of one stable seq.  Waits while a "
	  "writer holds it (timeout seconds; None: no limit; 0: BlockingIOError at once), "
	  "recovering a dead writer's claim when buf is writable." },
	{ "ctl_begin", (PyCFunction)(void (*)(void))ctl_begin, METH_VARARGS | METH_KEYWORDS,
	  "ctl_begin(buf, expected=-1, timeout=None) -> (word, prev_torn)\n\nClaims the control "
	  "block: word is the ticket for ctl_end.  expected -1 waits for a live writer (timeout "
	  "seconds; None: no limit); any other value claims only if seq is still that value, "
	  "else OSError(ESTALE) at once.  A dead writer's claim is recovered first.  The GIL is "
	  "released while it waits." },
	{ "ctl_end", (PyCFunction)(void (*)(void))ctl_end, METH_VARARGS | METH_KEYWORDS,
	  "ctl_end(buf, word, torn=False)\n\nPublishes the write claimed by word (torn: it did "
	  "not complete).  OSError(EOWNERDEAD) when word no longer holds the block." },
	{ "ctl_recover", (PyCFunction)(void (*)(void))ctl_recover, METH_VARARGS | METH_KEYWORDS,
	  "ctl_recover(buf, pid=0, start=0) -> bool\n\nRecovers the block if a dead writer (only "
	  "pid, started at start, when given) holds it." },
	{ "proc_start", ctl_proc_start, METH_O,
	  "proc_start(pid) -> int | None\n\nThe start time of process pid (/proc/<pid>/stat "
	  "field 22); None when it is gone or a zombie." },
	{ NULL, NULL, 0, NULL }
};

static struct PyModuleDef atom_module = {
	PyModuleDef_HEAD_INIT, "omnipkg_atomic",
	"Hardware atomics on 64-bit words in shared memory, and omnipkgd's control blocks "
	"(a seqlock whose dead writers are recovered).  One stable-ABI module for Python 3.8+.",
	-1, atom_methods, NULL, NULL, NULL, NULL
};

static int atom_layout(PyObject *m)
{
	static const struct {
		const char *name;
		size_t off, size;
	} fields[] = {
#define F_(f) { #f, offsetof(omni_ctl_header, f), sizeof(((omni_ctl_header *)0)->f) }
		F_(magic), F_(version), F_(flags), F_(record_size), F_(seq), F_(owner_pid),
		F_(owner_start), F_(generation), F_(torn), F_(torn_count), F_(reserved),
#undef F_
	};
	PyObject *d = PyDict_New();

	if (!d)
		return -1;
	for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
		PyObject *v = Py_BuildValue("(nn)", (Py_ssize_t)fields[i].off,
					    (Py_ssize_t)fields[i].size);

		if (!v || PyDict_SetItemString(d, fields[i].name, v) < 0) {
			Py_XDECREF(v);
			Py_DECREF(d);
			return -1;
		}
		Py_DECREF(v);
	}
	if (PyModule_AddObject(m, "CTL_LAYOUT", d) < 0) {
		Py_DECREF(d);
		return -1;
	}
	return 0;
}

/* 3.8's PyMODINIT_FUNC leaves visibility to the build: ours hides the rest */
__attribute__((visibility("default"))) PyMODINIT_FUNC PyInit_omnipkg_atomic(void)
{
	PyObject *m = PyModule_Create(&atom_module);

	if (!m)
		return NULL;
	if (PyModule_AddIntConstant(m, "CTL_HEADER_SIZE", OMNI_CTL_HEADER_SIZE) < 0 ||
	    PyModule_AddIntConstant(m, "CTL_VERSION", OMNI_CTL_VERSION) < 0 ||
	    PyModule_AddIntConstant(m, "CTL_PID_SHIFT", OMNI_CTL_PID_SHIFT) < 0 ||
	    PyModule_AddIntConstant(m, "CTL_FILELOCK", OMNI_CTL_FILELOCK) < 0 ||
	    PyModule_AddObject(m, "CTL_MAGIC", PyLong_FromUnsignedLongLong(OMNI_CTL_MAGIC)) < 0 ||
	    PyModule_AddStringConstant(m, "ABI", "abi3, Py_LIMITED_API 0x03080000") < 0 ||
	    atom_layout(m) < 0) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
