"""The Redis store and the assignment stage against a real Redis."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from reid_stream.encoders.null import NullEncoder
from reid_stream.events import Detection
from reid_stream.service import ReIdentificationService
from reid_stream.store.reid_store import ReidStore
from reid_stream.stream.assign import Assigner
from reid_stream.stream.wire import EmbeddedRecord
from tests.conftest import make_settings

pytestmark = pytest.mark.integration
T0 = datetime.now(UTC).replace(microsecond=0)


def unit(seed: int, dim: int = 16) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def item(det_id: str, vec: np.ndarray, camera: str = "c1", etype: str = "person", minutes: int = 0,
         model: str = "test-model", **extra: object) -> EmbeddedRecord:
    det = Detection.model_validate({
        "detection_id": det_id, "camera_id": camera, "entity_type": etype,
        "timestamp": (T0 + timedelta(minutes=minutes)).isoformat(), "bbox": {"x1": 0, "y1": 0, "x2": 4, "y2": 4},
        "image_path": "x.png", **extra})
    return EmbeddedRecord.of(det, vec, model)


@pytest.fixture
async def store(redis_client, unique):
    settings = make_settings(unique, similarity_threshold=0.9, embedding_ttl_seconds=600, max_embeddings=5)
    s = ReidStore(redis_client, settings)
    yield s
    keys = [k async for k in redis_client.scan_iter(match=f"{settings.redis_prefix}:*")]
    if keys:
        await redis_client.delete(*keys)


async def all_keys(store: ReidStore) -> list[bytes]:
    return [k async for k in store.redis.scan_iter(match=f"{store.settings.redis_prefix}:*")]


async def test_same_vector_on_two_cameras_is_one_entity_and_an_unrelated_one_is_new(store):
    a = Assigner(store.settings, store)
    v = unit(1)
    events, letters = await a.assign([item("d1", v, "c1"), item("d2", v, "c2", minutes=1), item("d3", unit(2))])
    assert not letters
    by = {e.detection_id: e for e in events}
    assert by["d1"].is_new_entity and by["d1"].entity_id == "d1"
    assert not by["d2"].is_new_entity and by["d2"].entity_id == "d1"
    assert by["d2"].matches[0].detection_id == "d1" and by["d2"].matches[0].similarity == pytest.approx(1.0)
    assert by["d3"].is_new_entity and by["d3"].entity_id == "d3"
    detail = await store.get_entity("d1")
    assert detail.appearance_count == 2 and detail.cameras_seen == ["c1", "c2"]
    assert [ap.detection_id for ap in detail.appearances] == ["d1", "d2"]
    assert detail.appearances[1].similarity_score == pytest.approx(1.0)
    assert detail.first_seen == T0 and detail.last_seen == T0 + timedelta(minutes=1)


async def test_entity_and_appearance_shape_and_one_similarity_value(store):
    """id, thumbnail_url, camera_name fallback, founder score 1.0, and the match event's similarity
    equal to the stored appearance's, to the last digit."""
    a = Assigner(store.settings, store)
    v = unit(11)
    w = v + 0.05 * unit(12)
    w = (w / np.linalg.norm(w)).astype(np.float32)  # similar, not identical: a score with many digits
    events, _ = await a.assign([item("f1", v, "c1", camera_name="Front door"),
                                item("f2", w, "c2", minutes=1, attributes={"color": "red"})])
    joined = next(e for e in events if e.detection_id == "f2")
    from reid_stream.events import MatchEvent

    for ev in events:  # built without validation on the hot path: must still be exactly a valid event
        assert MatchEvent.model_validate_json(ev.model_dump_json()) == ev
    assert not joined.is_new_entity and 0.9 < joined.matches[0].similarity < 1.0
    detail = await store.get_entity("f1")
    assert detail.id == detail.entity_id == "f1"
    first, second = detail.appearances
    assert first.similarity_score == 1.0 and first.camera_name == "Front door" and first.attributes is None
    # Exactly the float its match event gives the entity it joined.
    assert second.similarity_score == next(c.similarity for c in joined.candidates if c.entity_id == "f1")
    assert second.camera_name == "c2" and second.attributes == {"color": "red"}
    assert first.thumbnail_url == "/api/detections/f1/image"
    assert detail.thumbnail_url == "/api/detections/f2/image"  # the latest appearance
    (summary,), _ = await store.list_entities(None, "c2", None, 10, 0)
    assert summary.id == "f1" and summary.thumbnail_url == detail.thumbnail_url
    # Only the image reference is kept (no pixels), and it goes with the detection's marker.
    assert await store.image_ref("f1") == {"bbox": [0.0, 0.0, 4.0, 4.0], "path": "x.png"}
    assert await store.image_ref("nope") is None
    await store.purge_entity("f1")
    assert await store.image_ref("f1") is None


