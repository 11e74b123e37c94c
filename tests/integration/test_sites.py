"""Sites against a real Redis: entities never cross sites, and every key of a site shares its hash tag."""

from __future__ import annotations

import asyncio
import copy
import json
import re

import numpy as np
import pytest

from reid_stream.store.corrections import Corrections
from reid_stream.store.reid_store import ReidStore
from reid_stream.stream.assign import PLAN_SLICE, Assigner
from tests.conftest import make_settings
from tests.integration.test_store import item, unit

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(redis_client, unique):
    settings = make_settings(unique, similarity_threshold=0.9, embedding_ttl_seconds=600)
    yield ReidStore(redis_client, settings)
    keys = [k async for k in redis_client.scan_iter(match=f"{settings.redis_prefix}:*")]
    if keys:
        await redis_client.delete(*keys)


async def test_the_same_look_and_detection_id_at_two_sites_are_two_entities(store: ReidStore):
    a = Assigner(store.settings, store)
    v = unit(1)
    batch = [item("d1", v, "c1"), item("d1", v, "c1", site_id="home-b"), item("d2", v, "c2", minutes=1),
             item("d2", unit(9), "c2", minutes=1, site_id="home-b")]
    events, letters = await a.assign(batch)
    assert not letters, "a detection id is unique within its site only: no conflict across sites"
    by = {(e.site_id, e.detection_id): e for e in events}
    assert set(by) == {("default", "d1"), ("home-b", "d1"), ("default", "d2"), ("home-b", "d2")}
    assert by["default", "d1"].is_new_entity and by["home-b", "d1"].is_new_entity, "no site sees the other's"
    assert by["default", "d2"].entity_id == "d1" and not by["default", "d2"].is_new_entity
    assert by["home-b", "d2"].is_new_entity, "site b's d2 looks like nobody at site b"

    # A later detection at site b that looks exactly like site a's entity joins site b's entity only.
    events, _ = await a.assign([item("d3", v, "c3", minutes=2, site_id="home-b")])
    assert events[0].entity_id == "d1" and events[0].site_id == "home-b"
    a_detail = await store.get_entity("d1")
    b_detail = await store.for_site("home-b").get_entity("d1")
    assert a_detail is not None and b_detail is not None
    assert {x.detection_id for x in a_detail.appearances} == {"d1", "d2"} and a_detail.site_id == "default"
    assert {x.detection_id for x in b_detail.appearances} == {"d1", "d3"} and b_detail.site_id == "home-b"

    # The views of one site list its entities only; a redelivery is answered from its own site's marker.
    listed, total = await store.for_site("home-b").list_entities(None, None, None, 50, 0)
    assert total == 2 and {e.entity_id for e in listed} == {"d1", "d2"}
    assert all(e.site_id == "home-b" for e in listed)
    again, letters = await a.assign([item("d2", unit(9), "c2", minutes=1, site_id="home-b")])
    assert not letters and again[0].entity_id == "d2" and again[0].site_id == "home-b"
    assert await store.for_site("elsewhere").get_entity("d1") is None


async def test_every_key_of_a_site_carries_its_hash_tag(store: ReidStore):
    """What lets a Redis Cluster run every script: all keys a script or the erasure touches share one slot."""
    a = Assigner(store.settings, store)
    site_b = store.for_site("home-b")
    await a.assign([item("k1", unit(1), "c1", site_id="home-b"), item("k2", unit(1), "c2", minutes=1,
                                                                       site_id="home-b"),
                    item("k3", unit(3), "c1", minutes=2, site_id="home-b")])
    await Corrections(site_b).annotate("k1", {"name": "Ann", "watch": "front door"}, "ops")
    await Corrections(site_b).merge("k1", "k3", "ops")
    keys = [k.decode() async for k in store.redis.scan_iter(match=f"{store.settings.redis_prefix}:*")]
    assert len(keys) > 10
    tag = re.compile(re.escape(store.settings.redis_prefix) + r":\{home-b\}:")
    assert all(tag.match(k) for k in keys), [k for k in keys if not tag.match(k)]
    # The name's and the merge's updates wait in site b's outbox only, and name their site.
    found = await store.pending_outboxes([("default", "person"), ("home-b", "person")])
    assert list(found) == [("home-b", "person")]
    updates, alerts = found["home-b", "person"]
    assert [json.loads(u)["type"] for u in updates] == ["annotated", "merged"] and not alerts
    assert {json.loads(u)["site_id"] for u in updates} == {"home-b"}
    purged = await site_b.purge_entity("k1")
    assert purged is not None and sorted(purged["detections"]) == ["k1", "k2", "k3"]


