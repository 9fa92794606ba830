"""Build real Linux vmcores with known leaked slab objects, reproducibly.

One command builds one *sample*: a Debian cloud kernel of one *series* boots in QEMU (TCG),
a small out-of-tree module (``module/leaky_agent.c``) leaks a known number of records into
kmalloc-32 and kmalloc-64, and QEMU dumps the guest's memory. The result is a directory of
dumps plus a ``manifest.json`` that says exactly what was planted (see README.md)::

    python3 sample_dumps/build.py [--sample seed|big|huge|story] [--series 6.1|6.12|5.10] \
        [--cache-dir DIR] [--force]

The manifest's path is printed on the last line of stdout; progress goes to stderr.
Everything lives in a cache directory (``--cache-dir``, else ``$DUMPMINER_CACHE``, else
``~/.cache/dumpminer``) and is reused: a rebuild with nothing changed only checks keys.

Importable too: ``from sample_dumps.build import build_sample``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = "dumpminer.sample/1"
# Bump when a build step changes what ends up in the dumps or the manifest.
BUILDER_REVISION = 2

HERE = Path(__file__).resolve().parent
MODULE_SOURCES = (HERE / "module" / "leaky_agent.c", HERE / "module" / "Kbuild")
INIT_SOURCE = HERE / "init" / "init.c"

# Series -> Debian metapackage whose dependency names the current kernel of that series.
SERIES_METAPACKAGES = {
    "6.1": "linux-image-cloud-amd64",
    "6.12": "linux-image-6.12-cloud-amd64",
    "5.10": "linux-image-cloud-amd64",  # in bullseye (FOREIGN_SUITES)
    # Debian's generic flavour of 6.12: the one Debian kernel here built with KFENCE
    # (CONFIG_KFENCE=y, sample interval 0: off unless kfence.sample_interval is given).
    "6.12-generic": "linux-image-6.12-amd64",
}
DEFAULT_SERIES = "6.1"

# Series whose kernel is not in the host's Debian release -> the Debian suite that has it.
# Such a suite is reached through a private apt configuration under the cache (apt_options),
# never through the host's apt sources; the host's keyring already trusts it (Debian 12
# ships the keys of bullseye and trixie). Only the suite's main archive is listed: its
# kernel has a -dbg package, while the newest 5.10 of bullseye-security had none (404).
FOREIGN_SUITES = {"5.10": "bullseye"}
DEBIAN_MIRROR = "http://deb.debian.org/debian"

# makedumpfile dump level of the filtered copy. 31 drops zero, page-cache, user and free
# pages. makedumpfile 1.7.2 predates 6.10, where PG_slab became a page type: on 6.12 it
# takes slab pages whose page->mapping word happens to have bit 0 set for anonymous
# user pages, so level 8 (user pages) drops real slab pages (even the page holding a
# kmem_cache name, and drgn's find_slab_cache then faults). 23 = 31 without user pages.
# 5.10 keeps PG_slab as a page flag, as 6.1 does: 31 keeps every slab page there.
FILTER_DUMP_LEVEL = {"6.1": 31, "6.12": 23, "5.10": 31, "6.12-generic": 23}

READY_MARKER = "DUMPMINER-READY"
ERROR_MARKER = "DUMPMINER-ERROR"

# --- What the module plants (mirrors module/leaky_agent.c; keep the two in step) ---------

RULE_SET = ("usr", "sbin/*agt/", "tmp", "@Vv*/", "t.point.*", "tmp")
COUNTER_MODULUS = 997
SESSION_MODULUS = 1021
RULE_MAGIC = 0xA5D7
SESSION_MAGIC = 0xA5D8
STATE_MAGIC = 0xA5D9
NAME_MODULUS = 1499
NAME_SCRAMBLE = 389
CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
STRING_OFFSET = 16
COUNTER_TEMPLATE = "t.point.<NUM>"
SESSION_TEMPLATE = "SESSION-<HEX>"
STATE_TEMPLATE = "/opt/agent/state/<*>.json"
LINK_SIZE = 96
#: Where each field of struct link_rec points (offset -> what), for the manifest.
LINK_FIELDS = {
    "0": "list: the next link_rec, or the module static link_list",
    "8": "list: the previous link_rec, or the module static link_list",
    "16": "module static agent_table",
    "24": "the newest state_rec (kmalloc-128), or NULL",
    "32": "the object itself",
    "40": "i & 0xffff (small integer)",
}
#: The function each family is allocated from (its kmalloc call site), and whether that
#: function is __init (its text freed after the module loaded).
ALLOC_SITES = {
    "kmalloc-32": ("new_rule", False),
    "kmalloc-64": ("plant_sessions", True),
    "kmalloc-128": ("plant_states", False),
    "kmalloc-96": ("new_link", False),
}


@dataclass(frozen=True)
class SampleSpec:
    """A named scenario: module parameters and guest size."""

    reloads: int  # rule reloads, each leaking len(RULE_SET) kmalloc-32 records
    counters: int  # kmalloc-32 records "t.point.%05u"
    sessions: int  # kmalloc-64 records "SESSION-%08X"
    states: int  # kmalloc-128 records "/opt/agent/state/%s.json" (names of letters)
    guest_memory_mib: int
    boot_timeout_s: float
    #: Extra kernel command line, e.g. "slub_debug=FZPU" (red zones, poison, tracks).
    boot_options: str = ""
    links: int = 3000  # kmalloc-96 struct link_rec records: pointers only, no text
    #: Guest topology: vCPUs (``-smp``) and NUMA nodes, the vCPUs and the memory split
    #: evenly over the nodes (node 0 gets CPUs 0..cpus/nodes-1, and so on). The module
    #: spreads its records over every online CPU (see leaky_agent.c).
    cpus: int = 1
    numa_nodes: int = 1
    #: Microseconds the module sleeps between chunks (leaky_agent.pace_us), so that a
    #: timer-driven sampler (KFENCE's) lets some of its allocations through.
    pace_us: int = 0
    #: The dumps made (DUMP_FORMATS): QEMU's kdump-zlib de-flattened and as QEMU wrote it,
    #: its ELF, makedumpfile's filtered copies of the ELF (zlib and lzo), and that copy's
    #: pages recompressed with snappy and zstd. A guest of many GiB is dumped as kdump
    #: only: its ELF would be as large as it.
    formats: tuple[str, ...] = (
        "kdump", "flattened", "elf", "makedumpfile", "lzo", "snappy", "zstd",
    )

    def topology(self) -> dict[str, Any]:
        """The manifest's "topology": vCPUs, NUMA nodes, and each node's CPUs and memory."""
        per_node = self.cpus // self.numa_nodes
        return {
            "cpus": self.cpus,
            "numa_nodes": self.numa_nodes,
            "nodes": [{"node": n, "cpus": list(range(n * per_node, (n + 1) * per_node)),
                       "memory_mib": self.guest_memory_mib // self.numa_nodes}
                      for n in range(self.numa_nodes)],
        }

    def params(self) -> dict[str, int]:
        """Module parameters, as passed to leaky_agent."""
        params = {"reloads": self.reloads, "counters": self.counters,
                  "sessions": self.sessions, "states": self.states, "links": self.links}
        if self.pace_us:
            params["pace_us"] = self.pace_us
        return params


SAMPLES: dict[str, SampleSpec] = {
    # ~41,000 kmalloc-32, 3,000 kmalloc-64 and 4,000 kmalloc-128 records in a 512 MiB guest.
    # 4 vCPUs on 2 NUMA nodes: every CPU's slab, freelist and partial list hold records.
    "seed": SampleSpec(
        reloads=6000, counters=5000, sessions=3000, states=4000, guest_memory_mib=512,
        boot_timeout_s=180, cpus=4, numa_nodes=2,
    ),
    # seed booted with slub_debug=FZPU: every cache gets red zones, poison (objects hold
    # runs of 'k' and 'Z'), alloc/free tracks, and no cache is merged with another.
    "slub-debug": SampleSpec(
        reloads=6000, counters=5000, sessions=3000, states=4000, guest_memory_mib=512,
        boot_timeout_s=240, boot_options="slub_debug=FZPU", cpus=4, numa_nodes=2,
    ),
    # 3,100,000 kmalloc-32, 20,000 kmalloc-64 and 1,000,000 string-less kmalloc-96 records
    # in a 4 GiB guest (benchmarks).
    "big": SampleSpec(
        reloads=500_000, counters=100_000, sessions=20_000, states=20_000, guest_memory_mib=4096,
        boot_timeout_s=900, links=1_000_000,
    ),
    # big booted with slub_debug=U: every cache keeps alloc tracks (and no cache is merged),
    # for the cost of call sites on a large cache (bench/bench_callsites.py).
    "big-debug": SampleSpec(
        reloads=500_000, counters=100_000, sessions=20_000, states=20_000, guest_memory_mib=4096,
        boot_timeout_s=1800, links=1_000_000, boot_options="slub_debug=U",
    ),
    # 31,000,000 kmalloc-32 records in a 6 GiB guest: 10x big, to check that
    # mining time grows linearly with objects (docs/performance.md).
    "huge": SampleSpec(
        reloads=5_000_000, counters=1_000_000, sessions=20_000, states=20_000,
        guest_memory_mib=6144,
        boot_timeout_s=1800,
    ),
    # The story's cache: 208,179,509 kmalloc-32 records (6.7 GB) in a 12 GiB guest, dumped
    # as kdump only, for the seed-scale benchmark (docs/performance.md). 34,663,251 rule
    # reloads of six records, plus 200,003 counters.
    "story": SampleSpec(
        reloads=34_663_251, counters=200_003, sessions=20_000, states=20_000,
        guest_memory_mib=12288, boot_timeout_s=3600, formats=("kdump",),
    ),
    # The pair: the same kernel and module booted twice with different parameters, so that
    # `dumpminer diff` has a known answer (and KASLR moves every pointer between the two).
    # From old to new: rule records double (grown), counters appear (new), sessions
    # vanish (gone) and states fall (shrunk).
    "pair-old": SampleSpec(
        reloads=3000, counters=0, sessions=3000, states=4000, guest_memory_mib=512,
        boot_timeout_s=180, cpus=4, numa_nodes=2,
    ),
    "pair-new": SampleSpec(
        reloads=6000, counters=5000, sessions=0, states=2500, guest_memory_mib=512,
        boot_timeout_s=180, cpus=4, numa_nodes=2,
    ),
    # seed on the generic 6.12 kernel with KFENCE sampling every millisecond, the module
    # pausing 2 ms between chunks: some records (and some decoys, then freed) are KFENCE
    # objects, one per page of the KFENCE pool, at either end of their page.
    "kfence": SampleSpec(
        reloads=6000, counters=5000, sessions=3000, states=4000, guest_memory_mib=512,
        boot_timeout_s=300, boot_options="kfence.sample_interval=1", cpus=4, numa_nodes=2,
        pace_us=2000,
    ),
}
#: Samples built together by ``--sample NAME``: (old, new), described by one pair manifest.
PAIRS = {"pair": ("pair-old", "pair-new")}
PAIR_SCHEMA = "dumpminer.sample-pair/1"


# Mirrors leaky_agent.c's spread(): records planted per work_on_cpu() chunk, and one
# decoy (allocated, then freed) per DECOY_EVERY records of a chunk.
CHUNK = 240
DECOY_EVERY = 4


def decoys(spec: SampleSpec) -> int:
    """How many decoys the module allocates and frees again for *spec* (its decoys count)."""
    def chunks(records: int, per_chunk: int) -> int:
        full, rest = divmod(records, per_chunk)
        return full * (per_chunk // DECOY_EVERY) + rest // DECOY_EVERY

    sets = len(RULE_SET)
    per_reload = CHUNK // sets
    full, rest = divmod(spec.reloads, per_reload)
    total = full * (per_reload * sets // DECOY_EVERY) + rest * sets // DECOY_EVERY
    return total + sum(chunks(n, CHUNK) for n in
                       (spec.counters, spec.sessions, spec.states, spec.links))


def session_value(i: int) -> int:
    """The value of session record i, as session_value() in leaky_agent.c computes it."""
    k = i % SESSION_MODULUS
    if k % 2 == 0:
        # Binary-coded decimal: "%08X" prints the 8 decimal digits (all-digit hex).
        return int(f"{(k * 7919 + 12345) % 100_000_000:08d}", 16)
    return 0x0A000000 | ((k * 2654435761) & 0x00FFFFFF)  # second digit is always 'A'


def state_name(i: int) -> str:
    """The name in state record i, as state_name() in leaky_agent.c makes it."""
    j = (i % NAME_MODULUS) * NAME_SCRAMBLE % NAME_MODULUS
    syllables = (j % 70, j // 70 % 70, j * 7 % 70)[: 3 if j % 3 == 0 else 2]
    return "".join(CONSONANTS[s % 14] + VOWELS[s // 14] for s in syllables)


def string_less(spec: SampleSpec) -> dict[str, Any]:
    """
    The manifest's "string_less" section: the leak whose records hold no text, by cache
    (kept apart from "planted", whose families are all string leaks).
    """
    function, in_init = ALLOC_SITES["kmalloc-96"]
    return {
        "kmalloc-96": {
            "objects": spec.links,
            "record_size": LINK_SIZE,
            "struct": "link_rec",
            "fields": LINK_FIELDS,
            "points_to": {"16": "agent_table"},
            "alloc_function": function,
            "alloc_in_init": in_init,
        }
    }


def planted(spec: SampleSpec) -> dict[str, Any]:
    """The manifest's "planted" section: exact object counts per string and template."""
    small: Counter[str] = Counter()
    for comp in RULE_SET:
        small[comp] += spec.reloads
    small.update(f"t.point.{i % COUNTER_MODULUS:05d}" for i in range(spec.counters))
    sessions = Counter(f"SESSION-{session_value(i):08X}" for i in range(spec.sessions))
    states = Counter(f"/opt/agent/state/{state_name(i)}.json" for i in range(spec.states))
    return {
        "kmalloc-32": _family(
            small, 32, RULE_MAGIC, {COUNTER_TEMPLATE: spec.counters} if spec.counters else {}
        ),
        "kmalloc-64": _family(
            sessions, 64, SESSION_MAGIC, {SESSION_TEMPLATE: spec.sessions} if spec.sessions else {}
        ),
        "kmalloc-128": _family(
            states, 128, STATE_MAGIC, {STATE_TEMPLATE: spec.states} if spec.states else {}
        ),
    }