async def test_thumbnail_url_template_overrides_the_route(redis_client, unique):
    settings = make_settings(unique, thumbnail_url_template="https://nvr.example/{camera_id}/{detection_id}.jpg")
    s = ReidStore(redis_client, settings)
    await Assigner(settings, s).assign([item("t1", unit(3), "cam 9")])
    detail = await s.get_entity("t1")
    assert detail.thumbnail_url == detail.appearances[0].thumbnail_url == "https://nvr.example/cam 9/t1.jpg"
    await s.purge_entity("t1")


async def test_redelivery_stores_once_and_re_emits_the_same_event(store):
    a = Assigner(store.settings, store)
    first, _ = await a.assign([item("d1", unit(1))])
    again, letters = await Assigner(store.settings, store).assign([item("d1", unit(1))])
    assert not letters and again[0] == first[0]
    twice_in_batch, _ = await a.assign([item("d9", unit(9)), item("d9", unit(9))])
    assert [e.detection_id for e in twice_in_batch] == ["d9", "d9"] and twice_in_batch[0] == twice_in_batch[1]
    assert (await store.get_entity("d1")).appearance_count == 1
    assert (await store.get_entity("d9")).appearance_count == 1
    assert await store.redis.zcard(store.keys.index("test-model", "person")) == 2


async def test_a_different_event_reusing_a_detection_id_is_dead_lettered(store):
    a = Assigner(store.settings, store)
    await a.assign([item("d1", unit(1), camera="c1")])
    events, letters = await a.assign([item("d1", unit(1), camera="c7")])
    assert not events and [ltr.error_code for ltr in letters] == ["detection_id_conflict"]


async def test_every_key_has_a_ttl(store):
    a = Assigner(store.settings, store)
    await a.assign([item(f"d{i}", unit(i % 3), camera=f"c{i}") for i in range(8)])
    keys = await all_keys(store)
    assert len(keys) > 10
    ttls = [await store.redis.ttl(k) for k in keys]
    assert all(0 < t <= 600 for t in ttls), dict(zip(keys, ttls, strict=True))


async def test_cap_drops_the_oldest_embeddings_first(store):
    a = Assigner(store.settings, store)
    for i in range(8):  # cap is 5
        await a.assign([item(f"d{i}", unit(100 + i))])
    members = await store.redis.zrange(store.keys.index("test-model", "person"), 0, -1)
    assert sorted(m.decode().split("|")[1] for m in members) == [f"d{i}" for i in range(3, 8)]
    _, index = await store.load_index("test-model", "person", 16)
    assert len(index) == 5 and "d0" not in index
    # The entity and its appearance outlive the evicted embedding; only matching forgets it.
    assert (await store.get_entity("d0")).appearance_count == 1


async def test_find_matching_entities_through_the_service(store):
    """ReIdentificationService.find_matching_entities(redis_client, ...) reads what the stage stored."""
    svc = ReIdentificationService(store.settings, encoder=NullEncoder())
    model = svc.encoder.model_id  # the service compares only vectors of its own encoder's model
    a = Assigner(store.settings, store)
    v = unit(5)
    await a.assign([item("d1", v, "c1", model=model), item("d2", unit(6), "c2", model=model),
                    item("o1", v, "c1", model="other-model")])
    try:
        got = await svc.find_matching_entities(store.redis, v, "person")  # the configured threshold, 0.9
        assert [(e.detection_id, e.entity_id, round(s, 4)) for e, s in got] == [("d1", "d1", 1.0)]
        everything = await svc.find_matching_entities(store.redis, v, "person", min_similarity=-1.0, limit=10)
        assert [e.detection_id for e, _ in everything] == ["d1", "d2"]
        assert everything[0][1] >= everything[1][1]
        top = await svc.find_matching_entities(store.redis, v, "person", min_similarity=-1.0, limit=1)
        assert [e.detection_id for e, _ in top] == ["d1"]
        assert [e.detection_id for e, _ in await svc.find_matching_entities(
            store.redis, v, "person", camera_id="c2", min_similarity=-1.0)] == ["d2"]
        assert await svc.find_matching_entities(store.redis, v, "vehicle") == []
    finally:
        svc.close()


@pytest.mark.parametrize("track", ["t9", None])
async def test_two_concurrent_writers_never_create_the_same_entity_twice(store, track):
    """Two assigners (as two workers would be during a rebalance) see the same new tracklet (or the same new
    person without a track id) at once: one of them loses the compare-and-set, reloads and joins the other."""
    v = unit(42)
    w1, w2 = Assigner(store.settings, store), Assigner(store.settings, store)
    await w1.assign([item("warm1", unit(1))])
    await w2.assign([item("warm2", unit(2))])  # both caches hold a version that is about to go stale
    extra = {"track_id": track} if track else {}
    (e1, _), (e2, _) = await asyncio.gather(w1.assign([item("p-a", v, "c1", minutes=1, **extra)]),
                                            w2.assign([item("p-b", v, "c1", minutes=2, **extra)]))
    ids = {e1[0].entity_id, e2[0].entity_id}
    assert len(ids) == 1, "both detections of the same person must share one entity"
    assert (await store.get_entity(ids.pop())).appearance_count == 2
    decisions = sorted(e[0].decision for e in (e1, e2))
    assert decisions == (["new", "tracklet"] if track else ["joined", "new"])


