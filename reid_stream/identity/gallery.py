"""Tracklets and entity prototypes, kept up to date row by row, with one matrix to search entities.

Everything here is derived from the stored rows (vector, entity, tracklet key, camera, time, quality, plate), so
a reload rebuilds exactly what the writer had: no prototype or plate index is stored on its own, and none can
drift from its rows across crashes, or outlive them.
"""

from __future__ import annotations

import math
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

EXEMPLARS = 3  # per entity, besides its mean: its heaviest tracklet segments (other views, other lighting)
SINGLE = "det|"  # the tracklet key prefix of a detection without a track id
EXEMPLAR_MIN_ROWS = 2  # an exemplar is an average: a single detection is an outlier as often as not


def norm(v: np.ndarray) -> float:
    # A dot product: np.linalg.norm's generality costs several times more on one short vector, and this runs
    # for every prototype a detection changes.
    return math.sqrt(float(np.dot(v, v)))


def unit(v: np.ndarray) -> np.ndarray:
    return v / max(norm(v), 1e-12)


def plates_conflict(a: AbstractSet[str], b: AbstractSet[str]) -> bool:
    """Two sides that both carry licence plates, none of them shared: two different vehicles."""
    return bool(a) and bool(b) and a.isdisjoint(b)


@dataclass
class Agg:
    """A quality-weighted sum of unit vectors over a set of rows, with their time span.

    The mean and the span are cached: the gate and the prototypes read them far more often than rows come.
    """

    camera_id: str
    # float32: a sum of a few thousand unit vectors keeps ~6 digits, and a reload recomputes it from the rows;
    # float64 doubled the memory of a large store's gallery. None: only the span is kept (the segment of a
    # detection without a track id).
    vsum: np.ndarray | None
    rows: dict[str, float] = field(default_factory=dict)  # detection id -> epoch seconds
    weight: float = 0.0
    _mean: np.ndarray | None = None
    _span: tuple[float, float] | None = None

    def add(self, det: str, vec: np.ndarray, q: float, ts: float) -> None:
        if self.vsum is not None:
            if q == 1.0:
                self.vsum += vec
            else:
                self.vsum += q * vec
        self.weight += q
        if not self.rows:
            self._span = (ts, ts)
        elif self._span is not None:
            self._span = (min(self._span[0], ts), max(self._span[1], ts))
        self.rows[det] = ts
        self._mean = None

    def drop(self, det: str, vec: np.ndarray, q: float) -> None:
        if self.vsum is not None:
            if q == 1.0:  # as in add: the same values, without a temporary
                self.vsum -= vec
            else:
                self.vsum -= q * vec
        self.weight -= q
        self.rows.pop(det, None)
        self._mean = self._span = None

    def _spanned(self) -> tuple[float, float]:
        if self._span is None:
            times = self.rows.values()
            self._span = (min(times), max(times))
        return self._span

    @property
    def first(self) -> float:
        return self._spanned()[0]

    @property
    def last(self) -> float:
        return self._spanned()[1]

    def mean(self) -> np.ndarray:
        if self.vsum is None:
            raise ValueError("this aggregate keeps only its time span")
        if self._mean is None:
            self._mean = unit(self.vsum)
        return self._mean


@dataclass
class Track:
    """A tracklet: every row with one (camera_id, track_id), whichever entity each row went to."""

    key: str
    agg: Agg
    entity_id: str = ""  # the entity of its latest row: where its next detection goes
    latest: float = float("-inf")
    plates: dict[str, int] = field(default_factory=dict)  # plate -> its rows carrying it


