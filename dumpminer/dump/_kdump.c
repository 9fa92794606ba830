/*
 * dumpminer.dump._kdump: read physical memory from a dump file with the GIL released:
 * kdump-compressed files (makedumpfile -c/-l/-p/-z, QEMU's kdump-zlib), plain or in
 * makedumpfile's flattened form, and ELF cores.
 *
 * drgn's Program.read inflates kdump pages holding the GIL, so a process
 * reads on one core however many threads it has. This reader does the same
 * work (find each page's descriptor, pread its data, decompress it) without
 * the GIL, so threads read on every core. dumpminer/dump/kdumpread.py parses the
 * headers and decides when it may be used; drgn stays the reader of every
 * other format and of whatever this one refuses, and is the oracle it is
 * tested against (tests/test_kdumpread.py).
 *
 * read(fd, block_size, descs_offset, max_pfn, bitmap, rank, phys, size, out, flat=None)
 *
 *   fd            the open dump file (pread only: threads share it)
 *   block_size    the dump's page size (disk_dump_header.block_size)
 *   descs_offset  file offset of the first struct page_desc
 *   max_pfn       pages the bitmap covers
 *   bitmap        the second (dumpable) page bitmap, little-endian bit order
 *   rank          per 64-bit word of bitmap, the set bits before it (uint64)
 *   phys, size    the physical range to read
 *   out           a writable buffer of at least size bytes, or None
 *   flat          for a flattened file, its records: int64 triples (offset in
 *                 the kdump file they describe, position of the data in fd,
 *                 length), sorted by offset and not overlapping; the offsets
 *                 above are then offsets in that kdump file
 *
 * read_elf(fd, page_size, segments, phys, size, out)
 *
 *   segments      the PT_LOAD segments: int64 triples (physical address,
 *                 bytes in the file, file offset), sorted, not overlapping
 *
 * flat_records(fd, start, file_size, max_records) reads a flattened file's
 * record headers from start once: the triples above, in file order, as
 * bytes; None for a corrupt or cut stream (drgn reads those).
 *
 * read() and read_elf() return the bytes read (a new bytes object, or None when written to
 * out), or an int: the PFN of the first page they cannot read (not in the
 * dump, a descriptor or data outside the file, a compression whose library
 * is missing, data that does not decompress to one page). The caller then
 * asks drgn, which says what that page is (a fault, or zeros).
 *
 * Page compressions: zlib with libdeflate when the system has it (about twice
 * as fast as zlib on whole pages, docs/performance.md), else zlib; lzo
 * (liblzo2.so.2), snappy (libsnappy.so.1) and zstd (libzstd.so.1). The
 * libraries are loaded at import with dlopen, so none is needed to build or
 * to import; without one its pages are refused and drgn reads them.
 * decompressors() names those in use; use_zlib(True) forces zlib and
 * refuse(names) pretends libraries are missing (tests hold every way to drgn).
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

/* lzo1x_decompress_safe, snappy_uncompress, ZSTD_*: NULL when missing. */
static int (*lzo_decompress)(const uint8_t *, unsigned long, uint8_t *, unsigned long *, void *);
static int (*snappy_uncompress_fn)(const char *, size_t, char *, size_t *);
static void *(*zstd_create)(void);
static size_t (*zstd_free)(void *);
static size_t (*zstd_decompress_dctx)(void *, void *, size_t, const void *, size_t);
static unsigned (*zstd_is_error)(size_t);
/* Page flags refused as if their library were missing (tests). */
static unsigned refused;

/* One symbol of a library: its name and the pointer it is stored in. */
struct symbol {
	const char *name;
	void **slot;
};

/*
 * dlopen the library *soname* and store each of its *n* symbols; when the
 * library or any symbol is missing, store none (every slot NULL) and close it.
 * The slots are function pointers, written through void ** as POSIX's dlsym
 * documents.
 */
