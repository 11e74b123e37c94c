"""Who a detection is: its tracklet's entity, an entity whose prototype it matches, or somebody new.

The rules, in the order they apply:
- A detection of a known tracklet follows the tracklet's entity, judged by the tracklet's aggregate:
  - if that entity holds nothing but this tracklet and the aggregate now matches an older entity, the two are
    merged (one person, first seen as a stranger before the tracklet had enough evidence);
  - if the entity holds other tracklets and the aggregate clearly contradicts them, the tracklet is decided
    again, and its later detections go where that decision says.
- Anything else (a new tracklet, a detection with no track_id) is compared with entity prototypes. An entity
  that could not have been here (the space-time gate) is refused; the best remaining one at or above the
  threshold is joined, unless the runner-up is within the margin (ambiguous), where the policy decides.
- Licence plates (vehicles), before likeness: an entity carrying the detection's plate is joined whatever the
  look (the gate still applies); an entity carrying only other plates is refused; a tracklet whose plate
  contradicts its entity's other tracklets is decided again. A detection without a plate meets none of this.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from reid_stream.identity.gallery import SINGLE, Gallery, Track, norm, plates_conflict, unit
from reid_stream.identity.topology import Topology, gap_conflict, impossible

REDECIDE_MIN_ROWS = 3  # a tracklet contradicts its entity only on more than a frame or two of evidence
MIN_BOX_HEIGHT_FULL_WEIGHT = 128.0  # px; smaller crops are blurrier, so they count for less
_NONE: frozenset[str] = frozenset()  # read-only "no entities" / "no plates"
PLATE_REFUSAL = "plate: carries another licence plate"  # the plates themselves stay out of other entities' events


@dataclass(frozen=True)
class Policy:
    threshold: float
    margin: float
    ambiguous_policy: str  # join_best | new_entity
    merge_threshold: float
    topology: Topology = field(default_factory=Topology)
    max_candidates: int = 5
    contradiction: float = 0.05  # a tracklet this far below the threshold against its entity's other rows


class Incoming(NamedTuple):  # immutable, and several times cheaper to build than a frozen dataclass
    detection_id: str
    camera_id: str
    ts: float
    vector: np.ndarray
    track_key: str
    quality: float
    has_track: bool
    plate: str | None = None  # a vehicle's normalised licence plate


class Candidate(NamedTuple):
    entity_id: str
    similarity: float
    refused: str | None = None


class Merge(NamedTuple):
    survivor: str
    merged: str
    similarity: float


class Decision(NamedTuple):
    entity_id: str
    kind: str  # new | joined | tracklet | merged | plate
    ambiguous: bool = False
    candidates: tuple[Candidate, ...] = ()
    redecided_from: str | None = None
    merge: Merge | None = None
    track_rows: int = 1


def _rank(c: tuple[str, float]) -> tuple[float, str]:
    return -c[1], c[0]


def _suffix_max(scores: np.ndarray) -> np.ndarray:
    """Row r: the maximum of rows r and after, per column."""
    return np.maximum.accumulate(scores[::-1], axis=0)[::-1]


def quality(bbox: tuple[float, float, float, float]) -> float:
    """A detection's weight in its tracklet and entity means: small boxes are blurry and carry less."""
    height = bbox[3] - bbox[1]
    return float(min(1.0, max(0.25, height / MIN_BOX_HEIGHT_FULL_WEIGHT)))


def track_key(camera_id: str, track_id: str | None, detection_id: str) -> tuple[str, bool]:
    """Tracklet key, and whether it is a real track (a detection without track_id is a tracklet of one)."""
    if track_id is None or track_id == "":
        return f"{SINGLE}{detection_id}", False
    return f"{camera_id}|{track_id}", True