def _family(
    strings: Counter[str], size: int, magic: int, templates: dict[str, int]
) -> dict[str, Any]:
    function, in_init = ALLOC_SITES[f"kmalloc-{size}"]
    return {
        "objects": sum(strings.values()),
        "record_size": size,
        "alloc_function": function,
        "alloc_in_init": in_init,
        "string_offset": STRING_OFFSET,
        "magic": f"{magic:#06x}",
        "strings": dict(sorted(strings.items())),
        "templates": templates,
    }


# --- Small helpers --------------------------------------------------------------------------


class BuildError(RuntimeError):
    """A build step failed; the message says which and shows the evidence."""


def log(message: str) -> None:
    print(f"[sample_dumps] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    start = time.monotonic()
    log(f"{what} ...")
    yield
    log(f"{what}: {time.monotonic() - start:.1f} s")


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise BuildError with the tail of its output."""
    proc = subprocess.run(cmd, text=True, capture_output=True, check=False, **kwargs)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise BuildError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc


def apt_get(*args: str, cwd: Path | None = None, options: tuple[str, ...] = ()) -> None:
    """apt-get ARGS; on failure run `apt-get update` once and retry (stale or no lists).

    *options* (apt_options) point apt at a private configuration instead of the host's.
    """
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(["apt-get", *options, *args], cwd=cwd, env=env)
    except BuildError:
        with step("apt-get update (package lists missing or stale)"):
            run(["apt-get", *options, "update", "-q"], env=env)
        run(["apt-get", *options, *args], cwd=cwd, env=env)


def apt_options(series: str, cache: Path) -> tuple[str, ...]:
    """
    apt options that reach the packages of *series*: none for the host's own Debian
    release, else a private configuration of its suite (FOREIGN_SUITES) under
    ``<cache>/apt/<suite>``: its own sources.list, an empty sources.list.d, its own package
    lists and archive cache. The host's sources, lists and dpkg database are not touched.
    """
    suite = FOREIGN_SUITES.get(series)
    if suite is None:
        return ()
    root = cache / "apt" / suite
    for sub in ("sources.list.d", "lists/partial", "cache/archives/partial"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    sources = root / "sources.list"
    line = f"deb {DEBIAN_MIRROR} {suite} main\n"
    if not sources.exists() or sources.read_text() != line:
        sources.write_text(line)
    return (
        "-o", f"Dir::Etc::SourceList={sources}",
        "-o", f"Dir::Etc::SourceParts={root / 'sources.list.d'}",
        "-o", f"Dir::State::Lists={root / 'lists'}",
        "-o", f"Dir::Cache={root / 'cache'}",
    )


def default_cache_dir() -> Path:
    env = os.environ.get("DUMPMINER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dumpminer"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on path (parallel builds share the cache and dpkg)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sources_digest() -> str:
    """Hash of everything that goes into the guest besides the kernel."""
    digest = hashlib.sha256(f"rev{BUILDER_REVISION}".encode())
    for path in (*MODULE_SOURCES, INIT_SOURCE):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


# What require_tools() checks -> the Debian package that provides it.
TOOL_PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "makedumpfile": "makedumpfile",
    "cpio": "cpio",
    "gcc": "gcc",
    "make": "make",
    "/usr/lib/x86_64-linux-gnu/libc.a": "libc6-dev",  # for gcc -static
    # objtool and modpost of a foreign suite's linux-kbuild package link against it
    "/usr/lib/x86_64-linux-gnu/libelf.so.1": "libelf1",
}


def require_tools(*tools: str) -> None:
    """apt-get install the packages of missing tools (commands, or absolute file paths)."""
    missing = [
        TOOL_PACKAGES[tool] for tool in tools
        if not (Path(tool).exists() if tool.startswith("/") else shutil.which(tool))
    ]
    if missing:
        with step(f"apt-get install {' '.join(missing)}"):
            apt_get("install", "-y", "-q", "--no-install-recommends", *missing)


# --- Kernel ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    """The files of one kernel release kept in the cache."""

    release: str
    package_version: str
    build_id: str
    vmlinux: Path
    vmlinuz: Path
    fw_cfg_module: Path
    system_map: Path | None


def apt_depends(package: str, options: tuple[str, ...]) -> list[str]:
    """The packages *package* depends on (`apt-cache depends`); [] if apt does not know it."""
    proc = subprocess.run(["apt-cache", *options, "depends", package], text=True,
                          capture_output=True, check=False)
    return re.findall(r"^\s+Depends:\s+(\S+)", proc.stdout, re.MULTILINE)


def resolve_release(series: str, options: tuple[str, ...] = ()) -> str:
    """The release of the kernel the series' metapackage depends on now (no pinning)."""
    meta = SERIES_METAPACKAGES.get(series)
    if meta is None:
        raise BuildError(f"unknown series {series!r}; known: {sorted(SERIES_METAPACKAGES)}")
    for attempt in range(2):
        images = [d for d in apt_depends(meta, options) if re.match(r"linux-image-\d", d)]
        if images:
            return images[0].removeprefix("linux-image-")
        if attempt == 0:
            with step("apt-get update (package lists missing or stale)"):
                run(["apt-get", *options, "update", "-q"],
                    env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    raise BuildError(f"cannot resolve the kernel of {meta} (series {series})")


def gnu_build_id(elf_path: Path) -> str:
    """The hex GNU build-id note of an ELF64 little-endian file (vmlinux)."""
    with elf_path.open("rb") as handle:
        header = handle.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:
            raise BuildError(f"{elf_path} is not an ELF64 file")
        shoff, = struct.unpack_from("<Q", header, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", header, 0x3A)
        handle.seek(shoff)
        table = handle.read(shentsize * shnum)
        for index in range(shnum):
            sh_type, = struct.unpack_from("<I", table, index * shentsize + 4)
            offset, size = struct.unpack_from("<QQ", table, index * shentsize + 24)
            if sh_type != 7:  # SHT_NOTE
                continue
            handle.seek(offset)
            for name, note_type, desc in iter_notes(handle.read(size)):
                if name == b"GNU" and note_type == 3:  # NT_GNU_BUILD_ID
                    return desc.hex()
    raise BuildError(f"{elf_path} has no GNU build-id note")


def iter_notes(data: bytes) -> Iterator[tuple[bytes, int, bytes]]:
    """(name, type, desc) of each ELF note in a note section or segment."""
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, note_type = struct.unpack_from("<III", data, pos)
        pos += 12
        name = data[pos:pos + namesz].rstrip(b"\0")
        pos += (namesz + 3) & ~3
        desc = data[pos:pos + descsz]
        pos += (descsz + 3) & ~3
        yield name, note_type, desc


def extract_members(deb: Path, dest: Path, members: list[str], stop_early: bool) -> None:
    """Extract named members of a .deb's data tarball (only those: the -dbg tree is 1.8 GB).

    With stop_early, tar stops reading once every member was found, which cuts the -dbg
    package's 12 s of decompression to about 3 s; dpkg-deb then dies of SIGPIPE, which is
    expected and checked by looking for the files instead.
    """
    extra = ["--occurrence=1"] if stop_early else []
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as unpack:
        tar = subprocess.run(["tar", "-x", "-C", str(dest), *extra, *members],
                             stdin=unpack.stdout, capture_output=True, text=True, check=False)
        assert unpack.stdout is not None
        unpack.stdout.close()
    missing = [m for m in members if not (dest / m).exists()]
    if tar.returncode != 0 or missing:
        raise BuildError(f"extracting {missing or members} from {deb.name} failed: {tar.stderr}")


def list_deb(deb: Path) -> list[str]:
    """Member names of a .deb's data tarball ("./boot/vmlinuz-..." style)."""
    listing = run(["dpkg-deb", "--contents", str(deb)]).stdout
    return ["./" + line.split(" ./", 1)[1].split(" -> ")[0]
            for line in listing.splitlines() if " ./" in line]


def fetch_kernel(release: str, kernel_dir: Path, options: tuple[str, ...] = ()) -> None:
    """apt-get download the image and -dbg packages and keep only the files we need."""
    kernel_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=kernel_dir.parent, prefix=".fetch-") as tmp:
        work = Path(tmp)
        image_pkg, dbg_pkg = f"linux-image-{release}", f"linux-image-{release}-dbg"
        with step(f"apt-get download {image_pkg} {dbg_pkg}"):
            apt_get("download", image_pkg, dbg_pkg, cwd=work, options=options)
        image_deb = next(work.glob(f"{image_pkg}_*.deb"))
        dbg_deb = next(work.glob(f"{dbg_pkg}_*.deb"))
        version = run(["dpkg-deb", "-f", str(image_deb), "Version"]).stdout.strip()
        names = list_deb(image_deb)
        fw_cfg = [n for n in names if re.search(r"/qemu_fw_cfg\.ko(\.xz|\.zst|\.gz)?$", n)]
        if not fw_cfg:
            raise BuildError(f"{image_deb.name} has no qemu_fw_cfg module")
        wanted = [f"./boot/vmlinuz-{release}", f"./boot/System.map-{release}", fw_cfg[0]]
        with step("extract vmlinuz, System.map, qemu_fw_cfg.ko"):
            extract_members(image_deb, work, wanted, stop_early=False)
        vmlinux_member = f"./usr/lib/debug/boot/vmlinux-{release}"
        with step("extract the debug vmlinux"):
            extract_members(dbg_deb, work, [vmlinux_member], stop_early=True)
        shutil.move(work / vmlinux_member, kernel_dir / f"vmlinux-{release}")
        shutil.move(work / wanted[0], kernel_dir / f"vmlinuz-{release}")
        system_map = work / wanted[1]
        if system_map.stat().st_size > 4096:  # 6.12 ships a placeholder of a few bytes
            shutil.move(system_map, kernel_dir / f"System.map-{release}")
        (kernel_dir / "qemu_fw_cfg.ko").write_bytes(decompress_module(work / fw_cfg[0]))
    info = {
        "release": release,
        "package_version": version,
        "build_id": gnu_build_id(kernel_dir / f"vmlinux-{release}"),
    }
    (kernel_dir / "kernel.json").write_text(json.dumps(info, indent=2) + "\n")


def decompress_module(path: Path) -> bytes:
    """Plain ELF bytes of a kernel module (Debian's 6.12 ships them .ko.xz)."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    return data


def ensure_kernel(release: str, cache: Path, options: tuple[str, ...] = ()) -> Kernel:
    """The cached files of a kernel release, fetching them the first time."""
    kernel_dir = cache / "kernels" / release
    info_path = kernel_dir / "kernel.json"
    if not info_path.exists():
        fetch_kernel(release, kernel_dir, options)
    info = json.loads(info_path.read_text())
    system_map = kernel_dir / f"System.map-{release}"
    return Kernel(
        release=release,
        package_version=info["package_version"],
        build_id=info["build_id"],
        vmlinux=kernel_dir / f"vmlinux-{release}",
        vmlinuz=kernel_dir / f"vmlinuz-{release}",
        fw_cfg_module=kernel_dir / "qemu_fw_cfg.ko",
        system_map=system_map if system_map.exists() else None,
    )


def ensure_headers(release: str, cache: Path, options: tuple[str, ...] = ()) -> Path:
    """
    The kernel headers to build the module against: the host's
    /usr/src/linux-headers-RELEASE, apt-get installed if missing; for a series of a foreign
    suite (*options* set), the headers unpacked into the cache (unpacked_headers).
    """
    if options:
        return unpacked_headers(release, cache / "kernels" / release / "headers", options)
    headers = Path("/usr/src") / f"linux-headers-{release}"
    if not (headers / "Makefile").exists():
        with step(f"apt-get install linux-headers-{release}"):
            apt_get("install", "-y", "-q", f"linux-headers-{release}")
    return headers


def unpacked_headers(release: str, root: Path, options: tuple[str, ...]) -> Path:
    """
    linux-headers-RELEASE of a foreign suite, unpacked with `dpkg -x` under *root* with the
    packages it needs to build a module (its common headers, linux-kbuild-X.Y), never
    installed on the host. The flavour's Makefile includes the common one by its absolute
    /usr/src path; it is pointed at the unpacked copy (the scripts symlinks are relative).
    """
    headers = root / "usr" / "src" / f"linux-headers-{release}"
    done = root / ".complete"
    if done.exists():
        return headers
    package = f"linux-headers-{release}"
    wanted = [package, *(d for d in apt_depends(package, options)
                         if d.startswith(("linux-headers-", "linux-kbuild-")))]
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=".headers-") as tmp, \
            step(f"apt-get download + dpkg -x {' '.join(wanted)}"):
        apt_get("download", *wanted, cwd=Path(tmp), options=options)
        for deb in sorted(Path(tmp).glob("*.deb")):
            run(["dpkg", "-x", str(deb), str(root)])
    makefile = headers / "Makefile"
    text = makefile.read_text()
    rewritten = re.sub(r"^include /usr/src/", f"include {root}/usr/src/", text, flags=re.M)
    if rewritten == text:
        raise BuildError(f"{makefile}: no `include /usr/src/...` line to point at {root}")
    makefile.write_text(rewritten)
    done.write_text(" ".join(wanted) + "\n")
    return headers


# --- Guest: module, /init, initramfs --------------------------------------------------------


def ensure_initramfs(kernel: Kernel, cache: Path, options: tuple[str, ...] = ()) -> Path:
    """Build (or reuse) the gzip'd newc initramfs holding /init and both modules.

    *options*: apt_options of a foreign suite, whose headers are unpacked into the cache.
    """
    out_dir = cache / "build" / kernel.release / sources_digest()[:16]
    initrd = out_dir / "initrd.gz"
    if initrd.exists():
        return initrd
    require_tools("gcc", "make", "cpio", "/usr/lib/x86_64-linux-gnu/libc.a")
    if options:
        require_tools("/usr/lib/x86_64-linux-gnu/libelf.so.1")
    headers = ensure_headers(kernel.release, cache, options)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".build-") as tmp:
        work = Path(tmp)
        root = work / "root"
        for sub in ("proc", "sys", "dev"):
            (root / sub).mkdir(parents=True)
        with step("build leaky_agent.ko"):
            shutil.move(build_module(headers, work / "module", foreign=bool(options)),
                        root / "leaky_agent.ko")
        with step("build static /init"):
            run(["gcc", "-static", "-O2", "-Wall", "-Werror", "-o", str(root / "init"),
                 str(INIT_SOURCE)])
        shutil.copyfile(kernel.fw_cfg_module, root / "qemu_fw_cfg.ko")
        out_dir.mkdir(parents=True, exist_ok=True)
        pack_initramfs(root, work / "initrd.gz")
        shutil.copyfile(root / "leaky_agent.ko", out_dir / "leaky_agent.ko")
        shutil.move(work / "initrd.gz", initrd)  # last: its presence means "complete"
    return initrd


def build_module(headers: Path, work: Path, foreign: bool = False) -> Path:
    """Copy the module sources to work and build them against headers; the .ko's path.

    A foreign suite's headers ask for its own compiler (gcc-10 on bullseye), which the
    host lacks: the host's gcc builds the module (*foreign*), and the kernel loads it.
    """
    work.mkdir(parents=True)
    for source in MODULE_SOURCES:
        shutil.copyfile(source, work / source.name)
    run(["make", "-C", str(headers), f"M={work}", *(["CC=gcc"] if foreign else []), "modules"])
    return work / "leaky_agent.ko"


def pack_initramfs(root: Path, out: Path) -> None:
    """cpio -o -H newc of root, gzip'd, with sorted names and fixed owners."""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    cpio = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--owner=0:0", "--reproducible", "--quiet"],
        cwd=root, input="\n".join(names).encode() + b"\n", capture_output=True, check=False,
    )
    if cpio.returncode != 0:
        raise BuildError(f"cpio failed: {cpio.stderr.decode(errors='replace')}")
    with gzip.GzipFile(out, "wb", mtime=0) as handle:
        handle.write(cpio.stdout)


# --- QEMU -----------------------------------------------------------------------------------


class Qmp:
    """A minimal synchronous QMP client over a unix socket."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.reader = self.sock.makefile("rb")
        self._read()  # greeting
        self.command("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        line = self.reader.readline()
        if not line:
            raise BuildError("QMP connection closed")
        message: dict[str, Any] = json.loads(line)
        return message

    def command(self, name: str, **arguments: Any) -> Any:
        request: dict[str, Any] = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            reply = self._read()
            if "error" in reply:
                raise BuildError(f"QMP {name} failed: {reply['error']}")
            if "return" in reply:
                return reply["return"]

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def kernel_cmdline(spec: SampleSpec) -> str:
    params = " ".join(f"leaky_agent.{k}={v}" for k, v in spec.params().items())
    extra = f" {spec.boot_options}" if spec.boot_options else ""
    return f"console=ttyS0 panic=-1 loglevel=7{extra} {params}"


def numa_options(spec: SampleSpec) -> list[str]:
    """QEMU options for spec's NUMA nodes: one RAM backend and one node per node."""
    if spec.numa_nodes <= 1:
        return []
    options: list[str] = []
    for node in spec.topology()["nodes"]:
        n, cpus = node["node"], node["cpus"]
        options += ["-object", f"memory-backend-ram,id=m{n},size={node['memory_mib']}M",
                    "-numa", f"node,nodeid={n},cpus={cpus[0]}-{cpus[-1]},memdev=m{n}"]
    return options


def start_qemu(
    kernel: Kernel, initrd: Path, spec: SampleSpec, work: Path
) -> subprocess.Popen[bytes]:
    require_tools("qemu-system-x86_64")
    cmd = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", f"{spec.guest_memory_mib}M",
        "-smp", str(spec.cpus), *numa_options(spec),
        "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd),
        "-append", kernel_cmdline(spec),
        "-display", "none", "-no-reboot", "-nodefaults",
        "-serial", f"file:{work / 'serial.log'}",
        "-qmp", f"unix:{work / 'qmp.sock'},server=on,wait=off",
        "-device", "vmcoreinfo",
    ]
    log(" ".join(cmd))
    qemu_log = (work / "qemu.log").open("wb")
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=qemu_log)


