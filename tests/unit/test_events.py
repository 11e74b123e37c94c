import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from reid_stream.errors import DetectionError
from reid_stream.events import parse_detection

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def valid(**changes):
    det = {
        "detection_id": "d1", "camera_id": "cam-1", "entity_type": "person",
        "timestamp": "2026-06-01T11:59:00+00:00", "bbox": {"x1": 1, "y1": 2, "x2": 30, "y2": 60},
        "image_path": "a.png",
    }
    det.update(changes)
    return {k: v for k, v in det.items() if v is not ...}


def parse(obj) -> object:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return parse_detection(raw, now=NOW, max_future_skew_seconds=3600)


def code_of(obj) -> str:
    with pytest.raises(DetectionError) as err:
        parse(obj)
    return err.value.code


def test_valid_detection_with_optional_fields():
    det = parse(valid(track_id=17, camera_name="Porch", attributes={"color": "red", "confidence": 0.9}))
    assert det.track_id == "17" and det.camera_name == "Porch" and det.attributes["color"] == "red"
    assert det.timestamp.tzinfo is not None


@pytest.mark.parametrize(("raw", "code"), [
    (b"{not json", "invalid_json"),
    (b"\xff\xfe", "invalid_json"),
    (b"[1, 2]", "invalid_json"),
    (valid(detection_id=...), "schema_invalid"),
    (valid(camera_id=5), "schema_invalid"),
    (valid(entity_type="bicycle"), "unknown_entity_type"),
    (valid(timestamp="2026-06-01T11:59:00"), "schema_invalid"),  # no time zone
    (valid(timestamp="yesterday"), "schema_invalid"),
    (valid(timestamp=1767225600), "schema_invalid"),  # epoch numbers are not the contract
    (valid(bbox={"x1": "1", "y1": 0, "x2": 5, "y2": 5}), "schema_invalid"),
    (valid(bbox={"x1": True, "y1": 0, "x2": 5, "y2": 5}), "schema_invalid"),
    (valid(bbox={"x1": -1, "y1": 0, "x2": 5, "y2": 5}), "schema_invalid"),
    (valid(bbox={"x1": 5, "y1": 5, "x2": 5, "y2": 9}), "schema_invalid"),  # zero area
    (valid(bbox={"x1": 0, "y1": 0, "x2": 5}), "schema_invalid"),
    (valid(image_path=..., image_url=""), "schema_invalid"),
    (valid(image_b64="AAAA"), "schema_invalid"),  # two references
    (valid(image_path=...), "schema_invalid"),  # none
    (valid(timestamp="9999-12-31T23:59:59+00:00"), "timestamp_out_of_range"),
])
def test_bad_events_get_their_code(raw, code):
    assert code_of(raw) == code


def test_nan_in_bbox_is_refused():
    raw = json.dumps(valid()).replace('"x1": 1', '"x1": NaN').encode()
    assert math.isnan(json.loads(raw)["bbox"]["x1"])
    assert code_of(raw) == "schema_invalid"


def test_schema_errors_name_the_field():
    with pytest.raises(DetectionError) as err:
        parse(valid(bbox={"x1": "a", "y1": 0, "x2": 5, "y2": 5}))
    assert err.value.details and err.value.details[0]["field"] == "bbox.x1"
    assert err.value.stage == "validate"


def test_oversized_events_are_refused_before_parsing():
    with pytest.raises(DetectionError) as err:
        parse_detection(b"{" + b" " * 5000 + b"}", max_event_bytes=1000)
    assert err.value.code == "event_too_large" and err.value.stage == "decode"


def test_small_clock_skew_is_tolerated():
    assert parse(valid(timestamp=(NOW + timedelta(minutes=5)).isoformat())).detection_id == "d1"


def test_complete_builds_what_model_construct_builds():
    from datetime import UTC, datetime

    from reid_stream.events import Candidate, EntityAppearance, MatchEvent, MatchRef, TrackletRef, complete

    now = datetime.now(UTC)
    ref = {"detection_id": "a", "entity_id": "e", "camera_id": "c", "timestamp": now, "similarity": 0.5}
    cand = {"entity_id": "e", "similarity": 0.9, "refused": "space_time: x"}
    track = {"key": "c|1", "detections": 2, "redecided_from": None}
    event = {"detection_id": "b", "entity_id": "e", "is_new_entity": False, "entity_type": "person", "site_id": "s",
             "camera_id": "c", "camera_name": None, "track_id": "1", "timestamp": now, "model": "m",
             "matches": [complete(MatchRef, **ref)], "processed_at": now, "decision": "joined", "ambiguous": True,
             "candidates": [complete(Candidate, **cand)], "tracklet": complete(TrackletRef, **track),
             "entity_name": "Ann", "trust": "trusted", "plate": None, "space_version": 2}
    app = {"detection_id": "b", "camera_id": "c", "camera_name": "c", "timestamp": now, "similarity_score": 0.9,
           "attributes": None, "thumbnail_url": ""}
    for cls, values in ((MatchRef, ref), (Candidate, cand), (TrackletRef, track), (MatchEvent, event),
                        (EntityAppearance, app)):
        assert set(values) == set(cls.model_fields), f"{cls.__name__}: give every field"
        assert cls.__new__ is object.__new__, f"{cls.__name__}: complete builds it with object.__new__"
        built, constructed = complete(cls, **values), cls.model_construct(**values)
        assert built == constructed and built.model_dump_json() == constructed.model_dump_json()
        assert built.model_fields_set == constructed.model_fields_set
        assert cls.model_validate_json(built.model_dump_json()) == built
