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
 * Read-only results: planted32, planted64, planted128, planted96 (records allocated).
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

#define RULE_MAGIC	0xa5d7	/* little endian: bytes d7 a5, not printable */
#define SESSION_MAGIC	0xa5d8	/* little endian: bytes d8 a5, not printable */
#define STATE_MAGIC	0xa5d9	/* little endian: bytes d9 a5, not printable */
#define COUNTER_MODULUS	997
#define SESSION_MODULUS	1021
#define NAME_MODULUS	1499	/* distinct state names (prime) */
#define NAME_SCRAMBLE	389	/* coprime with NAME_MODULUS: name order is not index order */
#define COUNTER_SET	8	/* counter records are chained in sets of this many */

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

/* Keep the newest head of each family reachable, as a real agent would. */
static struct rule_rec *current_rules;
static struct session_rec *last_session;
static struct state_rec *last_state;
static LIST_HEAD(link_list);
static struct agent_table agent_table = { .version = 1 };

static noinline struct rule_rec *new_rule(const char *text, u8 type, struct rule_rec *next)
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
	return rec;
}

/* Build one rule set, chained in order; the previous set is simply forgotten. */
static int reload_rules(void)
{
	struct rule_rec *head = NULL;
	int i;

	for (i = NR_SET_COMPONENTS - 1; i >= 0; i--) {
		head = new_rule(rule_set[i].text, rule_set[i].type, head);
		if (!head)
			return -ENOMEM;
	}
	current_rules = head;
	return 0;
}

static int plant_counters(void)
{
	struct rule_rec *head = NULL;
	char buf[16];
	uint i;

	for (i = 0; i < counters; i++) {
		if (i % COUNTER_SET == 0)
			head = NULL;
		snprintf(buf, sizeof(buf), "t.point.%05u", i % COUNTER_MODULUS);
		head = new_rule(buf, RULE_FILE, head);
		if (!head)
			return -ENOMEM;
		if (i % 4096 == 0)
			cond_resched();
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

static noinline int __init plant_sessions(void)
{
	struct session_rec *rec;
	uint i;

	for (i = 0; i < sessions; i++) {
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
		if (i % 4096 == 0)
			cond_resched();
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

static noinline int plant_states(void)
{
	struct state_rec *rec;
	char name[8];
	uint i;

	for (i = 0; i < states; i++) {
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
		if (i % 4096 == 0)
			cond_resched();
	}
	return 0;
}

static noinline struct link_rec *new_link(uint i)
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
	return rec;
}

/* After plant_states(): every link points at the newest state record (NULL if none). */
static int plant_links(void)
{
	uint i;

	for (i = 0; i < links; i++) {
		if (!new_link(i))
			return -ENOMEM;
		if (i % 4096 == 0)
			cond_resched();
	}
	return 0;
}

static int __init leaky_agent_init(void)
{
	uint r;
	int err;

	for (r = 0; r < reloads; r++) {
		err = reload_rules();
		if (err)
			return err;
		if (r % 1024 == 0)
			cond_resched();
	}
	err = plant_counters();
	if (!err)
		err = plant_sessions();
	if (!err)
		err = plant_states();
	if (!err)
		err = plant_links();
	if (err)
		return err;
	pr_info("leaky_agent: planted kmalloc-32=%lu kmalloc-64=%lu kmalloc-128=%lu kmalloc-96=%lu\n",
		planted32, planted64, planted128, planted96);
	return 0;
}

/* No exit function: the module cannot be unloaded, and its records are never freed. */
module_init(leaky_agent_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Leaks rule records into kmalloc-32/64/96/128 for dumpminer sample vmcores");