def serial_tail(work: Path, lines: int = 40) -> str:
    text = ""
    for name in ("serial.log", "qemu.log"):
        path = work / name
        if path.exists():
            body = path.read_text(errors="replace").splitlines()[-lines:]
            text += f"--- {name} (tail) ---\n" + "\n".join(body) + "\n"
    return text


def wait_ready(qemu: subprocess.Popen[bytes], work: Path, timeout: float) -> dict[str, int]:
    """Wait for the READY line on the serial log; return its key=value counts."""
    deadline = time.monotonic() + timeout
    log_path = work / "serial.log"
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        for line in text.splitlines():
            if line.startswith(READY_MARKER):
                return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
            if line.startswith(ERROR_MARKER) or "Kernel panic" in line:
                raise BuildError(f"guest failed: {line}\n{serial_tail(work)}")
        if qemu.poll() is not None:
            raise BuildError(f"QEMU exited ({qemu.returncode}) before "
                             f"{READY_MARKER}\n{serial_tail(work)}")
        time.sleep(0.2)
    raise BuildError(f"no {READY_MARKER} within {timeout:.0f} s\n{serial_tail(work)}")


def dump_memory(qmp: Qmp, path: Path, fmt: str | None, timeout: float) -> None:
    """dump-guest-memory in the background, then poll query-dump until it completes."""
    arguments: dict[str, Any] = {"paging": False, "protocol": f"file:{path}", "detach": True}
    if fmt:
        arguments["format"] = fmt
    qmp.command("dump-guest-memory", **arguments)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = qmp.command("query-dump")
        if status["status"] == "completed":
            return
        if status["status"] == "failed":
            raise BuildError(f"dump-guest-memory to {path} failed")
        time.sleep(0.2)
    raise BuildError(f"dump-guest-memory to {path} did not finish in {timeout:.0f} s")


