/*
 * lockdemo._core (version 2.0) - a C extension whose only job is to show
 * which copy of an exported C symbol a process ends up calling.
 *
 * v1 and v2 export the same names; only the values differ.  lockdemo_answer
 * has default visibility and is called through the PLT, so the dynamic
 * linker decides which definition the call reaches (that is the point).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>

#define LOCKDEMO_BUILD "2.0"

__attribute__((visibility("default"), noinline))
int lockdemo_answer(void)
{
	return 2;
}

/* version() -> int: what lockdemo_answer() says, via the bound symbol. */
static PyObject *core_version(PyObject *self, PyObject *unused)
{
	return PyLong_FromLong(lockdemo_answer());
}

/* bound_from() -> str: the file that holds the lockdemo_answer this module's
 * relocation was bound to (taking its address goes through the GOT). */
static PyObject *core_bound_from(PyObject *self, PyObject *unused)
{
	Dl_info info;
	int (*fn)(void) = lockdemo_answer;

	if (!dladdr((void *)fn, &info) || !info.dli_fname)
		Py_RETURN_NONE;
	return PyUnicode_DecodeFSDefault(info.dli_fname);
}

static PyMethodDef core_methods[] = {
	{"version", core_version, METH_NOARGS, "lockdemo_answer() of the bound symbol"},
	{"bound_from", core_bound_from, METH_NOARGS, "file holding the bound lockdemo_answer"},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
	PyModuleDef_HEAD_INIT, "lockdemo._core", NULL, -1, core_methods,
	NULL, NULL, NULL, NULL,
};

/* Single-phase init, as most extensions in the wild still use. */
PyMODINIT_FUNC PyInit__core(void)
{
	PyObject *m = PyModule_Create(&core_module);

	if (m && PyModule_AddStringConstant(m, "BUILD", LOCKDEMO_BUILD) < 0) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
