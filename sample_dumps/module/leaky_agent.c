// SPDX-License-Identifier: GPL-2.0
/*
 * leaky_agent: a deliberately leaky "file-monitoring agent" for dumpminer's sample vmcores.
 *
 * The agent keeps its path rules as glob components in small kmalloc'd records. On every
 * rule reload it builds a fresh set of records and forgets the old one without freeing it:
 * one full set leaks per reload. The record layouts below are a contract with the Python
 * side (sample_dumps/build.py computes the expected counts, tests/test_samples.py checks
 * them in the dumps); see sample_dumps/README.md. Change them only together.
 *
 * Parameters (all counts of records, never freed):
 *   reloads   rule reloads; each leaks one set of NR_SET_COMPONENTS kmalloc-32 records
 *   counters  kmalloc-32 records "t.point.%05u" with value i % COUNTER_MODULUS
 *   sessions  kmalloc-64 records "SESSION-%08X" (see session_value())
 *   states    kmalloc-128 records "/opt/agent/state/%s.json", the name made of letters only
 *             (see state_name()): a leak whose strings differ in words, not numbers
 *   links     kmalloc-96 records holding no text at all, only pointers (struct link_rec):
 *             a string-less leak, every record pointing at the module static agent_table
 *   pace_us   microseconds to sleep between chunks (0: none), so that KFENCE's sampler
 *             (kfence.sample_interval) gets to turn some of the records into KFENCE objects
 * Read-only results: planted32, planted64, planted128, planted96 (records allocated),
 * decoys (decoy objects allocated and freed), cpus_used and nodes_used (online CPUs the
 * records were spread over, and their NUMA nodes).
 *
 * Spreading over CPUs: every family is planted in chunks of CHUNK records, chunk k on the
 * k-th online CPU in turn (work_on_cpu(), synchronous, so the order of the records and of
 * their chains is the same as on one CPU). After every DECOY_EVERY records the chunk
 * allocates a decoy: a byte copy of the record just planted, in the same cache. When the
 * chunk is done, a quarter of its decoys are freed from the next online CPU and a quarter
 * from the CPU halfway round (on another node: their slabs go partial onto those CPUs'
 * partial lists, and on to the slab's node's partial list when such a list overflows),
 * and the other half from the chunk's own CPU (those in its active slab go to that CPU's
 * lockless freelist). Every decoy is freed, so the planted counts stay exact,
 * while every CPU's slab, freelist and partial list, and every node's partial list, hold
 * planted records next to free objects whose stale bytes look like records: a walk that
 * takes a free object for an allocated one miscounts.
 *
 * Each family is allocated from one known function, so that allocation tracks
 * (slub_debug=U) name it: rule and counter records from new_rule(), sessions from
 * plant_sessions() (an __init function: its text is freed once the module is loaded, so
 * its addresses resolve to no symbol), states from plant_states(), links from new_link().
 * All of them are noinline, so that the track's address is inside the named function.
 */
#include <linux/build_bug.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/stddef.h>
#include <linux/string.h>
#include <linux/types.h>
#include <linux/workqueue.h>
#include <linux/cpumask.h>
#include <linux/delay.h>
#include <linux/nodemask.h>

#define RULE_MAGIC	0xa5d7	/* little endian: bytes d7 a5, not printable */
#define SESSION_MAGIC	0xa5d8	/* little endian: bytes d8 a5, not printable */
#define STATE_MAGIC	0xa5d9	/* little endian: bytes d9 a5, not printable */
#define COUNTER_MODULUS	997
#define SESSION_MODULUS	1021
#define NAME_MODULUS	1499	/* distinct state names (prime) */
#define NAME_SCRAMBLE	389	/* coprime with NAME_MODULUS: name order is not index order */
#define COUNTER_SET	8	/* counter records are chained in sets of this many */
#define CHUNK		240	/* records planted per work_on_cpu() call (a multiple of 6 and 8) */
#define DECOY_EVERY	4	/* one decoy per this many planted records */
#define MAX_DECOYS	(CHUNK / DECOY_EVERY + 1)