static void load_library(const char *soname, const struct symbol *symbols, size_t n)
{
	void *lib = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
	size_t i;

	if (!lib)
		return;
	for (i = 0; i < n; i++) {
		*symbols[i].slot = dlsym(lib, symbols[i].name);
		if (!*symbols[i].slot)
			break;
	}
	if (i == n)
		return;
	for (i = 0; i < n; i++)
		*symbols[i].slot = NULL;
	dlclose(lib);
}

#define SYMBOL(name, pointer) { name, (void **)&(pointer) }

static void load_decompressors(void)
{
	const struct symbol lzo[] = { SYMBOL("lzo1x_decompress_safe", lzo_decompress) };
	const struct symbol snappy[] = { SYMBOL("snappy_uncompress", snappy_uncompress_fn) };
	const struct symbol zstd[] = {
		SYMBOL("ZSTD_createDCtx", zstd_create),
		SYMBOL("ZSTD_freeDCtx", zstd_free),
		SYMBOL("ZSTD_decompressDCtx", zstd_decompress_dctx),
		SYMBOL("ZSTD_isError", zstd_is_error),
	};

	load_library("liblzo2.so.2", lzo, 1);
	load_library("libsnappy.so.1", snappy, 1);
	load_library("libzstd.so.1", zstd, sizeof(zstd) / sizeof(zstd[0]));
}

static void load_libdeflate(void)
{
	const struct symbol deflate[] = {
		SYMBOL("libdeflate_alloc_decompressor", ld_alloc),
		SYMBOL("libdeflate_free_decompressor", ld_free),
		SYMBOL("libdeflate_zlib_decompress", ld_zlib_decompress),
	};

	load_library("libdeflate.so.0", deflate, sizeof(deflate) / sizeof(deflate[0]));
}

#define DUMP_DH_COMPRESSED_ZLIB 0x1
#define DUMP_DH_COMPRESSED_LZO 0x2
#define DUMP_DH_COMPRESSED_SNAPPY 0x4
#define DUMP_DH_COMPRESSED_ZSTD 0x20

struct page_desc {
	int64_t offset;
	uint32_t size;
	uint32_t flags;
	uint64_t page_flags;
};

/* Where the bytes of a kdump file are: the file itself, or its flattened records. */
struct source {
	int fd;
	const int64_t *flat; /* triples (offset, position, length), or NULL */
	uint64_t records;
};

