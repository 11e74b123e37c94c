"""The two stages, free of Faust: embed (validate, load, crop, encode) and assign (match, store, decide).

Stage 1 runs wherever the camera-keyed `detections` partitions land. Its output is re-keyed by entity
type, so stage 2 -- the only stage that creates entities -- has one writer per type at a time.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import logging
import struct
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import numpy as np

from reid_stream.config import Settings
from reid_stream.encoder import Encoder
from reid_stream.errors import DetectionError
from reid_stream.events import DeadLetter, Detection, EntityAppearance, MatchEvent, MatchRef, parse_detection
from reid_stream.images import ImageLimits, crop_letterbox, decode_image, fetch_url, read_local
from reid_stream.matching import EntityEmbedding, VectorIndex, assign_entity, merge_matches
from reid_stream.metrics import Metrics
from reid_stream.store import PlannedWrite, ReidStore

log = logging.getLogger(__name__)
MAX_CONFLICT_RETRIES = 20
ORIGINAL_CARRIED = 64 * 1024  # bytes of the original event that travel with an embedding to stage 2
# A prepared crop, a parsed detection whose image URL is still to fetch, or why the event failed.
Prepared = tuple[Detection, np.ndarray] | Detection | DeadLetter


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


WIRE_MAGIC = b"RSE1"


def pack_embedded(items: Sequence[Embedded]) -> bytes:
    """One `reid-embedded` message for a batch of one model and entity type: a JSON header, the cut
    originals (for dead letters in stage 2, e.g. a detection_id conflict), then the float32 vectors.
    """
    originals = [i.source.value[:ORIGINAL_CARRIED] for i in items]
    header = json.dumps({
        "model": items[0].model, "dim": int(items[0].vector.shape[0]),
        "items": [{
            "detection": i.detection.model_dump(mode="json", exclude={"image_b64"}), "fingerprint": i.fingerprint,
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


def fingerprint(det: Detection) -> str:
    """Identifies a detection's content: a redelivery matches it, a different event reusing the id does not."""
    return hashlib.blake2b(det.model_dump_json().encode(), digest_size=16).hexdigest()


