"""Entity merges, aliases, the entity-updates outbox and erasure of references, against a real Redis."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from reid_stream.events import Candidate, EntityAppearance, MatchEvent, MatchRef
from reid_stream.identity.matching import Assignment
from reid_stream.store.keys import day_of
from reid_stream.store.reid_store import PlannedWrite, ReidStore
from tests.conftest import make_settings

pytestmark = pytest.mark.integration
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
MODEL, TYPE, DIM = "test-model", "person", 8


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def ref(det: str, entity: str, camera: str = "c1", minutes: int = 0, similarity: float = 0.8) -> MatchRef:
    return MatchRef(detection_id=det, entity_id=entity, camera_id=camera,
                    timestamp=T0 + timedelta(minutes=minutes), similarity=similarity)


def write(det: str, entity: str, camera: str = "c1", minutes: int = 0, matches: tuple[MatchRef, ...] = (),
          candidates: tuple[Candidate, ...] = (), seed: int = 0) -> PlannedWrite:
    """One detection as the assign stage would plan it, with exactly the matches and candidates given."""
    at = T0 + timedelta(minutes=minutes)
    event = MatchEvent(detection_id=det, entity_id=entity, is_new_entity=det == entity, entity_type=TYPE,
                       camera_id=camera, timestamp=at, model=MODEL, matches=list(matches),
                       processed_at=datetime.now(UTC), candidates=list(candidates))
    appearance = EntityAppearance(detection_id=det, camera_id=camera, camera_name=camera, timestamp=at,
                                  similarity_score=1.0)
    return PlannedWrite(event, unit(seed or zlib.crc32(det.encode())), Assignment(entity, det == entity, None),
                        f"fp-{det}", appearance, stored_at=at.timestamp() + 3000,
                        image_ref={"bbox": [0, 0, 4, 4], "path": f"{det}.png"})


async def put(store: ReidStore, *writes: PlannedWrite) -> None:
    for w in writes:
        (res,) = await store.commit([w], await store.version(MODEL, TYPE))
        assert res.status == "ok", res


async def merge(store: ReidStore, survivor: str, merged: str, similarity: float = 0.93) -> int:
    res = await store.merge(MODEL, TYPE, survivor, merged, similarity, await store.version(MODEL, TYPE),
                            T0 + timedelta(hours=1))
    assert res.status == "ok", res
    assert res.version is not None
    return res.version


@pytest.fixture
async def store(redis_client, unique):
    settings = make_settings(unique, embedding_ttl_seconds=7200, max_embeddings=100)
    s = ReidStore(redis_client, settings)
    yield s
    keys = await all_keys(s)
    if keys:
        await redis_client.delete(*keys)


async def all_keys(store: ReidStore) -> list[str]:
    return [k.decode() async for k in store.redis.scan_iter(match=f"{store.settings.redis_prefix}:*")]


async def two_entities(store: ReidStore) -> None:
    """E1 = a1 (c1, +5 min), a2 (c2, +10); E2 = b1 (c3, +0), b2 (c1, +20)."""
    await put(store, write("a1", "a1", "c1", 5), write("a2", "a1", "c2", 10),
              write("b1", "b1", "c3", 0), write("b2", "b1", "c1", 20))


async def test_merge_moves_appearances_cameras_and_first_last(store):
    await two_entities(store)
    before = await store.version(MODEL, TYPE)
    assert await merge(store, "a1", "b1") == before + 1 == await store.version(MODEL, TYPE)

    detail = await store.get_entity("a1")
    assert detail.resolved_from is None and detail.merged_ids == ["b1"]
    assert [a.detection_id for a in detail.appearances] == ["b1", "a1", "a2", "b2"]  # time order across both
    assert detail.appearance_count == 4 and detail.cameras_seen == ["c1", "c2", "c3"]
    assert detail.first_seen == T0 and detail.last_seen == T0 + timedelta(minutes=20)
    h = {k.decode(): v.decode() for k, v in (await store.redis.hgetall(store.keys.entity("a1"))).items()}
    assert (h["first_det"], h["first_cam"], h["last_det"], h["last_cam"]) == ("b1", "c3", "b2", "c1")
    assert detail.thumbnail_url == "/api/detections/b2/image"

    # The merged id is gone from every list; the survivor is listed where the merged one was.
    everyone, total = await store.list_entities(None, None, None, 50, 0)
    assert [e.id for e in everyone] == ["a1"] and total == 1 and everyone[0].merged_ids == ["b1"]
    for cam in ("c1", "c2", "c3"):
        listed, _ = await store.list_entities(TYPE, cam, None, 50, 0)
        assert [e.id for e in listed] == ["a1"], cam
    # Per camera, the later of the two last-seen times: c1 saw b2 at +20 after a1 at +5.
    assert await store.redis.zscore(store.keys.by_camera(TYPE, "c1"), "a1") == (T0 + timedelta(minutes=20)).timestamp()
    assert await store.redis.zscore(store.keys.by_camera(TYPE, "c3"), "a1") == T0.timestamp()
    k = store.keys
    for key in (k.entity("b1"), k.cameras("b1"), k.appearances("b1"), k.order("b1"), k.merged_ids("b1")):
        assert not await store.redis.exists(key), key


async def test_alias_resolves_and_chains_flatten(store):
    await put(store, write("x", "x", minutes=1), write("y", "y", minutes=2), write("z", "z", minutes=3))
    await merge(store, "y", "x")  # x into y, then y into z: x is z now
    await merge(store, "z", "y")

    for asked in ("x", "y"):
        detail = await store.get_entity(asked)
        assert detail.id == detail.entity_id == "z" and detail.resolved_from == asked
        assert detail.merged_ids == ["x", "y"] and detail.appearance_count == 3
    assert (await store.get_entity("z")).resolved_from is None
    assert await store.get_entity("nobody") is None
    # Every alias points straight at the survivor: no chain left to follow.
    assert await store.redis.get(store.keys.alias("x")) == b"z"
    assert await store.redis.hgetall(store.keys.aliases(MODEL, TYPE)) == {b"x": b"z", b"y": b"z"}
    assert not await store.redis.exists(store.keys.merged_ids("y"))
    assert await store.resolve("x") == "z" and await store.resolve("nobody") is None


async def test_a_chain_left_by_an_older_alias_is_still_followed(store):
    """Aliases re-pointed by a merge are the rule; an alias written before that (or a half-expired chain)
    must still resolve, and a cycle must end in 'not found' instead of a loop."""
    await put(store, write("live", "live"))
    await store.redis.set(store.keys.alias("old"), "mid", ex=60)
    await store.redis.set(store.keys.alias("mid"), "live", ex=60)
    assert (await store.get_entity("old")).resolved_from == "old"
    await store.redis.set(store.keys.alias("p"), "q", ex=60)
    await store.redis.set(store.keys.alias("q"), "p", ex=60)
    assert await store.get_entity("p") is None and await store.resolve("p") is None


async def test_load_index_and_nearest_name_only_survivors(store):
    await put(store, write("x", "x", seed=1), write("x2", "x", seed=2), write("y", "y", seed=3),
              write("z", "z", seed=4))
    await merge(store, "y", "x")
    await merge(store, "z", "y")
    _, index = await store.load_index(MODEL, TYPE, DIM)
    rows = index.search(unit(1), 10, min_similarity=-1.0)
    assert {e.detection_id: e.entity_id for e, _ in rows} == {"x": "z", "x2": "z", "y": "z", "z": "z"}
    # The rows themselves are not rewritten: the aliases hash does the renaming.
    meta = await store.redis.hget(store.keys.meta_prefix(MODEL, TYPE) + day_of(T0), "x")
    assert json.loads(meta)["e"] == "x"
    best = await store.nearest(unit(2), TYPE, MODEL, min_similarity=0.99)
    assert [(e.detection_id, e.entity_id) for e, _ in best] == [("x2", "z")]


async def test_a_stale_version_conflicts_and_a_vanished_entity_is_gone(store):
    await two_entities(store)
    version = await store.version(MODEL, TYPE)
    at = T0 + timedelta(hours=1)
    stale = await store.merge(MODEL, TYPE, "a1", "b1", 0.9, version - 1, at)
    assert (stale.status, stale.version) == ("conflict", version)
    assert (await store.get_entity("b1")).resolved_from is None  # nothing moved
    gone = await store.merge(MODEL, TYPE, "a1", "nobody", 0.9, version, at)
    assert (gone.status, gone.version) == ("gone", version)
    gone = await store.merge(MODEL, TYPE, "nobody", "a1", 0.9, version, at)
    assert gone.status == "gone" and await store.version(MODEL, TYPE) == version
    assert await store.pending_updates(TYPE) == []
    with pytest.raises(ValueError):
        await store.merge(MODEL, TYPE, "a1", "a1", 1.0, version, at)


async def test_a_batch_planned_before_a_merge_stores_none_of_it(store):
    """A merge (one version step) lands between a batch's planning and its commit. Detection 1 of the batch
    expects exactly the version the merge left, yet must not be stored: it was decided against the entity the
    merge just removed (this once brought merged ids back to life as entities)."""
    await two_entities(store)
    planned_at = await store.version(MODEL, TYPE)
    await merge(store, "a1", "b1")
    results = await store.commit([write("x1", "a1", minutes=30), write("x2", "b1", minutes=31),
                                  write("x3", "b1", minutes=32)], planned_at)
    assert [r.status for r in results] == ["conflict"] * 3
    assert await store.version(MODEL, TYPE) == planned_at + 1
    assert not await store.redis.exists(store.keys.entity("b1"))
    assert not await store.markers(["x1", "x2", "x3"])
    # After a duplicate, too, the rest wait for the next round instead of landing on a moved count.
    await put(store, write("y1", "a1", minutes=40))
    version = await store.version(MODEL, TYPE)
    results = await store.commit([write("y1", "a1", minutes=40), write("y2", "a1", minutes=41)], version - 1)
    assert [r.status for r in results] == ["dup", "conflict"]


async def test_outbox_keeps_updates_in_order_until_acknowledged(store):
    await put(store, write("p", "p"), write("q", "q"), write("r", "r"))
    await merge(store, "p", "q", 0.91)
    await merge(store, "p", "r", 0.92)
    pending = await store.pending_updates(TYPE)
    assert [(u.type, u.survivor, u.merged, u.similarity, u.entity_type) for u in pending] == [
        ("merged", "p", "q", 0.91, "person"), ("merged", "p", "r", 0.92, "person")]
    assert pending[0].at == T0 + timedelta(hours=1)
    assert await store.pending_updates(TYPE, limit=1) == pending[:1]
    assert await store.pending_updates("vehicle") == []
    await store.ack_updates(TYPE, 1)
    assert await store.pending_updates(TYPE) == pending[1:]
    await store.ack_updates(TYPE, 5)
    assert await store.pending_updates(TYPE) == []


async def test_purge_through_an_alias_erases_the_survivor_and_every_alias(store):
    await put(store, write("x", "x"), write("y", "y"), write("z", "z"), write("other", "other", seed=9))
    await merge(store, "y", "x")
    await merge(store, "z", "y")
    purged = await store.purge_entity("x")
    assert purged["entity_id"] == "z" and purged["resolved_from"] == "x" and purged["merged_ids"] == ["x", "y"]
    assert sorted(purged["detections"]) == ["x", "y", "z"]
    for asked in ("x", "y", "z"):
        assert await store.get_entity(asked) is None
        assert await store.purge_entity(asked) is None
    left = await all_keys(store)
    assert not [k for k in left if k.rsplit(":", 1)[-1] in ("x", "y", "z") or ":ent:x" in k or ":ent:y" in k
                or ":ent:z" in k], left
    assert not await store.redis.exists(store.keys.aliases(MODEL, TYPE))
    _, index = await store.load_index(MODEL, TYPE, DIM)
    assert len(index) == 1 and (await store.get_entity("other")) is not None


async def test_purge_drops_references_in_other_detections_markers(store):
    """Issue 14, item 1: B matched A; erasing A's entity must leave nothing of A in B's stored event."""
    a = write("det-alpha", "ent-one", "gate", 1)
    b = write("det-bravo", "ent-two", "yard", 2, matches=(ref("det-alpha", "ent-one", "gate", 1),),
              candidates=(Candidate(entity_id="ent-one", similarity=0.8, refused="space_time"),
                          Candidate(entity_id="ent-three", similarity=0.7)))
    await put(store, a, b)
    marker_b = store.keys.marker("det-bravo")
    ttl_before = await store.redis.pttl(marker_b)

    assert (await store.purge_entity("ent-one"))["detections"] == ["det-alpha"]

    raw = (await store.redis.get(marker_b)).decode()
    assert "det-alpha" not in raw and "ent-one" not in raw and "gate" not in raw
    event = json.loads(raw)["event"]
    assert event["matches"] == [] and [c["entity_id"] for c in event["candidates"]] == ["ent-three"]
    assert json.loads(raw)["fp"] == "fp-det-bravo"  # still recognises its redelivery
    assert 0 < await store.redis.pttl(marker_b) <= ttl_before  # the marker keeps its TTL
    assert not [k for k in await all_keys(store) if "ent-one" in k or "det-alpha" in k]


async def test_purge_drops_references_to_merged_entities_and_its_own_from_others(store):
    """References follow merges; and the erased detections leave the reference sets of entities they named."""
    await put(store, write("m", "m", "c1", 1), write("s", "s", "c1", 2),
              write("n", "n", "c2", 3, matches=(ref("m", "m", "c1", 1),)),  # names the soon-merged m
              write("k", "k", "c2", 4),
              write("s2", "s", "c1", 5, candidates=(Candidate(entity_id="k", similarity=0.6),)))
    await merge(store, "s", "m")
    assert await store.redis.smembers(store.keys.refs("s")) == {b"n"}
    await store.purge_entity("s")
    raw = (await store.redis.get(store.keys.marker("n"))).decode()
    assert '"m"' not in raw and json.loads(raw)["event"]["matches"] == []
    assert not await store.redis.exists(store.keys.refs("k"))  # s2, erased, no longer refers to k
    assert not await store.redis.exists(store.keys.refs("s"))


async def test_every_key_of_merges_and_erasures_has_a_ttl(store):
    await two_entities(store)
    await put(store, write("c", "c", candidates=(Candidate(entity_id="a1", similarity=0.5),)))
    await merge(store, "a1", "b1")
    await merge(store, "c", "a1")
    await put(store, write("d", "d", matches=(ref("a2", "c"),)))
    keys = await all_keys(store)
    assert any(":outbox:" in k for k in keys) and any(":alias:" in k for k in keys)
    assert any(":refs:" in k for k in keys) and any(":aliases:" in k for k in keys)
    ttls = {k: await store.redis.ttl(k) for k in keys}
    assert all(0 < t <= 7200 for t in ttls.values()), ttls
    await store.purge_entity("b1")
    ttls = {k: await store.redis.ttl(k) for k in await all_keys(store)}
    assert all(0 < t <= 7200 for t in ttls.values()), ttls


async def test_a_new_appearance_keeps_the_merged_ids_alive(store):
    """The merged entity's appearances live on in the survivor, so its id must keep resolving (and stay
    erasable) as long as they do: the survivor's commits refresh its merged ids and their aliases."""
    await put(store, write("x", "x"), write("y", "y"))
    await merge(store, "y", "x")
    k = store.keys
    for key in (k.alias("x"), k.merged_ids("y"), k.aliases(MODEL, TYPE)):
        await store.redis.expire(key, 5)
    await put(store, write("y2", "y", minutes=3))
    for key in (k.alias("x"), k.merged_ids("y"), k.aliases(MODEL, TYPE)):
        assert await store.redis.ttl(key) > 7000, key