async def test_list_filters_and_pages(store):
    a = Assigner(store.settings, store)
    await a.assign([item("p1", unit(1), "c1", minutes=1), item("p2", unit(2), "c2", minutes=2),
                    item("v1", unit(3), "c1", etype="vehicle", minutes=3)])
    everyone, total = await store.list_entities(None, None, None, 50, 0)
    assert [e.entity_id for e in everyone] == ["v1", "p2", "p1"] and total == 3
    persons, _ = await store.list_entities("person", None, None, 50, 0)
    assert [e.entity_id for e in persons] == ["p2", "p1"]
    cam1, total1 = await store.list_entities(None, "c1", None, 50, 0)
    assert [e.entity_id for e in cam1] == ["v1", "p1"] and total1 == 2
    page, total = await store.list_entities(None, None, None, 1, 1)
    assert [e.entity_id for e in page] == ["p2"] and total == 3
    recent, _ = await store.list_entities(None, None, (T0 + timedelta(minutes=2)).timestamp(), 50, 0)
    assert [e.entity_id for e in recent] == ["v1", "p2"]


async def test_cache_survives_a_version_bump_by_someone_else(store):
    a, b = Assigner(store.settings, store), Assigner(store.settings, store)
    v = unit(7)
    await a.assign([item("x1", v)])
    await b.assign([item("x2", unit(8))])  # a's cached version is now stale
    events, _ = await a.assign([item("x3", v)])
    assert events[0].entity_id == "x1"


async def test_a_mass_expiry_larger_than_lua_can_unpack_still_commits(store):
    """After a long quiet spell thousands of embeddings expire in one commit; the script must cope."""
    import time

    from reid_stream.store.keys import day_of

    k, model = store.keys, "test-model"
    old = time.time() - 10_000  # older than the 600 s TTL of this fixture
    pipe = store.redis.pipeline(transaction=False)
    day = day_of(T0)
    for i in range(9000):
        pipe.zadd(k.index(model, "person"), {f"{day}|old-{i}": old})
    pipe.expire(k.index(model, "person"), 600)
    await pipe.execute()
    events, _ = await Assigner(store.settings, store).assign([item("fresh", unit(1))])
    assert events[0].is_new_entity
    assert await store.redis.zcard(k.index(model, "person")) == 1


async def test_float16_storage_halves_the_vector_and_still_matches_after_a_reload(redis_client, unique):
    settings = make_settings(unique, similarity_threshold=0.999, vector_dtype="float16")
    store = ReidStore(redis_client, settings)
    try:
        dim = 768
        await Assigner(settings, store).assign([item("h1", unit(7, dim)), item("h2", unit(8, dim))])
        day_hash = next(k for k in await all_keys(store) if b":entity_embeddings:" in k)
        assert len(await redis_client.hget(day_hash, "h1")) == 2 * dim
        _, index = await store.load_index("test-model", "person", dim)
        events, _ = await Assigner(settings, store).assign([item("h3", unit(7, dim), minutes=1)])  # a fresh writer
        assert events[0].entity_id == "h1" and events[0].matches[0].similarity == pytest.approx(1.0, abs=1e-4)
        assert len(index) == 2
    finally:
        keys = await all_keys(store)
        if keys:
            await redis_client.delete(*keys)


async def test_the_commit_script_survives_a_flushed_script_cache(store):
    """A Redis restart empties its script cache; redis-py's registered script loads itself again."""
    a = Assigner(store.settings, store)
    await a.assign([item("s1", unit(1))])
    await store.redis.script_flush()
    events, letters = await a.assign([item("s2", unit(2))])
    assert not letters and events[0].is_new_entity and await store.get_entity("s2") is not None


async def test_the_gallery_holds_exactly_the_stored_rows_after_evictions(store):
    """Evicted rows (cap 5 here) leave the decision state too, as a reload would find it."""
    a = Assigner(store.settings, store)
    for n in range(8):
        await a.assign([item(f"g{n}", unit(100 + n), "c1", minutes=n)])
    cache = a._caches[("test-model", "default", "person")]
    assert set(cache.gallery.rows) == {e.detection_id for e in cache.index.items()}
    assert len(cache.gallery.rows) == 5 and set(cache.gallery.entities) == set(cache.gallery.rows)
    a.invalidate()
    await a.assign([item("g8", unit(200), "c1", minutes=9)])
    reloaded = a._caches[("test-model", "default", "person")]
    assert set(reloaded.gallery.rows) == {e.detection_id for e in reloaded.index.items()}
