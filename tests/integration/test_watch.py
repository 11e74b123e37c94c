"""Watch lists against a real Redis: alerts written with their detection, rate-limited, never repeated for a
redelivery, following merges, and gone with erasure."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import numpy as np
import pytest

from reid_stream.events import Detection, WatchAlert
from reid_stream.store.corrections import Corrections
from reid_stream.store.reid_store import ReidStore
from reid_stream.store.watch import WatchError, Watchlist
from reid_stream.stream.assign import Assigner
from reid_stream.stream.wire import EmbeddedRecord
from tests.conftest import make_settings
from tests.integration.test_store_merge import DIM, MODEL, T0, TYPE, all_keys

pytestmark = pytest.mark.integration
COOLDOWN = 60


@pytest.fixture
async def store(redis_client, unique):
    settings = make_settings(unique, embedding_ttl_seconds=7200, max_embeddings=100, named_retention_seconds=86400,
                             alert_cooldown_seconds=COOLDOWN, similarity_threshold=0.9)
    s = ReidStore(redis_client, settings)
    yield s
    keys = await all_keys(s)
    if keys:
        await redis_client.delete(*keys)


def look(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def rec(det: str, vec: np.ndarray, camera: str = "c1", seconds: float = 0, track: str | None = None) -> EmbeddedRecord:
    d = Detection(detection_id=det, camera_id=camera, entity_type=TYPE, track_id=track,
                  timestamp=(T0 + timedelta(seconds=seconds)).isoformat(),
                  bbox={"x1": 0, "y1": 0, "x2": 64, "y2": 128}, image_path=f"{det}.png")
    return EmbeddedRecord.of(d, vec, MODEL)


async def alerts(store: ReidStore) -> list[WatchAlert]:
    return [WatchAlert.model_validate_json(a) for a in await store.pending_alerts(TYPE)]


async def test_a_watched_entity_alerts_once_per_camera_and_cooldown_and_never_for_a_redelivery(store):
    assigner = Assigner(store.settings, store)
    ann = look(1)
    (first,), _ = await assigner.assign([rec("a0", ann, "porch")])
    entity = first.entity_id
    assert await alerts(store) == []  # not watched yet

    watch = Watchlist(store, Corrections(store))
    entry = await watch.watch_entity(entity, "Ann's ex", by="ops")
    assert (entry.kind, entry.watch_id, entry.label, entry.retained_until is not None, entry.by) == (
        "entity", entity, "Ann's ex", True, "ops")
    assert entry.created_at is not None and abs(entry.created_at.timestamp() - time.time()) < 60
    # Renaming the entity leaves who watched it and when; watching it again under another label records anew.
    await Corrections(store).annotate(entity, {"name": "Ex"}, by="someone else")
    assert (await watch.entries(MODEL))[0].by == "ops"

    # Three frames on the gate within the cooldown: one alert. The same on the yard: one more.
    events, _ = await assigner.assign([rec(f"g{n}", ann, "gate", 10 + n, track="7") for n in range(3)])
    assert {e.entity_id for e in events} == {entity}
    events, _ = await assigner.assign([rec("y0", ann, "yard", 40)])  # not at once: the space-time gate
    raised = await alerts(store)
    assert [(a.detection_id, a.camera_id, a.kind, a.label, a.entity_id) for a in raised] == [
        ("g0", "gate", "entity", "Ann's ex", entity), ("y0", "yard", "entity", "Ann's ex", entity)]
    assert raised[0].alert_id == f"g0/{entity}" and 0.9 <= raised[0].similarity <= 1.0
    assert raised[0].timestamp == T0 + timedelta(seconds=10)
    assert assigner.metrics.alerts.labels("raised")._value.get() == 2
    assert assigner.metrics.alerts.labels("limited")._value.get() == 2

    # Past the cooldown (in detection time) the gate alerts again; a redelivered detection never does.
    await assigner.assign([rec("g9", ann, "gate", 10 + COOLDOWN + 1)])
    await assigner.assign([rec("g9", ann, "gate", 10 + COOLDOWN + 1), rec("g0", ann, "gate", 10, track="7")])
    assert [a.detection_id for a in await alerts(store)] == ["g0", "y0", "g9"]

    # Published alerts leave the outbox by content.
    raw = await store.pending_alerts(TYPE)
    assert await store.ack_alerts(TYPE, raw[:2]) == 2
    assert [a.detection_id for a in await alerts(store)] == ["g9"]

    # Unwatched: no more alerts, and the entity stays.
    removed = await watch.remove(MODEL, entity)
    assert removed.watch_id == entity
    await assigner.assign([rec("z0", ann, "zone", 1000)])
    assert [a.detection_id for a in await alerts(store)] == ["g9"]
    assert (await store.get_entity(entity)).watch is None
    with pytest.raises(WatchError) as err:
        await watch.remove(MODEL, entity)
    assert err.value.code == "watch_not_found"


async def test_an_enrolled_image_alerts_for_a_look_like_it_and_its_removal_stops_it(store):
    assigner = Assigner(store.settings, store)
    watch = Watchlist(store, Corrections(store))
    suspect, other = look(2), look(3)
    near = suspect + 0.05 * look(4)
    near /= np.linalg.norm(near)
    entry = await watch.enrol(MODEL, TYPE, suspect, "van driver", by="ops")
    assert entry.kind == "image" and entry.watch_id.startswith("enrol-") and entry.by == "ops"
    assert [e.watch_id for e in await watch.entries(MODEL)] == [entry.watch_id]

    events, _ = await assigner.assign([rec("s0", near, "drive"), rec("o0", other, "drive", 1)])
    (alert,) = await alerts(store)
    assert (alert.kind, alert.watch_id, alert.label, alert.detection_id) == ("image", entry.watch_id, "van driver",
                                                                            "s0")
    assert alert.entity_id == events[0].entity_id
    assert alert.similarity == pytest.approx(float(near @ suspect), abs=1e-5)
    # The vector is kept, never the image; every key of it expires.
    k = store.keys
    for key in (k.enrolments(MODEL, TYPE), k.enrolment_vectors(MODEL, TYPE), k.alerts(TYPE), k.alert_last(TYPE)):
        assert await store.redis.ttl(key) > 0, key

    await watch.remove(MODEL, entry.watch_id)
    assert await watch.entries(MODEL) == []
    await assigner.assign([rec("s1", near, "street", 500)])
    assert [a.detection_id for a in await alerts(store)] == ["s0"]


async def test_a_watch_follows_a_merge_and_erasure_removes_every_trace(store):
    assigner = Assigner(store.settings, store)
    corrections, watch = Corrections(store), Watchlist(store, Corrections(store))
    # Two looks at 0.85 (below the threshold 0.9): two entities, whose merged prototype is 0.96 from either.
    va = look(5)
    u = look(6) - (look(6) @ va) * va
    vb = 0.85 * va + np.sqrt(1 - 0.85**2) * u / np.linalg.norm(u)
    (a,), _ = await assigner.assign([rec("a0", va, "c1")])
    (b,), _ = await assigner.assign([rec("b0", vb.astype(np.float32), "c2", 100)])
    assert a.entity_id != b.entity_id
    await corrections.annotate(b.entity_id, {"name": "Bo"})
    await watch.watch_entity(a.entity_id, "watch A")
    await corrections.merge(b.entity_id, a.entity_id, by="ops")  # the watched one is merged into the named one
    survivor = await store.get_entity(b.entity_id)
    assert (survivor.name, survivor.watch) == ("Bo", "watch A")
    assert (await corrections.names(TYPE))[b.entity_id].watch == "watch A"
    assert [e.watch_id for e in await watch.entries(MODEL)] == [b.entity_id]

    (seen,), _ = await assigner.assign([rec("a1", va, "c3", 300)])
    assert seen.entity_id == b.entity_id
    (alert,) = await alerts(store)
    assert (alert.watch_id, alert.entity_name, alert.label) == (b.entity_id, "Bo", "watch A")

    purged = await store.purge_entity(a.entity_id)  # a merged id erases the entity it became
    assert purged is not None and purged["entity_id"] == b.entity_id
    assert await alerts(store) == []
    assert await store.redis.hlen(store.keys.alert_last(TYPE)) == 0
    assert await watch.entries(MODEL) == []
    for key in await all_keys(store):
        assert await store.redis.ttl(key) > 0, key
        if await store.redis.type(key) == b"string":
            assert b"watch A" not in await store.redis.get(key), key


async def test_the_rate_limit_field_tells_entity_and_camera_apart_whatever_their_characters(store):
    assigner = Assigner(store.settings, store)
    (a,), _ = await assigner.assign([rec("p|0", look(7), "cam|1")])
    await Watchlist(store, Corrections(store)).watch_entity(a.entity_id, "pipes")
    await assigner.assign([rec("p|1", look(7), "cam|2", 5), rec("p|2", look(7), "cam", 6)])
    assert [(x.detection_id, x.camera_id) for x in await alerts(store)] == [("p|1", "cam|2"), ("p|2", "cam")]
    fields = await store.redis.hkeys(store.keys.alert_last(TYPE))
    assert sorted(json.dumps(f.decode()) for f in fields) == sorted(
        json.dumps(f"{a.entity_id}\x1f{c}") for c in ("cam|2", "cam"))
