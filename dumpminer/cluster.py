"""
Clustering fragments into templates: ``t.point.00017`` -> ``t.point.<NUM>``.

A leak usually comes from one ``kmalloc`` filled by one ``sprintf``. Its
fragments differ only where the format string had a conversion. So each
fragment is split into fixed text and *variable tokens* (numbers, hex words),
and fragments with the same fixed text around the same number of tokens form
one cluster. A token slot whose value differs between members is shown as
``<NUM>`` (decimal digits only in every member) or ``<HEX>`` (some member has
hex letters or ``0x``); a slot that has one value in every member stays
literal. So ``SESSION-0A1B2C3D`` and ``SESSION-00012345`` are one cluster,
``SESSION-<HEX>``, as ``%08X`` printed both.

Every fragment belongs to exactly one cluster, so the counts of the clusters
add up to the counts of the fragments.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import attrgetter

from dumpminer.fragments import EXAMPLES, Fragment

#: A variable token: a hex or decimal word standing alone (not glued to
#: letters) that has a digit or is at least 8 hex letters long (``%08X`` can
#: print ``DEADBEEF``), or a run of decimal digits anywhere (``eth0``).
VARIABLE_TOKEN = re.compile(
    rb"(?<![0-9A-Za-z])(?:0[xX][0-9A-Fa-f]+|[0-9A-Fa-f]*[0-9][0-9A-Fa-f]*|[A-Fa-f]{8,})"
    rb"(?![0-9A-Za-z])"
    rb"|[0-9]+"
)
_SPLIT_TOKENS = re.compile(rb"(" + VARIABLE_TOKEN.pattern + rb")")
_HEX_LETTER = re.compile(rb"[A-Fa-fxX]")

#: How many member fragments a cluster lists in the report.
MEMBERS_SHOWN = 10


def skeleton(text: bytes) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """
    Split *text* into its fixed parts and its variable tokens. The fixed parts
    are the cluster key; there is always one more fixed part than tokens.
    """
    # Split around the tokens, kept by the group: fixed, token, fixed, ...
    parts = _SPLIT_TOKENS.split(text)
    return tuple(parts[0::2]), tuple(parts[1::2])


def cluster_key(text: bytes) -> tuple[bytes, ...]:
    """What puts *text* in its cluster: its fixed parts (see :func:`skeleton`)."""
    return skeleton(text)[0]


@dataclass(slots=True)
class Cluster:
    """Fragments that one format string could have printed."""

    template: bytes
    members: list[Fragment]
    #: The fixed parts around the variable tokens: what makes a cluster.
    key: tuple[bytes, ...] = ()
    objects: int = 0
    occurrences: int = 0
    in_context: int = 0
    #: Offset inside the object -> runs of members there.
    offsets: dict[int, int] = field(default_factory=dict)
    examples: list[int] = field(default_factory=list)
    #: With per-slab counts: the cluster's own per-slab sums (not the
    #: members' added: those would miss the cross terms).
    slab_square: float = 0.0
    slab_cross: float = 0.0

    @property
    def typical_offset(self) -> int | None:
        """The offset inside the object where members are found most often."""
        if not self.offsets:
            return None
        return min(self.offsets.items(), key=lambda item: (-item[1], item[0]))[0]


def _template(fixed: tuple[bytes, ...], members: list[tuple[bytes, ...]]) -> bytes:
    """Render a cluster's template from its fixed parts and members' tokens."""
    out = [fixed[0]]
    for slot in range(len(fixed) - 1):
        values = {tokens[slot] for tokens in members}
        if len(values) == 1:
            out.append(next(iter(values)))
        elif any(_HEX_LETTER.search(value) for value in values):
            out.append(b"<HEX>")
        else:
            out.append(b"<NUM>")
        out.append(fixed[slot + 1])
    return b"".join(out)


_BY_TEXT = attrgetter("text")
_BY_COUNTS = attrgetter("objects", "occurrences", "in_context")
_BY_TEMPLATE = attrgetter("template", "key")


def sort_fragments(fragments: Iterable[Fragment]) -> list[Fragment]:
    """
    *fragments* in report order: most objects first, then most occurrences,
    then most context hits, then by text. Sorted in two stable passes with
    C-level keys: by text, then by the counts, descending.
    """
    ordered = sorted(fragments, key=_BY_TEXT)
    ordered.sort(key=_BY_COUNTS, reverse=True)
    return ordered


def cluster_fragments(fragments: Iterable[Fragment]) -> list[Cluster]:
    """
    Group *fragments* into clusters, sorted like the report: most objects
    first. The result is the same whatever order the fragments come in.
    """
    groups: dict[tuple[bytes, ...], list[tuple[Fragment, list[bytes]]]] = {}
    split = _SPLIT_TOKENS.split
    for fragment in fragments:
        # Fixed parts and tokens alternate: see skeleton().
        parts = split(fragment.text)
        groups.setdefault(tuple(parts[0::2]), []).append((fragment, parts))
    clusters = []
    for fixed, entries in groups.items():
        if len(entries) == 1:
            # Most noise: a cluster of one, its own template. It shares its
            # member's offsets and examples (neither is changed once built).
            only = entries[0][0]
            clusters.append(
                Cluster(
                    only.text, [only], fixed, only.objects, only.occurrences,
                    only.in_context, only.offsets, only.examples,
                )
            )  # fmt: skip
            continue
        members = sort_fragments(fragment for fragment, _ in entries)
        tokens = [tuple(parts[1::2]) for _, parts in entries]
        cluster = Cluster(_template(fixed, tokens), members, fixed)
        examples: set[int] = set()
        offsets: Counter[int] = Counter()
        for member in members:
            cluster.objects += member.objects
            cluster.occurrences += member.occurrences
            cluster.in_context += member.in_context
            offsets.update(member.offsets)
            examples.update(member.examples)
        cluster.offsets = dict(sorted(offsets.items()))
        cluster.examples = sorted(examples)[:EXAMPLES]
        clusters.append(cluster)
    # Most objects first, then most hits; ties by template (two stable sorts).
    clusters.sort(key=_BY_TEMPLATE)
    clusters.sort(key=_BY_COUNTS, reverse=True)
    return clusters
