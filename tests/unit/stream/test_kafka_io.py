"""The producer's partitioner must put every key where aiokafka's default (the Java client's murmur2) puts it:
consumers of entity-matches rely on an entity's events sharing a partition, whichever client wrote them."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner

from reid_stream.stream.kafka_io import KeyedPartitioner


def test_keyed_partitioner_agrees_with_the_default() -> None:
    rnd = random.Random(7)
    default, keyed = DefaultPartitioner(), KeyedPartitioner()
    keys = [bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 48))) for _ in range(3000)]
    keys += [f"{rnd.getrandbits(128):032x}".encode() for _ in range(500)]
    for n in (1, 2, 6, 12, 13):
        partitions = list(range(n))
        for key in keys + keys[:100]:  # the repeats come from its cache
            assert keyed(key, partitions, partitions) == default(key, partitions, partitions)


def test_keyless_messages_still_spread() -> None:
    keyed = KeyedPartitioner()
    seen = {keyed(None, [0, 1, 2], [0, 1, 2]) for _ in range(200)}
    assert seen == {0, 1, 2}