class Sightings:
    """One camera's segments of an entity: tracklet keys and first/last epoch seconds, parallel arrays that
    are updated in place as rows come and go (the gate reads them for every candidate)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._index: dict[str, int] = {}
        self._first = np.empty(4)
        self._last = np.empty(4)
        # Bounds on every first and last (widened by put, left as they are by drop): the gate's fast path.
        self.lo = math.inf
        self.hi = -math.inf

    @property
    def first(self) -> np.ndarray:
        return self._first[:len(self.keys)]

    @property
    def last(self) -> np.ndarray:
        return self._last[:len(self.keys)]

    def put(self, key: str, first: float, last: float) -> None:
        i = self._index.get(key)
        if i is None:
            i = self._index[key] = len(self.keys)
            self.keys.append(key)
            if i == len(self._first):
                self._first = np.concatenate([self._first, np.empty(i)])
                self._last = np.concatenate([self._last, np.empty(i)])
        self._first[i], self._last[i] = first, last
        if first < self.lo:
            self.lo = first
        if last > self.hi:
            self.hi = last

    def drop(self, key: str) -> None:
        i = self._index.pop(key)
        end = len(self.keys) - 1
        if i != end:  # swap-remove
            moved = self.keys[end]
            self.keys[i], self._first[i], self._last[i] = moved, self._first[end], self._last[end]
            self._index[moved] = i
        self.keys.pop()


@dataclass
class Entity:
    entity_id: str
    agg: Agg
    segments: dict[str, Agg] = field(default_factory=dict)  # tracklet key -> its rows in this entity
    slot: int = -1  # its row in the means matrix
    block: int = -1  # its block of EXEMPLARS rows in the exemplar matrix, while it has exemplars
    averaged: int = 0  # segments of at least EXEMPLAR_MIN_ROWS detections: its possible exemplars
    plates: dict[str, dict[str, int]] = field(default_factory=dict)  # plate -> tracklet key -> rows carrying it
    _by_camera: dict[str, Sightings] = field(default_factory=dict)

    def exemplars(self) -> list[Agg]:
        """Its heaviest multi-detection segments, when it has more than one segment (else the mean says it all)."""
        if len(self.segments) < 2 or not self.averaged:
            return []
        averaged = [s for s in self.segments.values() if len(s.rows) >= EXEMPLAR_MIN_ROWS]
        return sorted(averaged, key=lambda s: -s.weight)[:EXEMPLARS]

    def by_camera(self) -> dict[str, Sightings]:
        """Its segments' time spans grouped by camera, as arrays: the space-time gate compares them at once."""
        return self._by_camera

    def sighted(self, key: str, camera_id: str) -> None:
        """A segment gained or lost rows: its span in the camera's arrays follows."""
        seg = self.segments.get(key)
        if seg is not None:
            seen = self._by_camera.get(camera_id)
            if seen is None:
                seen = self._by_camera[camera_id] = Sightings()
            seen.put(key, seg.first, seg.last)
            return
        seen = self._by_camera[camera_id]
        seen.drop(key)
        if not seen.keys:
            del self._by_camera[camera_id]


class Row(NamedTuple):  # immutable; built for every detection, where a frozen dataclass cost several times more
    detection_id: str
    entity_id: str
    track_key: str
    camera_id: str
    ts: float
    vector: np.ndarray
    quality: float
    plate: str | None = None  # a vehicle's normalised licence plate