enum rule_type {
	RULE_DIR = 1,		/* a plain directory component */
	RULE_GLOB_DIR = 2,	/* a directory component with a wildcard */
	RULE_GLOB_FILE = 3,	/* a file name pattern */
	RULE_FILE = 4,		/* a concrete file name */
	RULE_SESSION = 5,	/* a session tag (kmalloc-64 family) */
	RULE_STATE = 6,		/* a per-name state file (kmalloc-128 family) */
};

struct rule_rec {		/* 32 bytes -> kmalloc-32 */
	u8 len;			/* strlen(comp), < 0x20 */
	u8 type;		/* enum rule_type, < 0x20 */
	u16 magic;		/* RULE_MAGIC */
	u32 gen_lo_zero;	/* always 0 */
	struct rule_rec *next;	/* next record of the same set, NULL at its end */
	char comp[16];		/* NUL-terminated, NUL-padded component */
};
static_assert(sizeof(struct rule_rec) == 32, "rule_rec must be 32 bytes");
static_assert(offsetof(struct rule_rec, comp) == 16, "comp must start at offset 16");

struct session_rec {		/* 64 bytes -> kmalloc-64 */
	u8 len;			/* strlen(comp), < 0x30 */
	u8 type;		/* RULE_SESSION */
	u16 magic;		/* SESSION_MAGIC */
	u32 gen_lo_zero;	/* always 0 */
	struct session_rec *next;	/* previous session record, NULL for the first */
	char comp[48];		/* NUL-terminated, NUL-padded "SESSION-%08X" */
};
static_assert(sizeof(struct session_rec) == 64, "session_rec must be 64 bytes");
static_assert(offsetof(struct session_rec, comp) == 16, "comp must start at offset 16");

struct state_rec {		/* 128 bytes -> kmalloc-128 */
	u8 len;			/* strlen(path), < 0x70 */
	u8 type;		/* RULE_STATE */
	u16 magic;		/* STATE_MAGIC */
	u32 gen_lo_zero;	/* always 0 */
	struct state_rec *next;	/* previous state record, NULL for the first */
	char path[112];		/* NUL-terminated, NUL-padded "/opt/agent/state/%s.json" */
};
static_assert(sizeof(struct state_rec) == 128, "state_rec must be 128 bytes");
static_assert(offsetof(struct state_rec, path) == 16, "path must start at offset 16");

struct agent_table {		/* the module static every link record points at */
	u32 version;
	u32 nr_links;
	struct link_rec *newest;
};

struct link_rec {		/* 96 bytes -> kmalloc-96, no text: pointers and small integers */
	struct list_head node;		/*  0: on link_list (a module static) */
	struct agent_table *table;	/* 16: &agent_table, a module static */
	struct state_rec *state;	/* 24: a leaked state record (kmalloc-128), or NULL */
	struct link_rec *self;		/* 32: the record itself */
	u64 seq;			/* 40: i & 0xffff: never 3 printable bytes */
	u64 zero[6];			/* 48: always 0 */
};
static_assert(sizeof(struct link_rec) == 96, "link_rec must be 96 bytes");
static_assert(offsetof(struct link_rec, table) == 16, "table must be at offset 16");

struct component {
	const char *text;
	u8 type;
};

/* One rule set, leaked whole on each reload ("tmp" twice on purpose). */
static const struct component rule_set[] = {
	{ "usr", RULE_DIR },
	{ "sbin/*agt/", RULE_GLOB_DIR },
	{ "tmp", RULE_DIR },
	{ "@Vv*/", RULE_GLOB_DIR },
	{ "t.point.*", RULE_GLOB_FILE },
	{ "tmp", RULE_DIR },
};
#define NR_SET_COMPONENTS ARRAY_SIZE(rule_set)

static uint reloads = 6000;
module_param(reloads, uint, 0444);
MODULE_PARM_DESC(reloads, "rule reloads; each leaks one rule set in kmalloc-32");

static uint counters = 5000;
module_param(counters, uint, 0444);
MODULE_PARM_DESC(counters, "leaked kmalloc-32 records t.point.%05u (value i % 997)");

static uint sessions = 3000;
module_param(sessions, uint, 0444);
MODULE_PARM_DESC(sessions, "leaked kmalloc-64 records SESSION-%08X");

