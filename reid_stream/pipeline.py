"""The two stages, free of Faust: embed (validate, load, crop, encode) and assign (match, store, decide).

Stage 1 runs wherever the camera-keyed `detections` partitions land. Its output is re-keyed by entity
type, so stage 2 -- the only stage that creates entities -- has one writer per type at a time.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import struct
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import numpy as np

from reid_stream.config import Settings
from reid_stream.encoder import Encoder
from reid_stream.errors import DetectionError
from reid_stream.events import DeadLetter, Detection, EntityAppearance, MatchEvent, MatchRef
from reid_stream.images import ImageLimits, fetch_url
from reid_stream.matching import EntityEmbedding, VectorIndex, assign_entity, merge_matches
from reid_stream.metrics import Metrics
from reid_stream.prepare import Failed, NeedsFetch, Outcome, PrepareConfig, Preparer, Ready, fingerprint
from reid_stream.store import PlannedWrite, ReidStore

log = logging.getLogger(__name__)
MAX_CONFLICT_RETRIES = 20
ORIGINAL_CARRIED = 64 * 1024  # bytes of the original event that travel with an embedding to stage 2


@dataclass(frozen=True)
class RawEvent:
    """A Kafka message as received, so that a dead letter can carry it back unchanged."""

    value: bytes
    key: bytes | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    timestamp: float | None = None  # the Kafka record's timestamp, seconds since the epoch
    size: int | None = None  # of the original value, when `value` carries only its start


def dead_letter(raw: RawEvent, err: DetectionError, detection_id: str | None = None,
                max_original: int = 1 << 20) -> DeadLetter:
    """A dead letter carrying the original bytes, cut at max_original so the letter itself can be sent."""
    size = raw.size if raw.size is not None else len(raw.value)
    kept = raw.value[:max_original]
    return DeadLetter(
        error_code=err.code, message=err.message[:2000], stage=err.stage, time=datetime.now(UTC),
        original_b64=base64.b64encode(kept).decode(), original_size=size, original_truncated=len(kept) < size,
        original_key_b64=base64.b64encode(raw.key).decode() if raw.key is not None else None,
        source_topic=raw.topic, source_partition=raw.partition, source_offset=raw.offset,
        detection_id=detection_id, details=err.details)


@dataclass
class Embedded:
    """Stage 1's output: the detection without its image, its vector and where it came from."""

    detection: Detection
    vector: np.ndarray
    model: str
    fingerprint: str
    source: RawEvent = field(default_factory=lambda: RawEvent(b""))


@dataclass
class EmbeddedOut:
    """Stage 1's output before it is packed: the detection as JSON (without its image) and its vector."""

    header: dict[str, Any]
    entity_type: str
    vector: np.ndarray
    model: str
    fingerprint: str
    source: RawEvent

    @classmethod
    def of(cls, det: Detection, vector: np.ndarray, model: str, source: RawEvent) -> EmbeddedOut:
        return cls(det.model_dump(mode="json", exclude={"image_b64"}), det.entity_type, vector, model,
                   fingerprint(det), source)


WIRE_MAGIC = b"RSE1"


def pack_embedded(items: Sequence[EmbeddedOut]) -> bytes:
    """One `reid-embedded` message for a batch of one model and entity type: a JSON header, the cut
    originals (for dead letters in stage 2, e.g. a detection_id conflict), then the float32 vectors.
    """
    originals = [i.source.value[:ORIGINAL_CARRIED] for i in items]
    header = json.dumps({
        "model": items[0].model, "dim": int(items[0].vector.shape[0]),
        "items": [{
            "detection": i.header, "fingerprint": i.fingerprint,
            "source": {"topic": i.source.topic, "partition": i.source.partition, "offset": i.source.offset,
                       "timestamp": i.source.timestamp,
                       "size": i.source.size if i.source.size is not None else len(i.source.value),
                       "key": base64.b64encode(i.source.key).decode() if i.source.key is not None else None,
                       "kept": len(orig)},
        } for i, orig in zip(items, originals, strict=True)],
    }).encode()
    vectors = np.ascontiguousarray(np.stack([i.vector for i in items]), np.float32)
    return b"".join([WIRE_MAGIC, struct.pack(">I", len(header)), header, *originals, vectors.tobytes()])