struct request {
	struct source src;
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

/*
 * n bytes at offset off of the kdump file: from the file, or from the
 * flattened records that hold them. -1 where no record holds a byte.
 */
static int src_read(const struct source *s, void *buf, size_t n, int64_t off)
{
	uint8_t *p = buf;

	if (!s->flat)
		return pread_full(s->fd, buf, n, off);
	while (n) {
		/* The last record starting at or before off. */
		uint64_t lo = 0, hi = s->records;
		const int64_t *rec;
		int64_t end;
		size_t take;

		while (lo < hi) {
			uint64_t mid = lo + (hi - lo) / 2;

			if (s->flat[3 * mid] <= off)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo == 0)
			return -1;
		rec = &s->flat[3 * (lo - 1)];
		end = rec[0] + rec[2];
		if (off >= end)
			return -1;
		take = (size_t)(end - off) < n ? (size_t)(end - off) : n;
		if (pread_full(s->fd, p, take, rec[1] + (off - rec[0])) < 0)
			return -1;
		p += take;
		n -= take;
		off += (int64_t)take;
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
static int unpack(const struct request *r, z_stream *z, int *z_ready, void *ld, void **zstd,
		  const struct page_desc *d, const uint8_t *data, uint8_t *page)
{
	if (d->flags == 0) {
		if (d->size != r->block_size)
			return -1;
		memcpy(page, data, r->block_size);
		return 0;
	}
	if (d->flags & refused)
		return -1;
	if (d->flags == DUMP_DH_COMPRESSED_LZO) {
		unsigned long got = r->block_size;

		if (!lzo_decompress || lzo_decompress(data, d->size, page, &got, NULL) != 0 ||
		    got != r->block_size)
			return -1;
		return 0;
	}
	if (d->flags == DUMP_DH_COMPRESSED_SNAPPY) {
		size_t got = r->block_size;

		if (!snappy_uncompress_fn ||
		    snappy_uncompress_fn((const char *)data, d->size, (char *)page, &got) != 0 ||
		    got != r->block_size)
			return -1;
		return 0;
	}
	if (d->flags == DUMP_DH_COMPRESSED_ZSTD) {
		size_t got;

		if (!zstd_create)
			return -1;
		if (!*zstd && !(*zstd = zstd_create()))
			return -1;
		got = zstd_decompress_dctx(*zstd, page, r->block_size, data, d->size);
		if (zstd_is_error(got) || got != r->block_size)
			return -1;
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
	void *ld = NULL, *zstd = NULL;

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
	    src_read(&r->src, descs, n * sizeof(*descs),
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
			if (src_read(&r->src, span, length, span_lo) < 0) {
				failed = (int64_t)(first + i);
				goto out;
			}
		}
		/* Whole pages inflate in place; a partial one goes through page. */
		if (from == 0 && end == r->block_size) {
			if (unpack(r, &z, &z_ready, ld, &zstd, &descs[i],
				   span + (descs[i].offset - span_lo), dest) < 0) {
				failed = (int64_t)(first + i);
				goto out;
			}
		} else {
			if (unpack(r, &z, &z_ready, ld, &zstd, &descs[i],
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
	if (zstd)
		zstd_free(zstd);
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

/* Triples of int64 (flat records, ELF segments), or None when optional. */
static int get_triples(PyObject *obj, Py_buffer *view, const char *what)
{
	if (get_words(obj, view, what) < 0)
		return -1;
	if (view->len % 24) {
		PyBuffer_Release(view);
		PyErr_Format(PyExc_ValueError, "%s is not whole triples of 64-bit words", what);
		return -1;
	}
	return 0;
}

/*
 * The bytes object or the caller's buffer a read writes into. *dest is
 * where to write; *result the new bytes object (NULL with out).
 */
static int get_out(PyObject *out_obj, unsigned long long size, Py_buffer *out,
		   PyObject **result, uint8_t **dest)
{
	if (out_obj == Py_None) {
		if (size > PY_SSIZE_T_MAX) {
			PyErr_NoMemory();
			return -1;
		}
		*result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
		if (!*result)
			return -1;
		*dest = (uint8_t *)PyBytes_AS_STRING(*result);
		return 0;
	}
	if (PyObject_GetBuffer(out_obj, out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
		return -1;
	if ((unsigned long long)out->len < size) {
		PyErr_SetString(PyExc_ValueError, "out is smaller than size");
		return -1;
	}
	*dest = out->buf;
	return 0;
}

/* What a read returns: the PFN it failed at, the new bytes, or None. */
static PyObject *read_result(int64_t failed, PyObject *result)
{
	if (failed >= 0) {
		Py_XDECREF(result);
		return PyLong_FromLongLong(failed);
	}
	return result ? result : Py_NewRef(Py_None);
}

static PyObject *kdump_read(PyObject *self, PyObject *args)
{
	int fd;
	unsigned long long block_size, max_pfn, phys, size;
	long long descs_offset;
	PyObject *bitmap_obj, *rank_obj, *out_obj, *flat_obj = Py_None, *result = NULL,
							 *ret = NULL;
	Py_buffer bitmap, rank, out = {0}, flat = {0};
	struct request r;
	int64_t failed;

	if (!PyArg_ParseTuple(args, "iKLKOOKKO|O", &fd, &block_size, &descs_offset, &max_pfn,
			      &bitmap_obj, &rank_obj, &phys, &size, &out_obj, &flat_obj))
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
	if (flat_obj != Py_None && get_triples(flat_obj, &flat, "flat") < 0)
		goto done;
	if (get_out(out_obj, size, &out, &result, &r.out) < 0)
		goto done;
	r.src.fd = fd;
	r.src.flat = flat.obj ? flat.buf : NULL;
	r.src.records = flat.obj ? (uint64_t)flat.len / 24 : 0;
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
	ret = read_result(failed, result);
	result = NULL;
done:
	Py_XDECREF(result);
	if (out.obj)
		PyBuffer_Release(&out);
	if (flat.obj)
		PyBuffer_Release(&flat);
	PyBuffer_Release(&rank);
	PyBuffer_Release(&bitmap);
	return ret;
}

/*
 * Copy [phys, phys + size) from the ELF segments into out, each piece with
 * one pread. -1 when all went well, else the PFN of the first byte no
 * segment holds in the file (or that pread cannot read). Runs without the GIL.
 */
static int64_t read_segments(int fd, uint64_t page_size, const int64_t *segs, uint64_t nsegs,
			     uint64_t phys, uint64_t size, uint8_t *out)
{
	uint64_t at = phys, end = phys + size;

	while (at < end) {
		uint64_t lo = 0, hi = nsegs, seg_end, take;
		const int64_t *seg;

		while (lo < hi) {
			uint64_t mid = lo + (hi - lo) / 2;

			if ((uint64_t)segs[3 * mid] <= at)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo == 0)
			return (int64_t)(at / page_size);
		seg = &segs[3 * (lo - 1)];
		seg_end = (uint64_t)seg[0] + (uint64_t)seg[1];
		if (at >= seg_end)
			return (int64_t)(at / page_size);
		take = (seg_end < end ? seg_end : end) - at;
		if (pread_full(fd, out + (at - phys), take, seg[2] + (int64_t)(at - (uint64_t)seg[0])) < 0)
			return (int64_t)(at / page_size);
		at += take;
	}
	return -1;
}

static PyObject *kdump_read_elf(PyObject *self, PyObject *args)
{
	int fd;
	unsigned long long page_size, phys, size;
	PyObject *segs_obj, *out_obj, *result = NULL, *ret = NULL;
	Py_buffer segs, out = {0};
	uint8_t *dest;
	int64_t failed;

	if (!PyArg_ParseTuple(args, "iKOKKO", &fd, &page_size, &segs_obj, &phys, &size, &out_obj))
		return NULL;
	if (page_size < 512 || size == 0 || phys + size < phys) {
		PyErr_SetString(PyExc_ValueError, "bad page_size or range");
		return NULL;
	}
	if (get_triples(segs_obj, &segs, "segments") < 0)
		return NULL;
	if (get_out(out_obj, size, &out, &result, &dest) < 0)
		goto done;
	Py_BEGIN_ALLOW_THREADS
	failed = read_segments(fd, page_size, segs.buf, (uint64_t)segs.len / 24, phys, size, dest);
	Py_END_ALLOW_THREADS
	ret = read_result(failed, result);
	result = NULL;
done:
	Py_XDECREF(result);
	if (out.obj)
		PyBuffer_Release(&out);
	PyBuffer_Release(&segs);
	return ret;
}

/* Growing array of flat records (int64 triples). */
struct records {
	int64_t *v;
	size_t n, cap;
};

static int records_add(struct records *r, int64_t offset, int64_t pos, int64_t length)
{
	if (r->n + 3 > r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 3 * 1024;
		int64_t *v = realloc(r->v, cap * sizeof(*v));

		if (!v)
			return -1;
		r->v = v;
		r->cap = cap;
	}
	r->v[r->n++] = offset;
	r->v[r->n++] = pos;
	r->v[r->n++] = length;
	return 0;
}

static uint64_t be64(const uint8_t *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/*
 * Walk the record headers of a flattened file from start, in file order:
 * 0 at the end record, -1 for a corrupt record, a record past file_size,
 * more than max_records, an I/O error or no memory. Runs without the GIL.
 */
static int scan_flat(int fd, int64_t start, int64_t file_size, uint64_t max_records,
		     struct records *out)
{
	uint8_t block[512];
	int64_t pos = start, block_at = 0, block_len = 0;

	while (out->n / 3 < max_records) {
		int64_t offset, length;

		if (pos < block_at || pos + 16 > block_at + block_len) {
			ssize_t got = pread(fd, block, sizeof(block), pos);

			if (got < 16)
				return -1;
			block_at = pos;
			block_len = got;
		}
		offset = (int64_t)be64(block + (pos - block_at));
		length = (int64_t)be64(block + (pos - block_at) + 8);
		if (offset == -1)
			return 0;
		if (offset < 0 || length < 0 || length > file_size || pos + 16 + length > file_size)
			return -1;
		if (length && records_add(out, offset, pos + 16, length) < 0)
			return -1;
		pos += 16 + length;
	}
	return -1;
}

static PyObject *kdump_flat_records(PyObject *self, PyObject *args)
{
	int fd, ok;
	long long start, file_size;
	unsigned long long max_records;
	struct records recs = {0};
	PyObject *result;

	if (!PyArg_ParseTuple(args, "iLLK", &fd, &start, &file_size, &max_records))
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	ok = scan_flat(fd, start, file_size, max_records, &recs);
	Py_END_ALLOW_THREADS
	if (ok < 0) {
		free(recs.v);
		Py_RETURN_NONE;
	}
	result = PyBytes_FromStringAndSize((const char *)recs.v,
					   (Py_ssize_t)(recs.n * sizeof(*recs.v)));
	free(recs.v);
	return result;
}

static PyObject *kdump_inflater(PyObject *self, PyObject *args)
{
	return PyUnicode_FromString(ld_zlib_decompress && !force_zlib ? "libdeflate" : "zlib");
}

static PyObject *kdump_decompressors(PyObject *self, PyObject *args)
{
	PyObject *names = PyList_New(0);
	const char *have[4];
	int n = 0, i;

	if (!names)
		return NULL;
	have[n++] = ld_zlib_decompress && !force_zlib ? "zlib (libdeflate)" : "zlib";
	if (lzo_decompress && !(refused & DUMP_DH_COMPRESSED_LZO))
		have[n++] = "lzo";
	if (snappy_uncompress_fn && !(refused & DUMP_DH_COMPRESSED_SNAPPY))
		have[n++] = "snappy";
	if (zstd_create && !(refused & DUMP_DH_COMPRESSED_ZSTD))
		have[n++] = "zstd";
	for (i = 0; i < n; i++) {
		PyObject *name = PyUnicode_FromString(have[i]);

		if (!name || PyList_Append(names, name) < 0) {
			Py_XDECREF(name);
			Py_DECREF(names);
			return NULL;
		}
		Py_DECREF(name);
	}
	return names;
}

static PyObject *kdump_use_zlib(PyObject *self, PyObject *arg)
{
	int yes = PyObject_IsTrue(arg);

	if (yes < 0)
		return NULL;
	force_zlib = yes;
	Py_RETURN_NONE;
}

static PyObject *kdump_refuse(PyObject *self, PyObject *arg)
{
	unsigned long mask = PyLong_AsUnsignedLong(arg);

	if (mask == (unsigned long)-1 && PyErr_Occurred())
		return NULL;
	refused = (unsigned)mask;
	Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
	{"read", kdump_read, METH_VARARGS,
	 "read(fd, block_size, descs_offset, max_pfn, bitmap, rank, phys, size, out, flat=None)"},
	{"read_elf", kdump_read_elf, METH_VARARGS,
	 "read_elf(fd, page_size, segments, phys, size, out)"},
	{"flat_records", kdump_flat_records, METH_VARARGS,
	 "flat_records(fd, start, file_size, max_records): int64 triples (offset, position, "
	 "length) of the records, in file order, as bytes; None for a corrupt stream."},
	{"inflater", kdump_inflater, METH_NOARGS, "The library inflating zlib pages."},
	{"decompressors", kdump_decompressors, METH_NOARGS,
	 "The page compressions read here (the others are left to drgn)."},
	{"use_zlib", kdump_use_zlib, METH_O, "use_zlib(yes): inflate with zlib even with libdeflate."},
	{"refuse", kdump_refuse, METH_O,
	 "refuse(flags): refuse pages of these compression flags, as without their library."},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "dumpminer.dump._kdump",
	"Read a dump's physical memory with the GIL released.", -1, methods,
};

PyMODINIT_FUNC PyInit__kdump(void)
{
	load_libdeflate();
	load_decompressors();
	return PyModule_Create(&module);
}
