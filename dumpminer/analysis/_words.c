/*
 * The shapes of string-less objects (dumpminer/analysis/shapes.py), in compiled
 * passes with the GIL released.
 *
 * stringless(): which objects of a batch hold no
 * printable run of min_length bytes once every aligned 8-byte word holding a
 * kernel address (its value at or above 0xffff800000000000, the rule of
 * dumpminer/extract/pointers.py) is blanked. One pass over the bytes, with the GIL
 * released, as numpy's dozen passes over a 16 MiB batch cost more than the
 * fragment scan itself.
 *
 * group_shapes(): the shape keys of a batch's string-less objects grouped
 * in a hash table, with each group's lowest addresses: numpy's hashing,
 * sorting and splitting took 120 ms for a batch of 170,000 objects.
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


/*
 * Shape keys (dumpminer/analysis/words.py: shape_key_words): per word 0 for data, 1
 * for a kernel pointer to memory that comes and goes, the value itself for a
 * pointer into the kernel image or a module (a static).
 */
#define ERRNO_START 0xfffffffffffff001ULL

struct statics {
	uint64_t image_start, image_end;
	const uint64_t *module_start, *module_end;
	Py_ssize_t modules;
};

static uint64_t key_word(uint64_t w, const struct statics *st)
{
	if (w < KERNEL_SPACE_START || w >= ERRNO_START)
		return 0;
	if (w >= st->image_start && w < st->image_end)
		return w;
	/* Module regions are sorted by start: the last one starting at or before w. */
	Py_ssize_t lo = 0, hi = st->modules;
	while (lo < hi) {
		Py_ssize_t mid = (lo + hi) / 2;
		if (st->module_start[mid] <= w)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo > 0 && w < st->module_end[lo - 1])
		return w;
	return 1;
}

struct group {
	Py_ssize_t count;
	Py_ssize_t kept; /* sample entries in use, at most `sample` */
};

static uint64_t mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/*
 * group_shapes(words, n, width, key_width, addresses, image_start, image_end,
 *              module_starts, module_ends, sample, min_length)
 * words: n rows of `width` u64; the key is made of each row's first key_width
 * words. With min_length > 0, only the string-less rows are grouped (see
 * stringless()), in the same pass. Returns (keys, counts, samples): the distinct keys (G rows of
 * key_width u64, in order of first appearance), each one's number of rows
 * (G i64) and the row indexes of its `sample` lowest addresses, ascending
 * (G rows of `sample` i64, -1 where a group has fewer rows). Keys are
 * compared whole, so the grouping is exact whatever the hash.
 */
