from datetime import UTC, datetime

import numpy as np
import pytest

from reid_stream.matching import EntityEmbedding, VectorIndex, assign_entity

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def emb(det: str, vec, entity: str | None = None, camera: str = "c1", stored_at: float = 0.0) -> EntityEmbedding:
    return EntityEmbedding(det, entity or det, "person", camera, NOW, unit(vec), "m", stored_at)


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
    e = emb("a", [3, 4], entity="E")
    back = EntityEmbedding.from_dict(e.to_dict())
    assert back.detection_id == "a" and back.entity_id == "E" and back.timestamp == NOW
    assert np.allclose(back.embedding, e.embedding)


def test_embedded_batch_round_trip_keeps_each_source_for_dead_letters():
    from reid_stream.errors import DetectionError
    from reid_stream.events import Detection
    from reid_stream.pipeline import EmbeddedOut, RawEvent, dead_letter, pack_embedded, unpack_embedded

    def det(i: int) -> Detection:
        return Detection.model_validate({"detection_id": f"d{i}", "camera_id": "c", "entity_type": "person",
                                         "timestamp": NOW.isoformat(), "bbox": {"x1": 0, "y1": 0, "x2": 2, "y2": 2},
                                         "image_b64": "QUJD"})

    originals = [b"x" * 70_000, b"", b"{}"]
    recs = [EmbeddedOut.of(det(i), unit([1, i, 3]), "m", RawEvent(o, b"cam" if i else None, "detections", 3,
                                                                  41 + i, 1.5))
            for i, o in enumerate(originals)]
    back = unpack_embedded(pack_embedded(recs))
    assert [b.detection.detection_id for b in back] == ["d0", "d1", "d2"]
    assert [b.fingerprint for b in back] == [r.fingerprint for r in recs] and len({r.fingerprint for r in recs}) == 3
    assert back[0].detection == det(0).model_copy(update={"image_b64": "-"})
    assert all(np.allclose(b.vector, r.vector) for b, r in zip(back, recs, strict=True))
    assert [b.source.value for b in back] == [b"x" * 65536, b"", b"{}"]  # cut at 64 KiB, the others whole
    assert [(b.source.key, b.source.offset) for b in back] == [(None, 41), (b"cam", 42), (b"cam", 43)]
    letter = dead_letter(back[0].source, DetectionError("detection_id_conflict", "m", "store"), "d0")
    assert letter.original_size == 70_000 and letter.original_truncated
    with pytest.raises(ValueError, match="magic"):
        unpack_embedded(b'{"detection": {}}')


def test_embedded_messages_split_by_type_and_stay_under_the_broker_limit():
    from reid_stream.app import WIRE_MAX_MESSAGE, embedded_messages
    from reid_stream.events import Detection
    from reid_stream.pipeline import EmbeddedOut, RawEvent, unpack_embedded

    recs = []
    for i in range(40):
        d = Detection.model_validate({"detection_id": f"d{i}", "camera_id": "c",
                                      "entity_type": "person" if i % 2 else "vehicle", "timestamp": NOW.isoformat(),
                                      "bbox": {"x1": 0, "y1": 0, "x2": 2, "y2": 2}, "image_b64": "QUJD"})
        recs.append(EmbeddedOut.of(d, unit(list(range(1, 769))), "m", RawEvent(b"y" * 60_000)))
    for r in recs[:20]:  # attributes the size estimate cannot see
        r.header["attributes"] = {"note": "z" * 15_000}
    msgs = embedded_messages("emb", recs)
    assert all(len(value) <= WIRE_MAX_MESSAGE for _, _, value in msgs) and len(msgs) > 2
    by_key: dict[bytes | None, list[str]] = {}
    for _, key, value in msgs:
        by_key.setdefault(key, []).extend(e.detection.detection_id for e in unpack_embedded(value))
    assert by_key[b"person"] == [f"d{i}" for i in range(1, 40, 2)]
    assert by_key[b"vehicle"] == [f"d{i}" for i in range(0, 40, 2)]


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
    from reid_stream.matching import merge_matches

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
