import pytest
from aiokafka import AIOKafkaConsumer

from reid_stream.stream.topics import ensure_topics, topic_specs
from tests.conftest import make_settings

pytestmark = pytest.mark.integration


async def test_topics_are_created_with_their_partitions_and_idempotently(infra, unique):
    settings = make_settings(unique)
    created = await ensure_topics(settings)
    assert sorted(created) == sorted(s["name"] for s in topic_specs(settings))
    assert await ensure_topics(settings) == []
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        for spec in topic_specs(settings):
            assert len(consumer.partitions_for_topic(spec["name"]) or await _parts(consumer, spec["name"])) \
                == spec["partitions"]
    finally:
        await consumer.stop()


async def _parts(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()
