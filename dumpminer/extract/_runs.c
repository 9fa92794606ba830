/*
 * dumpminer.extract._runs: find and group printable runs in a batch of objects.
 *
 * This is the one loop of dumpminer that numpy cannot do well. numpy finds
 * the runs of a 16 MiB batch in about 30 array passes and groups them in as
 * many more, each of which gives the GIL back and must take it again; the
 * walking thread holds the GIL in drgn's reads nearly all the time, so each
 * of those handoffs waits (a batch took 148 ms beside it against 70 ms
 * alone). Here the whole batch is one pass with the GIL released.
 *
 * scan(rows, width, min_length, addresses, examples, hash_bits, slab_of_row[,
 * keep_runs[, blank_pointers]]) takes a buffer of n rows of width bytes (one object, or one context window,
 * per row), and optionally n uint64 addresses and n int64 slab indices, one
 * per row. It returns a tuple; all but texts are bytes holding native 64-bit
 * integers:
 *
 *   run_row, run_offset, run_text   per run of at least min_length bytes of
 *                                   0x20..0x7e, in row order: where it is and
 *                                   which distinct text it is
 *   texts                           the distinct texts, a list of bytes in
 *                                   order of first appearance
 *   occurrences, objects            per text: runs, and rows holding it
 *   lowest                          per text, the `examples` lowest distinct
 *                                   addresses of rows holding it, ascending,
 *                                   padded with UINT64_MAX (empty without
 *                                   addresses)
 *   at_text, at_offset, at_runs     per distinct (text, offset in the row):
 *                                   runs of the text starting there
 *   slab_text, slab, slab_objects   per distinct (text, slab): rows of the
 *                                   slab holding the text (empty without
 *                                   slab_of_row)
 *   pointer_runs                    an int: runs left out as pointer bytes
 *
 * With blank_pointers true, the bytes of every aligned 8-byte word that holds
 * a kernel address (rows start 8-byte aligned, as slab objects do) count as
 * not printable, as if dumpminer/extract/pointers.py's mask_kernel_pointers()
 * had zeroed them: no run lies inside such a word, and a run that reaches one
 * ends there. pointer_runs, the last item, then counts the runs of at least
 * min_length bytes that lay entirely inside one (zero without blanking).
 * Such a word's two top bytes are 0x80 or above, so its only printable bytes
 * are its six low ones, the pointer's own: a run from the word before that
 * reaches into them loses only those (docs/extraction.md, "Pointer bytes").
 *
 * With keep_runs false, run_row, run_offset and run_text come back empty: the
 * mining pass needs only the counts, and three int64 arrays per run are the
 * largest memory a batch writes (and page-faults in) after its rows.
 *
 * Texts are grouped in an open-addressing hash table and always compared
 * byte for byte, so grouping is exact whatever the hash does. hash_bits
 * (normally 64) keeps only that many bits of the hash: tests use 1 to make
 * every text collide.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NO_ADDRESS UINT64_MAX
/* The lowest kernel address on x86-64: pointers.KERNEL_SPACE_START. */
#define KERNEL_SPACE_START 0xffff800000000000ull

static inline int printable(uint8_t c)
{
	return (uint8_t)(c - 0x20) < 0x7f - 0x20;
}

/* Whether the aligned word at byte w of row holds a kernel address (the
 * dump's words are little-endian, as x86-64 is, and so is the host). */
static inline int kernel_word(const uint8_t *row, size_t w)
{
	uint64_t v;

	memcpy(&v, row + w, 8);
	return v >= KERNEL_SPACE_START;
}

static uint64_t hash_text(const uint8_t *p, size_t n)
{
	uint64_t h = 0x9e3779b97f4a7c15ull ^ n, w;

	for (; n >= 8; p += 8, n -= 8) {
		memcpy(&w, p, 8);
		h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
		h ^= h >> 31;
	}
	if (n) {
		w = 0;
		memcpy(&w, p, n);
		h = (h ^ w) * 0x94d049bb133111ebull;
		h ^= h >> 29;
	}
	h ^= h >> 32;
	h *= 0xd6e8feb86659fd93ull;
	h ^= h >> 32;
	return h;
}

