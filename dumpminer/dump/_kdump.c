/*
 * dumpminer.dump._kdump: read physical memory from a kdump-compressed file
 * (makedumpfile -c, QEMU's kdump-zlib) with the GIL released.
 *
 * drgn's Program.read inflates kdump pages holding the GIL, so a process
 * reads on one core however many threads it has. This reader does the same
 * work (find each page's descriptor, pread its data, inflate it) without
 * the GIL, so threads read on every core. dumpminer/dump/kdumpread.py parses the
 * headers and decides when it may be used; drgn stays the reader of every
 * other format and of whatever this one refuses, and is the oracle it is
 * tested against (tests/test_kdumpread.py).
 *
 * read(fd, block_size, descs_offset, max_pfn, bitmap, rank, phys, size, out)
 *
 *   fd            the open dump file (pread only: threads share it)
 *   block_size    the dump's page size (disk_dump_header.block_size)
 *   descs_offset  file offset of the first struct page_desc
 *   max_pfn       pages the bitmap covers
 *   bitmap        the second (dumpable) page bitmap, little-endian bit order
 *   rank          per 64-bit word of bitmap, the set bits before it (uint64)
 *   phys, size    the physical range to read
 *   out           a writable buffer of at least size bytes, or None
 *
 * Returns the bytes read (a new bytes object, or None when written to out),
 * or an int: the PFN of the first page it cannot read (not in the dump, a
 * descriptor or data outside the file, a compression it does not know, data
 * that does not inflate to one page). The caller then asks drgn, which says
 * what that page is (a fault, or zeros).
 *
 * Only zlib is read (the samples' and makedumpfile -c's); lzo, snappy and
 * zstd pages are refused, and drgn reads them. zlib pages are inflated with
 * libdeflate when the system has it (loaded at import with dlopen: about
 * twice as fast as zlib on whole pages, docs/performance.md), else with
 * zlib. inflater() names the one in use; use_zlib(True) forces zlib (tests
 * hold both to drgn).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <dlfcn.h>
#include <unistd.h>
#include <zlib.h>

/* libdeflate's API (libdeflate.h), found at import; NULL without it. */
enum { LIBDEFLATE_SUCCESS = 0 };
static void *(*ld_alloc)(void);
static void (*ld_free)(void *);
static int (*ld_zlib_decompress)(void *, const void *, size_t, void *, size_t, size_t *);
static int force_zlib;

static void load_libdeflate(void)
{
	void *lib = dlopen("libdeflate.so.0", RTLD_NOW | RTLD_LOCAL);

	if (!lib)
		return;
	ld_alloc = (void *(*)(void))dlsym(lib, "libdeflate_alloc_decompressor");
	ld_free = (void (*)(void *))dlsym(lib, "libdeflate_free_decompressor");
	ld_zlib_decompress = (int (*)(void *, const void *, size_t, void *, size_t, size_t *))
		dlsym(lib, "libdeflate_zlib_decompress");
	if (!ld_alloc || !ld_free || !ld_zlib_decompress) {
		ld_alloc = NULL;
		ld_free = NULL;
		ld_zlib_decompress = NULL;
		dlclose(lib);
	}
}

#define DUMP_DH_COMPRESSED_ZLIB 0x1

struct page_desc {
	int64_t offset;
	uint32_t size;
	uint32_t flags;
	uint64_t page_flags;
};

struct request {
	int fd;
	uint64_t block_size;
	int64_t descs_offset;
	uint64_t max_pfn;
	const uint64_t *bitmap;
	const uint64_t *rank;
	uint64_t words;
	uint64_t phys;
	uint64_t size;
	uint8_t *out;
};

static int pread_full(int fd, void *buf, size_t n, int64_t off)
{
	uint8_t *p = buf;

	while (n) {
		ssize_t got = pread(fd, p, n, off);
		if (got <= 0)
			return -1;
		p += got;
		n -= (size_t)got;
		off += got;
	}
	return 0;
}

static int dumpable(const struct request *r, uint64_t pfn)
{
	return pfn < r->max_pfn && pfn / 64 < r->words &&
	       (r->bitmap[pfn / 64] >> (pfn % 64) & 1);
}

static uint64_t desc_index(const struct request *r, uint64_t pfn)
{
	uint64_t below = r->bitmap[pfn / 64] & ((UINT64_C(1) << (pfn % 64)) - 1);
	return r->rank[pfn / 64] + (uint64_t)__builtin_popcountll(below);
}

