"""
Clustering fragments into templates: ``t.point.00017`` -> ``t.point.<NUM>``,
``/opt/agent/state/kelo.json`` -> ``/opt/agent/state/<*>.json``.

A leak usually comes from one ``kmalloc`` filled by one ``sprintf``: its
fragments differ only where the format string had a conversion, a number
(``%u``, ``%08X``) or a word (``%s``). Clustering finds those conversions in
three steps, each a pure function of the set of fragment texts:

1. **Allocator fill.** A fragment that is one byte repeated (``kkkk``, the
   slab poison of ``slub_debug=P``, or any other fill) joins the one cluster
   of its byte value, ``<fill 'k' x N>``, whatever its length.
2. **Numbers.** Numbers (decimal runs, hex words: :data:`VARIABLE_TOKEN`)
   are masked; fragments with the same masked text form one cluster. A
   number slot whose value differs between members shows as ``<NUM>`` or
   ``<HEX>``.
3. **Words.** Masked texts are split into *tokens* at :data:`SEPARATORS`.
   Clusters with the same separators that differ in exactly one token, a
   word, at the same position merge when at least :data:`MIN_DISTINCT` of
   them do and what stays fixed is recognisable (:func:`recognisable`); the
   token becomes ``<*>``. Positions are tried left to right, so a template
   can gain several word slots.

Steps 2 and 3 never turn punctuation or numbers into ``<*>``: ``t.point.*``
and ``t.point.<NUM>`` are two leaks and stay two clusters, and ``tmp`` and
``usr`` never become ``<*>`` (nothing would stay fixed).

Every fragment belongs to exactly one cluster, so the counts of the clusters
add up to the counts of the fragments. docs/clustering.md gives the rules and
the measurements behind the thresholds.

A tally that ran out of room folds the members of a template into one
:class:`FoldedTemplate` (counts kept exactly, per-member detail bounded);
:func:`cluster_fragments` takes those too, and :class:`TemplateIndex`
matches new texts against them.
"""

from __future__ import annotations

import gc
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter, itemgetter
from typing import NamedTuple, cast

import numpy as np
import numpy.typing as npt

from dumpminer.clustering.noise import all_binary_looking
from dumpminer.extract import _runs
from dumpminer.extract.fragments import EXAMPLES, Fragment

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

#: Bytes that end a token: path, name and key=value punctuation, and space.
SEPARATORS = b"/._-:=@,; "
_SEPARATED = re.compile(rb"([" + re.escape(SEPARATORS) + rb"])")

#: Placeholders in a masked text (never in a fragment: fragments are printable).
NUM = b"\x00"
WILD = b"\x01"
FILL = b"\x02"

_ALNUM = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

#: A word slot needs this many distinct words (clusters) behind it.
MIN_DISTINCT = 3
#: A template with a word slot keeps at least this many letters and digits.
MIN_FIXED_CHARS = 4

#: How many member fragments a cluster lists in the report.
MEMBERS_SHOWN = 10
#: How many values each slot lists (the most frequent).
SLOT_VALUES_SHOWN = 5


