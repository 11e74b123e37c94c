"""The `reid-embedded` record: pack/unpack, chunking under the broker limit, dead letters."""

from datetime import UTC, datetime

import numpy as np
import pytest

from reid_stream.errors import DetectionError
from reid_stream.events import Detection
from reid_stream.stream.wire import (
    WIRE_MAX_MESSAGE,
    EmbeddedRecord,
    RawEvent,
    dead_letter,
    embedded_messages,
    pack,
    unpack,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def det(i: int, **extra) -> Detection:
    return Detection.model_validate({"detection_id": f"d{i}", "camera_id": "c", "entity_type": "person",
                                     "timestamp": NOW.isoformat(), "bbox": {"x1": 0, "y1": 0.5, "x2": 2, "y2": 2},
                                     "image_b64": "QUJD", **extra})


def test_embedded_batch_round_trip_keeps_each_source_for_dead_letters():
    originals = [b"x" * 70_000, b"", b"{}"]
    recs = [EmbeddedRecord.of(det(i, track_id=7, camera_name="Door") if i == 1 else det(i), unit([1, i, 3]), "m",
                              RawEvent(o, b"cam" if i else None, "detections", 3, 41 + i, 1.5))
            for i, o in enumerate(originals)]
    back = unpack(pack(recs))
    assert [b.detection_id for b in back] == ["d0", "d1", "d2"]
    assert [b.fingerprint for b in back] == [r.fingerprint for r in recs] and len({r.fingerprint for r in recs}) == 3
    assert back[1].track_id == "7" and back[1].camera_name == "Door" and back[0].track_id is None
    assert back[0].timestamp == NOW and back[0].bbox == (0.0, 0.5, 2.0, 2.0) and back[0].attributes is None
    assert back[0].image_ref is None  # an inline image is not carried
    assert all(np.allclose(b.vector, r.vector) for b, r in zip(back, recs, strict=True))
    assert [b.source.value for b in back] == [b"x" * 65536, b"", b"{}"]  # cut at 64 KiB, the others whole
    assert [(b.source.key, b.source.offset) for b in back] == [(None, 41), (b"cam", 42), (b"cam", 43)]
    letter = dead_letter(back[0].source, DetectionError("detection_id_conflict", "m", "store"), "d0")
    assert letter.original_size == 70_000 and letter.original_truncated
    with pytest.raises(ValueError, match="magic"):
        unpack(b'{"detection": {}}')


def test_the_image_reference_travels_for_thumbnails():
    by_path = Detection.model_validate({"detection_id": "p", "camera_id": "c", "entity_type": "vehicle",
                                        "timestamp": NOW.isoformat(), "bbox": {"x1": 1, "y1": 2, "x2": 3, "y2": 4},
                                        "image_path": "cam/1.jpg", "attributes": {"plate": "AB1"}})
    by_url = by_path.model_copy(update={"image_path": None, "image_url": "http://nvr/1.jpg"})
    back = unpack(pack([EmbeddedRecord.of(d, unit([1, 2]), "m") for d in (by_path, by_url)]))
    assert back[0].image_ref == {"bbox": [1.0, 2.0, 3.0, 4.0], "path": "cam/1.jpg"}
    assert back[1].image_ref == {"bbox": [1.0, 2.0, 3.0, 4.0], "url": "http://nvr/1.jpg"}
    assert back[0].attributes == {"plate": "AB1"} and back[0].entity_type == "vehicle"


def test_embedded_messages_split_by_type_and_stay_under_the_broker_limit():
    recs = []
    for i in range(40):
        d = det(i, entity_type="person" if i % 2 else "vehicle")
        recs.append(EmbeddedRecord.of(d, unit(list(range(1, 769))), "m", RawEvent(b"y" * 60_000)))
    for r in recs[:20]:  # attributes the size estimate cannot see
        r.attributes = {"note": "z" * 15_000}
    msgs = embedded_messages("emb", recs)
    assert all(len(value) <= WIRE_MAX_MESSAGE for _, _, value in msgs) and len(msgs) > 2
    by_key: dict[bytes | None, list[str]] = {}
    for _, key, value in msgs:
        by_key.setdefault(key, []).extend(e.detection_id for e in unpack(value))
    assert by_key[b"default/person"] == [f"d{i}" for i in range(1, 40, 2)]
    assert by_key[b"default/vehicle"] == [f"d{i}" for i in range(0, 40, 2)]


def test_embedded_messages_are_keyed_by_site_and_type():
    """The key picks the partition, and a partition has one consumer: one writer per (site, type)."""
    recs = [EmbeddedRecord.of(det(i, site_id=f"s{i % 3}"), unit([1.0, 2.0]), "m") for i in range(9)]
    msgs = embedded_messages("emb", recs)
    by_key = {key: [(e.site_id, e.detection_id) for e in unpack(value)] for _, key, value in msgs}
    assert set(by_key) == {b"s0/person", b"s1/person", b"s2/person"}
    assert all(site == key.decode().split("/")[0] for key, items in by_key.items() for site, _ in items)