/* One page's data, as stored, into page (block_size bytes). 0 or -1. */
static int unpack(const struct request *r, z_stream *z, int *z_ready, void *ld,
		  const struct page_desc *d, const uint8_t *data, uint8_t *page)
{
	if (d->flags == 0) {
		if (d->size != r->block_size)
			return -1;
		memcpy(page, data, r->block_size);
		return 0;
	}
	if (d->flags != DUMP_DH_COMPRESSED_ZLIB)
		return -1;
	if (ld) {
		size_t got = 0;

		if (ld_zlib_decompress(ld, data, d->size, page, r->block_size, &got) !=
			    LIBDEFLATE_SUCCESS ||
		    got != r->block_size)
			return -1;
		return 0;
	}
	if (!*z_ready) {
		memset(z, 0, sizeof(*z));
		if (inflateInit(z) != Z_OK)
			return -1;
		*z_ready = 1;
	} else if (inflateReset(z) != Z_OK) {
		return -1;
	}
	z->next_in = (Bytef *)data;
	z->avail_in = d->size;
	z->next_out = page;
	z->avail_out = (uInt)r->block_size;
	if (inflate(z, Z_FINISH) != Z_STREAM_END || z->avail_out != 0)
		return -1;
	return 0;
}

/*
 * Read the request into r->out. Returns -1 when all went well, else the PFN
 * of the first page that could not be read. Runs without the GIL.
 */
static int64_t read_range(const struct request *r)
{
	uint64_t first = r->phys / r->block_size;
	uint64_t last = (r->phys + r->size - 1) / r->block_size;
	uint64_t n = last - first + 1, i, seg_end = 0;
	struct page_desc *descs = NULL;
	uint8_t *span = NULL, *page = NULL;
	size_t span_cap = 0;
	int64_t span_lo = 0, failed = -1;
	z_stream z;
	int z_ready = 0;
	void *ld = NULL;

	for (i = 0; i < n; i++)
		if (!dumpable(r, first + i))
			return (int64_t)(first + i);
	if (ld_alloc && !force_zlib) {
		ld = ld_alloc();
		if (!ld)
			return (int64_t)first;
	}
	/* Dumpable pages in a row have descriptors in a row: one pread. */
	descs = malloc(n * sizeof(*descs));
	page = malloc(r->block_size);
	if (!descs || !page ||
	    pread_full(r->fd, descs, n * sizeof(*descs),
		       r->descs_offset + (int64_t)(desc_index(r, first) * sizeof(*descs))) < 0)
		goto fail_first;
	for (i = 0; i < n; i++) {
		if (descs[i].offset < 0 || descs[i].offset > INT64_MAX / 2 ||
		    descs[i].size > r->block_size) {
			failed = (int64_t)(first + i);
			goto out;
		}
	}
	for (i = 0; i < n; i++) {
		uint64_t start = (first + i) * r->block_size;
		uint64_t from = start < r->phys ? r->phys - start : 0;
		uint64_t end = r->phys + r->size - start;
		uint8_t *dest = r->out + (start + from - r->phys);

		if (end > r->block_size)
			end = r->block_size;
		if (i >= seg_end) {
			/*
			 * Pages written in order lie one after another in the
			 * file: one pread for each such segment.
			 */
			size_t length = descs[i].size;

			for (seg_end = i + 1; seg_end < n; seg_end++) {
				if (descs[seg_end].offset != descs[seg_end - 1].offset +
								 descs[seg_end - 1].size)
					break;
				length += descs[seg_end].size;
			}
			if (length + 1 > span_cap) {
				free(span);
				span_cap = length + 1;
				span = malloc(span_cap);
				if (!span)
					goto fail_first;
			}
			span_lo = descs[i].offset;
			if (pread_full(r->fd, span, length, span_lo) < 0) {
				failed = (int64_t)(first + i);
				goto out;
			}
		}
		/* Whole pages inflate in place; a partial one goes through page. */
		if (from == 0 && end == r->block_size) {
			if (unpack(r, &z, &z_ready, ld, &descs[i],
				   span + (descs[i].offset - span_lo), dest) < 0) {
				failed = (int64_t)(first + i);
				goto out;
			}
		} else {
			if (unpack(r, &z, &z_ready, ld, &descs[i],
				   span + (descs[i].offset - span_lo), page) < 0) {
				failed = (int64_t)(first + i);
				goto out;
			}
			memcpy(dest, page + from, end - from);
		}
	}
	goto out;
fail_first:
	failed = (int64_t)first;
out:
	if (z_ready)
		inflateEnd(&z);
	if (ld)
		ld_free(ld);
	free(span);
	free(page);
	free(descs);
	return failed;
}