def stop_qemu(qemu: subprocess.Popen[bytes], qmp: Qmp | None) -> None:
    """Quit QEMU over QMP when connected (clean exit), else terminate it; never leave it."""
    if qmp is not None:
        if qemu.poll() is None:
            with contextlib.suppress(Exception):
                qmp.command("quit")
        qmp.close()
    elif qemu.poll() is None:
        qemu.terminate()
    try:
        qemu.wait(timeout=30)
    except subprocess.TimeoutExpired:
        qemu.kill()
        qemu.wait()


# --- Dump post-processing -------------------------------------------------------------------


def fix_qemu_elf_header(path: Path) -> None:
    """Make QEMU 7.2's ELF dump readable by makedumpfile 1.7.2 (in place: use a copy).

    makedumpfile reads the program headers at offset 64 (right after the ELF header),
    ignoring e_phoff; QEMU puts two section headers there and the program headers at
    e_phoff = 192, so makedumpfile finds no PT_LOAD ("Can't get the number of PT_LOAD").
    QEMU also writes e_ehsize = 8. Move the program headers to offset 64 (over the
    section headers, which a core file does not need), point e_phoff there, drop the
    section header table and set e_ehsize = 64. Segment data is not touched.
    """
    with path.open("r+b") as handle:
        header = bytearray(handle.read(64))
        phoff, = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        if phnum == 0xFFFF:
            raise BuildError(f"{path}: PN_XNUM program header count is not handled")
        handle.seek(phoff)
        table = handle.read(phentsize * phnum)
        first_data = min(struct.unpack_from("<Q", table, i * phentsize + 8)[0]
                         for i in range(phnum))
        if 64 + len(table) > first_data:
            raise BuildError(f"{path}: no room to move the program headers to offset 64")
        struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
        struct.pack_into("<Q", header, 0x28, 0)  # e_shoff
        struct.pack_into("<H", header, 0x34, 64)  # e_ehsize
        struct.pack_into("<HH", header, 0x3C, 0, 0)  # e_shnum, e_shstrndx
        handle.seek(0)
        handle.write(bytes(header) + table)