def unpack_embedded(data: bytes) -> list[Embedded]:
    """The inverse of pack_embedded; raises on anything it did not write."""
    if data[:4] != WIRE_MAGIC:
        raise ValueError("not a reid-embedded batch (bad magic)")
    (n,) = struct.unpack_from(">I", data, 4)
    header = json.loads(data[8: 8 + n])
    pos = 8 + n
    model, dim, items = header["model"], int(header["dim"]), header["items"]
    vectors = np.frombuffer(data, np.float32, count=len(items) * dim, offset=pos + sum(
        int(i["source"]["kept"]) for i in items)).reshape(len(items), dim).copy()
    out = []
    for item, vec in zip(items, vectors, strict=True):
        det, src = item["detection"], item["source"]
        if det.get("image_path") is None and det.get("image_url") is None:
            det["image_b64"] = "-"  # stripped on the wire; keeps the one-reference rule satisfied
        kept = int(src["kept"])
        raw = RawEvent(data[pos: pos + kept], base64.b64decode(src["key"]) if src.get("key") is not None else None,
                       src["topic"], src["partition"], src["offset"], src.get("timestamp"), src.get("size"))
        pos += kept
        out.append(Embedded(Detection.model_validate(det), vec, model, item["fingerprint"], raw))
    return out


class Embedder:
    """Stage 1: raw messages -> EmbeddedOut records and dead letters. Bad input never raises."""

    def __init__(self, settings: Settings, encoder: Encoder, prepare_pool: Executor, model_pool: Executor,
                 http: aiohttp.ClientSession | None = None, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.encoder = encoder
        self.model_pool = model_pool
        self.http = http
        self.metrics = metrics or Metrics()
        self.limits = ImageLimits(settings.image_roots, settings.url_allowed_hosts, settings.max_image_bytes,
                                  settings.max_image_pixels, settings.url_timeout_seconds)
        self._letter = functools.partial(dead_letter, max_original=settings.dlq_max_original_bytes)
        # An inline image at its size limit, base64-encoded, plus room for the other fields.
        max_event_bytes = settings.max_image_bytes * 4 // 3 + 64 * 1024
        self.preparer = Preparer(PrepareConfig(self.limits, encoder.input_size, max_event_bytes,
                                               settings.max_future_skew_seconds), prepare_pool,
                                 settings.decode_workers)

    async def _fetch(self, raw: RawEvent, want: NeedsFetch) -> Outcome:
        try:
            if self.http is None:
                raise DetectionError("url_not_allowed", "image_url is not enabled in this worker", "load_image")
            data = await fetch_url(self.http, want.url, self.limits.allowed_hosts, self.limits.max_bytes,
                                   self.limits.url_timeout_s)
        except DetectionError as err:
            return Failed(err, want.detection_id)
        return (await self.preparer.run([raw.value], [data]))[0]

    async def _prepare(self, batch: Sequence[RawEvent]) -> list[Outcome]:
        image0, parse0 = self.preparer.image_s, self.preparer.parse_s
        outcomes = await self.preparer.run([raw.value for raw in batch])
        fetches = [(j, o) for j, o in enumerate(outcomes) if isinstance(o, NeedsFetch)]
        if fetches:
            fetched = await asyncio.gather(*(self._fetch(batch[j], o) for j, o in fetches))
            for (j, _), got in zip(fetches, fetched, strict=True):
                outcomes[j] = got
        self.metrics.stage("parse", self.preparer.parse_s - parse0)
        self.metrics.stage("decode_crop", self.preparer.image_s - image0)
        return outcomes

    def _timed_encode(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        # Timed in the model's thread: time queued behind another batch is not encoding time.
        t0 = time.perf_counter()
        out = self.encoder.encode(batch)
        return out, time.perf_counter() - t0

    async def _encode(self, arrays: list[np.ndarray]) -> np.ndarray:
        out, took = await asyncio.get_running_loop().run_in_executor(self.model_pool, self._timed_encode,
                                                                       np.stack(arrays))
        self.metrics.stage("encode", took)
        self.metrics.batch_size.observe(len(arrays))
        self.metrics.encode_seconds.observe(took)
        return out

    async def embed(self, batch: Sequence[RawEvent]) -> tuple[list[EmbeddedOut], list[DeadLetter]]:
        outcomes = await self._prepare(batch)
        letters: list[DeadLetter] = []
        good: list[tuple[RawEvent, Ready]] = []
        for raw, o in zip(batch, outcomes, strict=True):
            if isinstance(o, Ready):
                good.append((raw, o))
            elif isinstance(o, Failed):
                letters.append(self._letter(raw, o.error, o.detection_id))
            else:  # a NeedsFetch left over: cannot happen (a fetched image is decoded), but never drop an event
                letters.append(self._letter(raw, DetectionError("internal_error", "image not fetched", "load_image"),
                                            o.detection_id))
        if not good:
            return [], letters
        try:
            vectors = await self._encode([r.crop for _, r in good])
            encoded = list(zip(good, vectors, strict=True))
        except Exception:
            log.exception("batch encode failed; encoding one by one to isolate the culprit")
            encoded = []
            for raw, ready in good:
                try:
                    encoded.append(((raw, ready), (await self._encode([ready.crop]))[0]))
                except Exception as exc:
                    letters.append(self._letter(raw, DetectionError("encode_failed", repr(exc), "encode"),
                                                ready.detection_id))
        model = self.encoder.model_id
        out = [EmbeddedOut(r.header, r.entity_type, vec, model, r.fingerprint, raw) for (raw, r), vec in encoded]
        return out, letters


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

    def _thumbnail(self, det: Detection) -> str | None:
        template = self.settings.thumbnail_url_template
        if template:
            return template.format(camera_id=det.camera_id, detection_id=det.detection_id)
        return det.image_url

    def _plan(self, item: Embedded, matches: list[tuple[EntityEmbedding, float]], now: float) -> PlannedWrite:
        det = item.detection
        assignment = assign_entity(det.detection_id, matches, self.settings.similarity_threshold)
        event = MatchEvent(
            detection_id=det.detection_id, entity_id=assignment.entity_id, is_new_entity=assignment.is_new_entity,
            entity_type=det.entity_type, camera_id=det.camera_id, camera_name=det.camera_name,
            track_id=det.track_id, timestamp=det.timestamp, model=item.model,
            matches=[MatchRef(detection_id=m.detection_id, entity_id=m.entity_id, camera_id=m.camera_id,
                              timestamp=m.timestamp, similarity=round(score, 6)) for m, score in matches],
            processed_at=datetime.now(UTC))
        appearance = EntityAppearance(
            detection_id=det.detection_id, camera_id=det.camera_id, camera_name=det.camera_name,
            timestamp=det.timestamp, similarity_score=assignment.similarity, attributes=det.attributes,
            thumbnail_url=self._thumbnail(det))
        return PlannedWrite(event, item.vector, assignment, item.fingerprint, appearance, now)

    async def assign(self, batch: Sequence[Embedded]) -> tuple[list[MatchEvent], list[DeadLetter]]:
        """Match events for every detection (stored ones re-emitted as stored) and dead letters.

        Raises only on infrastructure errors (Redis down); the caller retries the whole batch.
        """
        events: list[MatchEvent] = []
        letters: list[DeadLetter] = []
        markers = await self.store.markers(list({e.detection.detection_id for e in batch}))
        seen: dict[str, str] = {}
        fresh: list[Embedded] = []
        for item in batch:
            det_id = item.detection.detection_id
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
        groups: dict[tuple[str, str], list[Embedded]] = {}
        for item in fresh:
            groups.setdefault((item.model, item.detection.entity_type), []).append(item)
        for (model, etype), items in groups.items():
            group_events, group_letters = await self._assign_group(model, etype, items)
            events.extend(group_events)
            letters.extend(group_letters)
        # Exact in-batch repeats follow their first copy's outcome.
        by_id = {e.detection_id: e for e in events}
        fresh_ids = {id(item) for item in fresh}
        for item in batch:
            det_id = item.detection.detection_id
            if (det_id not in markers and id(item) not in fresh_ids and seen.get(det_id) == item.fingerprint
                    and det_id in by_id):
                events.append(by_id[det_id])
        return events, letters

    def _plan_batch(self, items: list[Embedded], cache: _TypeCache, now: float) -> list[PlannedWrite]:
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
            det = item.detection
            entry = EntityEmbedding(det.detection_id, plan.assignment.entity_id, det.entity_type, det.camera_id,
                                    det.timestamp, item.vector, item.model, now)
            entries.append(entry)
            cache.index.add(entry)  # kept in the cache only if the commit succeeds
        return plans

    async def _assign_group(self, model: str, etype: str,
                            items: list[Embedded]) -> tuple[list[MatchEvent], list[DeadLetter]]:
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
            redo: list[Embedded] = []
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
                            item.detection.detection_id))
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