/* Counts per distinct (text, key) pair, in an open-addressing table. */
struct pairs {
	size_t n, room;
	int64_t *text, *key, *count;
	/* Pair index per slot, -1 when empty; kept at most half full. */
	int64_t *table;
	size_t mask;
};

struct scan {
	/* Inputs. */
	const uint8_t *rows;
	size_t n, width, min_length, examples;
	const uint64_t *addresses; /* NULL: no objects or examples */
	uint64_t hash_mask;
	/* Blank words holding kernel addresses; runs left out inside them. */
	int blank_pointers;
	size_t pointer_runs;
	/* Per run: runs of run_room (kept only with keep_runs). */
	int keep_runs;
	size_t runs, run_room;
	int64_t *run_row, *run_offset, *run_text;
	/* Per distinct text: texts of text_room. */
	size_t texts, text_room;
	const uint8_t **text_at;
	int64_t *text_length, *occurrences, *objects, *last_row;
	uint64_t *text_hash, *lowest;
	/* The hash table: text index per slot, -1 when empty. */
	int64_t *table;
	size_t table_mask;
	/* Runs per (text, offset in the row). */
	struct pairs at;
	/* With slab_of_row: objects per (text, slab). */
	const int64_t *slab_of_row;
	struct pairs in_slab;
};

/* Make *array (of *room elements of size bytes) hold `need`; 0 on failure. */
static int reserve(void *array, size_t room, size_t need, size_t size)
{
	void **p = array, *grown;

	if (need <= room)
		return 1;
	grown = realloc(*p, need * size);
	if (!grown)
		return 0;
	*p = grown;
	return 1;
}

/* Double the room for runs; 0 when out of memory. */
static int grow_runs(struct scan *s)
{
	size_t room = 2 * s->run_room;

	if (!reserve(&s->run_row, s->run_room, room, sizeof(int64_t)) ||
	    !reserve(&s->run_offset, s->run_room, room, sizeof(int64_t)) ||
	    !reserve(&s->run_text, s->run_room, room, sizeof(int64_t)))
		return 0;
	s->run_room = room;
	return 1;
}

/* Double the room for texts; 0 when out of memory. */
static int grow_texts(struct scan *s)
{
	size_t room = 2 * s->text_room;

	if (!reserve(&s->text_at, s->text_room, room, sizeof(*s->text_at)) ||
	    !reserve(&s->text_length, s->text_room, room, sizeof(int64_t)) ||
	    !reserve(&s->occurrences, s->text_room, room, sizeof(int64_t)) ||
	    !reserve(&s->objects, s->text_room, room, sizeof(int64_t)) ||
	    !reserve(&s->last_row, s->text_room, room, sizeof(int64_t)) ||
	    !reserve(&s->text_hash, s->text_room, room, sizeof(uint64_t)) ||
	    (s->addresses &&
	     !reserve(&s->lowest, s->text_room * s->examples,
		      room * s->examples, sizeof(uint64_t))))
		return 0;
	s->text_room = room;
	return 1;
}

/* Keep the s->examples lowest distinct addresses of text t, ascending. */
static void add_example(struct scan *s, size_t t, uint64_t address)
{
	uint64_t *lowest = s->lowest + t * s->examples;
	size_t k = s->examples - 1, i;

	if (address >= lowest[k])
		return;
	for (i = 0; i < k; i++)
		if (lowest[i] == address)
			return;
	while (k > 0 && lowest[k - 1] > address) {
		lowest[k] = lowest[k - 1];
		k--;
	}
	lowest[k] = address;
}

/*
 * Double an open-addressing table of n entries (the entry's index per slot,
 * -1 when empty), putting entry i back from slot home(ctx, i, new mask).
 * Tables start small and are kept at most half full, so that they stay in
 * cache when a batch holds few distinct texts, as a leak's batches do.
 * Returns 0 when out of memory.
 */
