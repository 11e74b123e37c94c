from datetime import UTC, datetime

import numpy as np
import pytest

from reid_stream.identity.matching import EntityEmbedding, VectorIndex, assign_entity, cosine_similarity

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def emb(det: str, vec, entity: str | None = None, camera: str = "c1", stored_at: float = 0.0) -> EntityEmbedding:
    return EntityEmbedding(det, camera, "person", NOW, unit(vec), entity_id=entity or det, model="m",
                           stored_at=stored_at)


def test_search_is_cosine_sorted_highest_first():
    idx = VectorIndex(3, capacity=1)  # forces growth
    idx.add(emb("a", [1, 0, 0]))
    idx.add(emb("b", [1, 1, 0]))
    idx.add(emb("c", [0, 1, 0]))
    got = idx.search(unit([1, 0.1, 0]), limit=3)
    assert [e.detection_id for e, _ in got] == ["a", "b", "c"]
    scores = [s for _, s in got]
    assert scores == sorted(scores, reverse=True)
    assert abs(scores[0] - float(unit([1, 0.1, 0]) @ unit([1, 0, 0]))) < 1e-6


def test_search_threshold_limit_and_camera_filter():
    idx = VectorIndex(2)
    idx.add(emb("a", [1, 0], camera="c1"))
    idx.add(emb("b", [1, 0.05], camera="c2"))
    idx.add(emb("c", [0, 1], camera="c2"))
    assert [e.detection_id for e, _ in idx.search(unit([1, 0]), 10, min_similarity=0.9)] == ["a", "b"]
    assert [e.detection_id for e, _ in idx.search(unit([1, 0]), 1)] == ["a"]
    assert [e.detection_id for e, _ in idx.search(unit([1, 0]), 10, camera_id="c2")] == ["b", "c"]


def test_remove_and_expire_keep_the_rest_searchable():
    idx = VectorIndex(2)
    for i in range(5):
        idx.add(emb(f"d{i}", [1, i], stored_at=float(i)))
    idx.remove(["d1"])
    assert "d1" not in idx and len(idx) == 4
    assert sorted(idx.expire(3.0)) == ["d0", "d2"]
    got = {e.detection_id: s for e, s in idx.search(unit([1, 4]), 10)}
    assert set(got) == {"d3", "d4"}
    assert abs(got["d4"] - 1.0) < 1e-6  # the swapped row still holds its own vector


def test_adding_the_same_detection_twice_keeps_one_row():
    idx = VectorIndex(2)
    idx.add(emb("a", [1, 0]))
    idx.add(emb("a", [0, 1]))
    assert len(idx) == 1


def test_assignment_joins_best_match_at_or_above_threshold():
    a = emb("a", [1, 0], entity="E1")
    assert assign_entity("new", [(a, 0.85)], 0.85).entity_id == "E1"
    joined = assign_entity("new", [(a, 0.9)], 0.85)
    assert (joined.entity_id, joined.is_new_entity, joined.similarity) == ("E1", False, 0.9)


def test_assignment_below_threshold_or_no_match_starts_an_entity_named_after_the_detection():
    a = emb("a", [1, 0], entity="E1")
    for matches in ([(a, 0.84)], []):
        got = assign_entity("det-9", matches, 0.85)
        assert (got.entity_id, got.is_new_entity, got.similarity) == ("det-9", True, None)


def test_entity_embedding_round_trips_through_its_dict():
    e = emb("a", [3, 4], entity="E", stored_at=5.0)
    back = EntityEmbedding.from_dict(e.to_dict())
    assert back.detection_id == "a" and back.entity_id == "E" and back.timestamp == NOW and back.stored_at == 5.0
    assert np.allclose(back.embedding, e.embedding)


def test_entity_embedding_has_the_public_shape():
    """Positional fields detection_id, camera_id, entity_type, timestamp, embedding, attributes=None; the rest
    optional; to_dict() gives exactly the public keys unless the extras are set."""
    e = EntityEmbedding("d1", "cam-1", "person", NOW, np.array([0.6, 0.8], np.float32))
    assert e.attributes is None and e.entity_id is None and e.model == "" and e.stored_at == 0.0
    d = e.to_dict()
    assert list(d) == ["detection_id", "camera_id", "entity_type", "timestamp", "embedding", "attributes"]
    assert d["timestamp"] == "2026-01-01T00:00:00+00:00" and d["embedding"] == pytest.approx([0.6, 0.8])
    with_extras = EntityEmbedding("d1", "c", "person", NOW, np.ones(2), {"color": "red"}, entity_id="E", model="m")
    assert set(with_extras.to_dict()) == set(d) | {"entity_id", "model"}
    assert with_extras.to_dict()["attributes"] == {"color": "red"}


