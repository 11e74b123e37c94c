"""Stage 1, free of Kafka: validate, load, crop and encode a batch of raw detections.

It runs wherever the camera-keyed `detections` partitions land; its output is re-keyed by site and entity type
(see wire.py), so that stage 2 has one writer per (site, type).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor

import aiohttp
import numpy as np

from reid_stream.config import Settings
from reid_stream.encoders import Encoder
from reid_stream.errors import DetectionError
from reid_stream.events import DeadLetter
from reid_stream.metrics import Metrics
from reid_stream.stream.prepare import Failed, NeedsFetch, Outcome, PrepareConfig, Preparer, Ready
from reid_stream.stream.wire import EmbeddedRecord, RawEvent, dead_letter
from reid_stream.vision.images import ImageLimits, fetch_url

log = logging.getLogger(__name__)


class Embedder:
    """Stage 1: raw messages -> embedded records and dead letters. Bad input never raises."""

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
                                               settings.max_future_skew_seconds, settings.plate_ocr,
                                               settings.plate_min_confidence), prepare_pool,
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
        if self.settings.plate_ocr:
            self.metrics.stage("plate_ocr", sum(o.ocr_s for o in outcomes if isinstance(o, Ready)))
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

    async def embed(self, batch: Sequence[RawEvent]) -> tuple[list[EmbeddedRecord], list[DeadLetter]]:
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
        out = [EmbeddedRecord.from_header(r.header, vec, model, r.fingerprint, raw) for (raw, r), vec in encoded]
        return out, letters
