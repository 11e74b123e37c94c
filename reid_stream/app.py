"""The Faust app: the web views, and the pipeline service that runs both stages on batch consumers."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import faust
import mode
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from faust.app.base import BootStrategy
from redis.exceptions import RedisError

from reid_stream.config import Settings
from reid_stream.encoder import Encoder
from reid_stream.errors import DetectionError
from reid_stream.events import DeadLetter, MatchEvent
from reid_stream.kafka_io import BatchConsumer, Publisher
from reid_stream.metrics import Metrics
from reid_stream.pipeline import (
    ORIGINAL_CARRIED,
    Assigner,
    Embedded,
    EmbeddedOut,
    Embedder,
    RawEvent,
    dead_letter,
    pack_embedded,
    unpack_embedded,
)
from reid_stream.prepare import process_pool
from reid_stream.store import ReidStore

log = logging.getLogger(__name__)
T = TypeVar("T")
BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 10.0
SHUTDOWN_GRACE_S = 30.0
ASSIGN_MESSAGES_PER_BATCH = 8  # stage-1 messages (each a batch of one type) per stage-2 batch
WIRE_MAX_MESSAGE = 900_000  # under the broker's default 1 MB, so an existing internal topic needs no change
WIRE_ITEM_OVERHEAD = 1024  # JSON header bytes per item, an estimate (checked after packing)


@dataclass
class Runtime:
    """What the pipeline and the views share inside one worker process."""

    settings: Settings
    encoder: Encoder
    store: ReidStore
    prepare_pool: Executor
    model_pool: ThreadPoolExecutor
    http: aiohttp.ClientSession | None = None
    redis_ok: bool = True
    metrics: Metrics = field(default_factory=Metrics)
    publisher: Publisher | None = None
    consumers: list[BatchConsumer] = field(default_factory=list)


async def retry_forever(what: str, op: Callable[[], Awaitable[T]], metrics: Metrics | None = None) -> T:
    """Retry an infrastructure step with capped exponential backoff; the batch stays unacked meanwhile.

    If the worker is told to stop while the step still fails, it exits at once: the batch stays
    uncommitted and is redelivered to whichever worker takes its partitions.
    """
    delay = BACKOFF_START_S
    while True:
        try:
            return await op()
        except asyncio.CancelledError:
            log.critical("stopping while %s still failing: exiting without committing this batch", what)
            os._exit(75)
        except (RedisError, OSError, RuntimeError, KafkaError) as exc:
            log.warning("%s failed (%r); retrying in %.1fs", what, exc, delay)
            if metrics is not None:
                metrics.retries.labels(what).inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)


def _raw(rec: ConsumerRecord) -> RawEvent:
    ts = rec.timestamp / 1000 if rec.timestamp is not None and rec.timestamp >= 0 else None
    return RawEvent(rec.value or b"", rec.key, rec.topic, rec.partition, rec.offset, ts)


def embedded_messages(topic: str, records: list[EmbeddedOut]) -> list[tuple[str, bytes | None, bytes]]:
    """Stage 1's output, one message per model and entity type (keyed by type), each under the broker's
    default message size limit."""
    groups: dict[tuple[str, str], list[EmbeddedOut]] = {}
    for rec in records:
        groups.setdefault((rec.model, rec.entity_type), []).append(rec)
    out = []
    for (_, etype), items in groups.items():
        chunk: list[EmbeddedOut] = []
        size = 0
        for item in items:
            cost = min(len(item.source.value), ORIGINAL_CARRIED) + item.vector.nbytes + WIRE_ITEM_OVERHEAD
            if chunk and size + cost > WIRE_MAX_MESSAGE:
                out.extend((topic, etype.encode(), m) for m in _packed_under_limit(chunk))
                chunk, size = [], 0
            chunk.append(item)
            size += cost
        out.extend((topic, etype.encode(), m) for m in _packed_under_limit(chunk))
    return out


def _packed_under_limit(items: list[EmbeddedOut]) -> list[bytes]:
    """The estimate above cannot see large `attributes`: halve any chunk that still packs too big
    (a message the broker refuses would be retried forever and stall the stage)."""
    packed = pack_embedded(items)
    if len(packed) <= WIRE_MAX_MESSAGE or len(items) == 1:
        return [packed]
    half = len(items) // 2
    return _packed_under_limit(items[:half]) + _packed_under_limit(items[half:])


class Pipeline(mode.Service):
    """Both stages, each on its own consumer group, sharing one producer."""

    def __init__(self, settings: Settings, runtime: Runtime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.runtime = runtime
        self.metrics = runtime.metrics
        common = {"bootstrap": settings.kafka_bootstrap, "session_timeout_s": settings.session_timeout_seconds,
                  "client_id": settings.app_id}
        self.embed = BatchConsumer(topic=settings.topic_detections, group_id=f"{settings.app_id}.embed",
                                   batch_size=settings.batch_size, max_wait_s=settings.batch_max_latency_ms / 1000,
                                   # Concurrent batches overlap one batch's decoding with another's encoding.
                                   max_inflight=settings.embed_concurrency, **common)
        # Stage 2 is the single writer of a type: one batch at a time, a few stage-1 messages per batch.
        self.assign = BatchConsumer(topic=settings.topic_embedded, group_id=f"{settings.app_id}.assign",
                                    batch_size=ASSIGN_MESSAGES_PER_BATCH, max_wait_s=0.005, max_inflight=1, **common)
        self.publisher = Publisher(settings.kafka_bootstrap, client_id=settings.app_id)
        self._loops_done = {"embed": asyncio.Event(), "assign": asyncio.Event()}
        self._embedder: Embedder | None = None
        self._assigner = Assigner(settings, runtime.store, runtime.metrics)

    async def on_start(self) -> None:
        await self.publisher.start()
        self.runtime.publisher = self.publisher
        self.runtime.consumers = [self.embed, self.assign]
        rt = self.runtime
        rt.http = aiohttp.ClientSession()
        self._embedder = Embedder(self.settings, rt.encoder, rt.prepare_pool, rt.model_pool, rt.http, self.metrics)
        await self.embed.start()
        await self.assign.start()

    async def _consume(self, name: str, consumer: BatchConsumer, handler: Any) -> None:
        try:
            await consumer.run(handler)
        finally:
            self._loops_done[name].set()

    @mode.Service.task
    async def _embed_loop(self) -> None:
        await self._consume("embed", self.embed, self._embed_batch)

    @mode.Service.task
    async def _assign_loop(self) -> None:
        await self._consume("assign", self.assign, self._assign_batch)

    async def on_stop(self) -> None:
        # Stop taking new batches, finish and commit the running ones, then flush the producer.
        for consumer in (self.embed, self.assign):
            await consumer.stop()
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self._loops_done.values())), SHUTDOWN_GRACE_S)
            await asyncio.wait_for(asyncio.gather(self.embed.close(), self.assign.close()), SHUTDOWN_GRACE_S)
        except TimeoutError:
            log.error("batches still running after %ss; stopping without committing them", SHUTDOWN_GRACE_S)
            # Leave the groups now, so the partitions move on without waiting for the session timeout.
            await asyncio.gather(self.embed.close(drain=False), self.assign.close(drain=False),
                                 return_exceptions=True)
        await self.publisher.stop()
        if self._embedder is not None:
            self._embedder.preparer.pool.shutdown(wait=False, cancel_futures=True)
        if self.runtime.http is not None:
            await self.runtime.http.close()

    def _letters(self, letters: list[DeadLetter]) -> list[tuple[str, bytes | None, bytes]]:
        return [(self.settings.topic_dlq, (letter.detection_id or "").encode() or None,
                 letter.model_dump_json().encode()) for letter in letters]

    def _count_letters(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            self.metrics.dead_lettered.labels(letter.error_code).inc()
            log.info("dead letter %s at %s: %s", letter.error_code, letter.stage, letter.message)

    async def _embed_batch(self, batch: list[ConsumerRecord]) -> None:
        assert self._embedder is not None
        records, letters = await self._embedder.embed([_raw(r) for r in batch])
        messages = embedded_messages(self.settings.topic_embedded, records) + self._letters(letters)
        await retry_forever("publishing embeddings", lambda: self.publisher.publish(messages), self.metrics)
        self._count_letters(letters)

    async def _assign_batch(self, batch: list[ConsumerRecord]) -> None:
        items: list[Embedded] = []
        unreadable: list[DeadLetter] = []
        for rec in batch:
            try:
                items.extend(unpack_embedded(rec.value or b""))
            except Exception as exc:  # written by stage 1; unreadable means a foreign producer: keep it
                unreadable.append(dead_letter(_raw(rec), DetectionError(
                    "internal_record_unreadable", f"{self.settings.topic_embedded} record: {exc!r}", "assign"),
                    max_original=self.settings.dlq_max_original_bytes))

        async def run() -> tuple[list[MatchEvent], list[DeadLetter]]:
            try:
                result = await self._assigner.assign(items)
                self.runtime.redis_ok = True
                return result
            except (RedisError, OSError):
                self.runtime.redis_ok = False
                self._assigner.invalidate()
                raise

        out, letters = await retry_forever("storing detections", run, self.metrics) if items else ([], [])
        letters = unreadable + letters
        messages = [(self.settings.topic_matches, ev.entity_id.encode(), ev.model_dump_json().encode())
                    for ev in out] + self._letters(letters)
        t0 = time.perf_counter()
        await retry_forever("publishing match events", lambda: self.publisher.publish(messages), self.metrics)
        self.metrics.stage("publish", time.perf_counter() - t0)
        self._count_letters(letters)
        now = time.time()
        sent_at = {i.detection.detection_id: i.source.timestamp for i in items}
        m = self.metrics
        for ev in out:
            m.processed.inc()
            (m.new_entities if ev.is_new_entity else m.matched).inc()
            if sent_at.get(ev.detection_id):
                m.latency.observe(max(0.0, now - sent_at[ev.detection_id]))


class _Boot(BootStrategy):
    # The stages bring their own consumers and producer (see kafka_io); Faust runs the web views.
    enable_kafka_consumer = False
    enable_kafka_producer = False


def create_app(settings: Settings, runtime_factory: Callable[[], Runtime]) -> tuple[faust.App, Runtime]:
    runtime = runtime_factory()
    app = faust.App(
        settings.app_id,
        broker=settings.kafka_broker_url,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        store="memory://",
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_in_thread=False,
        logging_config=None,
    )
    app.boot_strategy = _Boot(app)
    app.reid_runtime = runtime  # type: ignore[attr-defined]
    app.add_dependency(Pipeline(settings, runtime, loop=app.loop))  # started and stopped with the app

    from reid_stream.web import register_views

    register_views(app, runtime)
    return app, runtime


def build_runtime(settings: Settings, encoder: Encoder) -> Runtime:
    return Runtime(
        settings=settings,
        encoder=encoder,
        store=ReidStore.from_settings(settings),
        prepare_pool=process_pool(settings.decode_workers),
        model_pool=ThreadPoolExecutor(1, thread_name_prefix="reid-model"),
    )
