"""The operator's corrections (names and trust with their retention, merge, split) against a real Redis."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest

from reid_stream.store.corrections import CorrectionError, Corrections
from reid_stream.store.keys import KEPT_DAY, day_of
from reid_stream.store.reid_store import ReidStore
from reid_stream.stream.assign import Assigner
from tests.conftest import make_settings
from tests.integration.test_store_merge import DIM, MODEL, T0, TYPE, all_keys, merge, put, write

pytestmark = pytest.mark.integration
TTL, RETENTION = 7200, 30 * 86400


@pytest.fixture
async def store(redis_client, unique):
    settings = make_settings(unique, embedding_ttl_seconds=TTL, max_embeddings=100,
                             named_retention_seconds=RETENTION)
    s = ReidStore(redis_client, settings)
    yield s
    keys = await all_keys(s)
    if keys:
        await redis_client.delete(*keys)


async def rows(store: ReidStore) -> dict[str, tuple[str, float]]:
    """detection -> (entity, stored_at) as the single writer loads them."""
    _, index = await store.load_index(MODEL, TYPE, DIM, ann=False)
    return {e.detection_id: (e.entity_id or "", e.stored_at or 0.0) for e in index.items()}


async def test_a_name_keeps_the_entity_and_its_rows_past_the_embedding_ttl_and_erasure_removes_it(store):
    c = Corrections(store)
    await put(store, write("a1", "a1", "c1", 0), write("a2", "a1", "c2", 5), write("b1", "b1", "c1", 1))
    before = await store.version(MODEL, TYPE)
    assert await c.annotate("a1", {"name": "Ann", "trust": "trusted", "notes": "the neighbour"}) == "a1"
    assert await store.version(MODEL, TYPE) == before + 1  # the single writer reloads and sees the name

    detail = await store.get_entity("a1")
    assert (detail.name, detail.trust, detail.notes) == ("Ann", "trusted", "the neighbour")
    assert detail.retained_until is not None
    assert abs(detail.retained_until.timestamp() - (time.time() + RETENTION)) < 60
    (other,) = [e for e in (await store.list_entities(None, None, None, 10, 0))[0] if e.id == "b1"]
    assert (other.name, other.trust, other.retained_until) == (None, "unknown", None)
    assert await c.names(TYPE) == {"a1": type(next(iter((await c.names(TYPE)).values())))("Ann", "trusted")}

    # Its rows moved to the kept hashes, indexed so that age expiry drops them only when the retention ends.
    k, now = store.keys, time.time()
    assert await store.redis.hexists(k.vec_prefix(MODEL, TYPE) + KEPT_DAY, "a1")
    assert not await store.redis.hexists(k.vec_prefix(MODEL, TYPE) + day_of(T0), "a1")
    found = await store.detection_vector("a1", DIM)  # find-similar reads a kept row's vector too
    assert found is not None and found[1] is not None and found[1].shape == (DIM,)
    loaded = await rows(store)
    assert loaded["a1"][0] == "a1" and loaded["a1"][1] > now + RETENTION - TTL - 60
    assert loaded["b1"][1] < now  # a stranger's row is untouched
    for key in (k.entity("a1"), k.appearances("a1"), k.order("a1"), k.cameras("a1"), k.marker("a1"),
                k.vec_prefix(MODEL, TYPE) + KEPT_DAY, k.index(MODEL, TYPE), k.by_type(TYPE), k.named(TYPE)):
        assert await store.redis.ttl(key) > RETENTION - 60, key
    assert 0 < await store.redis.ttl(k.entity("b1")) <= TTL

    # A new appearance of a retained entity is kept too, and a stranger's write never shortens shared keys.
    await put(store, write("a3", "a1", "c1", 30), write("b2", "b1", "c1", 31))
    assert await store.redis.hexists(k.vec_prefix(MODEL, TYPE) + KEPT_DAY, "a3")
    assert await store.redis.ttl(k.index(MODEL, TYPE)) > RETENTION - 60
    assert await store.redis.ttl(k.marker("a3")) > RETENTION - 60

    # Erasure removes it all: name, notes and trust, kept rows and their index entries, the names entry.
    purged = await store.purge_entity("a1")
    assert sorted(purged["detections"]) == ["a1", "a2", "a3"]
    assert not await store.redis.exists(k.entity("a1"))
    assert not await store.redis.hexists(k.named(TYPE), "a1")
    for day in (KEPT_DAY, day_of(T0)):
        for prefix in (k.vec_prefix(MODEL, TYPE), k.meta_prefix(MODEL, TYPE)):
            assert not set(await store.redis.hkeys(prefix + day)) & {b"a1", b"a2", b"a3"}
    assert set(await rows(store)) == {"b1", "b2"}
    leftovers = [key for key in await all_keys(store) if any(d in key for d in (":a1", ":a2", ":a3"))]
    assert leftovers == []
    for key in await all_keys(store):
        assert await store.redis.ttl(key) > 0, key


async def test_unnaming_returns_the_rows_to_the_embedding_ttl(store):
    c = Corrections(store)
    await put(store, write("a1", "a1", "c1", 0))
    await c.annotate("a1", {"name": "Ann"})
    await c.annotate("a1", {"name": None})  # trust was never set: back to an ordinary entity
    k = store.keys
    assert await store.redis.hexists(k.vec_prefix(MODEL, TYPE) + day_of(T0), "a1")
    assert not await store.redis.hexists(k.vec_prefix(MODEL, TYPE) + KEPT_DAY, "a1")
    assert 0 < await store.redis.ttl(k.entity("a1")) <= TTL
    assert 0 < await store.redis.ttl(k.marker("a1")) <= TTL
    assert (await store.get_entity("a1")).retained_until is None
    assert await c.names(TYPE) == {}


async def test_an_untrusted_entity_is_retained_and_unknown_is_not(store):
    c = Corrections(store)
    await put(store, write("u1", "u1"), write("v1", "v1", minutes=1))
    await c.annotate("u1", {"trust": "untrusted"})
    await c.annotate("v1", {"trust": "unknown", "notes": "just a note"})
    assert (await store.get_entity("u1")).retained_until is not None
    v = await store.get_entity("v1")
    assert (v.retained_until, v.trust, v.notes) == (None, "unknown", "just a note")


async def test_split_moves_appearances_rows_and_keeps_the_two_apart(store):
    c = Corrections(store)
    await put(store, write("a1", "a1", "c1", 0), write("a2", "a1", "c2", 5), write("a3", "a1", "c3", 10))
    before = await store.version(MODEL, TYPE)
    update = await c.split("a1", ["a3", "a2"], by="ops")
    assert await store.version(MODEL, TYPE) == before + 1
    new = update.created
    assert new and new.startswith("split-") and (update.survivor, update.by, update.type) == ("a1", "ops", "split")

    src, made = await store.get_entity("a1"), await store.get_entity(new)
    assert [a.detection_id for a in src.appearances] == ["a1"] and src.cameras_seen == ["c1"]
    assert src.last_seen == T0 and src.first_seen == T0
    assert [a.detection_id for a in made.appearances] == ["a2", "a3"] and made.cameras_seen == ["c2", "c3"]
    assert made.first_seen == T0 + timedelta(minutes=5) and made.last_seen == T0 + timedelta(minutes=10)
    for cam, who in (("c1", ["a1"]), ("c2", [new]), ("c3", [new])):
        assert [e.id for e in (await store.list_entities(TYPE, cam, None, 10, 0))[0]] == who, cam
    assert {e.id for e in (await store.list_entities(None, None, None, 10, 0))[0]} == {"a1", new}
    assert {d: e for d, (e, _) in (await rows(store)).items()} == {"a1": "a1", "a2": new, "a3": new}
    assert [u.model_dump() for u in await store.pending_updates(TYPE)] == [update.model_dump()]
    assert await c.apart(MODEL, TYPE) == {frozenset(("a1", new))}

    # Neither an HTTP merge nor a stale automatic one joins them again.
    with pytest.raises(CorrectionError) as err:
        await c.merge("a1", new, by="ops")
    assert (err.value.status, err.value.code) == (409, "entities_split_apart")
    res = await store.merge(MODEL, TYPE, new, "a1", 0.99, await store.version(MODEL, TYPE), T0)
    assert res.status == "apart"

    # A pair outlives an automatic merge of one side into a third entity: it follows the survivor.
    await put(store, write("z1", "z1", "c9", -30))
    await merge(store, "z1", new)
    assert await c.apart(MODEL, TYPE) == {frozenset(("a1", "z1"))}
    for key in await all_keys(store):
        assert 0 < await store.redis.ttl(key) <= TTL, key


@pytest.mark.parametrize(("ids", "status", "code"), [
    (["a1", "a2"], 422, "split_takes_everything"),
    (["nope"], 422, "detection_not_in_entity"),
    (["a1", "a1"], 422, "duplicate_detections"),
])
async def test_split_refusals(store, ids, status, code):
    c = Corrections(store)
    await put(store, write("a1", "a1", "c1", 0), write("a2", "a1", "c2", 5), write("b1", "b1", "c1", 1))
    before = await store.version(MODEL, TYPE)
    with pytest.raises(CorrectionError) as err:
        await c.split("a1", ids, by=None)
    assert (err.value.status, err.value.code) == (status, code)
    assert await store.version(MODEL, TYPE) == before
    with pytest.raises(CorrectionError) as err:
        await c.split("nobody", ["a1"], by=None)
    assert (err.value.status, err.value.code) == (404, "entity_not_found")


async def test_http_merge_carries_the_name_and_keeps_the_merged_rows(store):
    c = Corrections(store)
    await put(store, replace(write("a1", "a1", "c1", 0), track_key="c1|1"),
              replace(write("b1", "b1", "c2", 5), track_key="c2|1"))
    await c.annotate("b1", {"name": "Bob", "trust": "trusted"})
    update = await c.merge("a1", "b1", by="ops")
    assert (update.survivor, update.merged, update.by, update.similarity) == ("a1", "b1", "ops", None)
    a = await store.get_entity("a1")
    assert (a.name, a.trust, a.appearance_count) == ("Bob", "trusted", 2) and a.retained_until is not None
    assert set(await c.names(TYPE)) == {"a1"}
    k = store.keys
    assert set(await store.redis.hkeys(k.vec_prefix(MODEL, TYPE) + KEPT_DAY)) == {b"a1", b"b1"}
    assert json.loads((await store.pending_raw(TYPE))[-1])["by"] == "ops"
    assert await c.pinned(MODEL, TYPE) == {"c1|1", "c2|1"}  # both tracklets: never redecided apart
    with pytest.raises(CorrectionError) as err:
        await c.merge("b1", "a1", by="ops")
    assert err.value.code == "same_entity"


async def test_outbox_acknowledged_by_content_never_drops_an_unpublished_update(store):
    c = Corrections(store)
    await put(store, write("a1", "a1", "c1", 0), write("a2", "a1", "c2", 5), write("a3", "a1", "c3", 9))
    await c.split("a1", ["a2"], by=None)
    first = await store.pending_raw(TYPE)
    assert await store.ack_published(TYPE, first) == 1  # one publisher acknowledges
    await c.split("a1", ["a3"], by=None)
    assert await store.ack_published(TYPE, first) == 0  # the other's acknowledgement of the same one: no-op
    assert len(await store.pending_raw(TYPE)) == 1


async def test_the_assigner_names_events_and_never_snaps_a_split_tracklet_back(store):
    """A tracklet's later detections follow where its latest rows were split to; the entity it was split from
    is never merged back, though the tracklet's look matches it exactly."""
    from reid_stream.events import Detection
    from reid_stream.stream.wire import EmbeddedRecord

    assigner = Assigner(store.settings, store)
    vec = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)

    def rec(n: int) -> EmbeddedRecord:
        det = Detection(detection_id=f"t{n}", camera_id="c1", entity_type=TYPE, track_id="7",
                        timestamp=(T0 + timedelta(seconds=n)).isoformat(), bbox={"x1": 0, "y1": 0, "x2": 64, "y2": 128},
                        image_path=f"t{n}.png")
        return EmbeddedRecord.of(det, vec, MODEL)

    events = []
    for n in range(4):
        events += (await assigner.assign([rec(n)]))[0]
    entity = events[0].entity_id
    assert {e.entity_id for e in events} == {entity}
    await Corrections(store).annotate(entity, {"name": "Ann"})
    (named,), _ = await assigner.assign([rec(4)])
    assert (named.entity_id, named.entity_name, named.trust) == (entity, "Ann", None)
    update = await Corrections(store).split(entity, ["t2", "t3", "t4"], by="ops")
    later = []
    for n in range(5, 9):
        later += (await assigner.assign([rec(n)]))[0]
    assert {e.entity_id for e in later} == {update.created}
    assert all(e.decision == "tracklet" and e.entity_name is None for e in later)
    assert (await store.get_entity(entity)).appearance_count == 2
    assert (await store.get_entity(update.created)).appearance_count == 7
    # The name, then the split; no merge snapped it back.
    assert [u.type for u in await store.pending_updates(TYPE)] == ["annotated", "split"]