def vmcoreinfo_of_elf(path: Path) -> dict[str, str]:
    """VMCOREINFO key=value pairs from the PT_NOTE segments of an ELF vmcore."""
    with path.open("rb") as handle:
        header = handle.read(64)
        phoff, = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        handle.seek(phoff)
        table = handle.read(phentsize * phnum)
        for index in range(phnum):
            p_type, = struct.unpack_from("<I", table, index * phentsize)
            if p_type != 4:  # PT_NOTE
                continue
            offset, = struct.unpack_from("<Q", table, index * phentsize + 8)
            size, = struct.unpack_from("<Q", table, index * phentsize + 32)
            handle.seek(offset)
            for name, _, desc in iter_notes(handle.read(size)):
                if name == b"VMCOREINFO":
                    text = desc.decode(errors="replace")
                    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {}


def make_dumps(qmp: Qmp, out: Path, spec: SampleSpec, formats: tuple[str, ...]) -> None:
    """Write QEMU's kdump-zlib (flattened) and, when a format needs it, ELF dumps into out."""
    timeout = 60 + spec.guest_memory_mib / 8
    with step("dump-guest-memory kdump-zlib"):
        dump_memory(qmp, out / "flattened.vmcore", "kdump-zlib", timeout)
    if set(formats) & {"elf", *FROM_ELF}:
        with step("dump-guest-memory ELF"):
            dump_memory(qmp, out / "elf.vmcore", None, timeout)