static int grow_index(int64_t **table, size_t *mask, size_t n,
		      size_t (*home)(const void *, size_t, size_t), const void *ctx)
{
	size_t size = 2 * (*mask + 1), i, slot;
	int64_t *grown = malloc(size * sizeof(int64_t));

	if (!grown)
		return 0;
	memset(grown, 0xff, size * sizeof(int64_t));
	for (i = 0; i < n; i++) {
		for (slot = home(ctx, i, size - 1); grown[slot] >= 0;
		     slot = (slot + 1) & (size - 1))
			;
		grown[slot] = i;
	}
	free(*table);
	*table = grown;
	*mask = size - 1;
	return 1;
}

static size_t text_home(const void *ctx, size_t t, size_t mask)
{
	return ((const struct scan *)ctx)->text_hash[t] & mask;
}

/* The index of the text at p (n bytes), adding it if new; SIZE_MAX when out
 * of memory. */
static size_t find_text(struct scan *s, const uint8_t *p, size_t n)
{
	uint64_t h = hash_text(p, n) & s->hash_mask;
	size_t slot = h & s->table_mask, k;
	int64_t t;

	for (;; slot = (slot + 1) & s->table_mask) {
		t = s->table[slot];
		if (t < 0)
			break;
		if (s->text_hash[t] == h && (size_t)s->text_length[t] == n &&
		    memcmp(s->text_at[t], p, n) == 0)
			return t;
	}
	if (s->texts == s->text_room && !grow_texts(s))
		return SIZE_MAX;
	if (2 * (s->texts + 1) > s->table_mask + 1) {
		if (!grow_index(&s->table, &s->table_mask, s->texts, text_home, s))
			return SIZE_MAX;
		for (slot = h & s->table_mask; s->table[slot] >= 0;
		     slot = (slot + 1) & s->table_mask)
			;
	}
	t = s->texts++;
	s->table[slot] = t;
	s->text_at[t] = p;
	s->text_length[t] = n;
	s->text_hash[t] = h;
	s->occurrences[t] = 0;
	s->objects[t] = 0;
	s->last_row[t] = -1;
	if (s->addresses)
		for (k = 0; k < s->examples; k++)
			s->lowest[t * s->examples + k] = NO_ADDRESS;
	return t;
}

static inline size_t pair_slot(int64_t t, int64_t key, size_t mask)
{
	uint64_t h = ((uint64_t)t << 24 ^ (uint64_t)key) * 0x9e3779b97f4a7c15ull;

	return (h ^ h >> 32) & mask;
}

static int alloc_pairs(struct pairs *p, size_t room)
{
	p->room = room;
	p->mask = 2 * room - 1;
	p->text = malloc(room * sizeof(int64_t));
	p->key = malloc(room * sizeof(int64_t));
	p->count = malloc(room * sizeof(int64_t));
	p->table = malloc(2 * room * sizeof(int64_t));
	if (!p->text || !p->key || !p->count || !p->table)
		return 0;
	memset(p->table, 0xff, 2 * room * sizeof(int64_t));
	return 1;
}

static void free_pairs(struct pairs *p)
{
	free(p->text);
	free(p->key);
	free(p->count);
	free(p->table);
}

static size_t pair_home(const void *ctx, size_t i, size_t mask)
{
	const struct pairs *p = ctx;

	return pair_slot(p->text[i], p->key[i], mask);
}

/* Count one for the pair (t, key); 0 when out of memory. */
static int count_pair(struct pairs *p, int64_t t, int64_t key)
{
	size_t slot = pair_slot(t, key, p->mask), room;
	int64_t i;

	for (;; slot = (slot + 1) & p->mask) {
		i = p->table[slot];
		if (i < 0)
			break;
		if (p->text[i] == t && p->key[i] == key) {
			p->count[i]++;
			return 1;
		}
	}
	if (p->n == p->room) {
		room = 2 * p->room;
		if (!reserve(&p->text, p->room, room, sizeof(int64_t)) ||
		    !reserve(&p->key, p->room, room, sizeof(int64_t)) ||
		    !reserve(&p->count, p->room, room, sizeof(int64_t)))
			return 0;
		p->room = room;
	}
	if (2 * (p->n + 1) > p->mask + 1) {
		if (!grow_index(&p->table, &p->mask, p->n, pair_home, p))
			return 0;
		for (slot = pair_slot(t, key, p->mask); p->table[slot] >= 0;
		     slot = (slot + 1) & p->mask)
			;
	}
	i = p->n++;
	p->table[slot] = i;
	p->text[i] = t;
	p->key[i] = key;
	p->count[i] = 1;
	return 1;
}

