"""The batch consumer against a real broker: offsets move only past finished batches, in fetch order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import OutOfOrderSequenceNumber
from aiokafka.partitioner import DefaultPartitioner

from reid_stream.stream.kafka_io import BatchConsumer, FetchOrder, Publisher
from tests.e2e.harness import committed

pytestmark = pytest.mark.integration
BOOTSTRAP = "127.0.0.1:9092"


async def topic_with(name: str, n: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    await producer.start()
    try:
        for i in range(n):
            await producer.send_and_wait(name, str(i).encode())
    finally:
        await producer.stop()


async def committed_offset(group: str, topic: str) -> int:
    return (await committed(BOOTSTRAP, group, topic)).get(0, -1)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_a_slow_first_batch_holds_back_the_commit_of_finished_later_ones(infra, unique):
    topic, group = f"kio-{unique}", f"kio-{unique}"
    await topic_with(topic, 30)
    release = asyncio.Event()
    seen: list[int] = []

    async def handler(batch: list[ConsumerRecord]) -> None:
        if batch[0].offset == 0:
            await release.wait()
        seen.extend(r.offset for r in batch)

    consumer = BatchConsumer(bootstrap=BOOTSTRAP, topic=topic, group_id=group, batch_size=10, max_wait_s=0.05,
                             max_inflight=3, session_timeout_s=6)
    await consumer.start()
    loop = asyncio.create_task(consumer.run(handler))
    async def later_batches_done() -> bool:
        return len(seen) >= 20

    try:
        await eventually(later_batches_done)
        await asyncio.sleep(1.5)  # several commit intervals
        assert await committed_offset(group, topic) == -1, "nothing may be committed past the unfinished first batch"
        release.set()

        async def all_committed() -> bool:
            return await committed_offset(group, topic) == 30

        await eventually(all_committed)
        assert sorted(seen) == list(range(30))
    finally:
        await consumer.stop()
        await loop
        await consumer.close()


async def test_a_failing_handler_stops_the_loop_and_commits_nothing_of_its_batch(infra, unique):
    topic, group = f"kio-{unique}", f"kio-{unique}"
    await topic_with(topic, 5)

    async def handler(batch: list[ConsumerRecord]) -> None:
        raise ValueError("a bug")

    consumer = BatchConsumer(bootstrap=BOOTSTRAP, topic=topic, group_id=group, batch_size=10, max_wait_s=0.05,
                             session_timeout_s=6)
    await consumer.start()
    try:
        with pytest.raises(RuntimeError, match="batch handler failed"):
            await asyncio.wait_for(consumer.run(handler), 30)
    finally:
        await consumer.close(drain=False)
    assert await committed_offset(group, topic) == -1


async def test_publish_puts_each_message_where_send_would_in_order(infra, unique):
    """Publisher.publish builds its own record batches: every keyed message must still land on the partition
    aiokafka's send() picks (murmur2, as the Java client), in the order given, a message larger than a batch
    included, and all of them acknowledged when it returns."""
    topics = [f"kio-pub-{unique}", f"kio-pub2-{unique}"]
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        big = {"max.message.bytes": str(4 << 20)}  # as the dead-letter topic allows
        await admin.create_topics([NewTopic(topics[0], 6, 1, topic_configs=big), NewTopic(topics[1], 1, 1)])
    finally:
        await admin.close()
    messages: list[tuple[str, bytes | None, bytes]] = []
    for i in range(900):
        value = f"{i}:".encode() + (b"x" * (1_500_000 if i == 450 else 1_400))  # one over the 1 MiB batch
        messages.append((topics[i % 7 == 0], f"entity-{i % 97}".encode() if i % 50 else None, value))
    publisher = Publisher(BOOTSTRAP)
    await publisher.start()
    try:
        await publisher.publish(messages)
    finally:
        await publisher.stop()
    default = DefaultPartitioner()
    got: dict[tuple[str, int], list[ConsumerRecord]] = {}
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest",
                                group_id=f"kio-pub-{unique}", enable_auto_commit=False, fetch_max_bytes=64 << 20,
                                max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while sum(map(len, got.values())) < len(messages):
            assert asyncio.get_running_loop().time() < deadline, "not every message arrived"
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                got.setdefault((tp.topic, tp.partition), []).extend(records)
    finally:
        await consumer.stop()
    assert sum(map(len, got.values())) == len(messages)
    position = {m[2]: n for n, m in enumerate(messages)}
    for (topic, partition), records in got.items():
        order = [position[r.value] for r in records]
        assert order == sorted(order)  # each partition holds its messages in the order given
        for r in records:
            _, key, _ = messages[position[r.value]]
            assert r.key == key
            if key is not None:
                every = list(range(6 if topic == topics[0] else 1))
                assert partition == default(key, every, every)


async def test_concurrent_handlers_publish_in_fetch_order_however_they_finish(infra, unique):
    """Stage 1 runs batches concurrently; a later batch that finishes first still publishes after the earlier
    one (a camera's frames reach the writer in order), and a handler that fails does not hold up the next."""
    source, sink, group = f"kio-ord-{unique}", f"kio-ord-out-{unique}", f"kio-ord-{unique}"
    await topic_with(source, 40)
    await topic_with(sink, 0)
    publisher = Publisher(BOOTSTRAP)
    await publisher.start()
    order = FetchOrder(publisher)
    delays = {0: 1.0, 10: 0.5, 20: 0.0, 30: 0.2}  # by the batch's first offset: the first batch is slowest

    async def handler(batch: list[ConsumerRecord]) -> None:
        with order.turn() as turn:
            await asyncio.sleep(delays[batch[0].offset])
            if batch[0].offset == 20:  # fails after its wait: the turn is given up on the way out
                return
            await turn.publish([(sink, None, r.value or b"") for r in batch])

    consumer = BatchConsumer(bootstrap=BOOTSTRAP, topic=source, group_id=group, batch_size=10, max_wait_s=0.5,
                             max_inflight=4, session_timeout_s=6)
    await consumer.start()
    loop = asyncio.create_task(consumer.run(handler))
    reader = AIOKafkaConsumer(sink, bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest",
                              group_id=f"kio-ord-read-{unique}", enable_auto_commit=False)
    await reader.start()
    got: list[int] = []
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while len(got) < 30:
            assert asyncio.get_running_loop().time() < deadline, f"only {len(got)} of 30 arrived"
            for records in (await reader.getmany(timeout_ms=500)).values():
                got.extend(int(r.value or b"") for r in records)
    finally:
        await reader.stop()
        await consumer.stop()
        await loop
        await consumer.close()
        await publisher.stop()
    assert got == [*range(0, 20), *range(30, 40)]


async def first_values(topic: str, group: str, n: int) -> list[bytes]:
    """The first n values on a one-partition topic, from the start."""
    reader = AIOKafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest", group_id=group,
                              enable_auto_commit=False)
    await reader.start()
    got: list[bytes] = []
    try:
        while len(got) < n:
            got += [r.value or b"" for recs in (await reader.getmany(timeout_ms=2000)).values() for r in recs]
    finally:
        await reader.stop()
    return got


