"""Batch-at-a-time Kafka I/O for the pipeline's two stages.

Why not Faust's agents: Faust routes every message through its own consumer thread, conductor, channel
and stream iterator. On this project's 2-core machine an agent that does nothing tops out at ~4-5k
messages/s, while aiokafka's getmany() reads ~80k/s from the same broker (both measured). The stages
work on whole batches anyway, so they consume with getmany() and publish with one producer, keeping
Faust's guarantee: a batch's offsets are committed only after everything it produced is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import CommitFailedError, KafkaError, OutOfOrderSequenceNumber
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.producer.message_accumulator import BatchBuilder

from reid_stream.stream.wire import RawEvent

log = logging.getLogger(__name__)
Handler = Callable[[list[ConsumerRecord]], Awaitable[None]]
COMMIT_INTERVAL_S = 0.5
IDLE_POLL_MS = 500  # an idle consumer still wakes up this often to commit finished batches
MIN_FETCH_WAIT_MS = 25
PRODUCER_STOP_TIMEOUT_S = 10.0  # a broken producer's stop; it is dropped either way


@dataclass
class _Inflight:
    task: asyncio.Task[None]
    offsets: dict[TopicPartition, int]  # the next offset per partition once this batch is done


class BatchConsumer(ConsumerRebalanceListener):
    """Runs `handler` on batches of up to `batch_size` records, at most `max_inflight` at a time.

    Offsets are committed in fetch order, and only up to the oldest batch still running, so a crash
    redelivers every unfinished batch (at-least-once; the store makes redelivery idempotent).
    """

    def __init__(self, *, bootstrap: str, topic: str | Sequence[str], group_id: str, batch_size: int,
                 max_wait_s: float, max_inflight: int = 1, session_timeout_s: int = 10,
                 client_id: str = "reid-stream") -> None:
        self.topics = [topic] if isinstance(topic, str) else list(topic)
        self.group_id = group_id
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self._slots = asyncio.Semaphore(max_inflight)
        self._inflight: deque[_Inflight] = deque()
        self._uncommitted: dict[TopicPartition, int] = {}
        self._last_commit = time.monotonic()
        self._stopping = asyncio.Event()
        self._options = {
            "bootstrap_servers": bootstrap, "group_id": group_id, "client_id": client_id,
            "enable_auto_commit": False, "auto_offset_reset": "earliest", "max_poll_records": batch_size,
            "session_timeout_ms": session_timeout_s * 1000,
            "heartbeat_interval_ms": max(1000, session_timeout_s * 250),
            # A detection may be as large as its topic allows (64 MiB); the broker returns it whole anyway.
            "fetch_max_bytes": 64 << 20, "max_partition_fetch_bytes": 4 << 20,
            # aiokafka keeps one fetch in flight per broker. At the default 500 ms, a fetch sent only for
            # partitions that were empty at the time holds back the partitions with data for that long
            # (measured: stage 2 idled ~400 ms per batch). The broker still answers at once when data
            # comes; the floor keeps an idle consumer from polling the broker hundreds of times a second.
            "fetch_max_wait_ms": max(MIN_FETCH_WAIT_MS, min(100, round(max_wait_s * 1000)))}
        self._consumer: AIOKafkaConsumer  # made in start(): aiokafka binds to the running loop

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(**self._options)
        await self._consumer.start()
        self._consumer.subscribe(self.topics, listener=self)

    async def run(self, handler: Handler) -> None:
        """Consume until stop(); a handler that raises is a bug, and stops the loop without committing it."""
        while not self._stopping.is_set():
            await self._slots.acquire()
            if self._stopping.is_set():  # told to stop while waiting for a free slot
                self._slots.release()
                break
            try:
                batch = await self._take()
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                await self._commit_finished()
                continue
            offsets: dict[TopicPartition, int] = {}
            for rec in batch:
                tp = TopicPartition(rec.topic, rec.partition)
                offsets[tp] = max(offsets.get(tp, 0), rec.offset + 1)
            task = asyncio.create_task(handler(batch))
            task.add_done_callback(lambda _t: self._slots.release())
            self._inflight.append(_Inflight(task, offsets))
            await self._commit_finished()

    async def _take(self) -> list[ConsumerRecord]:
        """Up to batch_size records: wait for the first, then at most max_wait_s for the batch to fill."""
        got = await self._consumer.getmany(timeout_ms=IDLE_POLL_MS, max_records=self.batch_size)
        batch = [rec for recs in got.values() for rec in recs]
        deadline = time.monotonic() + self.max_wait_s
        while batch and len(batch) < self.batch_size and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            got = await self._consumer.getmany(timeout_ms=int(left * 1000) + 1,
                                               max_records=self.batch_size - len(batch))
            batch.extend(rec for recs in got.values() for rec in recs)
        return batch

    async def _commit_finished(self, force: bool = False) -> None:
        while self._inflight and self._inflight[0].task.done():
            done = self._inflight.popleft()
            if done.task.cancelled() or done.task.exception() is not None:
                exc = None if done.task.cancelled() else done.task.exception()
                raise RuntimeError(f"{self.group_id}: a batch handler failed; its offsets stay uncommitted") from exc
            self._uncommitted.update(done.offsets)
        if self._uncommitted and (force or time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S):
            offsets, self._uncommitted = self._uncommitted, {}
            self._last_commit = time.monotonic()
            try:
                await self._consumer.commit(offsets)
            except CommitFailedError as exc:
                # The partitions moved to another member, which will redeliver: harmless duplicates.
                log.warning("%s: commit refused after a rebalance (%s)", self.group_id, exc)
            except KafkaError as exc:
                # Offsets only grow, so the next commit covers these; until then a crash redelivers them.
                log.warning("%s: commit failed (%r); retried with the next batch", self.group_id, exc)
                for tp, off in offsets.items():
                    self._uncommitted.setdefault(tp, off)

    async def drain(self) -> None:
        """Wait for every running batch and commit it (before a rebalance or a stop)."""
        while self._inflight:
            await asyncio.wait([f.task for f in self._inflight])
            await self._commit_finished(force=True)
        await self._commit_finished(force=True)

    # ConsumerRebalanceListener: finish and commit what was taken before the partitions move away.
    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self.drain()

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("%s: assigned %s", self.group_id, sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))

    async def lag(self) -> dict[TopicPartition, int]:
        """Records not yet taken, per assigned partition (log end as of the last fetch)."""
        out = {}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = await asyncio.wait_for(self._consumer.position(tp), timeout=1)
            except (TimeoutError, KafkaError, AssertionError):  # moving in a rebalance: report it next time
                continue
            out[tp] = max(0, high - position)
        return out

    async def stop(self) -> None:
        self._stopping.set()

    async def close(self, drain: bool = True) -> None:
        """Leave the group; with drain, first finish and commit the running batches."""
        try:
            if drain:
                await self.drain()
        finally:
            await self._consumer.stop()

    def abandon(self) -> None:
        """Cancel the batches still running, uncommitted (after close(drain=False), once the group was left): one
        still retrying a failed step then exits the worker (retry.retry_forever) instead of keeping it up."""
        for running in self._inflight:
            running.task.cancel()


# aiokafka's murmur2 is pure Python (~4-9 us a key); match events are keyed by entity, and an entity's id comes
# back with each of its detections. Bounded: a few MB at most.
_murmur2 = functools.lru_cache(maxsize=1 << 14)(murmur2)


class KeyedPartitioner(DefaultPartitioner):
    """The default partitioner, the same partition for every key (the Java client's), with the hash remembered."""

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return super().__call__(key, all_partitions, available)
        return all_partitions[(_murmur2(bytes(key)) & 0x7FFFFFFF) % len(all_partitions)]


class Publisher:
    """One idempotent producer for every output; publish() returns once Kafka acknowledged all of it.

    A producer whose sender died is replaced before the next publish: aiokafka's idempotent producer ends its
    sender task on a fatal broker answer -- OutOfOrderSequenceNumber after a broker restart lost its sequence
    state (aio-libs/aiokafka#1017, seen in fault test R3) -- and refuses every send after it, so retrying on
    it would retry forever. The same answer can also fail the batch while the sender lives on, and then every
    retry on that producer fails alike (seen in R3 too): a publish that fails so marks its producer for the same
    renewal. A new producer gets a new producer id; the retried batch may publish twice, as any retry may (at
    least once).
    """

    def __init__(self, bootstrap: str, client_id: str = "reid-stream") -> None:
        self._partitioner = KeyedPartitioner()
        self._options = {
            "bootstrap_servers": bootstrap, "client_id": client_id, "acks": "all", "enable_idempotence": True,
            "linger_ms": 2, "max_batch_size": 1 << 20, "partitioner": self._partitioner,
            # Room for a dead letter carrying a cut original (REID_DLQ_MAX_ORIGINAL_BYTES, base64) and its JSON.
            "max_request_size": 16 << 20}
        self._producer: AIOKafkaProducer  # made in start(): aiokafka binds to the running loop

    @property
    def client(self) -> AIOKafkaClient:
        return self._producer.client

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(**self._options)
        self._renewing = asyncio.Lock()
        self._stopped = False
        self._poisoned: AIOKafkaProducer | None = None  # its sequence state is lost: renew it before the next send
        self.renewals = 0
        await self._producer.start()

    async def stop(self) -> None:
        self._stopped = True  # no renewal after this: a late publish fails on the stopped producer
        async with self._renewing:
            await self._producer.stop()

    async def _live(self) -> AIOKafkaProducer:
        producer = self._producer
        sender = producer._sender.sender_task  # no public way to ask whether it still sends
        dead = sender is not None and sender.done()
        if self._stopped or not (dead or self._poisoned is producer):
            return producer
        async with self._renewing:
            if self._producer is producer and not self._stopped:  # not replaced meanwhile by another publish
                failure = (None if sender.cancelled() else sender.exception()) if dead and sender is not None \
                    else "OutOfOrderSequenceNumber on a publish"
                log.warning("the Kafka producer stopped sending (%r); starting a new one", failure)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), PRODUCER_STOP_TIMEOUT_S)
                fresh = AIOKafkaProducer(**self._options)
                try:
                    await fresh.start()  # Kafka down: raises, and the caller's retry renews again
                except BaseException:
                    with contextlib.suppress(Exception):
                        await fresh.stop()
                    raise
                self._producer = fresh
                self.renewals += 1
        return self._producer

    async def publish(self, messages: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        await self.acknowledged(await self.enqueue(messages))

    async def acknowledged(self, sent: asyncio.Future[Any]) -> None:
        """Wait for what enqueue() handed over; a lost sequence state marks the producer for renewal."""
        producer = self._producer
        try:
            await sent
        except OutOfOrderSequenceNumber:
            self._poisoned = producer
            raise

    async def enqueue(self, messages: Sequence[tuple[str, bytes | None, bytes]]) -> asyncio.Future[Any]:
        """Hands the messages to the producer and returns what completes once Kafka acknowledged all of them.
        Messages enqueued later land after these in every partition (the idempotent producer keeps order).

        Each partition's messages go in record batches built here (in order), not one send() each: aiokafka's
        send() costs ~20 us of Python per message (a future, the accumulator), and a batch's append a few.
        The partitions are the ones send() would pick, from the same partitioner and metadata."""
        producer = await self._live()
        partitions: dict[str, tuple[list[int], list[int]]] = {}
        open_batches: dict[tuple[str, int], BatchBuilder] = {}
        futures: list[asyncio.Future[Any]] = []
        for topic, key, value in messages:
            if topic not in partitions:
                every = list(await producer.partitions_for(topic))
                partitions[topic] = every, list(producer.client.cluster.available_partitions_for_topic(topic))
            partition = self._partitioner(key, *partitions[topic])
            batch = open_batches.get((topic, partition))
            if batch is not None and batch.append(timestamp=None, key=key, value=value) is not None:
                continue
            if batch is not None:  # full: it leaves, and a new one starts
                futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = open_batches[topic, partition] = producer.create_batch()
            if batch.append(timestamp=None, key=key, value=value) is None:  # larger than a batch: on its own
                del open_batches[topic, partition]
                futures.append(await producer.send(topic, value, key=key, partition=partition))
        for (topic, partition), batch in open_batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return asyncio.gather(*futures)


class Turn:
    """One handler's place in a FetchOrder; a context manager that gives the place up however the handler ends."""

    def __init__(self, publisher: Publisher, before: asyncio.Future[None] | None, mine: asyncio.Future[None]) -> None:
        self._publisher, self._before, self._mine = publisher, before, mine

    async def publish(self, messages: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        """After the previous turn's messages were handed to the producer; returns once these are acknowledged."""
        if self._before is not None:
            await asyncio.shield(self._before)  # a cancelled wait must not cancel the turn before this one
        acked = await self._publisher.enqueue(messages)
        self._release()
        await self._publisher.acknowledged(acked)

    def _release(self) -> None:
        if self._before is not None and not self._before.done():  # given up early: the next still waits
            self._before.add_done_callback(lambda _f: self._release())
        elif not self._mine.done():
            self._mine.set_result(None)

    def __enter__(self) -> Turn:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._release()  # failed or cancelled: the next turn must not wait forever


class FetchOrder:
    """Concurrent batch handlers publish in the order their batches were fetched. A handler that finishes early
    waits until the one before it handed its messages to the producer -- not until they are acknowledged, so
    keeping the order costs no round trip. Take the turn before the handler's first await: tasks run their
    first step in the order they were created, which is fetch order.

    The order holds while publishing works: a batch whose acknowledgement fails is published again by its
    retry, after the batches that took their turn meanwhile (at least once, so out of order then)."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher
        self._last: asyncio.Future[None] | None = None

    def turn(self) -> Turn:
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        before, self._last = self._last, mine
        return Turn(self._publisher, before, mine)


def raw_event(rec: ConsumerRecord) -> RawEvent:
    """A consumed record as the stages see it (so a dead letter can carry it back unchanged)."""
    ts = rec.timestamp / 1000 if rec.timestamp is not None and rec.timestamp >= 0 else None
    return RawEvent(rec.value or b"", rec.key, rec.topic, rec.partition, rec.offset, ts)