async def test_corrections_racing_the_single_writer_lose_and_double_nothing(store, caplog):
    """The assign stage and an operator write at once, in one event loop over a real Redis, interleaving at every
    round trip: splits, merges and renames against a stream of tracklets. Both sides' compare-and-sets must
    collide (the log says how often), and every detection ends up an appearance of exactly one entity."""
    import asyncio
    import logging
    import random

    from reid_stream.events import Detection
    from reid_stream.stream.wire import EmbeddedRecord

    caplog.set_level(logging.INFO)
    assigner = Assigner(store.settings, store)
    c = Corrections(store)
    looks = {t: np.random.default_rng(t).standard_normal(DIM).astype(np.float32) for t in range(6)}
    sent: list[str] = []
    done = asyncio.Event()

    def rec(track: int, n: int) -> EmbeddedRecord:
        det = Detection(detection_id=f"k{track}-{n}", camera_id=f"c{track}", entity_type=TYPE, track_id="1",
                        timestamp=(T0 + timedelta(seconds=n)).isoformat(),
                        bbox={"x1": 0, "y1": 0, "x2": 64, "y2": 128}, image_path="x.png")
        return EmbeddedRecord.of(det, looks[track] / np.linalg.norm(looks[track]), MODEL)

    async def stream() -> None:
        for n in range(40):
            batch = [rec(t, n) for t in range(6)]
            sent.extend(r.detection_id for r in batch)
            await assigner.assign(batch)
            await asyncio.sleep(0.02)  # a steady stream, with room for the operator in between
        done.set()

    corrections = {"split": 0, "merged": 0, "named": 0, "refused": 0}

    async def operator() -> None:
        rng = random.Random(0)
        while not done.is_set():
            listed, _ = await store.list_entities(TYPE, None, None, 100, 0)
            if len(listed) >= 2:
                a, b = rng.sample([e.id for e in listed], 2)
                action = rng.choice(["split", "merge", "name"])
                try:
                    if action == "split":
                        detail = await store.get_entity(a)
                        if detail and len(detail.appearances) > 2:
                            await c.split(a, [x.detection_id for x in detail.appearances[-2:]], by="ops")
                            corrections["split"] += 1
                    elif action == "merge":
                        await c.merge(a, b, by="ops")
                        corrections["merged"] += 1
                    else:
                        await c.annotate(a, {"name": f"n{rng.randrange(99)}"})
                        corrections["named"] += 1
                except CorrectionError as err:  # split apart, merged or moved meanwhile: refused, never wrong
                    assert err.status in (404, 409, 422), err
                    corrections["refused"] += 1
            await asyncio.sleep(0)

    await asyncio.gather(stream(), operator())
    everyone, _ = await store.list_entities(TYPE, None, None, 1000, 0)
    appearances = []
    for e in everyone:
        detail = await store.get_entity(e.id)
        appearances += [a.detection_id for a in detail.appearances]
        assert detail.appearance_count == e.appearance_count
    assert sorted(appearances) == sorted(sent) and len(sent) == 240
    assert sum(e.appearance_count for e in everyone) == 240
    # No detection was stored into an entity merged away meanwhile (which would bring a merged id back to life).
    merged_ids = {m for e in everyone for m in e.merged_ids}
    revived = merged_ids & {e.id for e in everyone}
    # (It once did, about one run in four: a merge moved the version by one between a batch's planning and its
    # commit, and the batch's second detection matched the moved count. store.lua now stops at the first miss.)
    assert not revived, f"merged ids live again as entities: {sorted(revived)}"
    writer_lost = sum("assignment conflict" in r.getMessage() for r in caplog.records)
    operator_lost = sum("retrying" in r.getMessage() for r in caplog.records)
    print(f"corrections {corrections}; compare-and-set lost by the writer {writer_lost}, by the operator "
          f"{operator_lost}")
    assert corrections["split"] and corrections["merged"] and corrections["named"]
    assert writer_lost + operator_lost > 0