static uint states = 4000;
module_param(states, uint, 0444);
MODULE_PARM_DESC(states, "leaked kmalloc-128 records /opt/agent/state/<name>.json");

static uint links = 3000;
module_param(links, uint, 0444);
MODULE_PARM_DESC(links, "leaked kmalloc-96 records holding only pointers (struct link_rec)");

static uint pace_us;
module_param(pace_us, uint, 0444);
MODULE_PARM_DESC(pace_us, "microseconds to sleep between chunks (lets KFENCE sample some)");

static ulong planted32;
module_param(planted32, ulong, 0444);
MODULE_PARM_DESC(planted32, "kmalloc-32 records allocated (read-only result)");

static ulong planted64;
module_param(planted64, ulong, 0444);
MODULE_PARM_DESC(planted64, "kmalloc-64 records allocated (read-only result)");

static ulong planted128;
module_param(planted128, ulong, 0444);
MODULE_PARM_DESC(planted128, "kmalloc-128 records allocated (read-only result)");

static ulong planted96;
module_param(planted96, ulong, 0444);
MODULE_PARM_DESC(planted96, "kmalloc-96 link records allocated (read-only result)");

static ulong decoys;
module_param(decoys, ulong, 0444);
MODULE_PARM_DESC(decoys, "decoy objects allocated and freed again (read-only result)");

static uint cpus_used;
module_param(cpus_used, uint, 0444);
MODULE_PARM_DESC(cpus_used, "online CPUs the records were spread over (read-only result)");

static uint nodes_used;
module_param(nodes_used, uint, 0444);
MODULE_PARM_DESC(nodes_used, "NUMA nodes of those CPUs (read-only result)");

/*
 * One chunk of a family: records [start, end) planted on one CPU by plant(), with the
 * decoys it allocated on the way (freed afterwards by free_decoys()).
 */
struct chunk {
	int (*plant)(struct chunk *chunk);
	uint start, end;
	uint nr_decoys;
	uint planted;		/* records planted so far in this chunk */
	void *decoy[MAX_DECOYS];
	uint free_from, free_step;	/* free_decoys(): which decoys this call frees */
};

/* After every DECOY_EVERY records of a chunk, a byte copy of the last one, in its cache. */
static noinline int new_decoy(struct chunk *chunk, const void *rec, size_t size)
{
	void *decoy;

	if (++chunk->planted % DECOY_EVERY)
		return 0;
	if (chunk->nr_decoys >= MAX_DECOYS)
		return -EINVAL;
	decoy = kmalloc(size, GFP_KERNEL);
	if (!decoy)
		return -ENOMEM;
	memcpy(decoy, rec, size);
	chunk->decoy[chunk->nr_decoys++] = decoy;
	decoys++;
	return 0;
}

static long run_chunk(void *arg)
{
	struct chunk *chunk = arg;

	return chunk->plant(chunk);
}

static long free_decoys(void *arg)
{
	struct chunk *chunk = arg;
	uint i;

	for (i = chunk->free_from; i < chunk->nr_decoys; i += chunk->free_step) {
		kfree(chunk->decoy[i]);
		chunk->decoy[i] = NULL;
	}
	return 0;
}

static int next_cpu(int cpu)
{
	cpu = cpumask_next(cpu, cpu_online_mask);
	return cpu < nr_cpu_ids ? cpu : cpumask_first(cpu_online_mask);
}

/* The online CPU halfway round the online mask from cpu: on a 2-node guest, one of the
 * other node. */
static int far_cpu(int cpu)
{
	uint i;

	for (i = 0; i < cpus_used / 2; i++)
		cpu = next_cpu(cpu);
	return cpu;
}

/*
 * Plant items [0, total) of a family with plant(), per_chunk at a time, each chunk on the
 * next online CPU, then free its decoys: one in four from the following CPU, one in four
 * from the CPU halfway round (another node's), the even ones from the chunk's own CPU.
 */
