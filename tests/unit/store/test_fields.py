"""The batch commit's text fields (store.lua reads them): the meta row is written by hand for speed, and must stay
byte for byte what json.dumps of its dict wrote, since stored rows of both kinds are read back alike."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from reid_stream.events import EntityAppearance, MatchEvent
from reid_stream.identity.matching import Assignment
from reid_stream.store.reid_store import PlannedWrite, ReidStore, _json_number

ODD = ["cam-1", "Kamera Süd", "门口", 'say "hi"', "back\\slash", "tab\tand\nnewline", "\u2028", "😀", "x" * 300]


def planned(camera: str, entity: str, track: str, quality: float, plate: str | None, at: datetime) -> PlannedWrite:
    event = MatchEvent(detection_id="d1", entity_id=entity, is_new_entity=True, entity_type="vehicle",
                       camera_id=camera, timestamp=at, model="m", matches=[], processed_at=at, plate=plate)
    appearance = EntityAppearance(detection_id="d1", camera_id=camera, camera_name=camera, timestamp=at,
                                  similarity_score=1.0)
    return PlannedWrite(event, np.ones(4, np.float32), Assignment(entity, True, None), "fp", appearance, 0.0,
                        None, track, quality)


def meta_as_json_dumps(w: PlannedWrite) -> str:
    """The meta field as store.py wrote it before: json.dumps of the dict."""
    ev = w.event
    return json.dumps({"e": ev.entity_id, "c": ev.camera_id, "t": ev.timestamp.isoformat(), "k": w.track_key,
                       "q": w.quality, "d": len(w.vector), **({"p": ev.plate} if ev.plate else {})})


@pytest.mark.parametrize("text", ODD)
def test_meta_is_what_json_dumps_wrote(text: str) -> None:
    times = [datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
             datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))]
    for at in times:
        for quality in (1.0, 0.25, 1 / 3, 0.5000000001, 1e-7, 1, 0.0):
            for plate in (None, "", "AB123"):
                for camera, entity, track in ((text, "e1", ""), ("c", text, f"c|{text}"), ("c", "e", text)):
                    w = planned(camera, entity, track, quality, plate, at)
                    fields = ReidStore._commit_fields(w)
                    assert fields[2] == meta_as_json_dumps(w)
                    assert fields[6] == at.isoformat()
                    assert json.loads(fields[2])["e"] == entity


@pytest.mark.parametrize("x", [0.1, 1.0, 1, 0, 2.5e-300, 1e16, float("nan"), float("inf"), -float("inf"),
                               np.float64(0.75), True])
def test_numbers_are_what_json_dumps_writes(x: float) -> None:
    assert _json_number(x) == json.dumps(x)