@contextmanager
def gc_paused() -> Iterator[None]:
    """
    Pause Python's cycle collector while building many objects that form no
    cycles: fragments, clusters, groups and their lists and dicts. Each
    collection walks every tracked object of the generations it collects,
    and the report of a pointer-noisy cache builds millions of them (on
    huge, collections took 4.5 s of the 8 s spent building its fragments and
    clusters). The collector runs as before afterwards, if it ran before.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def skeleton(text: bytes) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """
    Split *text* into its fixed parts and its number tokens; there is always
    one more fixed part than tokens.
    """
    parts = _SPLIT_TOKENS.split(text)
    return tuple(parts[0::2]), tuple(parts[1::2])


#: Shortest run of one byte that counts as fill ("kk" is text, "kkk" fill).
FILL_MIN_LENGTH = 3


#: What any number token needs: a digit, or eight hex letters in a row.
_MAY_HOLD_NUMBER = re.compile(rb"[0-9]|[A-Fa-f]{8}")


def masked(text: bytes) -> bytes:
    """
    The key *text* clusters by: :data:`FILL` and its byte for a fill, else
    *text* with each number token replaced by :data:`NUM`.
    """
    if len(text) >= FILL_MIN_LENGTH and text.count(text[:1]) == len(text):
        return FILL + text[:1]
    # Many texts have no number at all: one short search instead of the split.
    if _MAY_HOLD_NUMBER.search(text) is None:
        return text
    return NUM.join(_SPLIT_TOKENS.split(text)[0::2])


def recognisable(tokens: Sequence[bytes]) -> bool:
    """
    Whether a template made of *tokens* (some :data:`WILD`) keeps enough
    fixed text to name its leak: at least :data:`MIN_FIXED_CHARS` letters and
    digits outside the word slots, and no more word slots than fixed tokens.
    """
    wild = fixed = chars = 0
    for token in tokens:
        if token == WILD:
            wild += 1
        elif token:
            fixed += 1
            chars += len(token) - len(token.translate(None, _ALNUM))
    return chars >= MIN_FIXED_CHARS and 0 < wild <= fixed


def _is_word(token: bytes) -> bool:
    """Letters, with numbers (:data:`NUM`) inside allowed; or a word slot already."""
    return token == WILD or token.translate(None, NUM).isalpha()


def slot_values(template: bytes, text: bytes) -> list[bytes]:
    """
    The values *text* gives the variable slots of the masked *template* (one
    per :data:`WILD` token and per :data:`NUM`), left to right. *text* must be
    a member of the template.
    """
    if template.startswith(FILL):
        return [b"%d" % len(text)]
    if template.count(WILD) + template.count(NUM) == 1:
        # One slot: the member is the template with the slot filled in.
        head = template.find(WILD) if WILD in template else template.find(NUM)
        return [text[head : len(text) - (len(template) - head - 1)]]
    if WILD not in template:
        return _SPLIT_TOKENS.split(text)[1::2]
    values: list[bytes] = []
    mine = _SEPARATED.split(text)[0::2]
    for token, value in zip(_SEPARATED.split(template)[0::2], mine, strict=True):
        if token == WILD:
            values.append(value)
        elif NUM in token:
            values.extend(_SPLIT_TOKENS.split(value)[1::2])
    return values


def slot_values_all(template: bytes, texts: list[bytes]) -> list[list[bytes]]:
    """:func:`slot_values` of each of *texts*, members of *template*."""
    if template.startswith(FILL):
        return [[b"%d" % len(text)] for text in texts]
    if template.count(WILD) + template.count(NUM) == 1:
        head = template.find(WILD) if WILD in template else template.find(NUM)
        tail = len(template) - head - 1
        return [[text[head : len(text) - tail]] for text in texts]
    return [slot_values(template, text) for text in texts]


@dataclass(slots=True)
class Slot:
    """One variable slot of a template: what kind, how many values, the top ones."""

    #: "word", "num", "hex", or "length" (the length of a fill run).
    kind: str
    distinct: int
    #: False when the tally ran out of room: ``distinct`` is then a lower bound.
    distinct_exact: bool
    #: The most frequent values, with the objects holding each.
    top: list[tuple[bytes, int]]


@dataclass(slots=True)
class FoldedTemplate:
    """
    Counts of the members of one template that a bounded tally folded
    together instead of keeping one entry each: the counts are exact, the
    per-member detail (slot values, distinct members) is bounded.
    """

    #: The masked template (see :func:`masked`, :data:`WILD`).
    key: bytes
    objects: int = 0
    occurrences: int = 0
    in_context: int = 0
    offsets: dict[int, int] = field(default_factory=dict)
    examples: list[int] = field(default_factory=list)
    #: Per slot: objects per value (at most :data:`SLOT_VALUES_KEPT` values).
    values: list[Counter[bytes]] = field(default_factory=list)
    #: Per slot: False once values were dropped for room.
    values_exact: list[bool] = field(default_factory=list)
    #: Per slot: the most distinct values ever held (a lower bound of the true number).
    distinct_floor: list[int] = field(default_factory=list)
    #: False once templates with other slots were merged in (values unknown).
    aligned: bool = True

    def add_values(self, values: list[bytes], objects: int) -> None:
        """Count *objects* objects whose member gave the slots *values*."""
        if not self.values:
            self.values = [Counter() for _ in values]
            self.values_exact = [True] * len(values)
            self.distinct_floor = [0] * len(values)
        if len(values) != len(self.values):
            self.aligned = False
            return
        for slot, value in enumerate(values):
            counter = self.values[slot]
            counter[value] += objects
            if len(counter) > SLOT_VALUES_KEPT:
                # Keep the heavier half: the top values stay right.
                self.distinct_floor[slot] = max(self.distinct_floor[slot], len(counter))
                kept = counter.most_common(SLOT_VALUES_KEPT // 2)
                counter.clear()
                counter.update(dict(kept))
                self.values_exact[slot] = False

    def add_many(self, values: list[list[bytes]], objects: list[int]) -> None:
        """
        :meth:`add_values` of each member (``values[i]``, ``objects[i]``
        objects), in one pass per slot while no slot can run out of room.
        """
        if not values:
            return
        width = len(values[0])
        if not self.values:
            self.add_values(values[0], objects[0])
            values, objects = values[1:], objects[1:]
        room = all(len(c) + len(values) <= SLOT_VALUES_KEPT for c in self.values)
        if not room or any(len(v) != width for v in values):
            for member, count in zip(values, objects, strict=True):
                self.add_values(member, count)
            return
        if width != len(self.values):
            if values:
                self.aligned = False
            return
        for slot, counter in enumerate(self.values):
            column = [member[slot] for member in values]
            if len(set(column)) == len(column) and counter.keys().isdisjoint(column):
                # All new values (the rule for a one-slot template's distinct
                # members): one dict update in C adds them, in this order.
                dict.update(counter, zip(column, objects, strict=True))
                continue
            for value, count in zip(column, objects, strict=True):
                counter[value] += count


#: Values a folded template keeps per slot before it drops the rarest half.
SLOT_VALUES_KEPT = 4096


class TemplateIndex:
    """
    Finds the template a text belongs to among a set of masked templates
    (:class:`FoldedTemplate` keys): by its masked text, or, for templates
    with word slots, by its masked tokens with the slots' positions wild.
    """

    def __init__(self, keys: Iterable[bytes] = ()) -> None:
        self._exact: dict[bytes, bytes] = {}
        #: Separators -> word-slot positions of the templates with that shape.
        self._positions: dict[bytes, set[tuple[int, ...]]] = {}
        for key in keys:
            self.add(key)

    def __bool__(self) -> bool:
        return bool(self._exact)

    def has_word_slots(self) -> bool:
        """Whether a key can fit a template it does not equal (one with word slots)."""
        return bool(self._positions)

    def add(self, key: bytes) -> None:
        self._exact[key] = key
        if WILD in key and not key.startswith(FILL):
            parts = _SEPARATED.split(key)
            tokens = parts[0::2]
            positions = tuple(i for i, token in enumerate(tokens) if token == WILD)
            self._positions.setdefault(b"".join(parts[1::2]), set()).add(positions)

    def find(self, key: bytes) -> bytes | None:
        """The template of a text whose masked form is *key*, if any."""
        found = self._exact.get(key)
        if found is not None or not self._positions or key.startswith(FILL):
            return found
        parts = _SEPARATED.split(key)
        shapes = self._positions.get(b"".join(parts[1::2]))
        if not shapes:
            return None
        tokens = parts[0::2]
        for positions in sorted(shapes):
            if all(_is_word(tokens[i]) for i in positions):
                wild = parts.copy()
                for i in positions:
                    wild[2 * i] = WILD
                found = self._exact.get(b"".join(wild))
                if found is not None:
                    return found
        return None

    def find_all(self, keys: list[bytes]) -> list[bytes | None]:
        """
        :meth:`find` of each of *keys*: one dict pass in C, then a Python
        step only for the keys that could fit a word slot.
        """
        found: list[bytes | None] = list(map(self._exact.get, keys))
        if self._positions:
            wordy = _wordy(_key_flags(keys)) & np.fromiter(
                (f is None for f in found), np.bool_, len(keys)
            )
            for k in np.flatnonzero(wordy).tolist():
                found[k] = self.find(keys[k])
        return found


class TextGroup(NamedTuple):
    """One cluster's worth of texts: indices into what :func:`group_texts` got."""

    #: The masked template (:func:`masked`, with :data:`WILD` word slots).
    key: bytes
    members: list[int]
    folded: list[int]