static PyObject *group_shapes(PyObject *self, PyObject *args)
{
	Py_buffer words, addresses, mstarts, mends;
	Py_ssize_t n, width, key_width, sample, min_length;
	unsigned long long image_start, image_end;
	if (!PyArg_ParseTuple(args, "y*nnny*KKy*y*nn", &words, &n, &width, &key_width, &addresses,
			      &image_start, &image_end, &mstarts, &mends, &sample, &min_length))
		return NULL;
	PyObject *result = NULL;
	uint64_t *keys = NULL, *row_key = NULL, *sample_addr = NULL;
	int64_t *table = NULL, *sample_idx = NULL;
	struct group *groups = NULL;
	Py_ssize_t ngroups = 0;
	if (key_width < 1 || key_width > width || sample < 1 || n < 0 || min_length < 0 ||
	    words.len < n * width * 8 || addresses.len < n * 8 || mstarts.len != mends.len) {
		PyErr_SetString(PyExc_ValueError, "group_shapes: inconsistent sizes");
		goto out;
	}
	struct statics st = { image_start, image_end, mstarts.buf, mends.buf, mstarts.len / 8 };
	Py_ssize_t capacity = 16;
	while (capacity < 2 * n)
		capacity *= 2;
	table = malloc(capacity * sizeof(*table));
	keys = malloc((n ? n : 1) * key_width * sizeof(*keys));
	groups = malloc((n ? n : 1) * sizeof(*groups));
	row_key = malloc(key_width * sizeof(*row_key));
	if (!table || !keys || !groups || !row_key) {
		PyErr_NoMemory();
		goto out;
	}
	memset(table, 0xff, capacity * sizeof(*table));
	const uint64_t *data = words.buf;
	const uint64_t *where = addresses.buf;
	/* Per group `sample` (address, index) pairs, grown with the groups. */
	Py_ssize_t sample_cap = 64;
	sample_addr = malloc(sample_cap * sample * sizeof(*sample_addr));
	sample_idx = malloc(sample_cap * sample * sizeof(*sample_idx));
	if (!sample_addr || !sample_idx) {
		PyErr_NoMemory();
		goto out;
	}
	int failed = 0;
	Py_BEGIN_ALLOW_THREADS
	for (Py_ssize_t r = 0; r < n && !failed; r++) {
		const uint64_t *row = data + r * width;
		if (min_length && !stringless_row((const unsigned char *)row, width * 8, min_length))
			continue;
		uint64_t h = 0x9e3779b97f4a7c15ULL;
		for (Py_ssize_t i = 0; i < key_width; i++) {
			row_key[i] = key_word(row[i], &st);
			h = mix(h ^ (row_key[i] + (uint64_t)i));
		}
		Py_ssize_t slot = (Py_ssize_t)(h & (uint64_t)(capacity - 1));
		Py_ssize_t g;
		for (;;) {
			g = table[slot];
			if (g < 0) {
				g = ngroups++;
				table[slot] = g;
				memcpy(keys + g * key_width, row_key, key_width * sizeof(*row_key));
				groups[g].count = 0;
				groups[g].kept = 0;
				if (ngroups > sample_cap) {
					sample_cap *= 2;
					uint64_t *a = realloc(sample_addr, sample_cap * sample * sizeof(*a));
					if (a)
						sample_addr = a;
					int64_t *b = realloc(sample_idx, sample_cap * sample * sizeof(*b));
					if (b)
						sample_idx = b;
					if (!a || !b) {
						failed = 1;
						break;
					}
				}
				break;
			}
			if (!memcmp(keys + g * key_width, row_key, key_width * sizeof(*row_key)))
				break;
			slot = (slot + 1) & (capacity - 1);
		}
		if (failed)
			break;
		struct group *grp = &groups[g];
		grp->count++;
		uint64_t *sa = sample_addr + g * sample;
		int64_t *si = sample_idx + g * sample;
		uint64_t a = where[r];
		if (grp->kept == sample && a >= sa[sample - 1])
			continue;
		/* Insert in address order, dropping the highest when full. */
		Py_ssize_t at = grp->kept < sample ? grp->kept : sample - 1;
		while (at > 0 && sa[at - 1] > a) {
			sa[at] = sa[at - 1];
			si[at] = si[at - 1];
			at--;
		}
		sa[at] = a;
		si[at] = r;
		if (grp->kept < sample)
			grp->kept++;
	}
	Py_END_ALLOW_THREADS
	if (failed) {
		PyErr_NoMemory();
		goto out;
	}
	PyObject *counts = PyBytes_FromStringAndSize(NULL, ngroups * 8);
	PyObject *samples = PyBytes_FromStringAndSize(NULL, ngroups * sample * 8);
	PyObject *keyout = PyBytes_FromStringAndSize((const char *)keys, ngroups * key_width * 8);
	if (counts && samples && keyout) {
		int64_t *c = (int64_t *)PyBytes_AS_STRING(counts);
		int64_t *s = (int64_t *)PyBytes_AS_STRING(samples);
		for (Py_ssize_t g = 0; g < ngroups; g++) {
			c[g] = groups[g].count;
			for (Py_ssize_t i = 0; i < sample; i++)
				s[g * sample + i] = i < groups[g].kept ? sample_idx[g * sample + i] : -1;
		}
		result = PyTuple_Pack(3, keyout, counts, samples);
	}
	Py_XDECREF(counts);
	Py_XDECREF(samples);
	Py_XDECREF(keyout);
out:
	free(table);
	free(keys);
	free(groups);
	free(row_key);
	free(sample_addr);
	free(sample_idx);
	PyBuffer_Release(&words);
	PyBuffer_Release(&addresses);
	PyBuffer_Release(&mstarts);
	PyBuffer_Release(&mends);
	return result;
}

static PyMethodDef methods[] = {
	{ "stringless", stringless, METH_VARARGS,
	  "Per row of a batch: 1 if it holds no printable run outside kernel-address words." },
	{ "group_shapes", group_shapes, METH_VARARGS,
	  "Group rows by shape key: distinct keys, counts, lowest-address samples." },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "dumpminer.analysis._words",
	"String-less objects of a batch, found in one pass.",
	-1, methods,
};

PyMODINIT_FUNC PyInit__words(void)
{
	return PyModule_Create(&module);
}