static int get_words(PyObject *obj, Py_buffer *view, const char *what)
{
	if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0)
		return -1;
	if (view->len % 8) {
		PyBuffer_Release(view);
		PyErr_Format(PyExc_ValueError, "%s is not whole 64-bit words", what);
		return -1;
	}
	return 0;
}

static PyObject *kdump_read(PyObject *self, PyObject *args)
{
	int fd;
	unsigned long long block_size, max_pfn, phys, size;
	long long descs_offset;
	PyObject *bitmap_obj, *rank_obj, *out_obj, *result = NULL;
	Py_buffer bitmap, rank, out = {0};
	struct request r;
	int64_t failed;

	if (!PyArg_ParseTuple(args, "iKLKOOKKO", &fd, &block_size, &descs_offset, &max_pfn,
			      &bitmap_obj, &rank_obj, &phys, &size, &out_obj))
		return NULL;
	if (block_size < 512 || block_size > (1 << 20) || size == 0 ||
	    phys + size < phys) {
		PyErr_SetString(PyExc_ValueError, "bad block_size or range");
		return NULL;
	}
	if (get_words(bitmap_obj, &bitmap, "bitmap") < 0)
		return NULL;
	if (get_words(rank_obj, &rank, "rank") < 0) {
		PyBuffer_Release(&bitmap);
		return NULL;
	}
	if (rank.len != bitmap.len) {
		PyErr_SetString(PyExc_ValueError, "rank and bitmap differ in length");
		goto done;
	}
	if (out_obj == Py_None) {
		if (size > PY_SSIZE_T_MAX) {
			PyErr_NoMemory();
			goto done;
		}
		result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
		if (!result)
			goto done;
		r.out = (uint8_t *)PyBytes_AS_STRING(result);
	} else {
		if (PyObject_GetBuffer(out_obj, &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
			goto done;
		if ((unsigned long long)out.len < size) {
			PyErr_SetString(PyExc_ValueError, "out is smaller than size");
			goto done;
		}
		r.out = out.buf;
	}
	r.fd = fd;
	r.block_size = block_size;
	r.descs_offset = descs_offset;
	r.max_pfn = max_pfn;
	r.bitmap = bitmap.buf;
	r.rank = rank.buf;
	r.words = (uint64_t)bitmap.len / 8;
	r.phys = phys;
	r.size = size;
	Py_BEGIN_ALLOW_THREADS
	failed = read_range(&r);
	Py_END_ALLOW_THREADS
	if (failed >= 0) {
		Py_CLEAR(result);
		result = PyLong_FromLongLong(failed);
	} else if (!result) {
		result = Py_NewRef(Py_None);
	}
done:
	if (out.obj)
		PyBuffer_Release(&out);
	PyBuffer_Release(&rank);
	PyBuffer_Release(&bitmap);
	return result;
}

static PyObject *kdump_inflater(PyObject *self, PyObject *args)
{
	return PyUnicode_FromString(ld_zlib_decompress && !force_zlib ? "libdeflate" : "zlib");
}

static PyObject *kdump_use_zlib(PyObject *self, PyObject *arg)
{
	int yes = PyObject_IsTrue(arg);

	if (yes < 0)
		return NULL;
	force_zlib = yes;
	Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
	{"read", kdump_read, METH_VARARGS,
	 "read(fd, block_size, descs_offset, max_pfn, bitmap, rank, phys, size, out)"},
	{"inflater", kdump_inflater, METH_NOARGS, "The library inflating zlib pages."},
	{"use_zlib", kdump_use_zlib, METH_O, "use_zlib(yes): inflate with zlib even with libdeflate."},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "dumpminer.dump._kdump",
	"Read kdump-compressed physical memory with the GIL released.", -1, methods,
};

PyMODINIT_FUNC PyInit__kdump(void)
{
	load_libdeflate();
	return PyModule_Create(&module);
}