def _merge_words(units: dict[bytes, TextGroup]) -> dict[bytes, TextGroup]:
    """Step 3: merge groups that differ in one word token, left to right."""
    by_shape: dict[bytes, list[tuple[list[bytes], TextGroup]]] = {}
    # Most noise cannot take part: too few letters and digits, or no separator.
    keys = list(units)
    for k in np.flatnonzero(_wordy(_key_flags(keys))).tolist():
        parts = _SEPARATED.split(keys[k])
        by_shape.setdefault(b"".join(parts[1::2]), []).append((parts, units[keys[k]]))
    for shape_units in by_shape.values():
        if len(shape_units) < 2:
            continue
        if len(shape_units) < MIN_DISTINCT and not any(WILD in g.key for _, g in shape_units):
            continue
        for position in range(0, len(shape_units[0][0]), 2):
            # A token that every group shares cannot become a word slot here.
            if len({parts[position] for parts, _ in shape_units}) < 2:
                continue
            candidates: dict[bytes, list[tuple[list[bytes], TextGroup]]] = {}
            for parts, group in shape_units:
                token = parts[position]
                if token == WILD or token.translate(None, NUM).isalpha():  # _is_word()
                    wild = parts.copy()
                    wild[position] = WILD
                    candidates.setdefault(b"".join(wild), []).append((parts, group))
            merged: list[tuple[list[bytes], TextGroup]] = []
            gone: set[int] = set()
            for key, same in candidates.items():
                if len(same) < 2 or (
                    len(same) < MIN_DISTINCT and all(p[position] != WILD for p, _ in same)
                ):
                    continue
                parts = same[0][0].copy()
                parts[position] = WILD
                if not recognisable(parts[0::2]):
                    continue
                into = TextGroup(key, [], [])
                for _, group in same:
                    into.members.extend(group.members)
                    into.folded.extend(group.folded)
                    gone.add(id(group))
                    del units[group.key]
                units[key] = into
                merged.append((parts, into))
            if gone:
                shape_units = [u for u in shape_units if id(u[1]) not in gone] + merged
    return units