static int group_runs(struct scan *s)
{
	size_t r, i, j, t, k = 0, words = s->blank_pointers ? s->width / 8 * 8 : 0;

	for (r = 0; r < s->n; r++) {
		const uint8_t *row = s->rows + r * s->width;

		for (i = 0; i < s->width; i = j) {
			if (!printable(row[i])) {
				j = i + 1;
				continue;
			}
			if (i < words && kernel_word(row, i & ~(size_t)7)) {
				/* Pointer bytes: bytes 6 and 7 of the word are not
				 * printable, so every run here ends inside it. */
				for (j = i + 1; printable(row[j]); j++)
					;
				s->pointer_runs += j - i >= s->min_length;
				continue;
			}
			for (j = i + 1; j < s->width && printable(row[j]); j++)
				if ((j & 7) == 0 && j < words && kernel_word(row, j))
					break;
			if (j - i < s->min_length)
				continue;
			t = find_text(s, row + i, j - i);
			if (t == SIZE_MAX || !count_pair(&s->at, t, i))
				return 0;
			if (s->keep_runs) {
				if (k == s->run_room && !grow_runs(s))
					return 0;
				s->run_row[k] = r;
				s->run_offset[k] = i;
				s->run_text[k] = t;
			}
			k++;
			s->occurrences[t]++;
			if (s->last_row[t] != (int64_t)r) {
				/* Runs of one row come together: a text seen twice in
				 * a row is one object. */
				s->last_row[t] = r;
				s->objects[t]++;
				if (s->addresses)
					add_example(s, t, s->addresses[r]);
				if (s->slab_of_row &&
				    !count_pair(&s->in_slab, t, s->slab_of_row[r]))
					return 0;
			}
		}
	}
	s->runs = k;
	return 1;
}

static void free_scan(struct scan *s)
{
	free(s->run_row);
	free(s->run_offset);
	free(s->run_text);
	free(s->text_at);
	free(s->text_length);
	free(s->occurrences);
	free(s->objects);
	free(s->last_row);
	free(s->text_hash);
	free(s->lowest);
	free(s->table);
	free_pairs(&s->at);
	free_pairs(&s->in_slab);
}

/* Allocate room for a run per row, a first thousand texts and their hash
 * table (all grown as needed); 0 on failure. */
static int alloc_scan(struct scan *s)
{
	size_t texts = 1024;

	s->run_room = s->keep_runs ? (s->n > 1024 ? s->n : 1024) : 1;
	s->text_room = texts;
	s->table_mask = 2 * texts - 1;
	s->run_row = malloc(s->run_room * sizeof(int64_t));
	s->run_offset = malloc(s->run_room * sizeof(int64_t));
	s->run_text = malloc(s->run_room * sizeof(int64_t));
	s->text_at = malloc(texts * sizeof(*s->text_at));
	s->text_length = malloc(texts * sizeof(int64_t));
	s->occurrences = malloc(texts * sizeof(int64_t));
	s->objects = malloc(texts * sizeof(int64_t));
	s->last_row = malloc(texts * sizeof(int64_t));
	s->text_hash = malloc(texts * sizeof(uint64_t));
	s->lowest = s->addresses ? malloc(texts * s->examples * sizeof(uint64_t)) : NULL;
	s->table = malloc(2 * texts * sizeof(int64_t));
	if (!s->run_row || !s->run_offset || !s->run_text || !s->text_at ||
	    !s->text_length || !s->occurrences || !s->objects ||
	    !s->last_row || !s->text_hash || !s->table ||
	    (s->addresses && !s->lowest) || !alloc_pairs(&s->at, texts) ||
	    (s->slab_of_row && !alloc_pairs(&s->in_slab, texts)))
		return 0;
	memset(s->table, 0xff, 2 * texts * sizeof(int64_t));
	return 1;
}

