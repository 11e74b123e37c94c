"""The assign stage's pipelined chunks against a real Redis: a group larger than a chunk is stored whole and in
order, and a foreign write landing between two chunks' commits makes the chain start again, losing and doubling
nothing."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from reid_stream.events import Detection
from reid_stream.store.reid_store import ReidStore
from reid_stream.stream import assign as assign_module
from reid_stream.stream.assign import COMMIT_CHUNK, Assigner
from reid_stream.stream.wire import EmbeddedRecord
from tests.conftest import make_settings
from tests.integration.test_store_merge import DIM, MODEL, T0, TYPE, all_keys

pytestmark = pytest.mark.integration
N = 2 * COMMIT_CHUNK + 37  # three chunks


@pytest.fixture
async def store(redis_client, unique):
    settings = make_settings(unique, embedding_ttl_seconds=7200, max_embeddings=5000, similarity_threshold=0.9)
    s = ReidStore(redis_client, settings)
    yield s
    keys = await all_keys(s)
    if keys:
        await redis_client.delete(*keys)


def records(tag: str, n: int) -> list[EmbeddedRecord]:
    """n detections of n // 3 people (each seen three times on three cameras, a minute apart)."""
    rng = np.random.default_rng(7)
    looks = rng.standard_normal((n // 3 + 1, DIM)).astype(np.float32)
    looks /= np.linalg.norm(looks, axis=1, keepdims=True)
    out = []
    for i in range(n):
        person, visit = divmod(i, 3)
        det = Detection(detection_id=f"{tag}-{i}", camera_id=f"c{visit}", entity_type=TYPE,
                        timestamp=(T0 + timedelta(minutes=visit, seconds=person % 50)).isoformat(),
                        bbox={"x1": 0, "y1": 0, "x2": 64, "y2": 128}, image_path="x.png")
        out.append(EmbeddedRecord.of(det, looks[person], MODEL))
    return out


async def test_a_group_of_three_chunks_is_stored_whole_with_its_version_chain(store):
    assigner = Assigner(store.settings, store)
    before = await store.version(MODEL, TYPE)
    events, letters = await assigner.assign(records("a", N))
    assert not letters and [e.detection_id for e in events] == [f"a-{i}" for i in range(N)]
    assert await store.version(MODEL, TYPE) == before + N  # one step per detection, none lost between chunks
    stored = [a.detection_id for eid in {e.entity_id for e in events}
              for a in (await store.get_entity(eid)).appearances]
    assert sorted(stored) == sorted(f"a-{i}" for i in range(N))


async def test_where_the_chunks_cut_changes_nobody(store, redis_client, unique, monkeypatch):
    """The same stream assigned in chunks and as one commit gives the same entities."""
    def partition(events: list) -> set[frozenset[int]]:
        groups: dict[str, set[int]] = {}
        for e in events:
            groups.setdefault(e.entity_id, set()).add(int(e.detection_id.rsplit("-", 1)[1]))
        return {frozenset(g) for g in groups.values()}

    chunked, _ = await Assigner(store.settings, store).assign(records("c", N))
    whole_store = ReidStore(redis_client, make_settings(unique + "w", embedding_ttl_seconds=7200,
                                                        max_embeddings=5000, similarity_threshold=0.9))
    monkeypatch.setattr(assign_module, "COMMIT_CHUNK", 10 * N)
    try:
        whole, _ = await Assigner(whole_store.settings, whole_store).assign(records("c", N))
    finally:
        keys = await all_keys(whole_store)
        if keys:
            await redis_client.delete(*keys)
    assert partition(chunked) == partition(whole)


async def test_a_foreign_write_between_two_chunks_restarts_the_chain_and_loses_nothing(store, monkeypatch):
    assigner = Assigner(store.settings, store)
    real_commit, calls = store.commit, []

    async def commit(plans, expected):  # another writer moves the version just before the second chunk's commit
        calls.append(len(plans))
        if len(calls) == 2:
            await store.redis.incr(store.keys.version(MODEL, TYPE))
        return await real_commit(plans, expected)

    monkeypatch.setattr(store, "commit", commit)
    events, letters = await assigner.assign(records("b", N))
    assert not letters
    assert sorted(e.detection_id for e in events) == sorted(f"b-{i}" for i in range(N))
    assert calls[:2] == [COMMIT_CHUNK, COMMIT_CHUNK] and len(calls) > 3  # the second chunk failed and was redone
    stored = [a.detection_id for eid in {e.entity_id for e in events}
              for a in (await store.get_entity(eid)).appearances]
    assert sorted(stored) == sorted(f"b-{i}" for i in range(N))  # each exactly once
    assert assign_module.COMMIT_CHUNK == COMMIT_CHUNK
