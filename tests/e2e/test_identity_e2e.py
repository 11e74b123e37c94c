"""Who is who, driven as a user would: detections into Kafka one at a time, match events and entity updates out
of Kafka, entities read over HTTP.

The null encoder makes the looks exact: the same crop gives the same vector, different crops near-orthogonal
ones, so each rule (tracklets, the space-time gate, ambiguity, merges) is what decides, not model noise.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.e2e.harness import Collector, Worker, get_json, produce, worker_env

pytestmark = pytest.mark.e2e
BOOTSTRAP = "127.0.0.1:9092"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def looks(root: Path) -> None:
    """Three unrelated looks: y (a person seen on several cameras), w (another) and z (a poor first frame)."""
    for n, name in enumerate("yzw"):
        pixels = np.random.default_rng(n).integers(0, 255, (128, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{name}.png")


async def test_tracklets_gate_ambiguity_and_merges(infra, unique, tmp_path: Path):
    root = tmp_path / "frames"
    root.mkdir()
    looks(root)
    topology = tmp_path / "topology.json"
    topology.write_text(json.dumps({"adjacency": [{"a": "cam-a", "b": "cam-b", "min_transit_s": 30}]}))
    env = worker_env(unique, REID_ENCODER="null", REID_IMAGE_ROOTS=str(root), REID_SIMILARITY_THRESHOLD="0.9",
                     REID_CAMERA_TOPOLOGY=str(topology))
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await worker.wait_ready()
        async with Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches, \
                Collector(BOOTSTRAP, env["REID_TOPIC_UPDATES"]) as updates:

            async def send(det: str, camera: str, seconds: float, look: str, track: str | None = None
                           ) -> dict[str, Any]:
                value = {"detection_id": f"{unique}-{det}", "camera_id": camera, "entity_type": "person",
                         "timestamp": (T0 + timedelta(seconds=seconds)).isoformat(),
                         "bbox": {"x1": 0, "y1": 0, "x2": 64, "y2": 128}, "image_path": str(root / f"{look}.png")}
                if track:
                    value["track_id"] = track
                await produce(BOOTSTRAP, env["REID_TOPIC_DETECTIONS"], [(camera.encode(), json.dumps(value).encode())])
                got = await matches.until(lambda items: any(e["detection_id"] == value["detection_id"] for e in items),
                                          60, f"the match event of {det}")
                return next(e for e in got if e["detection_id"] == value["detection_id"])

            # A tracklet on cam-a, then the same person on cam-b after a plausible walk (45 s >= 30 s): one entity.
            p1 = await send("p1", "cam-a", 0, "y", "7")
            p2 = await send("p2", "cam-a", 1, "y", "7")
            p3 = await send("p3", "cam-b", 46, "y", "3")
            person = p1["entity_id"]
            assert p1["decision"] == "new" and p1["tracklet"]["key"] == "cam-a|7"
            assert (p2["entity_id"], p2["decision"], p2["tracklet"]["detections"]) == (person, "tracklet", 2)
            assert (p3["entity_id"], p3["decision"]) == (person, "joined") and not p3["ambiguous"]

            # A look-alike on cam-c at the very moment the person is on cam-b: somebody else, and the event says why.
            twin = await send("l1", "cam-c", 46, "y")
            assert twin["is_new_entity"] and twin["entity_id"] != person
            refused = {c["entity_id"]: c["refused"] for c in twin["candidates"]}
            assert refused[person].startswith("space_time")

            # Later, on cam-d, the same look again: it could be either of them. Flagged, and (the default policy)
            # not joined to either.
            amb = await send("m1", "cam-d", 400, "y")
            assert amb["ambiguous"] and amb["is_new_entity"]
            assert {c["entity_id"] for c in amb["candidates"]} >= {person, twin["entity_id"]}
            assert all(c["refused"] is None for c in amb["candidates"])

            # A tracklet on cam-a whose first frame was poor (look z) founds an entity of its own; as its frames of
            # look w pile up, its aggregate matches the person seen in w before: the two entities are merged.
            q1 = await send("q1", "cam-c", 600, "w", "1")
            t1 = await send("t1", "cam-a", 700, "z", "9")
            assert t1["is_new_entity"]
            merged_event = None
            for n in range(2, 8):
                ev = await send(f"t{n}", "cam-a", 700 + n, "w", "9")
                if ev["decision"] == "merged":
                    merged_event = ev
                    break
                assert ev["entity_id"] == t1["entity_id"] and ev["decision"] == "tracklet"
            assert merged_event is not None, "the tracklet's aggregate never matched the earlier entity"
            survivor = q1["entity_id"]
            assert merged_event["entity_id"] == survivor
            published = await updates.until(lambda items: len(items) >= 1, 30, "the merge on entity-updates")
            assert [(u["type"], u["survivor"], u["merged"]) for u in published] == [
                ("merged", survivor, t1["entity_id"])]

        # The views: the person has both cameras; the merged id answers with the survivor.
        status, detail, _ = await get_json(f"{worker.base}/api/entities/{person}")
        assert status == 200 and detail["cameras_seen"] == ["cam-a", "cam-b"] and detail["appearance_count"] == 3
        status, via_old, _ = await get_json(f"{worker.base}/api/entities/{t1['entity_id']}")
        assert status == 200 and via_old["id"] == survivor and via_old["resolved_from"] == t1["entity_id"]
        assert via_old["merged_ids"] == [t1["entity_id"]]
        assert {a["detection_id"] for a in via_old["appearances"]} >= {q1["detection_id"], t1["detection_id"],
                                                                        merged_event["detection_id"]}
        status, listing, _ = await get_json(f"{worker.base}/api/entities?limit=100")
        assert status == 200 and t1["entity_id"] not in {e["id"] for e in listing["entities"]}
    finally:
        code = worker.stop()
    assert code == 0, worker.log_tail()


async def test_erasing_an_entity_removes_it_from_other_detections_published_again(infra, unique, tmp_path: Path):
    """Issue 14's erasure gap, as a user meets it: B was refused A's entity (so B's event names it); after A's
    entity is erased over HTTP, a redelivery of B re-publishes B's stored event without any trace of A."""
    root = tmp_path / "frames"
    root.mkdir()
    looks(root)
    env = worker_env(unique, REID_ENCODER="null", REID_IMAGE_ROOTS=str(root), REID_SIMILARITY_THRESHOLD="0.9")
    worker = Worker(env, tmp_path / "worker.log").start()

    def value(det: str, camera: str) -> tuple[bytes, bytes]:
        body = {"detection_id": f"{unique}-{det}", "camera_id": camera, "entity_type": "person",
                "timestamp": T0.isoformat(), "bbox": {"x1": 0, "y1": 0, "x2": 64, "y2": 128},
                "image_path": str(root / "y.png")}
        return camera.encode(), json.dumps(body).encode()

    try:
        await worker.wait_ready()
        async with Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches:
            await produce(BOOTSTRAP, env["REID_TOPIC_DETECTIONS"], [value("a", "cam-1")])
            await matches.until(lambda items: len(items) >= 1, 60, "A's match event")
            await produce(BOOTSTRAP, env["REID_TOPIC_DETECTIONS"], [value("b", "cam-2")])  # same look, same moment
            await matches.until(lambda items: len(items) >= 2, 60, "B's match event")
            a, b = matches.items
            assert a["entity_id"] in json.dumps(b) and b["entity_id"] != a["entity_id"]  # refused, but named
            status, _, _ = await get_json(f"{worker.base}/api/entities/{a['entity_id']}", method="DELETE")
            assert status == 200
            await produce(BOOTSTRAP, env["REID_TOPIC_DETECTIONS"], [value("b", "cam-2")])  # a redelivery of B
            await matches.until(lambda items: len(items) >= 3, 60, "B's event published again")
        again = matches.items[2]
        assert again["detection_id"] == b["detection_id"] and again["entity_id"] == b["entity_id"]
        assert a["entity_id"] not in json.dumps(again) and a["detection_id"] not in json.dumps(again)
    finally:
        code = worker.stop()
    assert code == 0, worker.log_tail()
