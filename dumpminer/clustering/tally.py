"""
The tally: counts of every fragment of a walk, fed one batch at a time, in
bounded memory that never loses a leak's template.

Counts live in numpy arrays indexed by a fragment id, so adding a batch is a
few array operations plus one dict lookup per distinct text; the
:class:`~dumpminer.extract.fragments.Fragment` objects are built once, at the end.

Memory is bounded by *max_fragments* distinct texts. A leak with an id per
record (``t.point.<NUM>`` with a million values, a file name per record) has
as many distinct texts as records, each one rare, so dropping the rarest
texts (lossy counting) would drop the leak itself. When the tally is full it
therefore first **folds**: it clusters the texts that came since the last
fold (:func:`dumpminer.clustering.cluster.group_texts`) and moves every member of a
template of three or more, but its few heaviest, into one
:class:`~dumpminer.clustering.cluster.FoldedTemplate` that keeps the counts exactly and
bounds the per-member detail (top slot values). Texts arriving later that fit
a large folded template are counted into it directly; those of small ones
are caught by the next fold. Only texts that fit no template are then
dropped, rarest first, and :attr:`FragmentTally.error_bound` grows by the
largest count dropped: a text still in the tally is short of its true count
by at most that bound. Folding alone loses nothing: while nothing was
dropped (:attr:`FragmentTally.exact`), every cluster's count is exact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from itertools import compress, pairwise, repeat
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from dumpminer.clustering.cluster import (
    FILL,
    MIN_DISTINCT,
    Cluster,
    FoldedTemplate,
    TemplateIndex,
    gc_paused,
    group_texts,
    masked_all,
    slot_values,
    slot_values_all,
)
from dumpminer.extract.fragments import _NO_ADDRESS, EXAMPLES, BatchCounts, Fragment, count_context
from dumpminer.extract.fragments import count_objects as count_objects

#: Distinct fragments a tally keeps before it folds templates and drops the
#: rarest (about 0.5 KiB of memory each once reported).
DEFAULT_MAX_FRAGMENTS = 1_000_000

#: Objects a folded template needs before new texts are matched against it
#: as they arrive (see FragmentTally._route_index).
ROUTE_MIN_OBJECTS = 1000

#: Members of a folded template kept as fragments of their own (the heaviest).
MEMBERS_KEPT = max(10, MIN_DISTINCT)

_EMPTY_I64: npt.NDArray[np.int64] = np.zeros(0, np.int64)

_Triple = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]


def _joined(pieces: list[tuple[npt.NDArray[np.int64], ...]]) -> _Triple:
    """Pieces of three parallel columns (offsets, call-site labels), each column joined."""
    first, second, third = zip(*pieces, strict=True)
    return np.concatenate(first), np.concatenate(second), np.concatenate(third)


@dataclass(frozen=True, slots=True)
class Spread:
    """One cluster's per-slab sums, for sampling intervals (dumpminer/slub/sampling.py)."""

    square: float
    cross: float


