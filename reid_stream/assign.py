"""Stage 2, free of Kafka: match each embedded detection, decide its entity, store it.

The only stage that creates entities: its input is keyed by entity type, so each type has one writer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from reid_stream.config import Settings
from reid_stream.errors import DetectionError
from reid_stream.events import DeadLetter, EntityAppearance, MatchEvent, MatchRef
from reid_stream.matching import EntityEmbedding, VectorIndex, assign_entity, merge_matches
from reid_stream.metrics import Metrics
from reid_stream.store import PlannedWrite, ReidStore
from reid_stream.wire import EmbeddedRecord, dead_letter

log = logging.getLogger(__name__)
MAX_CONFLICT_RETRIES = 20
SIMILARITY_DIGITS = 6


@dataclass
class _TypeCache:
    version: int
    index: VectorIndex


class Assigner:
    """Stage 2: match each embedded detection, decide its entity and store it. The single writer of a type.

    It keeps a local copy of the type's embeddings and trusts it only while Redis' version counter says
    nobody else wrote; any other writer makes the commit fail with 'conflict', and the copy is reloaded.
    """

    def __init__(self, settings: Settings, store: ReidStore, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics or Metrics()
        self._caches: dict[tuple[str, str], _TypeCache] = {}

    def invalidate(self) -> None:
        self._caches.clear()

    async def _cache(self, model: str, etype: str, dim: int) -> _TypeCache:
        key = (model, etype)
        cache = self._caches.get(key)
        current = await self.store.version(model, etype)
        if cache is None or cache.version != current or cache.index.dim != dim:
            version, index = await self.store.load_index(model, etype, dim)
            cache = self._caches[key] = _TypeCache(version, index)
        return cache

    def _plan(self, item: EmbeddedRecord, matches: list[tuple[EntityEmbedding, float]], now: float) -> PlannedWrite:
        assignment = assign_entity(item.detection_id, matches, self.settings.similarity_threshold)
        # Built without validation (model_construct): every value comes from a detection stage 1 validated,
        # and validating three models per detection was a measurable share of this single-writer stage.
        # One rounding for both: the match event and the appearance report the same value.
        refs = [MatchRef.model_construct(
            detection_id=m.detection_id, entity_id=m.entity_id or m.detection_id, camera_id=m.camera_id,
            timestamp=m.timestamp, similarity=round(score, SIMILARITY_DIGITS)) for m, score in matches]
        event = MatchEvent.model_construct(
            detection_id=item.detection_id, entity_id=assignment.entity_id, is_new_entity=assignment.is_new_entity,
            entity_type=item.entity_type, camera_id=item.camera_id, camera_name=item.camera_name,
            track_id=item.track_id, timestamp=item.timestamp, model=item.model, matches=refs,
            processed_at=datetime.now(UTC))
        similarity = 1.0 if assignment.is_new_entity else refs[0].similarity  # the founder is itself
        appearance = EntityAppearance.model_construct(
            detection_id=item.detection_id, camera_id=item.camera_id, camera_name=item.camera_name or item.camera_id,
            timestamp=item.timestamp, similarity_score=similarity, attributes=item.attributes, thumbnail_url="")
        return PlannedWrite(event, item.vector, assignment, item.fingerprint, appearance, now, item.image_ref)

    async def assign(self, batch: Sequence[EmbeddedRecord]) -> tuple[list[MatchEvent], list[DeadLetter]]:
        """Match events for every detection (stored ones re-emitted as stored) and dead letters.

        Raises only on infrastructure errors (Redis down); the caller retries the whole batch.
        """
        events: list[MatchEvent] = []
        letters: list[DeadLetter] = []
        markers = await self.store.markers(list({e.detection_id for e in batch}))
        seen: dict[str, str] = {}
        fresh: list[EmbeddedRecord] = []
        for item in batch:
            det_id = item.detection_id
            known = markers.get(det_id, {}).get("fp") or seen.get(det_id)
            if known is None:
                seen[det_id] = item.fingerprint
                fresh.append(item)
            elif known != item.fingerprint:
                letters.append(dead_letter(item.source, DetectionError(
                    "detection_id_conflict", "a different detection with this detection_id was already processed",
                    "store"), det_id))
            elif det_id in markers:  # a redelivery: publish the stored outcome again, store nothing
                events.append(MatchEvent.model_validate(markers[det_id]["event"]))
        groups: dict[tuple[str, str], list[EmbeddedRecord]] = {}
        for item in fresh:
            groups.setdefault((item.model, item.entity_type), []).append(item)
        for (model, etype), items in groups.items():
            group_events, group_letters = await self._assign_group(model, etype, items)
            events.extend(group_events)
            letters.extend(group_letters)
        # Exact in-batch repeats follow their first copy's outcome.
        by_id = {e.detection_id: e for e in events}
        fresh_ids = {id(item) for item in fresh}
        for item in batch:
            det_id = item.detection_id
            if (det_id not in markers and id(item) not in fresh_ids and seen.get(det_id) == item.fingerprint
                    and det_id in by_id):
                events.append(by_id[det_id])
        return events, letters

    def _plan_batch(self, items: list[EmbeddedRecord], cache: _TypeCache, now: float) -> list[PlannedWrite]:
        """Match a batch in order: against the stored vectors, and against the batch's earlier items
        (each with the entity it was just given), both from one matrix product."""
        k, threshold = self.settings.match_top_k, self.settings.similarity_threshold
        vectors = np.stack([i.vector for i in items])
        stored = cache.index.search_many(vectors, k, threshold)
        sims = vectors @ vectors.T
        earlier: dict[int, list[int]] = {}
        for i, j in zip(*np.nonzero(np.tril(sims >= threshold, k=-1)), strict=True):
            earlier.setdefault(int(i), []).append(int(j))
        entries: list[EntityEmbedding] = []
        plans = []
        for n, (item, prior) in enumerate(zip(items, stored, strict=True)):
            in_batch = sorted(((entries[j], float(sims[n, j])) for j in earlier.get(n, ())), key=lambda m: -m[1])
            plan = self._plan(item, merge_matches(prior, in_batch[:k], limit=k), now)
            plans.append(plan)
            entry = EntityEmbedding(item.detection_id, item.camera_id, item.entity_type, item.timestamp, item.vector,
                                    entity_id=plan.assignment.entity_id, model=item.model, stored_at=now)
            entries.append(entry)
            cache.index.add(entry)  # kept in the cache only if the commit succeeds
        return plans

    async def _assign_group(self, model: str, etype: str,
                            items: list[EmbeddedRecord]) -> tuple[list[MatchEvent], list[DeadLetter]]:
        out: list[MatchEvent] = []
        letters: list[DeadLetter] = []
        pending = items
        for _attempt in range(MAX_CONFLICT_RETRIES):
            t0 = time.perf_counter()
            cache = await self._cache(model, etype, pending[0].vector.shape[0])
            now = time.time()
            cache.index.expire(now - self.settings.embedding_ttl_seconds)
            plans = self._plan_batch(pending, cache, now)
            t1 = time.perf_counter()
            results = await self.store.commit(plans, cache.version)
            self.metrics.stage("match", t1 - t0)
            self.metrics.stage("store", time.perf_counter() - t1)
            redo: list[EmbeddedRecord] = []
            for item, plan, res in zip(pending, plans, results, strict=True):
                if res.status == "ok":
                    cache.version = res.version or cache.version
                    cache.index.remove(list(res.evicted))
                    out.append(plan.event)
                elif res.status == "dup" and res.marker is not None:
                    # Stored meanwhile by another writer: same content re-emits, different content is a conflict.
                    if res.marker["fp"] == item.fingerprint:
                        out.append(MatchEvent.model_validate(res.marker["event"]))
                    else:
                        letters.append(dead_letter(item.source, DetectionError(
                            "detection_id_conflict",
                            "a different detection with this detection_id was already processed", "store"),
                            item.detection_id))
                else:
                    redo.append(item)
            if any(res.status != "ok" for res in results):
                # The local copy holds tentative rows that were not stored: reload it.
                self._caches.pop((model, etype), None)
            if not redo:
                return out, letters
            log.info("assignment conflict on %s/%s: %d detections re-matched", model, etype, len(redo))
            pending = redo
        raise RuntimeError(f"gave up after {MAX_CONFLICT_RETRIES} assignment conflicts on {model}/{etype}")