async def test_a_producer_whose_sender_died_is_replaced_and_publishing_goes_on(infra, unique):
    """Fault test R3 found it: after a broker restart, aiokafka's idempotent producer got OutOfOrderSequenceNumber,
    its sender task ended, and every retry failed the same way, for ever. Here the sender meets that answer on
    its next produce request (the broker cannot be made to give it on cue); the publish fails, and the retry
    publishes on a new producer."""
    topic = f"kio-renew-{unique}"
    await topic_with(topic, 0)
    publisher = Publisher(BOOTSTRAP)
    await publisher.start()
    try:
        await publisher.publish([(topic, None, b"before")])
        sender = publisher._producer._sender

        async def refused(*_args: object) -> None:
            raise OutOfOrderSequenceNumber()

        sender._send_produce_req = refused
        with pytest.raises(OutOfOrderSequenceNumber):
            await publisher.publish([(topic, None, b"lost")])
        assert sender.sender_task is not None and sender.sender_task.done()
        await publisher.publish([(topic, None, b"after")])  # what retry_forever does next
        assert publisher.renewals == 1
    finally:
        await publisher.stop()
    assert await first_values(topic, f"kio-renew-{unique}", 2) == [b"before", b"after"]


async def test_a_producer_whose_batch_lost_its_sequence_is_replaced_though_its_sender_lives(infra, unique):
    """R3 again, the other way it fails: the broker answers OutOfOrderSequenceNumber for a batch while the sender
    task lives on, and every retry on that producer fails alike. A publish that fails so marks the producer;
    the retry publishes on a new one."""
    topic = f"kio-poison-{unique}"
    await topic_with(topic, 0)
    publisher = Publisher(BOOTSTRAP)
    await publisher.start()
    try:
        await publisher.publish([(topic, None, b"before")])
        producer = publisher._producer
        real = producer.send_batch

        async def refused(*_args: object, **_kwargs: object) -> asyncio.Future[None]:
            lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            lost.set_exception(OutOfOrderSequenceNumber())
            return lost

        producer.send_batch = refused
        with pytest.raises(OutOfOrderSequenceNumber):
            await publisher.publish([(topic, None, b"lost")])
        producer.send_batch = real
        assert not producer._sender.sender_task.done()  # the sender lives: only the answer says it is lost
        await publisher.publish([(topic, None, b"after")])  # what retry_forever does next
        assert publisher.renewals == 1 and publisher._producer is not producer
    finally:
        await publisher.stop()
    assert await first_values(topic, f"kio-poison-{unique}", 2) == [b"before", b"after"]
