"""The stream-replay input and how junk is scored (the replay itself runs in tests/integration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reid_stream.eval.metrics import clustering_metrics
from reid_stream.eval.replay import read_stream, scored_id


def line(det: str, ts: str, true_id: object = 1, **extra: object) -> str:
    return json.dumps({"detection_id": det, "camera_id": "cam-1", "entity_type": "person", "timestamp": ts,
                       "bbox": {"x1": 0, "y1": 0, "x2": 8, "y2": 16}, "image_path": "frames/c1/1.jpg",
                       "true_id": true_id, **extra})


def test_read_stream_sorts_by_time_and_resolves_images(tmp_path: Path):
    (tmp_path / "stream.jsonl").write_text("\n".join([line("b", "2026-01-01T08:00:02Z"),
                                                       line("a", "2026-01-01T08:00:01Z"), ""]))
    items = read_stream(tmp_path / "stream.jsonl")
    assert [i.detection.detection_id for i in items] == ["a", "b"]
    assert items[0].image == tmp_path / "frames/c1/1.jpg" and items[0].true_id == 1


@pytest.mark.parametrize(("bad", "message"), [
    (json.dumps({"detection_id": "x", "true_id": 1}), "validation error"),
    (line("x", "2026-01-01T08:00:01Z").replace('"true_id": 1', '"other": 1'), "true_id"),
    (line("x", "2026-01-01T08:00:01Z", image_b64="QUJD").replace('"image_path": "frames/c1/1.jpg", ', ""),
     "image_path"),
])
def test_read_stream_refuses_what_it_cannot_replay(tmp_path: Path, bad: str, message: str):
    (tmp_path / "s.jsonl").write_text(bad)
    with pytest.raises(ValueError, match=message):
        read_stream(tmp_path / "s.jsonl")


def test_junk_boxes_count_as_nobody():
    # Two junk boxes (true id 0) put into one entity with a person: both joins are false merges.
    truth = [scored_id(t, d) for t, d in [(7, "a"), (7, "b"), (0, "j1"), (0, "j2")]]
    got = clustering_metrics(truth, ["E", "E", "E", "E"])
    assert got.correct_pairs == 1 and got.predicted_pairs == 6  # only (a, b) is right
    assert scored_id(0, "j1") != scored_id(0, "j2") and scored_id(7, "a") == 7