static int spread(int (*plant)(struct chunk *chunk), uint total, uint per_chunk)
{
	static struct chunk chunk;	/* too large for the stack; init is single-threaded */
	int cpu = cpumask_first(cpu_online_mask);
	uint start;
	long err;

	for (start = 0; start < total; start += per_chunk) {
		memset(&chunk, 0, sizeof(chunk));
		chunk.plant = plant;
		chunk.start = start;
		chunk.end = min(total, start + per_chunk);
		err = work_on_cpu(cpu, run_chunk, &chunk);
		chunk.free_step = 4;
		chunk.free_from = 1;
		work_on_cpu(next_cpu(cpu), free_decoys, &chunk);
		chunk.free_from = 3;
		work_on_cpu(far_cpu(cpu), free_decoys, &chunk);
		chunk.free_step = 2;
		chunk.free_from = 0;
		work_on_cpu(cpu, free_decoys, &chunk);
		if (err)
			return err;
		cpu = next_cpu(cpu);
		if (pace_us)
			usleep_range(pace_us, pace_us + pace_us / 4);
		cond_resched();
	}
	return 0;
}

/* Keep the newest head of each family reachable, as a real agent would. */
static struct rule_rec *current_rules;
static struct session_rec *last_session;
static struct state_rec *last_state;
static LIST_HEAD(link_list);
static struct agent_table agent_table = { .version = 1 };

static noinline struct rule_rec *new_rule(struct chunk *chunk, const char *text, u8 type,
					  struct rule_rec *next)
{
	struct rule_rec *rec = kmalloc(sizeof(*rec), GFP_KERNEL);

	if (!rec)
		return NULL;
	memset(rec, 0, sizeof(*rec));
	rec->len = strscpy(rec->comp, text, sizeof(rec->comp));
	rec->type = type;
	rec->magic = RULE_MAGIC;
	rec->next = next;
	planted32++;
	if (new_decoy(chunk, rec, sizeof(*rec)))
		return NULL;
	return rec;
}

/* Build one rule set, chained in order; the previous set is simply forgotten. */
static int reload_rules(struct chunk *chunk)
{
	struct rule_rec *head = NULL;
	int i;

	for (i = NR_SET_COMPONENTS - 1; i >= 0; i--) {
		head = new_rule(chunk, rule_set[i].text, rule_set[i].type, head);
		if (!head)
			return -ENOMEM;
	}
	current_rules = head;
	return 0;
}

/* Reloads [chunk->start, chunk->end). */
static int plant_reloads(struct chunk *chunk)
{
	uint r;
	int err;

	for (r = chunk->start; r < chunk->end; r++) {
		err = reload_rules(chunk);
		if (err)
			return err;
	}
	return 0;
}

static int plant_counters(struct chunk *chunk)
{
	static struct rule_rec *head;	/* a set of COUNTER_SET may span two chunks */
	char buf[16];
	uint i;

	for (i = chunk->start; i < chunk->end; i++) {
		if (i % COUNTER_SET == 0)
			head = NULL;
		snprintf(buf, sizeof(buf), "t.point.%05u", i % COUNTER_MODULUS);
		head = new_rule(chunk, buf, RULE_FILE, head);
		if (!head)
			return -ENOMEM;
	}
	return 0;
}

/* Binary-coded decimal of n: its "%08X" form is n's 8 decimal digits. */
static u32 to_bcd(u32 n)
{
	u32 v = 0;
	int shift;

	for (shift = 0; shift < 32; shift += 4) {
		v |= (n % 10) << shift;
		n /= 10;
	}
	return v;
}

/*
 * Session values repeat with period SESSION_MODULUS. Even k gives an all-digit hex value
 * (e.g. 00012345), odd k one whose second digit is always 'A' (e.g. 0A1B2C3D).
 */
static u32 session_value(uint i)
{
	u32 k = i % SESSION_MODULUS;

	if (k % 2 == 0)
		return to_bcd((k * 7919u + 12345u) % 100000000u);
	return 0x0A000000u | ((k * 2654435761u) & 0x00FFFFFFu);
}

static noinline int __init plant_sessions(struct chunk *chunk)
{
	struct session_rec *rec;
	uint i;

	for (i = chunk->start; i < chunk->end; i++) {
		rec = kmalloc(sizeof(*rec), GFP_KERNEL);
		if (!rec)
			return -ENOMEM;
		memset(rec, 0, sizeof(*rec));
		rec->len = snprintf(rec->comp, sizeof(rec->comp), "SESSION-%08X",
				    session_value(i));
		rec->type = RULE_SESSION;
		rec->magic = SESSION_MAGIC;
		rec->next = last_session;
		last_session = rec;
		planted64++;
		if (new_decoy(chunk, rec, sizeof(*rec)))
			return -ENOMEM;
	}
	return 0;
}