async def test_annotations_and_erasures_are_queued_for_entity_updates_with_the_change(store):
    """What the long-term memory (and any other consumer of entity-updates) learns of names and erasures: an
    `annotated` update with all four fields as they now are, and an `erased` one naming ids only."""
    c = Corrections(store)
    await put(store, write("a1", "a1", "c1", 0), write("a2", "a1", "c2", 5), write("b1", "b1", "c1", 1))
    await c.annotate("a1", {"name": "Ann", "trust": "trusted"}, by="ops")
    await c.annotate("a1", {"trust": "unknown", "watch": "ex"}, by="ops")
    await merge(store, "a1", "b1")
    await c.annotate("a1", {})  # a retention refresh (as after a merge) changes nothing: no update
    pending = await store.pending_updates(TYPE)
    assert [u.type for u in pending] == ["annotated", "annotated", "merged"]
    assert pending[0].annotation is not None and pending[0].annotation.model_dump() == {
        "name": "Ann", "notes": None, "trust": "trusted", "watch": None}
    assert pending[1].annotation is not None and pending[1].annotation.model_dump() == {
        "name": "Ann", "notes": None, "trust": None, "watch": "ex"}
    assert (pending[0].survivor, pending[0].by) == ("a1", "ops")
    purged = await store.purge_entity("b1", by="ops")
    assert purged is not None
    erased = (await store.pending_updates(TYPE))[-1]
    assert (erased.type, erased.survivor, erased.erased_ids, erased.by) == ("erased", "a1", ["b1"], "ops")
    assert sorted(erased.detections or []) == ["a1", "a2", "b1"]
    assert erased.annotation is None and "Ann" not in erased.model_dump_json()
    # Its names still waiting to be published went with it; the merge stays (ids only, like the erasure).
    assert [u.type for u in await store.pending_updates(TYPE)] == ["merged", "erased"]
    assert 0 < await store.redis.ttl(store.keys.outbox(TYPE)) <= RETENTION + 5  # the named entity's, at most
