"""Search's pure logic: ranking, filters, paging, text and upload checks, the snapshot cache.

A stub store (in memory) and a stub encoder with a deterministic text tower stand in for Redis and a trained
CLIP model: random weights make a real text tower's ranking meaningless, so the ranking is proved here.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from reid_stream.api.search import (
    MAX_TEXT_CHARS,
    SNAPSHOT_TTL_S,
    Filters,
    SearchError,
    SearchService,
    Snapshot,
    check_text,
    image_error,
    parse_filters,
    rank,
    read_upload,
)
from reid_stream.config import Settings
from reid_stream.errors import DetectionError, DimensionMismatch
from reid_stream.identity.matching import EntityEmbedding, VectorIndex

DIM = 8
T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
# Three synthetic identities, each a direction; their appearances are noisy copies of it.
IDENTITY = {name: np.eye(DIM, dtype=np.float32)[i] for i, name in enumerate(["blue-jacket", "red-coat", "white-van"])}
CAPTIONS = {"person in a blue jacket": "blue-jacket", "person in a red coat": "red-coat", "a white van": "white-van"}


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def appearances() -> dict[str, list[EntityEmbedding]]:
    rng = np.random.default_rng(3)
    rows: dict[str, list[EntityEmbedding]] = {"person": [], "vehicle": []}
    for name, direction in IDENTITY.items():
        etype = "vehicle" if name == "white-van" else "person"
        for n in range(4):
            rows[etype].append(EntityEmbedding(
                detection_id=f"{name}-{n}", camera_id=f"cam-{n % 2}", entity_type=etype,
                timestamp=T0 + timedelta(minutes=n), embedding=unit(direction + 0.1 * rng.standard_normal(DIM)),
                entity_id=f"ent-{name}", model="stub", stored_at=9e9))
    return rows


class StubEncoder:
    """A text tower that knows three captions: each is its identity's direction (a trained CLIP's promise)."""

    model_id = "stub"
    dim = DIM
    input_size = 8
    device = "cpu"

    def __init__(self, text: bool = True) -> None:
        self.text = text

    def encode(self, batch: np.ndarray) -> np.ndarray:
        return np.tile(IDENTITY["red-coat"], (len(batch), 1))

    def encode_text(self, texts: list[str]) -> np.ndarray | None:
        if not self.text:
            return None
        return np.stack([IDENTITY[CAPTIONS[t]] if t in CAPTIONS else unit(np.ones(DIM)) for t in texts])


class StubStore:
    site = "default"

    def __init__(self) -> None:
        self.rows = appearances()
        self.loads = 0
        self.erased: set[str] = set()
        self.names: dict[str, str] = {}

    async def load_index(self, model: str, etype: str, dim: int, ann: bool = True) -> tuple[int, VectorIndex]:
        self.loads += 1
        await asyncio.sleep(0.01)  # concurrent callers overlap with the load
        index = VectorIndex(dim)
        for row in self.rows[etype]:
            index.add(EntityEmbedding(**{**row.__dict__, "embedding": row.embedding.copy()}))
        return 1, index

    async def markers(self, detection_ids: list[str]) -> dict[str, dict[str, Any]]:
        return {d: {} for d in detection_ids if d not in self.erased}

    async def entity_names(self, entity_ids: list[str]) -> dict[str, str]:
        return {e: self.names[e] for e in entity_ids if e in self.names}

    async def detection_vector(self, detection_id: str, dim: int) -> tuple[dict[str, Any], np.ndarray | None] | None:
        for etype, rows in self.rows.items():
            for row in rows:
                if row.detection_id == detection_id:
                    return {"model": "stub", "entity_type": etype}, row.embedding
        return None


@pytest.fixture
def service():
    pool = ThreadPoolExecutor(1)
    clock = [0.0]
    svc = SearchService(StubStore(), StubEncoder(), Settings.from_env({}), pool, clock=lambda: clock[0])
    yield svc, clock
    pool.shutdown()


async def test_text_search_ranks_the_matching_identity_above_the_others(service):
    svc, _ = service
    for caption, name in CAPTIONS.items():
        out = await svc.by_text(caption, Filters(limit=4))
        assert out.query == "text" and out.model == "stub" and out.count == 12
        assert {h.entity_id for h in out.results} == {f"ent-{name}"}, caption  # its 4 appearances come first
        scores = [h.score for h in out.results]
        assert scores == sorted(scores, reverse=True)
        rest = await svc.by_text(caption, Filters(limit=8, offset=4))
        assert max(h.score for h in rest.results) < min(scores)


async def test_similar_leaves_the_detection_out_and_keeps_its_type(service):
    svc, _ = service
    out = await svc.similar("blue-jacket-0", Filters(limit=3))
    assert [h.entity_id for h in out.results] == ["ent-blue-jacket"] * 3
    assert "blue-jacket-0" not in {h.detection_id for h in out.results}
    assert out.count == 7  # the other persons; the van is another type
    assert (await svc.similar("blue-jacket-0", Filters(entity_type="vehicle"))).count == 4
    with pytest.raises(SearchError) as err:
        await svc.similar("nobody", Filters())
    assert (err.value.status, err.value.code) == (404, "detection_not_found")


async def test_filters_and_paging(service):
    svc, _ = service
    f = Filters(camera_id="cam-1", since=(T0 + timedelta(minutes=1)).timestamp(),
                until=(T0 + timedelta(minutes=3)).timestamp(), limit=2)
    out = await svc.by_text("person in a blue jacket", f)
    assert out.count == 6 and len(out.results) == 2  # minutes 1 and 3 of each of the three identities
    assert all(h.camera_id == "cam-1" and T0 + timedelta(minutes=1) <= h.timestamp <= T0 + timedelta(minutes=3)
               for h in out.results)
    pages = [await svc.by_text("a white van", Filters(limit=5, offset=o)) for o in (0, 5, 10)]
    ids = [h.detection_id for p in pages for h in p.results]
    assert len(ids) == len(set(ids)) == 12
    assert (await svc.by_text("a white van", Filters(entity_type="vehicle"))).count == 4


async def test_hits_carry_their_entitys_name_as_it_is_now(service):
    svc, _ = service
    before = await svc.similar("blue-jacket-0", Filters(limit=1))
    assert before.results[0].entity_name is None
    svc.store.names["ent-blue-jacket"] = "Ann"  # named after the snapshot was cached: shown at once
    after = await svc.similar("blue-jacket-0", Filters(limit=1))
    assert (after.results[0].entity_id, after.results[0].entity_name) == ("ent-blue-jacket", "Ann")


async def test_an_erased_detection_never_shows_even_from_a_cached_snapshot(service):
    svc, _ = service
    first = await svc.by_text("person in a red coat", Filters(limit=1))
    svc.store.erased.add(first.results[0].detection_id)
    again = await svc.by_text("person in a red coat", Filters(limit=1))
    assert again.results == []


async def test_snapshots_are_cached_and_loaded_once_for_a_burst(service):
    svc, clock = service
    await asyncio.gather(*(svc.by_text("a white van", Filters()) for _ in range(10)))
    assert svc.store.loads == 2  # one per type, shared by the ten concurrent searches
    clock[0] += SNAPSHOT_TTL_S / 2
    await svc.by_text("a white van", Filters())
    assert svc.store.loads == 2
    clock[0] += SNAPSHOT_TTL_S
    await svc.by_text("a white van", Filters())
    assert svc.store.loads == 4


async def test_an_encoder_without_a_text_tower_answers_text_search_unavailable():
    with ThreadPoolExecutor(1) as pool:
        svc = SearchService(StubStore(), StubEncoder(text=False), Settings.from_env({}), pool)
        with pytest.raises(SearchError) as err:
            await svc.by_text("a white van", Filters())
    assert (err.value.status, err.value.code) == (400, "text_search_unavailable")


def test_text_is_checked():
    assert check_text("  a van ") == "a van"
    for text, code in ((None, "text_required"), ("  ", "text_required"), ("x" * (MAX_TEXT_CHARS + 1), "text_too_long"),
                       ("a\x00b", "text_invalid")):
        with pytest.raises(SearchError) as err:
            check_text(text)
        assert (err.value.status, err.value.code) == (400, code)


def test_filters_are_parsed_like_the_entity_list():
    f = parse_filters({"entity_type": "person", "camera_id": "gate", "since": "2026-01-01T00:00:00Z",
                       "until": "2026-01-02T00:00:00+00:00", "limit": "5", "offset": "10"})
    assert f == Filters("person", "gate", T0.replace(hour=0).timestamp(), (T0 + timedelta(hours=12)).timestamp(),
                        5, 10)
    assert parse_filters({}) == Filters()
    for bad in ({"entity_type": "cat"}, {"limit": "0"}, {"limit": "x"}, {"offset": "-1"}, {"since": "yesterday"},
                {"until": "2026-01-01T00:00:00"}, {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
                {"camera_id": "c" * 257}):
        with pytest.raises(SearchError) as err:
            parse_filters(bad)
        assert err.value.status == 422 and err.value.code == "invalid_parameter"
        assert err.value.detail[0]["loc"][0] == "query"


def test_rank_skips_empty_snapshots_and_refuses_one_of_another_dimension():
    snap = Snapshot.of("person", appearances()["person"], DIM)
    empty = Snapshot.of("vehicle", [], 4)
    page, total = rank([snap, empty], IDENTITY["red-coat"], Filters(limit=2))
    assert total == 8 and [snap.entity_ids[i] for _, i, _ in page] == ["ent-red-coat"] * 2
    with pytest.raises(DimensionMismatch):
        rank([snap], np.concatenate([IDENTITY["red-coat"], IDENTITY["red-coat"]]), Filters(limit=2))


async def test_uploads_are_refused_by_type_and_size_before_decoding():
    chunks = [b"x" * 10] * 5

    async def reader() -> bytes:
        return chunks.pop() if chunks else b""

    assert await read_upload("image/png", None, reader, 100) == b"x" * 50
    cases = [("image/gif", None, 415, "unsupported_media_type"), ("", None, 415, "unsupported_media_type"),
             ("image/jpeg", 101, 413, "image_too_large")]
    for ctype, length, status, code in cases:
        with pytest.raises(SearchError) as err:
            await read_upload(ctype, length, reader, 100)
        assert (err.value.status, err.value.code) == (status, code)
    chunks[:] = [b"x" * 60] * 2  # no Content-Length (chunked): counted as it arrives
    with pytest.raises(SearchError) as err:
        await read_upload("image/jpeg", None, reader, 100)
    assert err.value.status == 413 and chunks == []


def test_decoder_errors_become_http_answers():
    assert image_error(DetectionError("image_too_large", "too many", "load_image")).status == 413
    assert image_error(DetectionError("unsupported_image_format", "gif", "load_image")).status == 415
    assert image_error(DetectionError("image_decode_failed", "junk", "load_image")).code == "image_decode_failed"


def test_the_clip_encoder_has_a_text_tower_only_where_its_vocabulary_fits_the_tokenizer():
    from reid_stream.encoders import load_encoder
    from tests.conftest import make_settings

    assert load_encoder(make_settings("txt", clip_model="reid-tiny-vit")).encode_text(["a van"]) is None
    enc = load_encoder(make_settings("txt", clip_model="reid-tiny-clip"))
    out = enc.encode_text(["person in a blue jacket", "a white van"])
    assert out is not None and out.shape == (2, enc.dim) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5) and not np.allclose(out[0], out[1])
    assert np.allclose(enc.encode_text(["a white van"])[0], out[1], atol=1e-5)  # deterministic, batch or not