/*
 * The name of state record i: two or three consonant-vowel syllables ("kelo", "vimaru"),
 * letters only, so no part of it is a number. j below is a bijection of i % NAME_MODULUS,
 * and its first two base-70 digits (70 syllables) already tell names apart: NAME_MODULUS
 * distinct names, none longer than 6 letters.
 */
static void state_name(uint i, char *buf)
{
	static const char consonants[] = "bdfgklmnprstvz";	/* 14 */
	static const char vowels[] = "aeiou";			/* 5 */
	u32 j = (i % NAME_MODULUS) * NAME_SCRAMBLE % NAME_MODULUS;
	u32 syllables[3] = { j % 70, j / 70 % 70, j * 7 % 70 };
	int count = j % 3 == 0 ? 3 : 2;
	int k;

	for (k = 0; k < count; k++) {
		*buf++ = consonants[syllables[k] % 14];
		*buf++ = vowels[syllables[k] / 14];
	}
	*buf = '\0';
}

static noinline int plant_states(struct chunk *chunk)
{
	struct state_rec *rec;
	char name[8];
	uint i;

	for (i = chunk->start; i < chunk->end; i++) {
		rec = kmalloc(sizeof(*rec), GFP_KERNEL);
		if (!rec)
			return -ENOMEM;
		memset(rec, 0, sizeof(*rec));
		state_name(i, name);
		rec->len = snprintf(rec->path, sizeof(rec->path), "/opt/agent/state/%s.json", name);
		rec->type = RULE_STATE;
		rec->magic = STATE_MAGIC;
		rec->next = last_state;
		last_state = rec;
		planted128++;
		if (new_decoy(chunk, rec, sizeof(*rec)))
			return -ENOMEM;
	}
	return 0;
}

static noinline struct link_rec *new_link(struct chunk *chunk, uint i)
{
	struct link_rec *rec = kmalloc(sizeof(*rec), GFP_KERNEL);

	if (!rec)
		return NULL;
	memset(rec, 0, sizeof(*rec));
	rec->table = &agent_table;
	rec->state = last_state;
	rec->self = rec;
	rec->seq = i & 0xffff;
	list_add_tail(&rec->node, &link_list);
	agent_table.newest = rec;
	agent_table.nr_links++;
	planted96++;
	if (new_decoy(chunk, rec, sizeof(*rec)))
		return NULL;
	return rec;
}

/* After plant_states(): every link points at the newest state record (NULL if none). */
static int plant_links(struct chunk *chunk)
{
	uint i;

	for (i = chunk->start; i < chunk->end; i++) {
		if (!new_link(chunk, i))
			return -ENOMEM;
	}
	return 0;
}

static int __init leaky_agent_init(void)
{
	nodemask_t nodes = NODE_MASK_NONE;
	int err, cpu;

	for_each_online_cpu(cpu) {
		cpus_used++;
		node_set(cpu_to_node(cpu), nodes);
	}
	nodes_used = nodes_weight(nodes);
	/* A reload plants NR_SET_COMPONENTS records: a chunk holds CHUNK records. */
	err = spread(plant_reloads, reloads, CHUNK / NR_SET_COMPONENTS);
	if (!err)
		err = spread(plant_counters, counters, CHUNK);
	if (!err)
		err = spread(plant_sessions, sessions, CHUNK);
	if (!err)
		err = spread(plant_states, states, CHUNK);
	if (!err)
		err = spread(plant_links, links, CHUNK);
	if (err)
		return err;
	pr_info("leaky_agent: planted kmalloc-32=%lu kmalloc-64=%lu kmalloc-128=%lu kmalloc-96=%lu decoys=%lu cpus=%u nodes=%u\n",
		planted32, planted64, planted128, planted96, decoys, cpus_used, nodes_used);
	return 0;
}

/* No exit function: the module cannot be unloaded, and its records are never freed. */
module_init(leaky_agent_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Leaks rule records into kmalloc-32/64/96/128 for dumpminer sample vmcores");
