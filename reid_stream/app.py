"""The Faust app, its topics, and the two agents that wire the pipeline stages together."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import faust
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from reid_stream.config import Settings
from reid_stream.encoder import Encoder
from reid_stream.errors import DetectionError
from reid_stream.events import DeadLetter, MatchEvent
from reid_stream.metrics import Metrics
from reid_stream.pipeline import Assigner, Embedded, Embedder, RawEvent, dead_letter
from reid_stream.store import ReidStore

log = logging.getLogger(__name__)
T = TypeVar("T")
BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 10.0


@dataclass
class Runtime:
    """What the agents and views share inside one worker process."""

    settings: Settings
    encoder: Encoder
    store: ReidStore
    io_pool: ThreadPoolExecutor
    model_pool: ThreadPoolExecutor
    http: aiohttp.ClientSession | None = None
    redis_ok: bool = True
    metrics: Metrics = field(default_factory=Metrics)


async def retry_forever(what: str, op: Callable[[], Awaitable[T]], metrics: Metrics | None = None) -> T:
    """Retry an infrastructure step with capped exponential backoff; the batch stays unacked meanwhile.

    If the worker is told to stop while the step still fails, it exits without acking: Faust's take()
    would otherwise ack (and later commit) a batch that was never stored.
    """
    delay = BACKOFF_START_S
    while True:
        try:
            return await op()
        except asyncio.CancelledError:
            log.critical("stopping while %s still failing: exiting without committing this batch", what)
            os._exit(75)
        except (RedisError, OSError, RuntimeError, KafkaError, faust.exceptions.ProducerSendError) as exc:
            log.warning("%s failed (%r); retrying in %.1fs", what, exc, delay)
            if metrics is not None:
                metrics.retries.labels(what).inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)


def _raw(event: Any) -> RawEvent:
    msg = event.message
    return RawEvent(msg.value or b"", msg.key, msg.topic, msg.partition, msg.offset, msg.timestamp)


async def _deliver(sends: Iterable[Awaitable[Any]]) -> None:
    """Wait until Kafka acknowledged every message, so the batch is acked only after its output exists."""
    futures = [await s for s in sends]
    await asyncio.gather(*futures)


def create_app(settings: Settings, runtime_factory: Callable[[], Runtime]) -> tuple[faust.App, Runtime]:
    runtime = runtime_factory()
    app = faust.App(
        settings.app_id,
        broker=settings.kafka_broker_url,
        value_serializer="raw",
        key_serializer="raw",
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        producer_acks=-1,
        # Room for a dead letter that carries a cut original (REID_DLQ_MAX_ORIGINAL_BYTES, base64) and its JSON.
        producer_max_request_size=16 << 20,
        consumer_auto_offset_reset="earliest",
        store="memory://",
        topic_disable_leader=False,
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_in_thread=False,
        stream_wait_empty=True,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=max(1, settings.session_timeout_seconds // 4),
        logging_config=None,
    )
    detections = app.topic(settings.topic_detections, value_type=bytes, key_type=bytes)
    embedded = app.topic(settings.topic_embedded, value_type=bytes, key_type=bytes)
    matches = app.topic(settings.topic_matches, value_type=bytes, key_type=bytes)
    dlq = app.topic(settings.topic_dlq, value_type=bytes, key_type=bytes)
    app.reid_runtime = runtime  # type: ignore[attr-defined]

    metrics = runtime.metrics

    def count_letters(letters: list[DeadLetter]) -> None:
        for letter in letters:
            metrics.dead_lettered.labels(letter.error_code).inc()
            log.info("dead letter %s at %s: %s", letter.error_code, letter.stage, letter.message)

    def publish_letters(letters: list[DeadLetter]) -> list[Awaitable[Any]]:
        return [dlq.send(key=(letter.detection_id or "").encode() or None, value=letter.model_dump_json().encode(),
                         force=True) for letter in letters]

    # Embedding needs no single writer: concurrent actors overlap one batch's decoding with another's encoding.
    @app.agent(detections, name="embed", concurrency=settings.embed_concurrency)
    async def embed_agent(stream: faust.StreamT) -> None:
        if runtime.http is None:
            runtime.http = aiohttp.ClientSession()
        embedder = Embedder(settings, runtime.encoder, runtime.io_pool, runtime.model_pool, runtime.http, metrics)
        async for events in stream.take_events(settings.batch_size, within=settings.batch_max_latency_ms / 1000):
            raws = [_raw(e) for e in events]
            records, letters = await embedder.embed(raws)

            async def forward(records: list[Embedded] = records, letters: list[DeadLetter] = letters) -> None:
                await _deliver([
                    *(embedded.send(key=r.detection.entity_type.encode(), value=r.to_bytes(), force=True)
                      for r in records),
                    *publish_letters(letters)])

            await retry_forever("publishing embeddings", forward, metrics)
            count_letters(letters)

    @app.agent(embedded, name="assign", concurrency=1)
    async def assign_agent(stream: faust.StreamT) -> None:
        assigner = Assigner(settings, runtime.store, metrics)
        async for events in stream.take_events(max(64, settings.batch_size * 4), within=0.01):
            items: list[Embedded] = []
            unreadable: list[DeadLetter] = []
            for e in events:
                try:
                    items.append(Embedded.from_bytes(e.message.value))
                except Exception as exc:  # written by stage 1; unreadable means a foreign producer: keep it
                    unreadable.append(dead_letter(_raw(e), DetectionError(
                        "internal_record_unreadable", f"{settings.topic_embedded} record: {exc!r}", "assign")))

            async def run(items: list[Embedded] = items) -> tuple[list[MatchEvent], list[DeadLetter]]:
                try:
                    result = await assigner.assign(items)
                    runtime.redis_ok = True
                    return result
                except (RedisError, OSError):
                    runtime.redis_ok = False
                    assigner.invalidate()
                    raise

            out, letters = await retry_forever("storing detections", run, metrics)
            letters = unreadable + letters

            async def publish(out: list[MatchEvent] = out, letters: list[DeadLetter] = letters) -> None:
                await _deliver([
                    *(matches.send(key=ev.entity_id.encode(), value=ev.model_dump_json().encode(), force=True)
                      for ev in out),
                    *publish_letters(letters)])

            t0 = time.perf_counter()
            await retry_forever("publishing match events", publish, metrics)
            metrics.stage("publish", time.perf_counter() - t0)
            count_letters(letters)
            now = time.time()
            sent_at = {i.detection.detection_id: i.source.timestamp for i in items}
            for ev in out:
                metrics.processed.inc()
                (metrics.new_entities if ev.is_new_entity else metrics.matched).inc()
                if sent_at.get(ev.detection_id):
                    metrics.latency.observe(max(0.0, now - sent_at[ev.detection_id]))

    @app.on_before_shutdown.connect
    async def close_clients(app: faust.App, **kwargs: Any) -> None:
        # Only the HTTP client: a batch still finishing may need Redis, and the process exits next.
        if runtime.http is not None:
            await runtime.http.close()

    from reid_stream.web import register_views

    register_views(app, runtime)
    return app, runtime


def build_runtime(settings: Settings, encoder: Encoder) -> Runtime:
    return Runtime(
        settings=settings,
        encoder=encoder,
        store=ReidStore.from_settings(settings),
        io_pool=ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="reid-io"),
        model_pool=ThreadPoolExecutor(1, thread_name_prefix="reid-model"),
    )
