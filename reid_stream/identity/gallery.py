"""Tracklets and entity prototypes, kept up to date row by row, with one matrix to search entities.

Everything here is derived from the stored rows (vector, entity, tracklet key, camera, time, quality), so a
reload rebuilds exactly what the writer had: no prototype is stored on its own, and none can drift from its
rows across crashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EXEMPLARS = 3  # per entity, besides its mean: its heaviest tracklet segments (other views, other lighting)


def unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


@dataclass
class Agg:
    """A quality-weighted sum of unit vectors over a set of rows, with their time span."""

    camera_id: str
    vsum: np.ndarray
    rows: dict[str, float] = field(default_factory=dict)  # detection id -> epoch seconds
    weight: float = 0.0

    def add(self, det: str, vec: np.ndarray, q: float, ts: float) -> None:
        self.vsum += q * vec
        self.weight += q
        self.rows[det] = ts

    def drop(self, det: str, vec: np.ndarray, q: float) -> None:
        self.vsum -= q * vec
        self.weight -= q
        self.rows.pop(det, None)

    @property
    def first(self) -> float:
        return min(self.rows.values())

    @property
    def last(self) -> float:
        return max(self.rows.values())

    def mean(self) -> np.ndarray:
        return unit(self.vsum)


@dataclass
class Track:
    """A tracklet: every row with one (camera_id, track_id), whichever entity each row went to."""

    key: str
    agg: Agg
    entity_id: str = ""  # the entity of its latest row: where its next detection goes
    latest: float = float("-inf")


@dataclass
class Entity:
    entity_id: str
    agg: Agg
    segments: dict[str, Agg] = field(default_factory=dict)  # tracklet key -> its rows in this entity
    slot: int = -1

    def prototype_rows(self) -> list[np.ndarray]:
        heaviest = sorted(self.segments.values(), key=lambda s: -s.weight)[:EXEMPLARS]
        return [self.agg.mean()] + ([s.mean() for s in heaviest] if len(self.segments) > 1 else [])


@dataclass(frozen=True)
class Row:
    detection_id: str
    entity_id: str
    track_key: str
    camera_id: str
    ts: float
    vector: np.ndarray
    quality: float


class Gallery:
    """Entities of one (model, type) and their tracklets, searchable by prototype.

    Each entity owns EXEMPLARS + 1 rows of one matrix: its mean, then its heaviest segments' means. An
    entity's score is the best of its rows, so a person seen from the front and from the back matches both,
    while each row is itself an average that one odd detection cannot move much.
    """

    def __init__(self, dim: int, capacity: int = 256) -> None:
        self.dim = dim
        self.rows: dict[str, Row] = {}
        self.tracks: dict[str, Track] = {}
        self.entities: dict[str, Entity] = {}
        width = EXEMPLARS + 1
        self._matrix = np.zeros((capacity * width, dim), dtype=np.float32)
        self._valid = np.zeros(capacity * width, dtype=bool)
        self._owner: list[str | None] = [None] * capacity
        self._free: list[int] = list(range(capacity - 1, -1, -1))
        self._dirty: set[str] = set()

    # --- rows in and out ----------------------------------------------------------------------

    def add(self, row: Row) -> None:
        if row.detection_id in self.rows:
            return
        self.rows[row.detection_id] = row
        track = self.tracks.get(row.track_key)
        if track is None:
            track = self.tracks[row.track_key] = Track(row.track_key, Agg(row.camera_id, np.zeros(self.dim)))
        track.agg.add(row.detection_id, row.vector, row.quality, row.ts)
        if row.ts >= track.latest:
            track.latest, track.entity_id = row.ts, row.entity_id
        ent = self.entities.get(row.entity_id)
        if ent is None:
            ent = self.entities[row.entity_id] = Entity(row.entity_id, Agg(row.camera_id, np.zeros(self.dim)))
        ent.agg.add(row.detection_id, row.vector, row.quality, row.ts)
        seg = ent.segments.get(row.track_key)
        if seg is None:
            seg = ent.segments[row.track_key] = Agg(row.camera_id, np.zeros(self.dim))
        seg.add(row.detection_id, row.vector, row.quality, row.ts)
        self._dirty.add(row.entity_id)

    def remove(self, detection_ids: list[str]) -> None:
        """Rows that expired or were evicted: they leave their tracklet and entity."""
        for det in detection_ids:
            row = self.rows.pop(det, None)
            if row is None:
                continue
            track = self.tracks[row.track_key]
            track.agg.drop(det, row.vector, row.quality)
            if not track.agg.rows:
                del self.tracks[row.track_key]
            ent = self.entities[row.entity_id]
            ent.agg.drop(det, row.vector, row.quality)
            seg = ent.segments[row.track_key]
            seg.drop(det, row.vector, row.quality)
            if not seg.rows:
                del ent.segments[row.track_key]
            if not ent.agg.rows:
                self._release(ent)
            else:
                self._dirty.add(ent.entity_id)

    def merge(self, survivor: str, merged: str) -> None:
        """Move every row of `merged` to `survivor` (as the store's merge does)."""
        ent = self.entities.get(merged)
        if ent is None or survivor not in self.entities:
            return
        rows = [self.rows[d] for d in ent.agg.rows]
        self.remove(list(ent.agg.rows))
        for r in rows:
            self.add(Row(r.detection_id, survivor, r.track_key, r.camera_id, r.ts, r.vector, r.quality))
        for track in self.tracks.values():
            if track.entity_id == merged:
                track.entity_id = survivor

    def _release(self, ent: Entity) -> None:
        del self.entities[ent.entity_id]
        self._dirty.discard(ent.entity_id)
        if ent.slot >= 0:
            width = EXEMPLARS + 1
            self._valid[ent.slot * width:(ent.slot + 1) * width] = False
            self._owner[ent.slot] = None
            self._free.append(ent.slot)

    # --- search -------------------------------------------------------------------------------

    def _refresh(self) -> None:
        width = EXEMPLARS + 1
        for eid in self._dirty:
            ent = self.entities[eid]
            if ent.slot < 0:
                if not self._free:
                    self._grow()
                ent.slot = self._free.pop()
                self._owner[ent.slot] = eid
            base = ent.slot * width
            protos = ent.prototype_rows()
            self._valid[base:base + width] = False
            for j, vec in enumerate(protos):
                self._matrix[base + j] = vec
                self._valid[base + j] = True
        self._dirty.clear()

    def _grow(self) -> None:
        n = len(self._owner)
        width = EXEMPLARS + 1
        matrix = np.zeros((2 * n * width, self.dim), dtype=np.float32)
        matrix[:n * width] = self._matrix
        valid = np.zeros(2 * n * width, dtype=bool)
        valid[:n * width] = self._valid
        self._matrix, self._valid = matrix, valid
        self._owner += [None] * n
        self._free += list(range(2 * n - 1, n - 1, -1))

    def scores(self, queries: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
        """Each query's score against every entity slot (best of the entity's prototype rows), and the
        slots' owners; empty slots score -inf."""
        self._refresh()
        width = EXEMPLARS + 1
        raw = np.asarray(queries, dtype=np.float32) @ self._matrix.T  # (queries, slots * width)
        raw = np.where(self._valid[None, :], raw, -np.inf)
        return raw.reshape(len(queries), -1, width).max(axis=2), self._owner

    def score(self, query: np.ndarray, entity_id: str) -> float:
        """One query against one entity, exactly (for entities changed since a batch's scores were taken)."""
        ent = self.entities.get(entity_id)
        if ent is None:
            return float("-inf")
        return max(float(p @ query) for p in ent.prototype_rows())

    def score_without(self, query: np.ndarray, entity_id: str, track_key: str) -> float | None:
        """The query against an entity's mean without one tracklet's rows; None if nothing else is left."""
        ent = self.entities.get(entity_id)
        if ent is None:
            return None
        seg = ent.segments.get(track_key)
        if seg is None:
            return float(ent.agg.mean() @ query)
        rest = ent.agg.weight - seg.weight
        if len(ent.segments) < 2 or rest <= 1e-9:
            return None
        return float(unit(ent.agg.vsum - seg.vsum) @ query)

    def left_behind(self, track: Track) -> str | None:
        """An entity that holds nothing but this tracklet's earlier rows, now that the tracklet went elsewhere:
        it is the same person, and is merged into where the tracklet went."""
        for eid in {self.rows[d].entity_id for d in track.agg.rows} - {track.entity_id}:
            if set(self.entities[eid].segments) == {track.key}:
                return eid
        return None

    def sightings(self, entity_id: str) -> list[tuple[str, str, float, float]]:
        """(tracklet key, camera, first, last) of each of an entity's segments."""
        ent = self.entities.get(entity_id)
        if ent is None:
            return []
        return [(k, s.camera_id, s.first, s.last) for k, s in ent.segments.items()]