class FragmentTally:
    """
    Counts of every fragment, fed one batch of objects at a time; see the
    module docstring for how memory stays bounded.

    Batches can come in any order and from several workers; :meth:`merge`
    adds two tallies, and while nothing was folded or dropped the result
    does not depend on the order.
    """

    def __init__(
        self, max_fragments: int | None = DEFAULT_MAX_FRAGMENTS, per_slab: bool = False
    ) -> None:
        self.max_fragments = max_fragments
        #: Keep (fragment, slab, objects) triples, for per-cluster sampling sums.
        self.per_slab = per_slab
        self.slabs_seen = 0
        self.slab_objects = 0
        self.slab_objects_square = 0
        #: How many counts any kept fragment or cluster may be short by; 0 while exact.
        self.error_bound = 0
        #: Distinct fragments dropped (a text dropped twice counts twice).
        self.dropped_fragments = 0
        #: Runs left out as kernel-pointer bytes (dumpminer/extract/pointers.py).
        self.pointer_runs = 0
        #: Member texts counted into a folded template instead of kept (a
        #: text folded in two batches counts twice).
        self.folded_fragments = 0
        self._index: dict[bytes, int] = {}
        self._texts: list[bytes] = []
        #: The masked form of each text (see cluster.masked), kept across folds.
        self._masks: list[bytes] = []
        #: How many of the first texts the last fold grouped.
        self._examined = 0
        self._objects = np.zeros(0, np.int64)
        self._occurrences = np.zeros(0, np.int64)
        self._in_context = np.zeros(0, np.int64)
        #: The lowest addresses of each fragment, ascending, padded with _NO_ADDRESS.
        self._examples = np.zeros((0, EXAMPLES), np.uint64)
        self._slab_square = np.zeros(0, np.float64)
        self._slab_cross = np.zeros(0, np.float64)
        #: (fragment ids, offsets, runs) pieces, reduced now and then.
        self._offsets: list[tuple[npt.NDArray[np.int64], ...]] = []
        self._offset_entries = 0
        #: Folded templates, in the order they were made; their "id" in the
        #: per-slab triples is -(position + 1).
        self._templates: dict[bytes, FoldedTemplate] = {}
        self._template_ids: dict[bytes, int] = {}
        self._template_index = TemplateIndex()
        #: The templates new texts are matched against as they come: those
        #: with :data:`ROUTE_MIN_OBJECTS` objects (a leak's), not the many
        #: small ones of pointer-byte noise, whose members a fold catches.
        self._route_index = TemplateIndex()
        #: Per-slab triples (fragment or template id, slab, objects) and slab sizes.
        self._spread: list[tuple[npt.NDArray[np.int64], ...]] = []
        self._slab_sizes: list[npt.NDArray[np.int64]] = []
        #: Row labels (allocation call sites, see dumpminer/analysis/callsites.py):
        #: their keys by id, and (fragment or template id, label id, objects)
        #: triples, summed now and then like the offsets.
        self._label_ids: dict[Hashable, int] = {}
        self._labels: list[tuple[npt.NDArray[np.int64], ...]] = []
        self._label_entries = 0
        self._built: dict[bytes, Fragment] | None = None

    def __len__(self) -> int:
        return len(self._texts)

    @property
    def exact(self) -> bool:
        """True while no fragment was ever dropped: every count is exact."""
        return self.dropped_fragments == 0

    @property
    def complete(self) -> bool:
        """True while every distinct fragment is listed (nothing folded or dropped)."""
        return self.exact and not self._templates

    def known_masks(self) -> dict[bytes, bytes]:
        """The masked form of every text (text -> mask), computed as the texts came."""
        return dict(zip(self._texts, self._masks, strict=True))

    @property
    def templates(self) -> list[FoldedTemplate]:
        """The folded templates, for :func:`~dumpminer.clustering.cluster.cluster_fragments`."""
        return list(self._templates.values())

    @property
    def fragments(self) -> dict[bytes, Fragment]:
        """Every fragment counted so far (and not folded or dropped), by text."""
        if self._built is None:
            with gc_paused():
                self._built = self._build_fragments()
        return self._built

    def _build_fragments(self) -> dict[bytes, Fragment]:
        """The :class:`Fragment` of every text, from the arrays."""
        n = len(self._texts)
        ids, at, runs = self._reduced_offsets()
        # The reduced triples are sorted by id: each fragment's offsets
        # are one slice of them. Most fragments have one offset.
        bounds = np.searchsorted(ids, np.arange(n + 1))
        at_list, runs_list = at.tolist(), runs.tolist()
        offsets: list[dict[int, int]] = [
            {at_list[lo]: runs_list[lo]}
            if hi - lo == 1
            else dict(zip(at_list[lo:hi], runs_list[lo:hi], strict=True))
            for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
        ]
        # Rows are ascending with the padding last: keep each row's head.
        table = self._examples[:n]
        kept = np.count_nonzero(table != _NO_ADDRESS, axis=1)
        examples = [row[:k] for row, k in zip(table.tolist(), kept.tolist(), strict=True)]
        fragments = map(
            Fragment,
            self._texts,
            self._objects[:n].tolist(),
            self._occurrences[:n].tolist(),
            self._in_context[:n].tolist(),
            offsets,
            examples,
            self._slab_square[:n].tolist(),
            self._slab_cross[:n].tolist(),
        )
        return dict(zip(self._texts, fragments, strict=True))

    def add_objects(
        self, rows: npt.NDArray[np.uint8], addresses: npt.NDArray[np.uint64], min_length: int
    ) -> None:
        """
        Count the fragments in a batch of objects: row ``i`` of *rows* is the
        bytes of the object at ``addresses[i]``.
        """
        self.absorb(count_objects(rows, addresses, min_length))

    def add_context(self, rows: npt.NDArray[np.uint8], min_length: int) -> None:
        """Count the fragments in a batch of context windows (one per row)."""
        self.absorb(count_context(rows, min_length))

    def absorb(self, counts: BatchCounts) -> None:
        """Add a batch counted by :func:`count_objects` or :func:`count_context`."""
        first_slab = self.slabs_seen
        self.pointer_runs += counts.pointer_runs
        if counts.slab_sizes is not None:
            sizes = counts.slab_sizes
            self.slabs_seen += len(sizes)
            self.slab_objects += int(sizes.sum())
            self.slab_objects_square += int((sizes * sizes).sum())
            if self.per_slab:
                self._slab_sizes.append(sizes)
        if not counts.texts:
            return
        ids = self._ids(counts.texts)
        routed = ids < 0
        if routed.any():
            self._fold_batch(counts, ids)
        if counts.slab_sizes is not None and len(counts.slab_text):
            self._add_spread(ids, counts, first_slab)
        if counts.label_keys and len(counts.label_text):
            self._add_labels(ids[counts.label_text], counts.label_keys, counts, first=True)
        kept = ~routed
        if not kept.all():
            counts, ids = _subset(counts, kept), ids[kept]
        if counts.context:
            self._in_context[ids] += counts.occurrences
        else:
            self._objects[ids] += counts.objects
            self._occurrences[ids] += counts.occurrences
            self._add_offsets(ids[counts.offset_text], counts.offset_at, counts.offset_runs)
            self._add_examples(ids, counts.examples)
        self._bound()

    def merge(self, other: FragmentTally) -> None:
        """Add every count of *other* into this tally."""
        n = len(other)
        # Template codes of *other* (-(id + 1)) -> this tally's codes.
        codes = np.zeros(len(other._template_ids) + 1, np.int64)
        for key, their_id in other._template_ids.items():
            _add_template(self._template(key), other._templates[key])
            codes[their_id + 1] = -(self._template_ids[key] + 1)
        if n or other._spread:
            ids = self._ids(other._texts, route=False)
            self._objects[ids] += other._objects[:n]
            self._occurrences[ids] += other._occurrences[:n]
            self._in_context[ids] += other._in_context[:n]
            their_ids, at, runs = other._reduced_offsets()
            self._add_offsets(ids[their_ids], at, runs)
            self._add_examples(ids, other._examples[:n])
            self._slab_square[ids] += other._slab_square[:n]
            self._slab_cross[ids] += other._slab_cross[:n]
            for who, slab, objects in other._spread:
                mapped = np.where(who >= 0, ids[np.maximum(who, 0)], codes[np.maximum(-who, 0)])
                self._spread.append((mapped, slab + self.slabs_seen, objects))
            keys = list(other._label_ids)
            for who, label, objects in other._labels:
                mapped = np.where(who >= 0, ids[np.maximum(who, 0)], codes[np.maximum(-who, 0)])
                self._add_labels(mapped, keys, _LabelPiece(label, objects))
        self._slab_sizes += other._slab_sizes
        self.slabs_seen += other.slabs_seen
        self.slab_objects += other.slab_objects
        self.slab_objects_square += other.slab_objects_square
        self.error_bound += other.error_bound
        self.dropped_fragments += other.dropped_fragments
        self.pointer_runs += other.pointer_runs
        self.folded_fragments += other.folded_fragments
        self._bound()

    def _cluster_of(
        self, clusters: list[Cluster], who: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """
        The index in *clusters* of each row of *who* (a text id, or -1 - a
        folded template's id), or -1 for a row no cluster holds.
        """
        of_text = np.full(len(self._texts), -1, np.int64)
        # One more entry than templates: np.where reads both sides for every row.
        of_template = np.full(len(self._template_ids) + 1, -1, np.int64)
        for c, cluster in enumerate(clusters):
            for member in cluster.members:
                i = self._index.get(member.text)
                if i is not None:
                    of_text[i] = c
            for key in cluster.folded:
                of_template[self._template_ids[key]] = c
        which: npt.NDArray[np.int64] = np.where(
            who >= 0, of_text[np.maximum(who, 0)], of_template[np.maximum(-who - 1, 0)]
        )
        return which

    def cluster_spreads(self, clusters: list[Cluster]) -> list[Spread]:
        """
        Each cluster's per-slab sums over the slabs read: sum of (objects of
        the slab in the cluster)^2, and of that count times the slab's
        objects. Exact for any clustering, as the tally keeps its per-slab
        triples (sampling reads few slabs).
        """
        if not self._spread:
            return [Spread(0.0, 0.0) for _ in clusters]
        who = np.concatenate([piece[0] for piece in self._spread])
        slab = np.concatenate([piece[1] for piece in self._spread])
        objects = np.concatenate([piece[2] for piece in self._spread]).astype(np.float64)
        which = self._cluster_of(clusters, who)
        known = which >= 0
        which, slab, objects = which[known], slab[known], objects[known]
        sizes = np.concatenate(self._slab_sizes).astype(np.float64)
        pairs, where = np.unique(which * self.slabs_seen + slab, return_inverse=True)
        per_pair = np.bincount(where.ravel(), weights=objects)
        cluster_of_pair = pairs // self.slabs_seen
        square = np.bincount(cluster_of_pair, weights=per_pair * per_pair, minlength=len(clusters))
        cross = np.bincount(
            cluster_of_pair,
            weights=per_pair * sizes[pairs % self.slabs_seen],
            minlength=len(clusters),
        )
        return [Spread(float(s), float(x)) for s, x in zip(square, cross, strict=True)]

    def cluster_labels(self, clusters: list[Cluster]) -> list[dict[Hashable, int]]:
        """
        Each cluster's objects by row label (allocation call site): label key
        -> objects. The counts of a cluster add up to its ``objects`` when
        every row was labelled, and are as exact as that count (exact while
        :attr:`exact`).
        """
        out: list[dict[Hashable, int]] = [{} for _ in clusters]
        if not self._labels:
            return out
        who, label, objects = self._reduced_labels()
        which = self._cluster_of(clusters, who)
        known = which >= 0
        width = len(self._label_ids)
        pairs, where = np.unique(which[known] * width + label[known], return_inverse=True)
        total = np.bincount(where.ravel(), weights=objects[known], minlength=len(pairs))
        keys = list(self._label_ids)
        for pair, count in zip(pairs.tolist(), total.astype(np.int64).tolist(), strict=True):
            out[pair // width][keys[pair % width]] = count
        return out

    def _add_labels(
        self,
        who: npt.NDArray[np.int64],
        keys: list[Hashable],
        counts: BatchCounts | _LabelPiece,
        first: bool = False,
    ) -> None:
        """Keep (who, label, objects) triples, labels given by *keys* made global ids."""
        ids = self._label_ids
        glob = np.array([ids.setdefault(key, len(ids)) for key in keys], np.int64)
        if isinstance(counts, BatchCounts):
            label, objects = counts.label_index, counts.label_objects
        else:
            label, objects = counts.label, counts.objects
        self._labels.append((who, glob[label], objects))
        self._label_entries += len(who)
        if self._label_entries > 4 * len(self._texts) + 100_000:
            self._reduced_labels()

    def _reduced_labels(
        self,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Sum the label triples per (who, label) into one piece."""
        if not self._labels:
            return _EMPTY_I64, _EMPTY_I64, _EMPTY_I64
        who, label, objects = _joined(self._labels)
        width = max(1, len(self._label_ids))
        # who may be negative (a template's code): floor division undoes it.
        pairs, where = np.unique(who * width + label, return_inverse=True)
        total = np.bincount(where.ravel(), weights=objects, minlength=len(pairs))
        reduced = (pairs // width, pairs % width, total.astype(np.int64))
        self._labels = [reduced]
        self._label_entries = len(pairs)
        return reduced

    # --- Ids, and counts that join a folded template ----------------------------

    def _ids(self, texts: list[bytes], route: bool = True) -> npt.NDArray[np.int64]:
        """
        The ids of *texts* (distinct), giving new ones to new texts; a new
        text that fits a folded template gets -(template id + 1) instead.
        Every step is one pass in C (dict lookups, the number masks of new
        texts): a pointer-noisy cache brings millions of new texts.
        """
        self._built = None
        index, known = self._index, self._texts
        ids = np.fromiter(map(index.get, texts, repeat(-1)), np.int64, len(texts))
        new = np.flatnonzero(ids < 0)
        if not len(new):
            return ids
        new_texts = [texts[k] for k in new.tolist()]
        masks = masked_all(new_texts)
        if route and self._route_index:
            found = self._route_index.find_all(masks)
            template_ids: dict[bytes | None, int] = self._template_ids  # type: ignore[assignment]
            codes = np.fromiter(map(template_ids.get, found, repeat(-1)), np.int64, len(found))
            routed = codes >= 0
            if routed.any():
                ids[new[routed]] = -(codes[routed] + 1)
                stay = (~routed).tolist()
                new = new[~routed]
                new_texts = list(compress(new_texts, stay))
                masks = list(compress(masks, stay))
        first = len(known)
        ids[new] = np.arange(first, first + len(new))
        index.update(zip(new_texts, range(first, first + len(new)), strict=True))
        known.extend(new_texts)
        self._masks.extend(masks)
        self._reserve(len(known))
        return ids

    def _template(self, key: bytes) -> FoldedTemplate:
        """The folded template *key*, made if new."""
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = FoldedTemplate(key)
            self._template_ids[key] = len(self._template_ids)
            self._template_index.add(key)
        return template

    def _fold_batch(self, counts: BatchCounts, ids: npt.NDArray[np.int64]) -> None:
        """Count the texts of a batch that fit a folded template into it."""
        keys = list(self._template_ids)  # by id: ids are given in insertion order
        routed = np.flatnonzero(ids < 0).tolist()
        offsets: dict[int, list[tuple[int, int]]] = {}
        if not counts.context:
            rows = np.flatnonzero(ids[counts.offset_text] < 0)
            for text, at, runs in zip(
                counts.offset_text[rows].tolist(),
                counts.offset_at[rows].tolist(),
                counts.offset_runs[rows].tolist(),
                strict=True,
            ):
                offsets.setdefault(text, []).append((at, runs))
        for k in routed:
            template = self._templates[keys[-int(ids[k]) - 1]]
            if counts.context:
                template.in_context += int(counts.occurrences[k])
                continue
            objects = int(counts.objects[k])
            template.objects += objects
            template.occurrences += int(counts.occurrences[k])
            for at, runs in offsets.get(k, ()):
                template.offsets[at] = template.offsets.get(at, 0) + runs
            row = counts.examples[k]
            template.examples = _lowest(template.examples, row[row != _NO_ADDRESS].tolist())
            template.add_values(slot_values(template.key, counts.texts[k]), objects)
            self.folded_fragments += 1

    # --- Per-slab sums (sampling) ------------------------------------------------

    def _add_spread(self, ids: npt.NDArray[np.int64], counts: BatchCounts, first_slab: int) -> None:
        """Add one batch's per-slab sums per fragment, and keep its triples."""
        assert counts.slab_sizes is not None
        n = len(self._texts)
        who = ids[counts.slab_text]
        objects = counts.slab_objects.astype(np.float64)
        size = counts.slab_sizes[counts.slab_index].astype(np.float64)
        mine = who >= 0
        self._slab_square[:n] += np.bincount(
            who[mine], weights=(objects * objects)[mine], minlength=n
        )
        self._slab_cross[:n] += np.bincount(who[mine], weights=(objects * size)[mine], minlength=n)
        if self.per_slab:
            self._spread.append((who, counts.slab_index + first_slab, counts.slab_objects))

    # --- Arrays ------------------------------------------------------------------

    def _reserve(self, n: int) -> None:
        """Make the arrays hold at least *n* fragments."""
        have = len(self._objects)
        if n <= have:
            return
        grow = max(n, 2 * have, 1024) - have
        zeros = np.zeros(grow, np.int64)
        self._objects = np.concatenate([self._objects, zeros])
        self._occurrences = np.concatenate([self._occurrences, zeros])
        self._in_context = np.concatenate([self._in_context, zeros])
        empty = np.full((grow, EXAMPLES), _NO_ADDRESS, np.uint64)
        self._examples = np.concatenate([self._examples, empty])
        floats = np.zeros(grow, np.float64)
        self._slab_square = np.concatenate([self._slab_square, floats])
        self._slab_cross = np.concatenate([self._slab_cross, floats])

    def _add_offsets(
        self,
        ids: npt.NDArray[np.int64],
        at: npt.NDArray[np.int64],
        runs: npt.NDArray[np.int64],
    ) -> None:
        self._offsets.append((ids, at, runs))
        self._offset_entries += len(ids)
        if self._offset_entries > 4 * len(self._texts) + 100_000:
            self._reduced_offsets()

    def _reduced_offsets(
        self,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Sum the offset pieces into one (id, offset, runs) triple of arrays."""
        if not self._offsets:
            return _EMPTY_I64, _EMPTY_I64, _EMPTY_I64
        ids, at, runs = _joined(self._offsets)
        keys, where = np.unique((ids << 32) | at, return_inverse=True)
        total = np.zeros(len(keys), np.int64)
        np.add.at(total, where.ravel(), runs)
        reduced = (keys >> 32, keys & 0xFFFFFFFF, total)
        self._offsets = [reduced]
        self._offset_entries = len(keys)
        return reduced

    def _add_examples(self, ids: npt.NDArray[np.int64], lowest: npt.NDArray[np.uint64]) -> None:
        """
        Merge the lowest addresses *lowest* (one padded row per id in *ids*,
        ids distinct) into the examples table. Only ids whose examples can
        change are touched: after the first batches of a walk that goes up in
        address, the handful of texts that are new or still short of examples.
        """
        table = self._examples[ids]
        needy = np.flatnonzero(lowest[:, 0] < table[:, EXAMPLES - 1])
        if len(needy) == 0:
            return
        both = np.sort(np.concatenate([table[needy], lowest[needy]], axis=1), axis=1)
        # An address seen twice (the same object merged twice) counts once.
        repeated = both[:, 1:] == both[:, :-1]
        if repeated.any():
            both[:, 1:][repeated] = _NO_ADDRESS
            both.sort(axis=1)
        self._examples[ids[needy]] = both[:, :EXAMPLES]

    # --- Bounding memory ------------------------------------------------------------

    def _bound(self) -> None:
        """Fold templates, then drop the rarest texts, once past the bound."""
        n = len(self._texts)
        if self.max_fragments is None or n <= self.max_fragments:
            return
        with gc_paused():
            self._fold_and_drop(n, self.max_fragments)

    def _fold_and_drop(self, n: int, max_fragments: int) -> None:
        """:meth:`_bound` of a tally holding *n* texts, more than *max_fragments*."""
        room = max(1, max_fragments // 2)
        keep, member_of, folds = self._fold(room)
        weight = self._occurrences[:n] + self._in_context[:n]
        if int(keep.sum()) > room:
            # Drop every text at or below the weight of the room-th heaviest;
            # a template's kept members are folded into it instead.
            kept_weight = weight[keep]
            cut = len(kept_weight) - room
            threshold = max(1, int(np.partition(kept_weight, cut)[cut]))
            light_ids = np.flatnonzero(keep & (weight <= threshold))
            light = light_ids.tolist()
            # Kept members of a template, and texts of earlier folds that fit
            # a template made since, are counted into it.
            masks = self._masks
            found = self._template_index.find_all([masks[i] for i in light])
            if member_of:
                members = np.fromiter(member_of, np.int64, len(member_of))
                at = np.searchsorted(light_ids, members)
                hit = at < len(light_ids)
                hit[hit] = light_ids[at[hit]] == members[hit]
                for pos, i in zip(at[hit].tolist(), members[hit].tolist(), strict=True):
                    found[pos] = member_of[i]
            dropped = found.count(None)
            for i, key in zip(light, found, strict=True):
                if key is not None:
                    folds.setdefault(key, []).append(i)
            keep[light_ids] = False
            if dropped:
                self.dropped_fragments += dropped
                self.error_bound += threshold
        self._fold_many(folds)
        self._compact(keep)
        self._examined = len(self._texts)
        self._route_index = TemplateIndex(
            key for key, t in self._templates.items() if t.objects >= ROUTE_MIN_OBJECTS
        )

    def _fold(
        self, room: int
    ) -> tuple[npt.NDArray[np.bool_], dict[int, bytes], dict[bytes, list[int]]]:
        """
        Cluster the texts that came since the last fold, with the templates
        folded so far, and fold every template's members but its heaviest few
        (at most :data:`MEMBERS_KEPT`, fewer when templates are many) into its
        :class:`FoldedTemplate`. Returns which texts stay, the template of
        each member kept, and the members to fold (template key -> text ids;
        :meth:`_bound` adds what it drops and folds them all at once). (Texts
        kept by an earlier fold are not grouped again: :meth:`_bound` folds
        those that fit a template before it drops anything.)
        """
        n = len(self._texts)
        keep = np.ones(n, np.bool_)
        old_keys = list(self._templates)
        first = self._examined
        texts = self._texts
        groups = group_texts(texts[first:], old_keys, self._masks[first:], singles=False).groups
        # A template worth folding into has a few members already (pairs of
        # pointer-byte noise such as "a1b", "a2b" would only cost lookups).
        templates = [
            g for g in groups
            if len(g.members) + MIN_DISTINCT * len(g.folded) >= MIN_DISTINCT
            or g.key.startswith(FILL)
        ]  # fmt: skip
        kept_each = min(MEMBERS_KEPT, room // (2 * len(templates))) if templates else 0
        weight = (self._occurrences[:n] + self._in_context[:n]).tolist()
        member_of: dict[int, bytes] = {}
        folds: dict[bytes, list[int]] = {}
        for group in templates:
            template = self._template(group.key)
            for j in group.folded:
                old = old_keys[j]
                if old != group.key:
                    # Templates that merged on a word slot become one.
                    _add_template(template, self._templates.pop(old), aligned=False)
                    self._remap_template(old, group.key)
            # Heaviest first, ties by text: two stable sorts with C-level keys.
            members = [first + i for i in group.members]
            members.sort(key=texts.__getitem__)
            members.sort(key=weight.__getitem__, reverse=True)
            for i in members[:kept_each]:
                member_of[i] = group.key
            if len(members) > kept_each:
                folds[group.key] = members[kept_each:]
        if folds:
            keep[np.concatenate([np.asarray(ids, np.int64) for ids in folds.values()])] = False
        return keep, member_of, folds

    def _fold_many(self, folds: dict[bytes, list[int]]) -> None:
        """Add the counts of fragments into folded templates: key -> fragment ids."""
        folds = {key: texts for key, texts in folds.items() if texts}
        if not folds:
            return
        # The folded texts, template after template, and where each template starts.
        chosen = np.concatenate([np.asarray(texts, np.int64) for texts in folds.values()])
        sizes = np.fromiter(map(len, folds.values()), np.int64, len(folds))
        starts = np.zeros(len(folds), np.int64)
        np.cumsum(sizes[:-1], out=starts[1:])
        template_of = np.repeat(np.arange(len(folds)), sizes)
        code = np.full(len(self._texts), -1, np.int64)
        code[chosen] = template_of
        keys = list(folds)
        ids, at, runs = self._reduced_offsets()
        which = code[ids]
        sel = which >= 0
        pairs, where = np.unique((which[sel] << 32) | at[sel], return_inverse=True)
        total = np.bincount(where.ravel(), weights=runs[sel], minlength=len(pairs))
        for pair, count in zip(pairs.tolist(), total.astype(np.int64).tolist(), strict=True):
            offsets = self._templates[keys[pair >> 32]].offsets
            offsets[pair & 0xFFFFFFFF] = offsets.get(pair & 0xFFFFFFFF, 0) + count
        objects = np.add.reduceat(self._objects[chosen], starts).tolist()
        occurrences = np.add.reduceat(self._occurrences[chosen], starts).tolist()
        in_context = np.add.reduceat(self._in_context[chosen], starts).tolist()
        lowest = _lowest_per_group(self._examples[chosen], template_of)
        texts_all, objects_all = self._texts, self._objects[chosen].tolist()
        done = 0
        for t, (key, texts) in enumerate(folds.items()):
            template = self._templates[key]
            template.objects += objects[t]
            template.occurrences += occurrences[t]
            template.in_context += in_context[t]
            # (lowest[t] is sorted and distinct already: a new template takes it.)
            template.examples = (
                _lowest(template.examples, lowest[t]) if template.examples else lowest[t]
            )
            values = slot_values_all(key, [texts_all[i] for i in texts])
            template.add_many(values, objects_all[done : done + len(texts)])
            done += len(texts)
            self.folded_fragments += len(texts)
            if self._spread or self._labels:
                self._route_spread(texts, self._template_ids[key])

    def _remap_template(self, old: bytes, new: bytes) -> None:
        """Per-slab triples of template *old* now belong to *new*."""
        old_code, new_code = -(self._template_ids[old] + 1), -(self._template_ids[new] + 1)
        self._spread = [
            (np.where(who == old_code, new_code, who), slab, objects)
            for who, slab, objects in self._spread
        ]
        self._labels = [
            (np.where(who == old_code, new_code, who), label, objects)
            for who, label, objects in self._labels
        ]
        self._template_index = TemplateIndex(self._templates)

    def _route_spread(self, texts: list[int], template_id: int) -> None:
        """Per-slab triples of fragments *texts* now belong to a template."""
        moved = np.zeros(len(self._texts), np.bool_)
        moved[texts] = True
        code = -(template_id + 1)
        self._spread = [
            (np.where((who >= 0) & moved[np.maximum(who, 0)], code, who), slab, objects)
            for who, slab, objects in self._spread
        ]
        self._labels = [
            (np.where((who >= 0) & moved[np.maximum(who, 0)], code, who), label, objects)
            for who, label, objects in self._labels
        ]

    def _compact(self, keep: npt.NDArray[np.bool_]) -> None:
        """Keep only the texts *keep* says, renumbering their ids."""
        n = len(self._texts)
        if keep.all():
            return
        ids, at, runs = self._reduced_offsets()
        new_id = np.cumsum(keep) - 1
        kept_offsets = keep[ids]
        self._offsets = [(new_id[ids[kept_offsets]], at[kept_offsets], runs[kept_offsets])]
        self._offset_entries = int(kept_offsets.sum())
        spread: list[tuple[npt.NDArray[np.int64], ...]] = []
        for who, slab, objects in self._spread:
            alive = (who < 0) | keep[np.maximum(who, 0)]
            who = who[alive]
            spread.append(
                (np.where(who >= 0, new_id[np.maximum(who, 0)], who), slab[alive], objects[alive])
            )
        self._spread = spread
        if self._labels:
            who, label, objects = self._reduced_labels()
            alive = (who < 0) | keep[np.maximum(who, 0)]
            who = who[alive]
            self._labels = [
                (np.where(who >= 0, new_id[np.maximum(who, 0)], who), label[alive], objects[alive])
            ]
            self._label_entries = len(who)
        kept = keep.tolist()
        self._texts = list(compress(self._texts, kept))
        self._masks = list(compress(self._masks, kept))
        self._index = dict(zip(self._texts, range(len(self._texts)), strict=True))
        self._objects = self._objects[:n][keep]
        self._occurrences = self._occurrences[:n][keep]
        self._in_context = self._in_context[:n][keep]
        self._examples = self._examples[:n][keep]
        self._slab_square = self._slab_square[:n][keep]
        self._slab_cross = self._slab_cross[:n][keep]
        self._built = None


class _LabelPiece(NamedTuple):
    """Label triples of another tally, without their ``who`` (mapped apart)."""

    label: npt.NDArray[np.int64]
    objects: npt.NDArray[np.int64]


def _lowest(have: list[int], more: list[int]) -> list[int]:
    """The :data:`EXAMPLES` lowest distinct addresses of two lists."""
    return sorted(set(have).union(more))[:EXAMPLES]


def _lowest_per_group(
    rows: npt.NDArray[np.uint64], group: npt.NDArray[np.int64]
) -> list[list[int]]:
    """
    The :data:`EXAMPLES` lowest distinct addresses of each group of example
    rows (*group* says which group each row is in; groups are 0, 1, ...,
    ascending).
    """
    groups = int(group[-1]) + 1 if len(group) else 0
    real = rows != _NO_ADDRESS
    address = rows[real]
    which = np.broadcast_to(group[:, None], rows.shape)[real]
    order = np.lexsort((address, which))
    address, which = address[order], which[order]
    first = np.ones(len(address), np.bool_)
    first[1:] = (address[1:] != address[:-1]) | (which[1:] != which[:-1])
    address, which = address[first], which[first]
    rank = np.arange(len(which)) - np.searchsorted(which, which)
    shown = rank < EXAMPLES
    address, which = address[shown], which[shown]
    bounds = np.searchsorted(which, np.arange(groups + 1)).tolist()
    listed = address.tolist()
    return [listed[lo:hi] for lo, hi in pairwise(bounds)]


def _add_template(into: FoldedTemplate, other: FoldedTemplate, aligned: bool = True) -> None:
    """
    Add the counts of folded template *other* into *into*. Not *aligned*:
    *other* had another template (a word slot merged it), so its slot values
    do not line up with *into*'s and only make *into*'s inexact.
    """
    into.objects += other.objects
    into.occurrences += other.occurrences
    into.in_context += other.in_context
    for at, runs in other.offsets.items():
        into.offsets[at] = into.offsets.get(at, 0) + runs
    into.examples = _lowest(into.examples, other.examples)
    if not aligned or (into.values and len(other.values) != len(into.values)):
        into.aligned = False
        return
    if not into.values:
        into.values = [Counter() for _ in other.values]
        into.values_exact = [True] * len(other.values)
        into.distinct_floor = [0] * len(other.values)
    for slot, counter in enumerate(other.values):
        into.values[slot].update(counter)
        into.values_exact[slot] = into.values_exact[slot] and other.values_exact[slot]
        into.distinct_floor[slot] = max(
            into.distinct_floor[slot], other.distinct_floor[slot], len(into.values[slot])
        )
    into.aligned = into.aligned and other.aligned


def _subset(counts: BatchCounts, rows: npt.NDArray[np.bool_]) -> BatchCounts:
    """The counts of the texts *rows* selects, renumbered."""
    new_index = np.cumsum(rows) - 1
    keep_offsets = rows[counts.offset_text] if len(counts.offset_text) else counts.offset_text
    return BatchCounts(
        texts=[t for t, k in zip(counts.texts, rows.tolist(), strict=True) if k],
        occurrences=counts.occurrences[rows],
        context=counts.context,
        objects=counts.objects[rows] if len(counts.objects) else counts.objects,
        offset_text=new_index[counts.offset_text[keep_offsets]]
        if len(counts.offset_text)
        else counts.offset_text,
        offset_at=counts.offset_at[keep_offsets] if len(counts.offset_at) else counts.offset_at,
        offset_runs=counts.offset_runs[keep_offsets]
        if len(counts.offset_runs)
        else counts.offset_runs,
        examples=counts.examples[rows] if len(counts.examples) else counts.examples,
    )
