"""The design's Python API (service.py) against a real Redis, on rows the assign stage stored: who else looks like
a detection, the attributes detections came with, an entity's timeline, Redis failures and wrong dimensions."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from reid_stream.encoders.null import NullEncoder
from reid_stream.events import Detection, EntityHistory
from reid_stream.service import ReIdentificationService
from reid_stream.store.corrections import Corrections
from reid_stream.store.reid_store import ReidStore
from reid_stream.stream.assign import Assigner
from reid_stream.stream.wire import EmbeddedRecord
from tests.conftest import make_settings
from tests.e2e.harness import free_port

pytestmark = pytest.mark.integration
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
DIM = 16


def unit(seed: int, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def near(v: np.ndarray, seed: int, by: float = 0.01) -> np.ndarray:
    w = v + by * unit(seed, len(v))
    return (w / np.linalg.norm(w)).astype(np.float32)


def record(det_id: str, vec: np.ndarray, camera: str, minutes: int, **extra: Any) -> EmbeddedRecord:
    det = Detection.model_validate({
        "detection_id": det_id, "camera_id": camera, "entity_type": "person",
        "timestamp": (T0 + timedelta(minutes=minutes)).isoformat(), "bbox": {"x1": 0, "y1": 0, "x2": 4, "y2": 4},
        "image_path": "x.png", **extra})
    return EmbeddedRecord.of(det, vec, "null")


async def stored_site(redis_client: aioredis.Redis, tag: str, **overrides: Any) -> tuple[ReidStore, np.ndarray]:
    """Three detections of one person (d1, d2, d3; d1 and d3 with attributes) and a stranger (s1), stored by the
    assign stage under the null model, DIM numbers each."""
    settings = make_settings(tag, similarity_threshold=0.9, embedding_ttl_seconds=600, **overrides)
    store = ReidStore(redis_client, settings)
    person = unit(1)
    _, letters = await Assigner(settings, store).assign([
        record("d1", person, "porch", 0, attributes={"color": "red", "bag": True}),
        record("d2", near(person, 2), "gate", 5),
        record("d3", near(person, 3), "yard", 9, attributes={"color": "red"}),
        record("s1", unit(9), "porch", 7, attributes={"color": "blue"})])
    assert not letters
    return store, person


@pytest.fixture
async def site(redis_client: aioredis.Redis, unique: str) -> AsyncIterator[tuple[ReidStore, np.ndarray]]:
    store, person = await stored_site(redis_client, unique)
    yield store, person
    await store.forget_everything()


@pytest.fixture
def service(site: tuple[ReidStore, np.ndarray]) -> Iterator[ReIdentificationService]:
    store, _ = site
    svc = ReIdentificationService(store.settings, encoder=NullEncoder(dim=DIM))
    yield svc
    svc.close()


async def test_find_matching_entities_leaves_out_the_detection_asked_about(site, service):
    store, person = site
    found = await service.find_matching_entities(store.redis, person, "person", min_similarity=0.5,
                                                 exclude_detection_id="d1")
    assert [e.detection_id for e, _ in found] == ["d2", "d3"] or [e.detection_id for e, _ in found] == ["d3", "d2"]
    assert {e.entity_id for e, _ in found} == {"d1"}, "who else looks like d1: its entity's other detections"
    everything = await service.find_matching_entities(store.redis, person, "person", min_similarity=0.5)
    assert "d1" in [e.detection_id for e, _ in everything]
    # Leaving one out does not shorten the page: the limit counts the others.
    two = await service.find_matching_entities(store.redis, person, "person", min_similarity=-1.0, limit=2,
                                               exclude_detection_id="d1")
    assert len(two) == 2 and "d1" not in [e.detection_id for e, _ in two]


async def test_find_matching_entities_returns_the_attributes_each_detection_came_with(site, service):
    store, person = site
    found = {e.detection_id: e for e, _ in await service.find_matching_entities(
        store.redis, person, "person", min_similarity=-1.0)}
    assert found["d1"].attributes == {"color": "red", "bag": True}
    assert found["d3"].attributes == {"color": "red"}
    assert found["s1"].attributes == {"color": "blue"}
    assert found["d2"].attributes is None  # it came with none
    # After an operator's split the attributes follow the detection into its new entity.
    update = await Corrections(store).split("d1", ["d3"], by="op")
    found = {e.detection_id: e for e, _ in await service.find_matching_entities(
        store.redis, person, "person", min_similarity=-1.0)}
    assert found["d3"].entity_id == update.created and found["d3"].attributes == {"color": "red"}


async def test_with_redis_down_find_returns_nothing_and_logs_one_warning_and_history_raises_its_own_error(
        service, caplog):
    down = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    try:
        with caplog.at_level(logging.WARNING, logger="reid_stream.service"):
            assert await service.find_matching_entities(down, unit(1), "person") == []
        warnings = [r for r in caplog.records if r.name == "reid_stream.service" and r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "Redis" in warnings[0].getMessage()
        from reid_stream.errors import StoreUnavailable

        with pytest.raises(StoreUnavailable) as err:
            await service.get_entity_history(down, "d1")
        assert isinstance(err.value.__cause__, RedisError | OSError)
    finally:
        await down.aclose()


async def test_get_entity_history_is_the_timeline_of_an_entity(site, service):
    store, _ = site
    history = await service.get_entity_history(store.redis, "d1")
    assert isinstance(history, EntityHistory)
    assert (history.entity_id, history.count, history.resolved_from) == ("d1", 3, None)
    assert [(a.detection_id, a.camera_id) for a in history.appearances] == [
        ("d1", "porch"), ("d2", "gate"), ("d3", "yard")]
    assert history.appearances[0].attributes == {"color": "red", "bag": True}
    assert history.appearances[0].thumbnail_url.startswith("/api/detections/d1/image")
    assert await service.get_entity_history(store.redis, "nobody") is None
    # A merged id answers with the entity it became.
    await Corrections(store).merge("s1", "d1", by="op")
    merged = await service.get_entity_history(store.redis, "d1")
    assert merged is not None and (merged.entity_id, merged.resolved_from, merged.count) == ("s1", "d1", 4)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
async def test_a_query_of_the_wrong_length_raises_value_error_never_a_score(redis_client, unique, dtype: str):
    store, person = await stored_site(redis_client, f"{unique}{dtype}", vector_dtype=dtype)
    svc = ReIdentificationService(store.settings, encoder=NullEncoder(dim=DIM))
    try:
        assert (await svc.find_matching_entities(store.redis, person, "person"))[0][1] == pytest.approx(1.0)
        # Twice or half as long as the stored rows: the same bytes as a row of the other storage type.
        for query in (np.concatenate([person, person]) / np.sqrt(2), person[: DIM // 2], person[:3],
                      np.ones((2, DIM), np.float32)):
            with pytest.raises(ValueError, match=r"dimension|numbers"):
                await svc.find_matching_entities(store.redis, query, "person", min_similarity=-1.0)
    finally:
        svc.close()
        await store.forget_everything()