class Decider:
    """Decides detections one by one against a Gallery the caller keeps up to date with each decision.

    A batch is scored against every entity in one matrix product (`prime`); as the batch's own decisions
    change entities, `observe` rescores just those entities' columns, so each detection still sees exactly
    what a search after the previous detection would have seen.
    """

    def __init__(self, gallery: Gallery, policy: Policy) -> None:
        self.gallery = gallery
        self.policy = policy
        self._queries: np.ndarray | None = None
        self._primed: np.ndarray | None = None
        # Per slot, from each row on: the best score against the slot's basis (see observe).
        self._suffix = np.zeros((0, 0), dtype=np.float32)
        self._gram: np.ndarray | None = None
        self._position: dict[str, int] = {}
        self._cursor = -1
        self._floor = policy.threshold - policy.margin  # the lowest score a decision looks at
        self._basis = np.zeros((0, gallery.dim), dtype=np.float32)
        self._strayed: list[float] = []  # lists, not arrays: read and written one slot at a time
        self._bounded: list[bool] = []

    def prime(self, queries: np.ndarray, detection_ids: list[str] | None = None,
              gram: np.ndarray | None = None, scores: np.ndarray | None = None) -> None:
        """Score a batch against every entity at once. With the batch's detection ids, an entity founded by one
        of them is scored from the batch's own similarities (one product for all) instead of one per entity.
        `gram` is the batch's own similarity matrix, and `scores` its `Gallery.scores`, if the caller has them
        already (computed after `Gallery.reserve` for the batch, with nothing changed since)."""
        g = self.gallery
        g.reserve(len(queries))  # slots do not move while the batch's scores are indexed by them
        self._queries = np.asarray(queries, dtype=np.float32)
        self._primed = g.scores(self._queries) if scores is None else scores
        self._suffix = _suffix_max(self._primed)
        self._position = {d: n for n, d in enumerate(detection_ids or [])}
        if detection_ids:
            self._gram = gram if gram is not None else self._queries @ self._queries.T
        else:
            self._gram = None
        # Per slot: the mean its kept scores were computed against, how far the mean has strayed from it at
        # most since, and whether the entity is a mean alone (exemplars make the score a max: no simple bound).
        self._basis = g.means.copy()
        self._strayed = [0.0] * len(self._basis)
        self._bounded = g.mean_only().tolist()
        g.released.clear()
        g.changed.clear()
        self._cursor = 0

    def observe(self) -> None:
        """Bring the primed scores of the batch's remaining detections up to date with the gallery.

        A score against a mean that moved by d from the one it was computed against moves by at most d (unit
        queries). So for an entity that is a mean alone, only the detections whose kept score plus that bound
        reaches the floor are rescored; the others stay below the floor, where no decision looks."""
        if self._primed is None or self._queries is None:
            return
        g = self.gallery
        if not (g.dirty or g.released or g.changed):
            return
        g.refresh()
        rest = slice(max(self._cursor, 0), None)  # the detection being decided and those after it
        bounded, strayed = self._bounded, self._strayed
        for slot in g.released:
            self._primed[rest, slot] = -np.inf
            bounded[slot] = False
        for eid in g.changed:
            ent = g.entities.get(eid)
            if ent is None:
                continue
            slot = ent.slot
            if bounded[slot] and ent.block < 0:
                # Its cached mean: the very values refresh just wrote to its row of the means matrix.
                moved = norm(ent.agg.mean() - self._basis[slot])
                was = strayed[slot]
                bound = moved + was + 1e-6  # rows rescored earlier were exact at a mean this near
                if moved > was:
                    strayed[slot] = moved
                # The scores against the basis bound every later one by the same `bound`: if even the best
                # remaining one stays under the floor, so do they all (most changes end here, with one read).
                if self._suffix[rest.start, slot] + bound < self._floor:
                    continue
                near = np.nonzero(self._primed[rest, slot] + bound >= self._floor)[0] + rest.start
                if near.size:
                    self._primed[near, slot] = self._queries[near] @ g.means[slot]
                continue
            only = next(iter(ent.agg.rows)) if len(ent.agg.rows) == 1 else None
            if only in self._position and self._gram is not None:  # its prototype is that detection's vector
                self._primed[rest, slot] = self._gram[rest, self._position[only]]
            else:
                self._primed[rest, slot] = (self._queries[rest] @ g.prototype(eid).T).max(axis=1)
            self._suffix[:, slot] = _suffix_max(self._primed[:, slot])
            self._basis[slot] = g.means[slot]  # every kept score is now exact against this mean
            strayed[slot] = 0.0
            bounded[slot] = ent.block < 0
        g.released.clear()
        g.changed.clear()

    # --- comparing with entities --------------------------------------------------------------

    def _ranked(self, query: np.ndarray, exclude: AbstractSet[str], primed: int | None = None,
                floor: float = -np.inf) -> list[tuple[str, float]]:
        """Entities scoring at least `floor`, best first: from the batch's primed row when the query is that
        detection, else from a product of its own."""
        g = self.gallery
        if primed is not None and self._primed is not None:
            self.observe()
            row = self._primed[primed, :g.high]
        else:
            row = g.scores(query[None, :])[0, :g.high]
        hits = np.nonzero(row >= floor)[0]  # most detections are near nobody: nothing to rank
        if not hits.size:
            return []
        k = self.policy.max_candidates + len(exclude)
        if hits.size > k:
            hits = hits[np.argpartition(-row[hits], k - 1)[:k]]
        owner = g.owner
        out = [(e, s) for e, s in zip([owner[i] for i in hits.tolist()], row[hits].tolist(), strict=True)
               if e is not None and e not in exclude]
        if len(out) > 1:
            out.sort(key=_rank)
        return out

    def _gate(self, entity_id: str, camera_id: str, t0: float, t1: float, own_key: str) -> str | None:
        """Why the entity cannot be this sighting, or None. Vectorised per camera: an entity seen without
        tracks has a segment per detection, hundreds of them."""
        topo = self.policy.topology
        for cam, seen in self.gallery.sightings(entity_id).items():
            # No segment's gap is below this one, from the spans' outer bounds: if it is possible, all are
            # (most entities were last seen a while ago), and the arrays need not be read.
            least = max(t0 - seen.hi, seen.lo - t1)
            if cam == camera_id:
                if least >= 0:
                    continue
            else:
                need = topo.min_transit(camera_id, cam)
                if need is None or (least >= need and least > 0):
                    continue
            bad = impossible(topo, camera_id, cam, np.maximum(t0 - seen.last, seen.first - t1))
            if bad is None:
                continue
            for i in np.nonzero(bad)[0].tolist():
                if seen.keys[i] != own_key:
                    why = gap_conflict(topo, camera_id, t0, t1, cam, float(seen.first[i]), float(seen.last[i]))
                    return f"space_time: {why}"
        return None

    def _refusal(self, entity_id: str, camera_id: str, t0: float, t1: float, own_key: str,
                 plates: AbstractSet[str]) -> str | None:
        if plates and plates_conflict(plates, self.gallery.plates_of(entity_id)):
            return PLATE_REFUSAL
        return self._gate(entity_id, camera_id, t0, t1, own_key)

    def _choose(self, query: np.ndarray, camera_id: str, t0: float, t1: float, own_key: str,
                exclude: AbstractSet[str], primed: int | None = None,
                plates: AbstractSet[str] | None = None) -> tuple[Candidate | None, bool, tuple[Candidate, ...]]:
        """The entity to join (None: nobody), whether it was ambiguous, and the candidates considered; `plates`
        are the sighting's licence plates (an entity carrying only others is refused)."""
        p = self.policy
        near = self._ranked(query, exclude, primed, floor=self._floor)
        if not near:  # most detections: nobody near
            return None, False, ()
        plates = plates or _NONE
        cands = tuple([Candidate(e, round(s, 6), self._refusal(e, camera_id, t0, t1, own_key, plates))
                       for e, s in near[:p.max_candidates]])
        eligible = [c for c in cands if c.refused is None]
        if not eligible or eligible[0].similarity < p.threshold:
            return None, False, cands
        best = eligible[0]
        ambiguous = len(eligible) > 1 and best.similarity - eligible[1].similarity < p.margin
        if ambiguous and self.alike(best.entity_id, eligible[1].entity_id):
            ambiguous = False  # two entities of one person (a merge will join them): either answer is right
        if ambiguous and p.ambiguous_policy == "new_entity":
            return None, True, cands
        return best, ambiguous, cands

    # --- deciding -----------------------------------------------------------------------------

    def decide(self, item: Incoming, primed: int | None = None) -> Decision:
        """Who this detection is; `primed` is its row in the batch given to `prime`, if it was."""
        if primed is not None:
            self._cursor = primed
        track = self.gallery.tracks.get(item.track_key) if item.has_track else None
        if track is not None and track.entity_id in self.gallery.entities:
            return self._follow(track, item)
        return self._fresh(item.vector, item, item.ts, item.ts, _NONE, {item.plate} if item.plate else _NONE, primed)

    def _by_plate(self, query: np.ndarray, item: Incoming, t0: float, t1: float,
                  exclude: AbstractSet[str]) -> tuple[Candidate | None, list[Candidate]]:
        """The entity carrying the sighting's plate (the likeliest, if an operator's split left two) and every
        one that does, with the gate's refusals: a plate seen at two places at once is not trusted."""
        holders = self.gallery.holders.get(item.plate or "", set()) - exclude
        cands = sorted((Candidate(e, round(self.gallery.score(query, e), 6),
                                  self._gate(e, item.camera_id, t0, t1, item.track_key)) for e in holders),
                       key=lambda c: (-c.similarity, c.entity_id))
        return next((c for c in cands if c.refused is None), None), cands

    def _fresh(self, query: np.ndarray, item: Incoming, t0: float, t1: float, exclude: AbstractSet[str],
               plates: AbstractSet[str], primed: int | None = None, redecided_from: str | None = None,
               rows: int = 1) -> Decision:
        """A detection, or a tracklet decided again, from scratch: the entity carrying its plate, else by
        likeness (with `plates` refusing the entities that carry others), else a new entity."""
        best, ambiguous, cands = self._choose(query, item.camera_id, t0, t1, item.track_key, exclude, primed, plates)
        if item.plate:
            owner, by_plate = self._by_plate(query, item, t0, t1, exclude)
            listed = {c.entity_id for c in by_plate}
            cands = (*by_plate, *(c for c in cands if c.entity_id not in listed))
            if owner is not None:  # listed first: it decided, whatever its likeness
                cands = (owner, *(c for c in cands if c.entity_id != owner.entity_id))
                return Decision(owner.entity_id, "plate", False, cands, redecided_from=redecided_from,
                                track_rows=rows)
        if best is None:
            return Decision(item.detection_id, "new", ambiguous, cands, redecided_from=redecided_from,
                            track_rows=rows)
        return Decision(best.entity_id, "joined", ambiguous, cands, redecided_from=redecided_from, track_rows=rows)

    def _follow(self, track: Track, item: Incoming) -> Decision:
        g, p = self.gallery, self.policy
        agg = unit(track.agg.vsum + item.quality * item.vector)
        rows = len(track.agg.rows) + 1
        current = track.entity_id
        t0, t1 = min(track.agg.first, item.ts), max(track.agg.last, item.ts)
        segments = set(g.entities[current].segments)
        apart = g.apart_from(current) if g.apart else set()  # an operator's split is never undone here
        # The tracklet's plates, this detection's included: a tracker's one vehicle, even if OCR misread a frame.
        plates = set(track.plates) | ({item.plate} if item.plate else set())
        held = g.plates_of(current) if plates else set()
        if item.plate and track.key not in g.pinned:  # an operator's merge said its tracklets are one vehicle
            if plates_conflict(plates, g.plates_of(current, without=track.key)):
                # Joined by likeness to a vehicle whose other sightings carry another plate: decided again.
                return self._fresh(agg, item, t0, t1, {current} | apart, plates, redecided_from=current, rows=rows)
            if not held:  # the plate, first read now, may name a vehicle seen before
                owner, by_plate = self._by_plate(agg, item, t0, t1, {current} | apart)
                if owner is not None and segments == {track.key}:
                    return Decision(owner.entity_id, "plate", False, tuple(by_plate), track_rows=rows,
                                    merge=Merge(owner.entity_id, current, owner.similarity))
                if owner is not None:
                    return Decision(owner.entity_id, "plate", False, tuple(by_plate), redecided_from=current,
                                    track_rows=rows)
        if segments == {track.key}:
            # The entity is this tracklet alone: with more evidence, is it somebody seen before?
            best, ambiguous, cands = self._choose(agg, item.camera_id, t0, t1, track.key, {current} | apart,
                                                  plates=held | plates)
            if best is not None and not ambiguous:
                return Decision(best.entity_id, "merged", False, cands, merge=Merge(best.entity_id, current,
                                best.similarity), track_rows=rows)
        elif not (item.plate and item.plate in held):  # the plate confirms the entity, whatever the look
            rest = g.score_without(agg, current, track.key)
            if (rows >= REDECIDE_MIN_ROWS and rest is not None and rest < p.threshold - p.contradiction
                    and track.key not in g.pinned):  # an operator said it belongs here
                return self._fresh(agg, item, t0, t1, {current} | apart, plates, redecided_from=current, rows=rows)
        behind = g.left_behind(track)
        if behind in apart:  # split off by an operator: the tracklet's earlier rows stay where they were put
            behind = None
        if behind and g.holders and plates_conflict(g.plates_of(behind), g.plates_of(current) | plates):
            behind = None  # the tracklet left it for a vehicle with another plate: not the same one
        merge = Merge(current, behind, round(g.score(g.entities[behind].agg.mean(), current), 6)) if behind else None
        own = Candidate(current, round(g.score(agg, current), 6))
        return Decision(current, "tracklet", False, (own,), merge=merge, track_rows=rows)

    def convergent(self, entity_ids: set[str]) -> list[Merge]:
        """Pairs among these entities and all others whose means have converged past the merge threshold with
        no space-time conflict between any of their tracklets. The older entity survives. An entity that
        converges with two others within the margin is left alone: which one it is stays ambiguous.

        An entity of one detection is skipped: its decision compared it with every entity a moment ago, at a
        lower bar than a merge's."""
        g, p = self.gallery, self.policy
        ids = sorted(e for e in entity_ids if e in g.entities and len(g.entities[e].agg.rows) > 1)
        if not ids:
            return []
        g.refresh()  # each entity's row of the means matrix is then its (cached) mean: gathered in one step
        slots = [g.entities[e].slot for e in ids]
        means = g.means[slots]
        scores = g.scores(means)  # one product for all of them
        hits = scores >= p.merge_threshold
        hits[np.arange(len(ids)), slots] = False  # each matches itself
        out: list[Merge] = []
        taken: set[str] = set()
        for i in np.nonzero(hits.any(axis=1))[0].tolist():  # most entities are near nobody else
            eid, row, mean = ids[i], scores[i], means[i]
            if eid in taken:
                continue
            eligible = []
            for slot in np.nonzero(row >= p.merge_threshold)[0]:
                other = g.owner[slot]
                if other is None or other == eid or other in taken or other not in g.entities:
                    continue
                if g.apart and frozenset((eid, other)) in g.apart:
                    continue
                if g.holders and plates_conflict(g.plates_of(eid), g.plates_of(other)):
                    continue  # two vehicles with different plates, however alike they look
                mean_sim = float(g.entities[other].agg.mean() @ mean)
                if mean_sim >= p.merge_threshold and not self._entities_conflict(eid, other):
                    eligible.append((mean_sim, other))
            eligible.sort(reverse=True)
            if not eligible or (len(eligible) > 1 and eligible[0][0] - eligible[1][0] < p.margin
                                and not self.alike(eligible[0][1], eligible[1][1])):
                continue
            sim, other = eligible[0]
            first_e, first_o = g.entities[eid].agg.first, g.entities[other].agg.first
            survivor, merged = (eid, other) if (first_e, eid) <= (first_o, other) else (other, eid)
            out.append(Merge(survivor, merged, round(sim, 6)))
            taken |= {eid, other}
        return out

    def alike(self, a: str, b: str) -> bool:
        """Two entities that are one person by the merge rule: their means past the merge threshold, no split
        between them, no plates or tracklets in conflict. Candidates this alike are no ambiguity: they are
        what a new similarity space shows the old one had split (see reid_stream.learn)."""
        g = self.gallery
        if a not in g.entities or b not in g.entities or (g.apart and frozenset((a, b)) in g.apart):
            return False
        if len(g.entities[a].agg.rows) < 2 or len(g.entities[b].agg.rows) < 2:
            return False  # one detection is an outlier as often as not: as in convergent(), it proves nothing
        if g.holders and plates_conflict(g.plates_of(a), g.plates_of(b)):
            return False
        if float(g.entities[a].agg.mean() @ g.entities[b].agg.mean()) < self.policy.merge_threshold:
            return False
        return not self._entities_conflict(a, b)

    def _entities_conflict(self, a: str, b: str) -> bool:
        """Whether any tracklet of one conflicts in space and time with any of the other's (pairs of cameras,
        each compared as a block)."""
        topo = self.policy.topology
        for cam_a, sa in self.gallery.sightings(a).items():
            for cam_b, sb in self.gallery.sightings(b).items():
                gap = np.maximum(sa.first[:, None] - sb.last[None, :], sb.first[None, :] - sa.last[:, None])
                bad = impossible(topo, cam_a, cam_b, gap)
                if bad is not None and any(sa.keys[i] != sb.keys[j] for i, j in zip(*np.nonzero(bad), strict=True)):
                    return True
        return False
