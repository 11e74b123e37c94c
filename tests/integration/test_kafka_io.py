"""The batch consumer against a real broker: offsets move only past finished batches, in fetch order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from reid_stream.kafka_io import BatchConsumer
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
