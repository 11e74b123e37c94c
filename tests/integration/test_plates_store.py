"""Licence plates against a real Redis: stored in their rows, read back after a reload, deciding and refusing
through the assign stage, refusing an operator's merge, and gone with the entity's erasure."""

from __future__ import annotations

import json

import pytest

from reid_stream.identity.decide import PLATE_REFUSAL
from reid_stream.store.corrections import CorrectionError, Corrections
from reid_stream.store.keys import day_of
from reid_stream.store.reid_store import ReidStore
from reid_stream.stream.assign import Assigner
from tests.conftest import make_settings
from tests.integration.test_store import T0, all_keys, item, unit

pytestmark = pytest.mark.integration
MODEL = "test-model"


@pytest.fixture
async def store(redis_client, unique):
    s = ReidStore(redis_client, make_settings(unique, similarity_threshold=0.9, embedding_ttl_seconds=600))
    yield s
    keys = await all_keys(s)
    if keys:
        await redis_client.delete(*keys)


def vehicle(det: str, look: int, camera: str, minutes: int, plate: str | None = None, track: str | None = None):
    attributes = {"colour": "blue"} | ({"plate": plate} if plate is not None else {})
    extra: dict[str, object] = {"attributes": attributes} | ({"track_id": track} if track else {})
    return item(det, unit(look), camera, "vehicle", minutes, **extra)


async def everything(store: ReidStore) -> bytes:
    """Every value under the test's prefix, whatever its type, as one byte string to search."""
    r, out = store.redis, []
    for key in await all_keys(store):
        kind = (await r.type(key)).decode()
        if kind == "string":
            out.append(await r.get(key) or b"")
        elif kind == "hash":
            out += [k + b"=" + v for k, v in (await r.hgetall(key)).items()]
        elif kind == "set":
            out += list(await r.smembers(key))
        elif kind == "zset":
            out += list(await r.zrange(key, 0, -1))
        elif kind == "list":
            out += list(await r.lrange(key, 0, -1))
    return b"\n".join(out)


async def test_plates_are_stored_decide_refuse_and_are_erased_with_the_entity(store):
    events, letters = await Assigner(store.settings, store).assign([
        vehicle("v1", 1, "gate", 0, "ab-123-cd", track="1"), vehicle("v2", 1, "gate", 0, None, track="1")])
    assert not letters and [(e.plate, e.decision) for e in events] == [("AB123CD", "new"), (None, "tracklet")]
    meta = await store.redis.hget(store.keys.meta_prefix(MODEL, "vehicle") + day_of(T0), "v1")
    assert json.loads(meta)["p"] == "AB123CD"
    assert "p" not in json.loads(await store.redis.hget(store.keys.meta_prefix(MODEL, "vehicle") + day_of(T0), "v2"))
    assert await store.plates(MODEL, "vehicle", "v1") == {"AB123CD"}

    # A fresh writer rebuilds the plates from the rows: the same plate, another look, another camera, joins.
    events, _ = await Assigner(store.settings, store).assign([
        vehicle("v3", 10, "street", 10, "AB 123 CD"),
        vehicle("x1", 1, "yard", 20, "XY987ZT"),  # V's look, another plate: refused
        vehicle("n1", 1, "yard", 30)])  # V's look and x1's, no plate: no plate refuses anybody
    v3, x1, n1 = events
    assert (v3.entity_id, v3.decision, v3.plate) == ("v1", "plate", "AB123CD")
    assert (x1.entity_id, x1.decision) == ("x1", "new")
    assert {c.entity_id: c.refused for c in x1.candidates}["v1"] == PLATE_REFUSAL
    assert (n1.entity_id, n1.decision, n1.ambiguous) == ("n1", "new", True)  # as alike to both, as before plates
    assert {c.entity_id: c.refused for c in n1.candidates} == {"v1": None, "x1": None}

    detail = await store.get_entity("v1")
    assert [(a.detection_id, (a.attributes or {}).get("plate")) for a in detail.appearances] == [
        ("v1", "AB123CD"), ("v2", None), ("v3", "AB123CD")]
    assert detail.appearances[0].attributes == {"colour": "blue", "plate": "AB123CD"}

    # An operator may not merge two vehicles with different plates; one without a plate merges as ever.
    corrections = Corrections(store)
    with pytest.raises(CorrectionError) as err:
        await corrections.merge("v1", "x1", by="ops")
    assert (err.value.status, err.value.code) == (409, "plate_conflict")
    await Assigner(store.settings, store).assign([vehicle("u1", 7, "yard", 40)])
    assert (await corrections.merge("v1", "u1", by="ops")).survivor == "v1"

    # Erasure: the plate is in no key of the store afterwards, and a later sighting of it is a stranger.
    assert b"AB123CD" in await everything(store)
    purged = await store.purge_entity("v1")
    assert sorted(purged["detections"]) == ["u1", "v1", "v2", "v3"]
    assert b"AB123CD" not in await everything(store)
    assert b"XY987ZT" in await everything(store)  # the other vehicle's own plate stays with it
    assert await store.plates(MODEL, "vehicle", "v1") == set()
    events, _ = await Assigner(store.settings, store).assign([vehicle("v4", 10, "street", 50, "AB123CD")])
    assert (events[0].entity_id, events[0].decision) == ("v4", "new")
    for key in await all_keys(store):
        assert await store.redis.ttl(key) > 0, key  # every key expires, plates included