#: Every dump format a sample can have: file name, whether makedumpfile filtered it, and
#: what writes it. "kdump" is QEMU's kdump-zlib after makedumpfile -R; "flattened" is the
#: same as QEMU 7.2 wrote it (makedumpfile's flattened stream); "makedumpfile" and "lzo"
#: are makedumpfile -c and -l -d LEVEL of the ELF; "snappy" and "zstd" are the
#: "makedumpfile" dump with every page recompressed (recompress_kdump: neither QEMU 7.2
#: nor Debian's makedumpfile 1.7.2 is built with them).
DUMP_FORMATS: dict[str, tuple[str, bool]] = {
    "kdump": ("kdump.vmcore", False),
    "flattened": ("flattened.vmcore", False),
    "elf": ("elf.vmcore", False),
    "makedumpfile": ("filtered.vmcore", True),
    "lzo": ("lzo.vmcore", True),
    "snappy": ("snappy.vmcore", True),
    "zstd": ("zstd.vmcore", True),
}
#: Formats made from the ELF dump by makedumpfile, and their compression option.
FROM_ELF = {"makedumpfile": "-c", "lzo": "-l"}
#: Formats recompressed from the "makedumpfile" dump: the page flag and header status.
RECOMPRESSED = {"snappy": 0x4, "zstd": 0x20}


def dump_entries(out: Path, dump_level: int, formats: tuple[str, ...]) -> list[dict[str, Any]]:
    """The manifest's "dumps" list for a sample directory holding *formats*."""
    return [
        {"path": str(out / name), "format": fmt, "filtered": filtered,
         "dump_level": dump_level if filtered else 0}
        for fmt, (name, filtered) in DUMP_FORMATS.items() if fmt in formats
    ]


def postprocess_dumps(out: Path, dump_level: int, formats: tuple[str, ...]) -> None:
    """
    De-flatten QEMU's kdump, make the makedumpfile -d LEVEL copies from the ELF dump and
    recompress one of them; delete what *formats* does not keep.
    """
    require_tools("makedumpfile")
    flat = out / "flattened.vmcore"
    if "kdump" in formats:
        with step("makedumpfile -R (QEMU writes kdump in the flattened format)"), \
                flat.open("rb") as source:
            run_binary_stdin(["makedumpfile", "-R", str(out / "kdump.vmcore")], source)
    if "flattened" not in formats:
        flat.unlink()
    needed = {fmt for fmt in FROM_ELF if fmt in formats}
    if set(RECOMPRESSED) & set(formats):
        needed.add("makedumpfile")
    if needed:
        with elf_fixed_for_makedumpfile(out / "elf.vmcore"):
            for fmt in sorted(needed):
                option = FROM_ELF[fmt]
                with step(f"makedumpfile {option} -d {dump_level}"):
                    run(["makedumpfile", option, "-d", str(dump_level), str(out / "elf.vmcore"),
                         str(out / DUMP_FORMATS[fmt][0])])
    for fmt, flag in RECOMPRESSED.items():
        if fmt in formats:
            with step(f"recompress the filtered dump's pages with {fmt}"):
                recompress_kdump(out / DUMP_FORMATS["makedumpfile"][0],
                                 out / DUMP_FORMATS[fmt][0], flag)
    for fmt in needed - set(formats):
        (out / DUMP_FORMATS[fmt][0]).unlink()
    if "elf" not in formats:
        (out / "elf.vmcore").unlink(missing_ok=True)
    for dump in out.glob("*.vmcore"):
        dump.chmod(0o644)  # QEMU creates them 0400/0600; they hold a throwaway guest


@contextlib.contextmanager
def elf_fixed_for_makedumpfile(path: Path) -> Iterator[None]:
    """
    The ELF dump at *path* with its headers fixed for makedumpfile (fix_qemu_elf_header)
    while the block runs, then restored byte for byte: no copy of a dump as large as the
    guest's memory.
    """
    with path.open("rb") as handle:
        header = handle.read(64)
        phoff, = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        handle.seek(0)
        saved = handle.read(max(phoff, 64) + phentsize * phnum)
    fix_qemu_elf_header(path)
    try:
        yield
    finally:
        with path.open("r+b") as handle:
            handle.write(saved)