static PyObject *int64_bytes(const void *data, size_t count)
{
	return PyBytes_FromStringAndSize(data, count * sizeof(int64_t));
}

static PyObject *build_result(struct scan *s)
{
	PyObject *items[14] = { NULL }, *text, *result = NULL;
	size_t t, kept = s->keep_runs ? s->runs : 0;
	int i;

	items[0] = int64_bytes(s->run_row, kept);
	items[1] = int64_bytes(s->run_offset, kept);
	items[2] = int64_bytes(s->run_text, kept);
	items[3] = PyList_New(s->texts);
	items[4] = int64_bytes(s->occurrences, s->texts);
	items[5] = int64_bytes(s->objects, s->texts);
	items[6] = s->addresses ? int64_bytes(s->lowest, s->texts * s->examples)
				: PyBytes_FromStringAndSize(NULL, 0);
	items[7] = int64_bytes(s->at.text, s->at.n);
	items[8] = int64_bytes(s->at.key, s->at.n);
	items[9] = int64_bytes(s->at.count, s->at.n);
	items[10] = int64_bytes(s->in_slab.text, s->in_slab.n);
	items[11] = int64_bytes(s->in_slab.key, s->in_slab.n);
	items[12] = int64_bytes(s->in_slab.count, s->in_slab.n);
	items[13] = PyLong_FromSize_t(s->pointer_runs);
	for (i = 0; i < 14; i++)
		if (!items[i])
			goto out;
	for (t = 0; t < s->texts; t++) {
		text = PyBytes_FromStringAndSize((const char *)s->text_at[t],
						 s->text_length[t]);
		if (!text)
			goto out;
		PyList_SET_ITEM(items[3], t, text);
	}
	result = PyTuple_New(14);
	if (result)
		for (i = 0; i < 14; i++) {
			PyTuple_SET_ITEM(result, i, items[i]);
			items[i] = NULL;
		}
out:
	for (i = 0; i < 14; i++)
		Py_XDECREF(items[i]);
	return result;
}

static PyObject *scan(PyObject *self, PyObject *args)
{
	Py_buffer rows, addresses = { 0 }, slabs = { 0 };
	PyObject *addresses_obj, *slabs_obj, *result = NULL;
	Py_ssize_t width, min_length, examples, hash_bits;
	struct scan s = { 0 };
	int ok, keep_runs = 1, blank_pointers = 0;

	if (!PyArg_ParseTuple(args, "y*nnOnnO|pp:scan", &rows, &width, &min_length,
			      &addresses_obj, &examples, &hash_bits, &slabs_obj,
			      &keep_runs, &blank_pointers))
		return NULL;
	s.keep_runs = keep_runs;
	s.blank_pointers = blank_pointers;
	if (width < 1 || min_length < 1 || examples < 1 || hash_bits < 1 ||
	    hash_bits > 64 || rows.len % width) {
		PyErr_SetString(PyExc_ValueError, "scan: bad arguments");
		goto out;
	}
	s.rows = rows.buf;
	s.width = width;
	s.n = rows.len / width;
	s.min_length = min_length;
	s.examples = examples;
	s.hash_mask = hash_bits == 64 ? UINT64_MAX : (1ull << hash_bits) - 1;
	if (addresses_obj != Py_None) {
		if (PyObject_GetBuffer(addresses_obj, &addresses, PyBUF_SIMPLE))
			goto out;
		if ((size_t)addresses.len != s.n * sizeof(uint64_t)) {
			PyErr_SetString(PyExc_ValueError,
					"scan: one address per row");
			goto out;
		}
		s.addresses = addresses.buf;
	}
	if (slabs_obj != Py_None) {
		if (PyObject_GetBuffer(slabs_obj, &slabs, PyBUF_SIMPLE))
			goto out;
		if ((size_t)slabs.len != s.n * sizeof(int64_t)) {
			PyErr_SetString(PyExc_ValueError, "scan: one slab per row");
			goto out;
		}
		s.slab_of_row = slabs.buf;
	}
	Py_BEGIN_ALLOW_THREADS
	ok = alloc_scan(&s);
	if (ok)
		ok = group_runs(&s);
	Py_END_ALLOW_THREADS
	if (!ok) {
		PyErr_NoMemory();
		goto out;
	}
	result = build_result(&s);
out:
	free_scan(&s);
	if (addresses.obj)
		PyBuffer_Release(&addresses);
	if (slabs.obj)
		PyBuffer_Release(&slabs);
	PyBuffer_Release(&rows);
	return result;
}