class Embedder:
    """Stage 1: raw messages -> Embedded records and dead letters. Bad input never raises."""

    def __init__(self, settings: Settings, encoder: Encoder, io_pool: Executor, model_pool: Executor,
                 http: aiohttp.ClientSession | None = None, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.encoder = encoder
        self.io_pool = io_pool
        self.model_pool = model_pool
        self.http = http
        self.metrics = metrics or Metrics()
        self.limits = ImageLimits(settings.image_roots, settings.url_allowed_hosts, settings.max_image_bytes,
                                  settings.max_image_pixels, settings.url_timeout_seconds)
        self._letter = functools.partial(dead_letter, max_original=settings.dlq_max_original_bytes)
        # An inline image at its size limit, base64-encoded, plus room for the other fields.
        self.max_event_bytes = settings.max_image_bytes * 4 // 3 + 64 * 1024
        self.workers = settings.decode_workers

    def _load_crop(self, det: Detection, data: bytes | None) -> tuple[np.ndarray, float, float]:
        t0 = time.perf_counter()
        if data is None:
            data = read_local(det, self.limits)
        assert data is not None
        img = decode_image(data, self.limits.max_pixels, (det.bbox, self.encoder.input_size))
        t1 = time.perf_counter()
        crop = crop_letterbox(img, det.bbox, self.encoder.input_size, (0, 0, 0))
        arr = self.encoder.preprocess(crop)
        return arr, t1 - t0, time.perf_counter() - t1

    def _parse(self, raw: RawEvent) -> Detection:
        return parse_detection(raw.value, max_future_skew_seconds=self.settings.max_future_skew_seconds,
                               max_event_bytes=self.max_event_bytes)

    def _failed(self, raw: RawEvent, exc: Exception, det: Detection | None, stage: str) -> DeadLetter:
        if not isinstance(exc, DetectionError):  # a bug must not block the events behind this one
            log.error("unexpected error preparing a detection", exc_info=exc)
            exc = DetectionError("internal_error", repr(exc), stage)
        return self._letter(raw, exc, det.detection_id if det else None)

    def _prepare_chunk(self, raws: Sequence[RawEvent]) -> list[Prepared]:
        """Parse, load, decode and crop in a pool thread; URL images come back parsed, to be fetched."""
        out: list[Prepared] = []
        decode = crop = 0.0
        for raw in raws:
            det: Detection | None = None
            try:
                det = self._parse(raw)
                if det.image_url is not None:
                    read_local(det, self.limits)  # allow-list check before any network access
                    out.append(det)
                    continue
                arr, d, c = self._load_crop(det, None)
                decode, crop = decode + d, crop + c
                out.append((det, arr))
            except Exception as exc:
                out.append(self._failed(raw, exc, det, "load_image"))
        self.metrics.stage("decode", decode)
        self.metrics.stage("crop", crop)
        return out

    async def _fetch_and_crop(self, raw: RawEvent, det: Detection) -> Prepared:
        try:
            if self.http is None:
                raise DetectionError("url_not_allowed", "image_url is not enabled in this worker", "load_image")
            assert det.image_url is not None
            data = await fetch_url(self.http, det.image_url, self.limits.allowed_hosts,
                                   self.limits.max_bytes, self.limits.url_timeout_s)
            arr, _, _ = await asyncio.get_running_loop().run_in_executor(self.io_pool, self._load_crop, det, data)
            return det, arr
        except Exception as exc:
            return self._failed(raw, exc, det, "load_image")

    async def _prepare(self, batch: Sequence[RawEvent]) -> list[Prepared]:
        # A few pool calls per batch, not one per event: a thread hop costs more than parsing a small event.
        loop = asyncio.get_running_loop()
        n = max(1, min(self.workers, len(batch)))
        chunks = await asyncio.gather(*(loop.run_in_executor(self.io_pool, self._prepare_chunk, batch[i::n])
                                        for i in range(n)))
        prepared: list[Prepared] = [None] * len(batch)  # type: ignore[list-item]
        for i, chunk in enumerate(chunks):
            prepared[i::n] = chunk
        fetches = [(j, raw, p) for j, (raw, p) in enumerate(zip(batch, prepared, strict=True))
                   if isinstance(p, Detection)]
        if fetches:
            fetched = await asyncio.gather(*(self._fetch_and_crop(raw, det) for _, raw, det in fetches))
            for (j, _, _), p in zip(fetches, fetched, strict=True):
                prepared[j] = p
        return prepared

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

    async def embed(self, batch: Sequence[RawEvent]) -> tuple[list[Embedded], list[DeadLetter]]:
        prepared = await self._prepare(batch)
        letters = [p for p in prepared if isinstance(p, DeadLetter)]
        good = [(raw, p) for raw, p in zip(batch, prepared, strict=True) if isinstance(p, tuple)]
        if not good:
            return [], letters
        try:
            vectors = await self._encode([arr for _, (_, arr) in good])
            encoded = list(zip(good, vectors, strict=True))
        except Exception:
            log.exception("batch encode failed; encoding one by one to isolate the culprit")
            encoded = []
            for item in good:
                raw, (det, arr) = item
                try:
                    encoded.append((item, (await self._encode([arr]))[0]))
                except Exception as exc:
                    letters.append(self._letter(raw, DetectionError("encode_failed", repr(exc), "encode"),
                                               det.detection_id))
        out = [Embedded(det, vec, self.encoder.model_id, fingerprint(det), raw)
               for (raw, (det, _)), vec in encoded]
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
        """Match a batch in order: stored vectors in one matrix product, earlier items of the batch one by one."""
        k, threshold = self.settings.match_top_k, self.settings.similarity_threshold
        stored = cache.index.search_many(np.stack([i.vector for i in items]), k, threshold)
        batch = VectorIndex(items[0].vector.shape[0], capacity=len(items))
        plans = []
        for item, prior in zip(items, stored, strict=True):
            matches = merge_matches(prior, batch.search(item.vector, k, threshold), limit=k)
            plan = self._plan(item, matches, now)
            plans.append(plan)
            det = item.detection
            for index in (batch, cache.index):  # kept in the cache only if the commit succeeds
                index.add(EntityEmbedding(det.detection_id, plan.assignment.entity_id, det.entity_type,
                                          det.camera_id, det.timestamp, item.vector, item.model, now))
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