@pytest.mark.parametrize("ts", ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00+00:00", NOW])
def test_entity_embedding_from_the_public_payload(ts):
    payload = {"detection_id": "d1", "camera_id": "cam-1", "entity_type": "vehicle", "timestamp": ts,
               "embedding": [0.0, 1.0]}
    e = EntityEmbedding.from_dict(payload)  # no entity id, no attributes
    assert e.timestamp == NOW and e.attributes is None and e.entity_id is None
    assert e.embedding.dtype == np.float32 and e.embedding.tolist() == [0.0, 1.0]
    assert EntityEmbedding.from_dict({**payload, "attributes": None}).attributes is None
    assert EntityEmbedding.from_dict({**payload, "attributes": {"plate": "X"}}).attributes == {"plate": "X"}


def test_cosine_similarity():
    assert cosine_similarity([1, 0], [1, 0]) == pytest.approx(1.0)
    assert cosine_similarity([1, 0], [0, 2]) == pytest.approx(0.0)
    assert cosine_similarity([1, 1], [-3, -3]) == pytest.approx(-1.0)
    assert cosine_similarity(np.array([3.0, 4.0]), np.array([4.0, 3.0])) == pytest.approx(24 / 25)
    assert isinstance(cosine_similarity([1, 2], [2, 1]), float)
    a, b = unit([1, 2, 3]), unit([3, 1, 2])
    assert cosine_similarity(a, b) == pytest.approx(float(a @ b))  # unit vectors: the dot product
    assert cosine_similarity([0, 0], [1, 0]) == 0.0 and cosine_similarity([0, 0], [0, 0]) == 0.0
    with pytest.raises(ValueError, match="lengths"):
        cosine_similarity([1, 0], [1, 0, 0])


def test_a_match_without_entity_id_joins_the_entity_named_after_its_detection():
    got = assign_entity("new", [(EntityEmbedding("old", "c", "person", NOW, unit([1, 0])), 0.95)], 0.9)
    assert got.entity_id == "old" and not got.is_new_entity


def test_search_many_equals_one_search_per_query():
    rng = np.random.default_rng(3)
    idx = VectorIndex(8)
    for i in range(50):
        idx.add(emb(f"d{i}", rng.standard_normal(8)))
    queries = np.stack([unit(rng.standard_normal(8)) for _ in range(5)])
    many = idx.search_many(queries, 4, min_similarity=0.1)
    for q, got in zip(queries, many, strict=True):
        assert [(e.detection_id, round(s, 5)) for e, s in got] == \
            [(e.detection_id, round(s, 5)) for e, s in idx.search(q, 4, min_similarity=0.1)]
    assert VectorIndex(8).search_many(queries, 4) == [[]] * 5


def test_merge_matches_keeps_the_best():
    from reid_stream.identity.matching import merge_matches

    a, b, c = emb("a", [1, 0]), emb("b", [1, 0]), emb("c", [1, 0])
    assert [e.detection_id for e, _ in merge_matches([(a, 0.9), (b, 0.5)], [(c, 0.7)], limit=2)] == ["a", "c"]


def test_above_the_ann_size_search_turns_approximate_with_the_same_answers():
    import time

    rng = np.random.default_rng(5)
    centres = rng.standard_normal((50, 32))
    idx = VectorIndex(32, ann_min_size=1000)
    for i in range(1500):
        idx.add(emb(f"d{i}", centres[i % 50] + 0.3 * rng.standard_normal(32)))
    deadline = time.monotonic() + 60
    while not idx.approximate and time.monotonic() < deadline:
        time.sleep(0.05)
    assert idx.approximate
    idx.remove([f"d{i}" for i in range(0, 1500, 3)])  # removals after the build reach the HNSW index too
    idx.add(emb("late", centres[7]))
    queries = np.stack([unit(centres[j] + 0.3 * rng.standard_normal(32)) for j in range(20)])
    approx = idx.search_many(queries, 10)
    hits = 0
    for q, got in zip(queries, approx, strict=True):
        exact = np.argsort(-(idx._matrix[: len(idx)] @ q))[:10]
        hits += len({idx._items[i].detection_id for i in exact} & {e.detection_id for e, _ in got})
        assert all(e.detection_id in idx for e, _ in got)
    assert hits / (20 * 10) >= 0.95
    assert idx.search(unit(centres[7]), 1)[0][0].detection_id in idx
    small = VectorIndex(32, ann_min_size=1000)
    small.add(emb("x", centres[0]))
    assert not small.approximate  # under the size, always exact