/* ------------------------------------------------------------------------
 * Number masks: the key a fragment text clusters by (dumpminer/clustering/cluster.py).
 *
 * mask_numbers(texts) takes a list of bytes and returns a list of the same
 * length: per text, what cluster.masked() returns for it, computed here
 * because the tally and the clustering need it for every distinct text (two
 * million and more on a pointer-noisy cache) and the regex costs a few
 * microseconds a text in Python. A text without a number comes back as the
 * same object (no copy). The scanner below is cluster.VARIABLE_TOKEN
 * written out; tests/test_cluster.py checks the two agree.
 */

#define MASK_NUM 0x00 /* cluster.NUM */
#define MASK_FILL 0x02 /* cluster.FILL */
#define MASK_FILL_MIN_LENGTH 3 /* cluster.FILL_MIN_LENGTH */

static inline int mask_digit(uint8_t c)
{
	return (uint8_t)(c - '0') < 10;
}

static inline int mask_hex(uint8_t c)
{
	return mask_digit(c) || (uint8_t)((c | 0x20) - 'a') < 6;
}

static inline int mask_alnum(uint8_t c)
{
	return mask_digit(c) || (uint8_t)((c | 0x20) - 'a') < 26;
}

/*
 * The length of the number token that VARIABLE_TOKEN matches at s[i], or 0.
 * Its first branch needs no letter or digit before s[i] and none after the
 * token: "0x" and hex digits; or a run of hex digits holding a decimal
 * digit; or eight hex letters or more. A shorter match of any of these
 * would end before a hex digit, which the lookahead refuses, so each is the
 * longest run or nothing. Its second branch is a run of decimal digits
 * anywhere.
 */
static size_t number_token(const uint8_t *s, size_t n, size_t i)
{
	size_t j;

	if (i == 0 || !mask_alnum(s[i - 1])) {
		if (s[i] == '0' && i + 2 < n && (s[i + 1] | 0x20) == 'x' &&
		    mask_hex(s[i + 2])) {
			for (j = i + 2; j < n && mask_hex(s[j]); j++)
				;
			if (j == n || !mask_alnum(s[j]))
				return j - i;
		}
		int digit = 0;

		for (j = i; j < n && mask_hex(s[j]); j++)
			digit |= mask_digit(s[j]);
		if (j > i && (j == n || !mask_alnum(s[j])) && (digit || j - i >= 8))
			return j - i;
	}
	for (j = i; j < n && mask_digit(s[j]); j++)
		;
	return j - i;
}

/* cluster.masked() of one text (a new reference), or NULL with an error set. */
static PyObject *mask_text(PyObject *text)
{
	const uint8_t *s = (const uint8_t *)PyBytes_AS_STRING(text);
	size_t n = PyBytes_GET_SIZE(text), i, last = 0, out = 0, token;
	PyObject *result;
	char *to = NULL;

	if (n >= MASK_FILL_MIN_LENGTH) {
		for (i = 1; i < n && s[i] == s[0]; i++)
			;
		if (i == n) {
			char fill[2] = { MASK_FILL, (char)s[0] };

			return PyBytes_FromStringAndSize(fill, 2);
		}
	}
	for (i = 0; i < n;) {
		token = number_token(s, n, i);
		if (!token) {
			i++;
			continue;
		}
		if (!to) {
			/* A mask is never longer than its text. */
			result = PyBytes_FromStringAndSize(NULL, n);
			if (!result)
				return NULL;
			to = PyBytes_AS_STRING(result);
		}
		memcpy(to + out, s + last, i - last);
		out += i - last;
		to[out++] = MASK_NUM;
		i += token;
		last = i;
	}
	if (!to) {
		Py_INCREF(text);
		return text;
	}
	memcpy(to + out, s + last, n - last);
	out += n - last;
	if (_PyBytes_Resize(&result, out))
		return NULL;
	return result;
}