class Gallery:
    """Entities of one (model, type) and their tracklets, searchable by prototype.

    An entity's prototype is its mean and, once it has more than one tracklet segment, the means of its
    EXEMPLARS heaviest segments of several detections; its score is the best of those rows, so a person seen
    from the front and from the back matches both, while each row is an average one odd detection cannot move.
    Means live in one matrix (a slot per entity), exemplars in another (a block per multi-tracklet entity), so
    a batch of queries is two matrix products however many entities there are.
    """

    def __init__(self, dim: int, capacity: int = 256) -> None:
        self.dim = dim
        self.rows: dict[str, Row] = {}
        self.tracks: dict[str, Track] = {}
        self.entities: dict[str, Entity] = {}
        self._means = np.zeros((capacity, dim), dtype=np.float32)
        self._valid = np.zeros(capacity, dtype=bool)
        self.owner: list[str | None] = [None] * capacity
        self._free: list[int] = list(range(capacity - 1, -1, -1))
        self._ex = np.zeros((0, dim), dtype=np.float32)
        self._ex_valid = np.zeros(0, dtype=bool)
        self._block_slot = np.zeros(0, dtype=np.int64)  # the slot each exemplar block belongs to; -1: free
        self._free_blocks: list[int] = []
        self.dirty: set[str] = set()
        self.released: list[int] = []  # slots freed since the last drain (see Decider.observe)
        self.changed: set[str] = set()  # entities rewritten into the matrices since the last drain
        self.high = 0  # slots at and above this were never used: products skip them
        # Cannot-link pairs (an operator split them): no automatic merge or tracklet may join them again.
        self.apart: set[frozenset[str]] = set()
        # Tracklets an operator merged into one entity: never decided again for contradicting each other.
        self.pinned: set[str] = set()
        self.holders: dict[str, set[str]] = {}  # licence plate -> the entities with a row carrying it

    # --- rows in and out ----------------------------------------------------------------------

    def _zeros(self) -> np.ndarray:
        return np.zeros(self.dim, dtype=np.float32)

    def add(self, row: Row) -> None:
        if row.detection_id in self.rows:
            return
        self.rows[row.detection_id] = row
        track: Track | None = None
        if not row.track_key.startswith(SINGLE):  # a detection without a track id is no tracklet to follow
            track = self.tracks.get(row.track_key)
            if track is None:
                track = self.tracks[row.track_key] = Track(row.track_key, Agg(row.camera_id, self._zeros()))
            track.agg.add(row.detection_id, row.vector, row.quality, row.ts)
            if row.ts >= track.latest:
                track.latest, track.entity_id = row.ts, row.entity_id
        ent = self.entities.get(row.entity_id)
        if ent is None:
            ent = self.entities[row.entity_id] = Entity(row.entity_id, Agg(row.camera_id, self._zeros()))
        if row.plate:
            self._count_plate(row, ent, track, 1)
        ent.agg.add(row.detection_id, row.vector, row.quality, row.ts)
        seg = ent.segments.get(row.track_key)
        if seg is None:
            # One detection without a track id: its entity's mean already holds its vector.
            single = row.track_key.startswith(SINGLE)
            seg = ent.segments[row.track_key] = Agg(row.camera_id, None if single else self._zeros())
        seg.add(row.detection_id, row.vector, row.quality, row.ts)
        ent.averaged += len(seg.rows) == EXEMPLAR_MIN_ROWS
        ent.sighted(row.track_key, row.camera_id)
        self.dirty.add(row.entity_id)

    def remove(self, detection_ids: list[str]) -> None:
        """Rows that expired or were evicted: they leave their tracklet and entity."""
        for det in detection_ids:
            row = self.rows.pop(det, None)
            if row is None:
                continue
            track = self.tracks.get(row.track_key)
            if row.plate:
                self._count_plate(row, self.entities[row.entity_id], track, -1)
            if track is not None:
                track.agg.drop(det, row.vector, row.quality)
                if not track.agg.rows:
                    del self.tracks[row.track_key]
            ent = self.entities[row.entity_id]
            ent.agg.drop(det, row.vector, row.quality)
            seg = ent.segments[row.track_key]
            seg.drop(det, row.vector, row.quality)
            ent.averaged -= len(seg.rows) == EXEMPLAR_MIN_ROWS - 1
            if not seg.rows:
                del ent.segments[row.track_key]
            ent.sighted(row.track_key, row.camera_id)
            if not ent.agg.rows:
                self._release(ent)
            else:
                self.dirty.add(ent.entity_id)

    def merge(self, survivor: str, merged: str) -> None:
        """Move every row of `merged` to `survivor` (as the store's merge does)."""
        ent = self.entities.get(merged)
        if ent is None or survivor not in self.entities:
            return
        rows = [self.rows[d] for d in ent.agg.rows]
        self.remove(list(ent.agg.rows))
        for r in rows:
            self.add(r._replace(entity_id=survivor))
        for track in self.tracks.values():
            if track.entity_id == merged:
                track.entity_id = survivor
        if any(merged in pair for pair in self.apart):  # the survivor is who the merged one was kept apart from
            self.apart = {frozenset(survivor if e == merged else e for e in pair) for pair in self.apart}

    def _count_plate(self, row: Row, ent: Entity, track: Track | None, step: int) -> None:
        """A row carrying a plate came (+1) or went (-1): its tracklet's, its entity's and the holders' counts."""
        plate = row.plate
        assert plate is not None
        if track is not None:
            if n := track.plates.get(plate, 0) + step:
                track.plates[plate] = n
            else:
                del track.plates[plate]
        by_key = ent.plates.setdefault(plate, {})
        if n := by_key.get(row.track_key, 0) + step:
            by_key[row.track_key] = n
        else:
            del by_key[row.track_key]
        if by_key:
            self.holders.setdefault(plate, set()).add(ent.entity_id)
            return
        del ent.plates[plate]
        holders = self.holders[plate]
        holders.discard(ent.entity_id)
        if not holders:
            del self.holders[plate]

    def plates_of(self, entity_id: str, without: str | None = None) -> set[str]:
        """The plates an entity's rows carry (those of tracklet `without` left out)."""
        ent = self.entities.get(entity_id)
        if ent is None:
            return set()
        return {p for p, keys in ent.plates.items() if without is None or any(k != without for k in keys)}

    def apart_from(self, entity_id: str) -> set[str]:
        """The entities an operator split this one apart from."""
        return {e for pair in self.apart if entity_id in pair for e in pair if e != entity_id}

    def _release(self, ent: Entity) -> None:
        del self.entities[ent.entity_id]
        self.dirty.discard(ent.entity_id)
        if ent.slot >= 0:
            self._valid[ent.slot] = False
            self.owner[ent.slot] = None
            self._free.append(ent.slot)
            self.released.append(ent.slot)
        self._drop_block(ent)

    # --- the search matrices ------------------------------------------------------------------

    def reserve(self, n: int) -> None:
        """Room for n more entities without moving slots (a batch's scores are indexed by slot)."""
        while len(self._free) < n:
            size = len(self.owner)
            self._means = np.vstack([self._means, np.zeros((size, self.dim), dtype=np.float32)])
            self._valid = np.concatenate([self._valid, np.zeros(size, dtype=bool)])
            self.owner += [None] * size
            self._free = list(range(2 * size - 1, size - 1, -1)) + self._free  # popped last

    def _drop_block(self, ent: Entity) -> None:
        if ent.block >= 0:
            b = ent.block
            self._ex_valid[b * EXEMPLARS:(b + 1) * EXEMPLARS] = False
            self._block_slot[b] = -1
            self._free_blocks.append(b)
            ent.block = -1

    def _take_block(self, ent: Entity) -> None:
        if not self._free_blocks:
            n = max(len(self._block_slot), 16)
            self._ex = np.vstack([self._ex, np.zeros((n * EXEMPLARS, self.dim), dtype=np.float32)])
            self._ex_valid = np.concatenate([self._ex_valid, np.zeros(n * EXEMPLARS, dtype=bool)])
            self._free_blocks = list(range(len(self._block_slot) + n - 1, len(self._block_slot) - 1, -1))
            self._block_slot = np.concatenate([self._block_slot, np.full(n, -1, dtype=np.int64)])
        ent.block = self._free_blocks.pop()
        self._block_slot[ent.block] = ent.slot

    def refresh(self) -> list[str]:
        """Write changed entities' prototypes into the matrices; returns their ids."""
        changed = list(self.dirty)
        for eid in changed:
            ent = self.entities[eid]
            if ent.slot < 0:
                self.reserve(1)
                ent.slot = self._free.pop()  # a released slot before a new one: used slots stay packed low
                self.owner[ent.slot] = eid
                self.high = max(self.high, ent.slot + 1)
            self._means[ent.slot] = ent.agg.mean()
            self._valid[ent.slot] = True
            heaviest = ent.exemplars() if ent.averaged else None  # most entities: no exemplars to look for
            if heaviest:
                if ent.block < 0:
                    self._take_block(ent)
                base = ent.block * EXEMPLARS
                self._ex_valid[base:base + EXEMPLARS] = False
                for j, seg in enumerate(heaviest):
                    self._ex[base + j] = seg.mean()
                    self._ex_valid[base + j] = True
            elif ent.block >= 0:
                self._drop_block(ent)
        self.dirty.clear()
        self.changed.update(changed)
        return changed

    def scores(self, queries: np.ndarray, refresh: bool = True) -> np.ndarray:
        """Each query's score against every entity slot (the best of its prototype rows); free slots -inf.
        Without `refresh` it only reads the matrices, so it may run in another thread (after a refresh)."""
        if refresh:
            self.refresh()
        q = np.asarray(queries, dtype=np.float32)
        out = np.full((len(q), len(self.owner)), -np.inf, dtype=np.float32)
        high = self.high
        out[:, :high] = q @ self._means[:high].T
        out[:, :high][:, ~self._valid[:high]] = -np.inf
        used = np.nonzero(self._block_slot >= 0)[0]
        if used.size:
            rows = (used[:, None] * EXEMPLARS + np.arange(EXEMPLARS)[None, :]).ravel()
            ex = q @ self._ex[rows].T
            ex[:, ~self._ex_valid[rows]] = -np.inf
            best = ex.reshape(len(q), used.size, EXEMPLARS).max(axis=2)
            slots = self._block_slot[used]
            out[:, slots] = np.maximum(out[:, slots], best)
        return out

    @property
    def means(self) -> np.ndarray:
        """The means matrix, a row per slot (read-only to callers)."""
        return self._means

    def mean_only(self) -> np.ndarray:
        """Per slot: a live entity without exemplar rows (its score is its mean's alone)."""
        out = self._valid.copy()
        out[self._block_slot[self._block_slot >= 0]] = False
        return out

    def prototype(self, entity_id: str) -> np.ndarray:
        """An entity's prototype rows (mean first), as in the matrices."""
        ent = self.entities[entity_id]
        return np.asarray([ent.agg.mean()] + [s.mean() for s in ent.exemplars()], dtype=np.float32)

    def score(self, query: np.ndarray, entity_id: str) -> float:
        """One query against one entity, exactly."""
        if entity_id not in self.entities:
            return float("-inf")
        return float((self.prototype(entity_id) @ query).max())

    def score_without(self, query: np.ndarray, entity_id: str, track_key: str) -> float | None:
        """The query against an entity's mean without one tracklet's rows; None if nothing else is left."""
        ent = self.entities.get(entity_id)
        if ent is None:
            return None
        seg = ent.segments.get(track_key)
        if seg is None:
            return float(ent.agg.mean() @ query)
        rest = ent.agg.weight - seg.weight
        if len(ent.segments) < 2 or rest <= 1e-9 or seg.vsum is None or ent.agg.vsum is None:
            return None
        return float(unit(ent.agg.vsum - seg.vsum) @ query)

    def left_behind(self, track: Track) -> str | None:
        """An entity that holds nothing but this tracklet's earlier rows, now that the tracklet went elsewhere:
        it is the same person, and is merged into where the tracklet went."""
        for eid in {self.rows[d].entity_id for d in track.agg.rows} - {track.entity_id}:
            if set(self.entities[eid].segments) == {track.key}:
                return eid
        return None

    def sightings(self, entity_id: str) -> dict[str, Sightings]:
        """An entity's segments by camera (empty for an unknown entity)."""
        ent = self.entities.get(entity_id)
        return ent.by_camera() if ent is not None else {}