async def test_a_worker_keeps_few_sites_in_memory_and_reads_a_dropped_one_again(store: ReidStore, monkeypatch):
    """Sites come and go with a worker's partitions: it keeps the copies of the latest ones only, and one it
    dropped is read back from Redis, with the same outcome as if it had been kept."""
    monkeypatch.setattr("reid_stream.stream.assign.MAX_CACHED", 2)
    a = Assigner(store.settings, store)
    for n, site in enumerate(("s1", "s2", "s3")):
        await a.assign([item(f"p{n}", unit(n), "c1", site_id=site)])
    assert [key[1] for key in a._caches] == ["s2", "s3"]
    events, _ = await a.assign([item("q0", unit(0), "c2", minutes=1, site_id="s1")])
    assert events[0].entity_id == "p0" and not events[0].is_new_entity, "s1's entity, read again from Redis"
    assert [key[1] for key in a._caches] == ["s3", "s1"]


async def test_a_batch_over_many_sites_gives_each_site_what_it_gets_alone(store: ReidStore, redis_client, unique):
    """A batch's (site, type) groups run concurrently, each yielding the loop between slices of its plan: the
    outcome must be the one each site gets when its detections arrive alone, in the same order."""
    rng = np.random.default_rng(5)
    looks = [unit(100 + i) for i in range(6)]
    sites = [f"s{i}" for i in range(4)]
    batch = []
    for n in range(3 * PLAN_SLICE):  # each group spans several slices
        for s, site in enumerate(sites):
            who = int(rng.integers(0, len(looks)))
            noisy = looks[who] + rng.normal(0, 0.005, looks[who].shape).astype(np.float32)
            etype = "vehicle" if (n + s) % 3 == 0 else "person"
            batch.append(item(f"d{n}", noisy / np.linalg.norm(noisy), f"c{n % 3}", etype, minutes=n, site_id=site))
    batch.append(copy.copy(batch[0]))  # an exact in-batch repeat (as Kafka redelivers it) follows its first copy

    together, letters = await Assigner(store.settings, store).assign(batch)
    assert not letters
    alone_settings = make_settings(unique + "-alone", similarity_threshold=0.9, embedding_ttl_seconds=600)
    alone_store = ReidStore(redis_client, alone_settings)
    try:
        alone_assigner = Assigner(alone_settings, alone_store)
        alone = [ev for site in sites for ev in
                 (await alone_assigner.assign([i for i in batch[:-1] if i.site_id == site]))[0]]
    finally:
        keys = [k async for k in redis_client.scan_iter(match=f"{alone_settings.redis_prefix}:*")]
        if keys:
            await redis_client.delete(*keys)

    def outcome(events):
        return {(e.site_id, e.detection_id): (e.entity_id, e.is_new_entity) for e in events}

    assert len(together) == len(batch) and outcome(together) == outcome(alone)
    assert len({(e.site_id, e.entity_id) for e in together}) >= len(sites) * 2, "looks became entities per site"


async def test_a_group_cancelled_mid_plan_leaves_no_unstored_rows_behind(store: ReidStore):
    """A batch's groups run concurrently, and one that fails cancels the others. A group cancelled while planning
    holds rows in its copy that Redis never stored, at the version Redis still has: kept, the batch's retry would
    trust them, and each detection would meet a ghost of itself."""
    a = Assigner(store.settings, store)
    items = [item(f"g{n}", unit(300 + n), "c1", minutes=n) for n in range(3 * PLAN_SLICE)]
    key = ("test-model", "default", "person")
    task = asyncio.ensure_future(a._assign_group(a._site("default"), "test-model", "person", items))
    for _ in range(100_000):  # until planning has put rows in the copy (it yields every PLAN_SLICE detections)
        await asyncio.sleep(0)
        cache = a._caches.get(key)
        if cache is not None and len(cache.index) > 0:
            break
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert a._caches.get(key) is None, "the copy with unstored rows was dropped"
    assert await store.version("test-model", "person") == 0, "nothing was stored"
    events, letters = await a.assign(items)  # the retry
    assert not letters and len(events) == len(items)
    assert all(e.is_new_entity for e in events), "no detection met a ghost of itself"