static PyObject *mask_numbers(PyObject *self, PyObject *texts)
{
	PyObject *result, *text, *mask;
	Py_ssize_t i, n;

	if (!PyList_Check(texts)) {
		PyErr_SetString(PyExc_TypeError, "mask_numbers: a list of bytes");
		return NULL;
	}
	n = PyList_GET_SIZE(texts);
	result = PyList_New(n);
	if (!result)
		return NULL;
	for (i = 0; i < n; i++) {
		text = PyList_GET_ITEM(texts, i);
		if (!PyBytes_Check(text)) {
			PyErr_SetString(PyExc_TypeError,
					"mask_numbers: a list of bytes");
			Py_DECREF(result);
			return NULL;
		}
		mask = mask_text(text);
		if (!mask) {
			Py_DECREF(result);
			return NULL;
		}
		PyList_SET_ITEM(result, i, mask);
	}
	return result;
}

/*
 * key_flags(keys, separators, least) takes a list of masked texts and returns
 * one byte of flags per key, so that the clustering can pick, without a
 * Python step per key, the few keys its word step looks at
 * (cluster._merge_words): KEY_FILL when the key starts with cluster.FILL,
 * KEY_SEPARATED when it holds a byte of separators, KEY_WILD when it holds
 * cluster.WILD, KEY_ALNUM when it holds at least least letters and digits.
 */

#define MASK_WILD 0x01 /* cluster.WILD */
#define KEY_FILL 1
#define KEY_SEPARATED 2
#define KEY_WILD 4
#define KEY_ALNUM 8

static PyObject *key_flags(PyObject *self, PyObject *args)
{
	PyObject *keys, *result, *key;
	const uint8_t *separators, *s;
	Py_ssize_t n_separators, least, i, n, j, len, alnum;
	uint8_t is_separator[256] = { 0 }, flags, *out;

	if (!PyArg_ParseTuple(args, "O!y#n:key_flags", &PyList_Type, &keys,
			      &separators, &n_separators, &least))
		return NULL;
	for (j = 0; j < n_separators; j++)
		is_separator[separators[j]] = 1;
	n = PyList_GET_SIZE(keys);
	result = PyBytes_FromStringAndSize(NULL, n);
	if (!result)
		return NULL;
	out = (uint8_t *)PyBytes_AS_STRING(result);
	for (i = 0; i < n; i++) {
		key = PyList_GET_ITEM(keys, i);
		if (!PyBytes_Check(key)) {
			PyErr_SetString(PyExc_TypeError,
					"key_flags: a list of bytes");
			Py_DECREF(result);
			return NULL;
		}
		s = (const uint8_t *)PyBytes_AS_STRING(key);
		len = PyBytes_GET_SIZE(key);
		flags = len && s[0] == MASK_FILL ? KEY_FILL : 0;
		for (j = 0, alnum = 0; j < len; j++) {
			alnum += mask_alnum(s[j]);
			if (is_separator[s[j]])
				flags |= KEY_SEPARATED;
			else if (s[j] == MASK_WILD)
				flags |= KEY_WILD;
		}
		if (alnum >= least)
			flags |= KEY_ALNUM;
		out[i] = flags;
	}
	return result;
}

/* ---- End of number masks ---------------------------------------------- */

static PyMethodDef methods[] = {
	{ "scan", scan, METH_VARARGS,
	  "Find and group the printable runs of a batch of rows." },
	{ "mask_numbers", mask_numbers, METH_O,
	  "cluster.masked() of each text of a list of bytes." },
	{ "key_flags", key_flags, METH_VARARGS,
	  "Flags of masked texts for the word step of the clustering." },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "dumpminer.extract._runs",
	"Printable runs of a batch of rows, found and grouped in one pass.",
	-1, methods,
};

PyMODINIT_FUNC PyInit__runs(void)
{
	return PyModule_Create(&module);
}
