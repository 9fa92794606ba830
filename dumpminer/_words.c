/*
 * Which objects of a batch are string-less (dumpminer/shapes.py): no
 * printable run of min_length bytes once every aligned 8-byte word holding a
 * kernel address (its value at or above 0xffff800000000000, the rule of
 * dumpminer/pointers.py) is blanked. One pass over the bytes, with the GIL
 * released, as numpy's dozen passes over a 16 MiB batch cost more than the
 * fragment scan itself.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define KERNEL_SPACE_START 0xffff800000000000ULL

static int stringless_row(const unsigned char *row, Py_ssize_t width, Py_ssize_t min_length)
{
	Py_ssize_t run = 0;
	for (Py_ssize_t at = 0; at < width; at += 8) {
		Py_ssize_t end = at + 8 <= width ? at + 8 : width;
		if (end - at == 8) {
			uint64_t word;
			memcpy(&word, row + at, 8); /* x86-64: little-endian */
			if (word >= KERNEL_SPACE_START) {
				run = 0;
				continue;
			}
		}
		for (Py_ssize_t i = at; i < end; i++) {
			if (row[i] >= 0x20 && row[i] <= 0x7e) {
				if (++run >= min_length)
					return 0;
			} else {
				run = 0;
			}
		}
	}
	return 1;
}

static PyObject *stringless(PyObject *self, PyObject *args)
{
	Py_buffer rows;
	Py_ssize_t width, min_length;
	if (!PyArg_ParseTuple(args, "y*nn", &rows, &width, &min_length))
		return NULL;
	if (width <= 0 || min_length < 1 || rows.len % width) {
		PyBuffer_Release(&rows);
		PyErr_SetString(PyExc_ValueError, "rows must be whole rows of width > 0, min_length >= 1");
		return NULL;
	}
	Py_ssize_t n = rows.len / width;
	PyObject *out = PyBytes_FromStringAndSize(NULL, n);
	if (out == NULL) {
		PyBuffer_Release(&rows);
		return NULL;
	}
	unsigned char *flags = (unsigned char *)PyBytes_AS_STRING(out);
	const unsigned char *data = rows.buf;
	Py_BEGIN_ALLOW_THREADS
	for (Py_ssize_t r = 0; r < n; r++)
		flags[r] = (unsigned char)stringless_row(data + r * width, width, min_length);
	Py_END_ALLOW_THREADS
	PyBuffer_Release(&rows);
	return out;
}

static PyMethodDef methods[] = {
	{ "stringless", stringless, METH_VARARGS,
	  "Per row of a batch: 1 if it holds no printable run outside kernel-address words." },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "dumpminer._words",
	"String-less objects of a batch, found in one pass.",
	-1, methods,
};

PyMODINIT_FUNC PyInit__words(void)
{
	return PyModule_Create(&module);
}