def recompress_kdump(source: Path, dest: Path, flag: int) -> None:
    """
    Write *dest*: the kdump-compressed *source* (zlib or raw pages) with every page
    compressed by the library of page flag *flag* (0x4 snappy, 0x20 zstd), stored raw
    where that does not make it smaller, as makedumpfile does; headers, bitmaps and the
    order of pages unchanged, the header's status naming the new compression.
    Descriptors that share data (makedumpfile's one zero page) still share it.
    """
    import ctypes
    import zlib

    compress = _compressor(ctypes, flag)
    with source.open("rb") as src, dest.open("wb") as out:
        head = src.read(444)
        block_size, sub_blocks, bitmap_blocks = struct.unpack_from("<iiI", head, 428)
        src.seek(block_size * (1 + sub_blocks))
        bitmap_bytes = bitmap_blocks * block_size
        bitmap2 = src.read(bitmap_bytes)[bitmap_bytes // 2:]
        pages = sum(bin(byte).count("1") for byte in bitmap2)
        descs_offset = block_size * (1 + sub_blocks + bitmap_blocks)
        src.seek(0)
        prefix = bytearray(src.read(descs_offset))
        struct.pack_into("<I", prefix, 424, flag)  # disk_dump_header.status
        src.seek(descs_offset)
        descs = [struct.unpack_from("<qIIQ", raw, i * 24)
                 for raw in [src.read(24 * pages)] for i in range(pages)]
        out.write(prefix)
        data_at = descs_offset + 24 * pages
        moved: dict[int, tuple[int, int, int]] = {}
        new_descs = bytearray()
        out.seek(data_at)
        for offset, size, flags, page_flags in descs:
            if offset not in moved:
                src.seek(offset)
                page = src.read(size)
                if flags & 0x1:
                    page = zlib.decompress(page)
                elif flags:
                    raise BuildError(f"{source}: page flags {flags:#x} are not zlib")
                packed = compress(page)
                stored = (packed, flag) if len(packed) < len(page) else (page, 0)
                moved[offset] = (data_at, len(stored[0]), stored[1])
                out.write(stored[0])
                data_at += len(stored[0])
            new_offset, new_size, new_flags = moved[offset]
            new_descs += struct.pack("<qIIQ", new_offset, new_size, new_flags, page_flags)
        out.seek(descs_offset)
        out.write(new_descs)


def _compressor(ctypes: Any, flag: int) -> Any:
    """A function compressing one page with libsnappy (flag 0x4) or libzstd (0x20)."""
    if flag == 0x4:
        snappy = ctypes.CDLL("libsnappy.so.1")

        def snappy_page(page: bytes) -> bytes:
            size = ctypes.c_size_t(snappy.snappy_max_compressed_length(ctypes.c_size_t(len(page))))
            buf = ctypes.create_string_buffer(size.value)
            if snappy.snappy_compress(page, ctypes.c_size_t(len(page)), buf, ctypes.byref(size)):
                raise BuildError("snappy_compress failed")
            return buf.raw[: size.value]

        return snappy_page
    zstd = ctypes.CDLL("libzstd.so.1")
    zstd.ZSTD_compressBound.restype = ctypes.c_size_t
    zstd.ZSTD_compress.restype = ctypes.c_size_t
    zstd.ZSTD_isError.argtypes = [ctypes.c_size_t]

    def zstd_page(page: bytes) -> bytes:
        bound = zstd.ZSTD_compressBound(ctypes.c_size_t(len(page)))
        buf = ctypes.create_string_buffer(bound)
        got = zstd.ZSTD_compress(buf, ctypes.c_size_t(bound), page, ctypes.c_size_t(len(page)), 1)
        if zstd.ZSTD_isError(ctypes.c_size_t(got)):
            raise BuildError("ZSTD_compress failed")
        return buf.raw[:got]

    return zstd_page


def run_binary_stdin(cmd: list[str], stdin: Any) -> None:
    proc = subprocess.run(cmd, stdin=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).decode(errors="replace")[-3000:]
        raise BuildError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")


# --- The sample -----------------------------------------------------------------------------


def sample_key(spec: SampleSpec, release: str, dump_level: int) -> str:
    """What the dumps depend on: sources, parameters, guest size, kernel, filter level."""
    material = json.dumps({
        "dump_level": dump_level,
        "sources": sources_digest(),
        "params": spec.params(),
        "boot_options": spec.boot_options,
        "guest_memory_mib": spec.guest_memory_mib,
        "topology": spec.topology(),
        "kernel_release": release,
        **({} if spec.formats == SampleSpec.formats else {"formats": spec.formats}),
    }, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


def reusable(manifest_path: Path, key: str, formats: tuple[str, ...]) -> bool:
    """Whether the manifest is of *key* and every dump of *formats* is there."""
    if not manifest_path.exists():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError:
        return False
    dumps = manifest.get("dumps", [])
    return (
        manifest.get("build_key") == key
        and set(formats) <= {dump.get("format") for dump in dumps}
        and all(Path(dump["path"]).exists() for dump in dumps)
    )


def check_planted(counts: dict[str, int], expected: dict[str, Any], spec: SampleSpec,
                  work: Path) -> None:
    """The module's own counts (READY line) against what the manifest will claim."""
    got = tuple(counts.get(f"planted{size}") for size in (32, 64, 128, 96))
    want = (*(expected[f"kmalloc-{size}"]["objects"] for size in (32, 64, 128)), spec.links)
    if got != want:
        raise BuildError(f"module planted {got}, expected {want}\n{serial_tail(work)}")
    got_spread = (counts.get("decoys"), counts.get("cpus"), counts.get("nodes"))
    want_spread = (decoys(spec), spec.cpus, spec.numa_nodes)
    if got_spread != want_spread:
        raise BuildError(f"module spread (decoys, cpus, nodes) {got_spread}, expected "
                         f"{want_spread}\n{serial_tail(work)}")


def boot_and_dump(kernel: Kernel, initrd: Path, spec: SampleSpec, out: Path,
                  expected: dict[str, Any], dump_level: int) -> None:
    """Boot the guest, check what it planted, dump it into out."""
    with tempfile.TemporaryDirectory(prefix="dumpminer-qemu-") as tmp:  # short socket path
        work = Path(tmp)
        qemu = start_qemu(kernel, initrd, spec, work)
        qmp: Qmp | None = None
        try:
            with step("boot to the READY marker"):
                counts = wait_ready(qemu, work, spec.boot_timeout_s)
            check_planted(counts, expected, spec, work)
            qmp = Qmp(work / "qmp.sock")
            make_dumps(qmp, out, spec, spec.formats)
        finally:
            stop_qemu(qemu, qmp)
            if (work / "serial.log").exists():
                shutil.copyfile(work / "serial.log", out / "serial.log")
    postprocess_dumps(out, dump_level, spec.formats)


def vmcoreinfo_of_kdump(path: Path) -> dict[str, str]:
    """
    VMCOREINFO key=value pairs of a kdump-compressed dump: the sub-header in the
    block after the disk_dump_header (block_size at 428) holds its offset and size
    at 32 and 40 (makedumpfile's diskdump_mod.h, header version 3 on, 64-bit).
    """
    with path.open("rb") as handle:
        header = handle.read(432)
        if header[:8] != b"KDUMP   ":
            return {}
        block_size, = struct.unpack_from("<i", header, 428)
        handle.seek(block_size + 32)
        offset, size = struct.unpack("<QQ", handle.read(16))
        handle.seek(offset)
        text = handle.read(size).decode(errors="replace")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def check_vmcoreinfo(dump: Path, kernel: Kernel) -> None:
    """Check that *dump* (ELF, or kdump) carries the VMCOREINFO of *kernel*."""
    info = vmcoreinfo_of_elf(dump) if dump.name == "elf.vmcore" else vmcoreinfo_of_kdump(dump)
    if info.get("OSRELEASE") != kernel.release:
        raise BuildError(f"{dump}: VMCOREINFO OSRELEASE={info.get('OSRELEASE')!r}, "
                         f"expected {kernel.release!r} (was qemu_fw_cfg.ko loaded?)")
    build_id = info.get("BUILD-ID")
    if build_id and build_id != kernel.build_id:
        raise BuildError(f"{dump}: BUILD-ID {build_id} != vmlinux {kernel.build_id}")


def build_sample(sample: str = "seed", series: str = DEFAULT_SERIES,
                 cache_dir: str | Path | None = None, force: bool = False,
                 formats: tuple[str, ...] | None = None) -> Path:
    """
    Build (or reuse) one sample; return the path of its manifest.json. *formats*
    (DUMP_FORMATS) replaces the sample's own list, e.g. to make the story's dump in
    every format for the benchmark.
    """
    spec = SAMPLES.get(sample)
    if spec is None:
        raise BuildError(f"unknown sample {sample!r}; known: {sorted(SAMPLES)}")
    if formats is not None:
        unknown = sorted(set(formats) - set(DUMP_FORMATS))
        if unknown or not formats:
            raise BuildError(f"unknown dump formats {unknown}; known: {sorted(DUMP_FORMATS)}")
        spec = dataclasses.replace(spec, formats=tuple(f for f in DUMP_FORMATS if f in formats))
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    cache = cache.resolve()
    final = cache / "samples" / series / sample
    manifest_path = final / "manifest.json"
    with locked(cache / ".build.lock"):
        options = apt_options(series, cache)
        release = resolve_release(series, options)
        key = sample_key(spec, release, FILTER_DUMP_LEVEL[series])
        if not force and reusable(manifest_path, key, spec.formats):
            log(f"reusing {manifest_path} (key {key[:12]})")
            return manifest_path
        start = time.monotonic()
        kernel = ensure_kernel(release, cache, options)
        initrd = ensure_initramfs(kernel, cache, options)
        expected = planted(spec)
        staging = final.parent / f".{sample}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            boot_and_dump(kernel, initrd, spec, staging, expected, FILTER_DUMP_LEVEL[series])
            first = next((DUMP_FORMATS[f][0] for f in ("elf", "kdump", "makedumpfile", "lzo")
                          if f in spec.formats), None)
            if first is not None:
                check_vmcoreinfo(staging / first, kernel)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # up to 4 GiB of partial dumps
            raise
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        manifest = {
            "schema": SCHEMA,
            "sample": sample,
            "series": series,
            "kernel_release": kernel.release,
            "kernel_package_version": kernel.package_version,
            "build_id": kernel.build_id,
            "vmlinux": str(kernel.vmlinux),
            "vmlinuz": str(kernel.vmlinuz),
            "system_map": str(kernel.system_map) if kernel.system_map else None,
            "guest_memory_mib": spec.guest_memory_mib,
            "topology": spec.topology(),
            "boot_options": spec.boot_options,
            "dumps": dump_entries(final, FILTER_DUMP_LEVEL[series], spec.formats),
            "module": {"name": "leaky_agent", "params": spec.params(),
                       "decoys_freed": decoys(spec)},
            "planted": expected,
            "string_less": string_less(spec),
            "build_key": key,
            "build_seconds": round(time.monotonic() - start, 1),
        }
        tmp_manifest = final / "manifest.json.tmp"
        tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
        tmp_manifest.rename(manifest_path)
        log(f"built {sample} for {series} ({release}) in {manifest['build_seconds']} s")
        prune_cache(cache)
    return manifest_path


def growth(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Per cache, the planted change from *old* to *new* manifests' "planted" sections."""
    out: dict[str, Any] = {}
    for cache in sorted(set(old) | set(new)):
        before, after = old.get(cache, {}), new.get(cache, {})
        changes: dict[str, dict[str, Any]] = {}
        for kind in ("strings", "templates"):
            a, b = before.get(kind, {}), after.get(kind, {})
            changes[kind] = {
                key: {"old": a.get(key, 0), "new": b.get(key, 0),
                      "delta": b.get(key, 0) - a.get(key, 0)}
                for key in sorted(set(a) | set(b))
            }
        out[cache] = changes
    return out


def build_pair(pair: str = "pair", series: str = DEFAULT_SERIES,
               cache_dir: str | Path | None = None, force: bool = False) -> Path:
    """Build (or reuse) both samples of *pair*; return the path of the pair's manifest."""
    old_name, new_name = PAIRS[pair]
    old_path = build_sample(old_name, series, cache_dir, force)
    new_path = build_sample(new_name, series, cache_dir, force)
    old, new = json.loads(old_path.read_text()), json.loads(new_path.read_text())
    manifest = {
        "schema": PAIR_SCHEMA,
        "pair": pair,
        "series": series,
        "kernel_release": new["kernel_release"],
        "vmlinux": new["vmlinux"],
        "old": {"manifest": str(old_path), "dumps": old["dumps"], "planted": old["planted"],
                "params": old["module"]["params"]},
        "new": {"manifest": str(new_path), "dumps": new["dumps"], "planted": new["planted"],
                "params": new["module"]["params"]},
        "growth": growth(old["planted"], new["planted"]),
    }
    path = old_path.parent.parent / pair / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.rename(path)
    return path


def prune_cache(cache: Path) -> None:
    """Delete kernels and initramfs builds that no manifest in the cache refers to.

    A Debian kernel update moves a series to a new release; the old release's files
    (about 1 GiB) would otherwise stay forever. Called with the build lock held.
    """
    in_use = set()
    for manifest_path in (cache / "samples").glob("*/*/manifest.json"):
        with contextlib.suppress(ValueError, KeyError, OSError):
            in_use.add(json.loads(manifest_path.read_text())["kernel_release"])
    for kind in ("kernels", "build"):
        for old in (cache / kind).glob("*"):
            if old.is_dir() and old.name not in in_use:
                log(f"pruning {old} (no sample uses it)")
                shutil.rmtree(old, ignore_errors=True)
    current = sources_digest()[:16]
    for release_dir in (cache / "build").glob("*"):
        for old in release_dir.glob("*"):
            if old.is_dir() and old.name != current:
                shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", default="seed", choices=sorted([*SAMPLES, *PAIRS]))
    parser.add_argument("--series", default=DEFAULT_SERIES, choices=sorted(SERIES_METAPACKAGES))
    parser.add_argument("--cache-dir", help="default: $DUMPMINER_CACHE or ~/.cache/dumpminer")
    parser.add_argument("--force", action="store_true", help="rebuild the dumps even if current")
    parser.add_argument("--formats", help="comma-separated dump formats instead of the "
                        f"sample's own (of {', '.join(DUMP_FORMATS)})")
    args = parser.parse_args(argv)
    try:
        if args.sample in PAIRS:
            path = build_pair(args.sample, args.series, args.cache_dir, args.force)
        else:
            formats = tuple(args.formats.split(",")) if args.formats else None
            path = build_sample(args.sample, args.series, args.cache_dir, args.force, formats)
    except BuildError as error:
        print(f"build failed: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
