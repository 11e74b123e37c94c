"""The Faust shell: the app, the pipeline service that runs both stages on batch consumers, and wiring.

The stages themselves (embed.py, assign.py) know nothing of Kafka; this module feeds them batches,
publishes what they return, and commits only after it was acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import mode
from aiokafka import ConsumerRecord
from faust.app.base import BootStrategy
from redis.exceptions import RedisError

from reid_stream.api.views import register_views
from reid_stream.config import Settings
from reid_stream.errors import DetectionError
from reid_stream.events import DeadLetter, MatchEvent
from reid_stream.memory.archiver import Archiver
from reid_stream.retry import retry_forever
from reid_stream.store.corrections import update_messages
from reid_stream.store.watch import alert_messages
from reid_stream.stream.assign import Assigner
from reid_stream.stream.embed import Embedder
from reid_stream.stream.kafka_io import BatchConsumer, FetchOrder, Publisher, raw_event
from reid_stream.stream.wire import EmbeddedRecord, Message, dead_letter, embedded_messages, letter_message, unpack
from reid_stream.worker.learner import Learner
from reid_stream.worker.runtime import ReidApp, Runtime

log = logging.getLogger(__name__)
SHUTDOWN_GRACE_S = 30.0
ASSIGN_MESSAGES_PER_BATCH = 8  # stage-1 messages (each a batch of one type) per stage-2 batch


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
        # Stage 2 is the single writer of its partitions' (site, type)s: one batch at a time, a few stage-1
        # messages per batch.
        self.assign = BatchConsumer(topic=settings.topic_embedded, group_id=f"{settings.app_id}.assign",
                                    batch_size=ASSIGN_MESSAGES_PER_BATCH, max_wait_s=0.005, max_inflight=1, **common)
        self.publisher = Publisher(settings.kafka_bootstrap, client_id=settings.app_id)
        self._embed_order = FetchOrder(self.publisher)
        self._loops_done = {"embed": asyncio.Event(), "assign": asyncio.Event()}
        self._embedder: Embedder | None = None
        self.assigner = Assigner(settings, runtime.store, runtime.metrics)

    async def on_start(self) -> None:
        await self.publisher.start()
        self.runtime.publisher = self.publisher
        self.runtime.consumers += [self.embed, self.assign]
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
            # Leave the groups now, so the partitions move on without waiting for the session timeout; then the
            # stuck batches go (one retrying a failed step exits the worker: it cannot finish).
            await asyncio.gather(self.embed.close(drain=False), self.assign.close(drain=False),
                                 return_exceptions=True)
            for consumer in (self.embed, self.assign):
                consumer.abandon()
        await self.publisher.stop()
        if self._embedder is not None:
            self._embedder.preparer.pool.shutdown(wait=False, cancel_futures=True)
        if self.runtime.http is not None:
            await self.runtime.http.close()

    def _letters(self, letters: list[DeadLetter]) -> list[Message]:
        return [letter_message(self.settings.topic_dlq, letter) for letter in letters]

    def _count_letters(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            self.metrics.dead_lettered.labels(letter.error_code).inc()
            log.info("dead letter %s at %s: %s", letter.error_code, letter.stage, letter.message)

    async def _embed_batch(self, batch: list[ConsumerRecord]) -> None:
        assert self._embedder is not None
        # Batches run concurrently but publish in fetch order, so a camera's frames reach the writer in order.
        with self._embed_order.turn() as turn:
            records, letters = await self._embedder.embed([raw_event(r) for r in batch])
            messages = embedded_messages(self.settings.topic_embedded, records) + self._letters(letters)
            await retry_forever("publishing embeddings", partial(turn.publish, messages), self.metrics)
        self._count_letters(letters)

    async def _assign_batch(self, batch: list[ConsumerRecord]) -> None:
        items: list[EmbeddedRecord] = []
        unreadable: list[DeadLetter] = []
        for rec in batch:
            try:
                items.extend(unpack(rec.value or b""))
            except Exception as exc:  # written by stage 1; unreadable means a foreign producer: keep it
                unreadable.append(dead_letter(raw_event(rec), DetectionError(
                    "internal_record_unreadable", f"{self.settings.topic_embedded} record: {exc!r}", "assign"),
                    max_original=self.settings.dlq_max_original_bytes))

        async def run() -> tuple[list[MatchEvent], list[DeadLetter]]:
            try:
                result = await self.assigner.assign(items)
                self.runtime.redis_ok = True
                return result
            except (RedisError, OSError):
                self.runtime.redis_ok = False
                self.assigner.invalidate()
                raise

        out, letters = await retry_forever("storing detections", run, self.metrics) if items else ([], [])
        letters = unreadable + letters
        messages = [(self.settings.topic_matches, ev.entity_id.encode(), self.assigner.event_json(ev).encode())
                    for ev in out] + self._letters(letters)
        t0 = time.perf_counter()
        await retry_forever("publishing match events", lambda: self.publisher.publish(messages), self.metrics)
        self.metrics.stage("publish", time.perf_counter() - t0)
        self._count_letters(letters)
        shards = {(i.site_id, i.entity_type) for i in items}
        await self._publish_outboxes(shards)
        now = time.time()
        sent_at = {(i.site_id, i.detection_id): i.source.timestamp for i in items}
        m = self.metrics
        new = ambiguous = refused = 0
        for ev in out:
            new += ev.is_new_entity
            ambiguous += ev.ambiguous
            refused += sum(c.refused is not None for c in ev.candidates)
            if sent := sent_at.get((ev.site_id, ev.detection_id)):
                m.latency.observe(max(0.0, now - sent))
        # Counted once per batch: each inc() takes the counter's lock.
        m.processed.inc(len(out))
        m.new_entities.inc(new)
        m.matched.inc(len(out) - new)
        m.ambiguous.inc(ambiguous)
        m.refused.inc(refused)

    async def _publish_outboxes(self, shards: set[tuple[str, str]]) -> None:
        """Entity updates (merges) and watch list alerts wait in Redis outboxes, written by the same scripts as
        the merge or the detection; they leave only once Kafka has them, so a crash in between publishes them
        again rather than never (alert_id and the update's content tell a repeat). Every outbox of the batch's
        (site, type)s is read in one round trip: most batches find them all empty."""
        rt = self.runtime
        # Held from the read to the acknowledgement: an operator's correction publishes the same outbox.
        async with rt.outbox_lock:
            found = await retry_forever("reading the outboxes", partial(rt.store.pending_outboxes, sorted(shards)),
                                        self.metrics)
            for (site, etype), (updates, alerts) in found.items():
                store = rt.store.for_site(site)
                if updates:
                    messages = update_messages(self.settings.topic_updates, updates)
                    await retry_forever("publishing entity updates", partial(self.publisher.publish, messages),
                                        self.metrics)
                    # By content, not count: another worker's views may publish from the same outbox.
                    await retry_forever("acknowledging entity updates", partial(store.ack_published, etype, updates),
                                        self.metrics)
                if alerts:
                    messages = alert_messages(self.settings.topic_alerts, alerts)
                    await retry_forever("publishing alerts", partial(self.publisher.publish, messages), self.metrics)
                    await retry_forever("acknowledging alerts", partial(store.ack_alerts, etype, alerts),
                                        self.metrics)


class _Boot(BootStrategy):
    # The stages bring their own consumers and producer (see kafka_io); Faust runs the web views.
    enable_kafka_consumer = False
    enable_kafka_producer = False


def create_app(settings: Settings, runtime_factory: Callable[[], Runtime]) -> tuple[ReidApp, Runtime]:
    runtime = runtime_factory()
    app = ReidApp(
        settings.app_id,
        broker=settings.kafka_broker_url,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        store="memory://",
        datadir=str(Path(tempfile.gettempdir()) / f"{settings.app_id}-data"),  # not the working directory
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_in_thread=False,
        logging_config=None,
    )
    app.boot_strategy = _Boot(app)
    app.runtime = runtime
    pipeline = Pipeline(settings, runtime, loop=app.loop)
    app.add_dependency(pipeline)  # started and stopped with the app
    if settings.adapt_interval_seconds:  # site adaptation in the background, in child processes
        app.add_dependency(Learner(settings, runtime.store, pipeline.assigner.shards, loop=app.loop))
    if runtime.archive is not None:  # the long-term memory: a consumer group of its own
        archiver = Archiver(settings, runtime.archive, runtime.archive_health, runtime.metrics, loop=app.loop)
        runtime.consumers.append(archiver.consumer)  # its lag is in /metrics with the stages'
        app.add_dependency(archiver)
    register_views(app)
    return app, runtime