class Grouping(NamedTuple):
    """
    What :func:`group_texts` finds. Most texts of a noisy cache are a
    cluster of their own; they are listed apart, as plain indices, so that
    they cost no Python object until a report needs one.
    """

    #: The groups that are more than one text alone: several texts, a folded
    #: template, a fill, or a key the word step looked at.
    groups: list[TextGroup]
    #: The other texts (indices), each a group of its own, and their keys.
    single: list[int]
    single_keys: list[bytes]


#: key_flags() bits (dumpminer/extract/_runs.c).
_KEY_FILL, _KEY_SEPARATED, _KEY_WILD, _KEY_ALNUM = 1, 2, 4, 8
#: Letters and digits a key needs to take part in the word step: a template's
#: fixed ones and at least one of its word's.
_WORD_STEP_ALNUM = MIN_FIXED_CHARS + 1


def masked_all(texts: list[bytes]) -> list[bytes]:
    """:func:`masked` of each of *texts*, computed in C (dumpminer/extract/_runs.c)."""
    return _runs.mask_numbers(texts)


def _wordy(flags: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """
    Which keys (by their key_flags()) the word step can change: they hold a
    separator and a word slot or enough letters and digits, and are not fill.
    A key it cannot change also fits no folded word template (a member of
    one holds its template's fixed letters and a word).
    """
    wordy: npt.NDArray[np.bool_] = (
        ((flags & _KEY_FILL) == 0)
        & ((flags & _KEY_SEPARATED) != 0)
        & ((flags & (_KEY_WILD | _KEY_ALNUM)) != 0)
    )
    return wordy


def _key_flags(keys: list[bytes]) -> npt.NDArray[np.uint8]:
    return np.frombuffer(_runs.key_flags(keys, SEPARATORS, _WORD_STEP_ALNUM), np.uint8)


def group_texts(
    texts: Sequence[bytes],
    folded: Sequence[bytes] = (),
    keys: Sequence[bytes] | None = None,
    singles: bool = True,
) -> Grouping:
    """
    Group *texts* (distinct fragment texts) and *folded* (keys of
    :class:`FoldedTemplate`) into clusters: the three steps of this module.
    *keys*, if given, are the texts' :func:`masked` forms, computed before.
    Each text and each folded key is in exactly one group. The result depends
    only on the two sets, not on their order (group order aside).

    Step 2 is counting keys in C; only the keys that are more than one text
    alone become :class:`TextGroup` objects, and the other texts are listed
    as plain indices (unless not *singles*: the tally's fold has no use for
    them).
    """
    keys = masked_all(list(texts)) if keys is None else list(keys)
    sizes_by_key = Counter(keys)
    distinct = list(sizes_by_key)
    sizes = np.fromiter(sizes_by_key.values(), np.int64, len(distinct))
    flags = _key_flags(distinct)
    chosen = np.flatnonzero((sizes > 1) | ((flags & _KEY_FILL) != 0) | _wordy(flags)).tolist()
    special = set(map(distinct.__getitem__, chosen))
    special.update(key for key in folded if key in sizes_by_key)
    is_special = np.fromiter(map(special.__contains__, keys), np.bool_, len(keys))
    # Groups in order of their keys' first text, members ascending.
    units: dict[bytes, TextGroup] = {}
    for i in np.flatnonzero(is_special).tolist():
        key = keys[i]
        group = units.get(key)
        if group is None:
            units[key] = TextGroup(key, [i], [])
        else:
            group.members.append(i)
    single: list[int] = []
    single_keys: list[bytes] = []
    if singles:
        single = np.flatnonzero(~is_special).tolist()
        single_keys = list(map(keys.__getitem__, single))
    if folded:
        index = TemplateIndex(folded)
        for j, key in enumerate(folded):
            units.setdefault(key, TextGroup(key, [], [])).folded.append(j)
        # Texts that fit a folded template with word slots join it first.
        if index.has_word_slots():
            for key in [k for k in units if WILD not in k]:
                found = index.find(key)
                if found is not None and found != key:
                    units[found].members.extend(units.pop(key).members)
    return Grouping(list(_merge_words(units).values()), single, single_keys)


@dataclass(slots=True)
class Cluster:
    """Fragments that one format string could have printed."""

    template: bytes
    members: list[Fragment]
    #: The masked template: what makes a cluster (see :func:`masked`).
    key: bytes = b""
    objects: int = 0
    occurrences: int = 0
    in_context: int = 0
    #: Offset inside the object -> runs of members there.
    offsets: dict[int, int] = field(default_factory=dict)
    examples: list[int] = field(default_factory=list)
    #: The variable slots, left to right (empty for a one-member cluster).
    slots: tuple[Slot, ...] = ()
    #: The byte of an allocator-fill cluster (see :func:`masked`), else None.
    fill: int | None = None
    #: Distinct member fragments (a lower bound unless ``members_exact``).
    distinct_members: int = 0
    members_exact: bool = True
    #: Keys of the folded templates counted in (see :class:`FoldedTemplate`).
    folded: tuple[bytes, ...] = ()
    #: With per-slab counts: the cluster's own per-slab sums (not the
    #: members' added: those would miss the cross terms).
    slab_square: float = 0.0
    slab_cross: float = 0.0
    #: Made only of short binary-looking runs (the bytes of a number, not
    #: text: :mod:`dumpminer.clustering.noise`): listed after the others.
    binary: bool = False

    @property
    def typical_offset(self) -> int | None:
        """The offset inside the object where members are found most often."""
        if not self.offsets:
            return None
        return min(self.offsets.items(), key=lambda item: (-item[1], item[0]))[0]


def _slots(
    key: bytes, members: list[Fragment], folded: list[FoldedTemplate]
) -> tuple[list[Slot], bytes]:
    """
    The variable slots of a cluster and its rendered template. Folded
    templates add their kept slot values; one whose values do not line up
    with *key* (it had other slots) makes every slot inexact.
    """
    count = key.count(WILD) + key.count(NUM) if not key.startswith(FILL) else 1
    counters: list[Counter[bytes]] = [Counter() for _ in range(count)]
    exact = [True] * count
    floor = [0] * count
    texts = list(map(_BY_TEXT, members))
    weights = list(map(_BY_OBJECTS, members))
    if count == 1:
        only = counters[0]
        for [value], objects in zip(slot_values_all(key, texts), weights, strict=True):
            only[value] += objects
    else:
        for member in members:
            values = slot_values(key, member.text)
            for counter, value in zip(counters, values, strict=True):
                counter[value] += member.objects
    for entry in folded:
        if entry.key != key or not entry.aligned or len(entry.values) != count:
            exact = [False] * count
            continue
        for slot in range(count):
            counters[slot].update(entry.values[slot])
            exact[slot] = exact[slot] and entry.values_exact[slot]
            floor[slot] = max(floor[slot], entry.distinct_floor[slot])
    fill = key.startswith(FILL)
    slots: list[Slot] = []
    out: list[bytes] = []
    if fill:
        out.append(b"<fill %s x N>" % _quoted(key[1:]))
    pieces = [] if fill else _SEPARATED.split(key)
    slot_stats = iter(zip(counters, exact, floor, strict=True))
    for n, piece in enumerate(pieces):
        if n % 2 or (piece != WILD and NUM not in piece):
            out.append(piece)
            continue
        if piece == WILD:
            slots.append(_slot("word", *next(slot_stats)))
            out.append(b"<*>")
            continue
        numbers = piece.split(NUM)
        out.append(numbers[0])
        for rest in numbers[1:]:
            counter, known, least = next(slot_stats)
            if len(counter) == 1 and known:
                out.append(next(iter(counter)))
            else:
                # One search over all values (joined by a byte it cannot match).
                hexy = _HEX_LETTER.search(b" ".join(counter)) is not None
                slots.append(_slot("hex" if hexy else "num", counter, known, least))
                out.append(b"<HEX>" if hexy else b"<NUM>")
            out.append(rest)
    if fill:
        slots.append(_slot("length", *next(slot_stats)))
    return slots, b"".join(out)


def _quoted(byte: bytes) -> bytes:
    return b'"\'"' if byte == b"'" else b"'" + byte + b"'"


def _slot(kind: str, counter: Counter[bytes], exact: bool, floor: int = 0) -> Slot:
    # Most objects first, ties by value: two stable sorts with C-level keys.
    top = sorted(counter.items(), key=_FIRST)
    top.sort(key=_SECOND, reverse=True)
    return Slot(kind, max(len(counter), floor), exact, top[:SLOT_VALUES_SHOWN])


_FIRST, _SECOND = itemgetter(0), itemgetter(1)
_BY_TEXT = attrgetter("text")
_BY_OBJECTS = attrgetter("objects")
_BY_OCCURRENCES = attrgetter("occurrences")
_BY_IN_CONTEXT = attrgetter("in_context")
_BY_OFFSETS = attrgetter("offsets")
_BY_EXAMPLES = attrgetter("examples")
_BY_COUNTS = attrgetter("objects", "occurrences", "in_context")
_BY_TEMPLATE = attrgetter("template", "key")
_BY_BINARY = attrgetter("binary")


def sort_fragments(fragments: Iterable[Fragment]) -> list[Fragment]:
    """
    *fragments* in report order: most objects first, then most occurrences,
    then most context hits, then by text. Sorted in two stable passes with
    C-level keys: by text, then by the counts, descending.
    """
    ordered = sorted(fragments, key=_BY_TEXT)
    ordered.sort(key=_BY_COUNTS, reverse=True)
    return ordered


def cluster_fragments(
    fragments: Sequence[Fragment],
    folded: Sequence[FoldedTemplate] = (),
    known_masks: dict[bytes, bytes] | None = None,
) -> list[Cluster]:
    """
    Group *fragments* (and the *folded* templates of a tally that ran out of
    room) into clusters, sorted like the report: most objects first. The
    result is the same whatever order the fragments come in. *known_masks*
    (text -> :func:`masked` text), if given, saves computing them again.
    """
    with gc_paused():
        return _cluster_fragments(fragments, folded, known_masks)


def _cluster_fragments(
    fragments: Sequence[Fragment],
    folded: Sequence[FoldedTemplate],
    known_masks: dict[bytes, bytes] | None,
) -> list[Cluster]:
    texts = list(map(_BY_TEXT, fragments))
    if known_masks:
        keys: list[bytes | None] = list(map(known_masks.get, texts))
        if None in keys:
            missing = [k for k, key in enumerate(keys) if key is None]
            for k, key in zip(missing, masked_all([texts[k] for k in missing]), strict=True):
                keys[k] = key
        known = cast(list[bytes], keys)
    else:
        known = masked_all(texts)
    grouping = group_texts(texts, [t.key for t in folded], known)
    # Most noise: a cluster of one, its own template. It shares its member's
    # offsets and examples (neither is changed once built).
    singles = map(fragments.__getitem__, grouping.single)
    clusters = [
        Cluster(
            only.text, [only], key, only.objects, only.occurrences, only.in_context,
            only.offsets, only.examples, distinct_members=1,
        )
        for only, key in zip(singles, grouping.single_keys, strict=True)
    ]  # fmt: skip
    for group in grouping.groups:
        if len(group.members) == 1 and not group.folded and not group.key.startswith(FILL):
            only = fragments[group.members[0]]
            clusters.append(
                Cluster(
                    only.text, [only], group.key, only.objects, only.occurrences,
                    only.in_context, only.offsets, only.examples, distinct_members=1,
                )
            )  # fmt: skip
            continue
        members = sort_fragments(fragments[i] for i in group.members)
        entries = [folded[j] for j in group.folded]
        slots, template = _slots(group.key, members, entries)
        cluster = Cluster(template, members, group.key, slots=tuple(slots))
        if group.key.startswith(FILL):
            cluster.fill = group.key[1]
        offsets: dict[int, int] = {}
        items: list[Fragment | FoldedTemplate] = [*members, *entries]
        cluster.objects = sum(map(_BY_OBJECTS, items))
        cluster.occurrences = sum(map(_BY_OCCURRENCES, items))
        cluster.in_context = sum(map(_BY_IN_CONTEXT, items))
        for item_offsets in map(_BY_OFFSETS, items):
            for at, runs in item_offsets.items():
                offsets[at] = offsets.get(at, 0) + runs
        examples = set(chain.from_iterable(map(_BY_EXAMPLES, items)))
        cluster.distinct_members = len(members)
        if entries:
            # Folded members are known by their slot values only: with one
            # slot, its distinct values are the distinct members.
            widest = max((slot.distinct for slot in slots), default=0)
            cluster.distinct_members = max(len(members), widest)
            cluster.members_exact = len(slots) == 1 and slots[0].distinct_exact
        cluster.folded = tuple(e.key for e in entries)
        cluster.offsets = dict(sorted(offsets.items()))
        cluster.examples = sorted(examples)[:EXAMPLES]
        clusters.append(cluster)
    for cluster in clusters:
        if not cluster.folded and cluster.fill is None:
            cluster.binary = all_binary_looking(map(_BY_TEXT, cluster.members))
    # Text before binary-looking runs; most objects first, then most hits;
    # ties by template (three stable sorts).
    clusters.sort(key=_BY_TEMPLATE)
    clusters.sort(key=_BY_COUNTS, reverse=True)
    clusters.sort(key=_BY_BINARY)
    return clusters
