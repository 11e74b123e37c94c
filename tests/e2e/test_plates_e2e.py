"""Licence plates, driven as a user would: vehicle detections into Kafka, match events and dead letters out of
Kafka, the entity and an operator's merge over HTTP.

The null encoder makes looks exact (the same crop gives the same vector, different crops near-orthogonal ones):
what joins a vehicle whose look changed is its plate, and nothing else.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.e2e.harness import Collector, get_json, produce, running_worker, worker_env
from tests.e2e.test_operator_e2e import send_json
from tests.plate_images import frame_jpeg

pytestmark = pytest.mark.e2e
BOOTSTRAP = "127.0.0.1:9092"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
BOX = {"x1": 0, "y1": 0, "x2": 96, "y2": 64}


async def test_a_vehicle_with_the_same_plate_joins_its_entity_even_when_its_look_changed(infra, unique,
                                                                                         tmp_path: Path):
    root = tmp_path / "frames"
    root.mkdir()
    for n, name in enumerate(("car-a", "car-b")):  # two unrelated looks
        Image.fromarray(np.random.default_rng(n).integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(
            root / f"{name}.png")
    data, ocr_box = frame_jpeg("AB123CD", box_size=(320, 240), char_height=16)  # a plate only OCR can tell
    (root / "rear.jpg").write_bytes(data)
    env = worker_env(unique, REID_ENCODER="null", REID_IMAGE_ROOTS=str(root), REID_SIMILARITY_THRESHOLD="0.9",
                     REID_PLATE_OCR="true")
    async with running_worker(env, tmp_path / "worker.log") as worker:
        async with Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches, \
                Collector(BOOTSTRAP, env["REID_TOPIC_DLQ"]) as dlq:

            async def send(det: str, camera: str, seconds: float, image: str, plate: Any = None,
                           track: str | None = None, bbox: dict[str, float] = BOX) -> dict[str, Any]:
                value: dict[str, Any] = {
                    "detection_id": f"{unique}-{det}", "camera_id": camera, "entity_type": "vehicle",
                    "timestamp": (T0 + timedelta(seconds=seconds)).isoformat(), "bbox": bbox,
                    "image_path": str(root / image), "attributes": {"colour": "silver"}}
                if plate is not None:
                    value["attributes"]["plate"] = plate
                if track:
                    value["track_id"] = track
                await produce(BOOTSTRAP, env["REID_TOPIC_DETECTIONS"], [(camera.encode(), json.dumps(value).encode())])
                got = await matches.until(lambda items: any(e["detection_id"] == value["detection_id"] for e in items),
                                          90, f"the match event of {det}")
                return next(e for e in got if e["detection_id"] == value["detection_id"])

            # V1 drives past the gate camera: three frames of one tracklet, its plate given by the NVR's reader.
            v1 = [await send(f"v1-{i}", "gate", i, "car-a.png", "AB-123-CD", track="1") for i in range(3)]
            entity = v1[0]["entity_id"]
            assert [(e["decision"], e["entity_id"], e["plate"]) for e in v1] == [
                ("new", entity, "AB123CD"), ("tracklet", entity, "AB123CD"), ("tracklet", entity, "AB123CD")]

            # Later, on the street camera, nothing alike (another crop, another light), but the same plate.
            v2 = await send("v2", "street", 120, "car-b.png", "ab 123 cd")
            assert (v2["entity_id"], v2["decision"], v2["plate"], v2["is_new_entity"]) == (
                entity, "plate", "AB123CD", False)
            assert v2["candidates"][0]["entity_id"] == entity and v2["candidates"][0]["similarity"] < 0.9

            # A look-alike of V1 with another plate is somebody else, and its event says why.
            x1 = await send("x1", "yard", 240, "car-a.png", "XY987ZT")
            assert x1["is_new_entity"] and x1["entity_id"] != entity and x1["plate"] == "XY987ZT"
            refused = {c["entity_id"]: c["refused"] for c in x1["candidates"]}
            assert refused[entity].startswith("plate") and "AB123CD" not in json.dumps(x1)

            # With REID_PLATE_OCR on, a vehicle whose event gives no plate has it read off its crop.
            ocr = await send("ocr", "drive", 360, "rear.jpg", bbox=ocr_box)
            assert (ocr["entity_id"], ocr["decision"], ocr["plate"]) == (entity, "plate", "AB123CD")

            # A plate the worker cannot use is refused with a machine-readable reason, like any bad field.
            await produce(BOOTSTRAP, env["REID_TOPIC_DETECTIONS"], [(b"yard", json.dumps({
                "detection_id": f"{unique}-bad", "camera_id": "yard", "entity_type": "vehicle",
                "timestamp": T0.isoformat(), "bbox": BOX, "image_path": str(root / "car-a.png"),
                "attributes": {"plate": "N/A"}}).encode())])
            (letter,) = await dlq.until(lambda items: len(items) >= 1, 60, "the dead letter of the bad plate")
            assert (letter["error_code"], letter["stage"], letter["detection_id"]) == (
                "plate_invalid", "validate", f"{unique}-bad")
            assert letter["details"][0]["field"] == "attributes.plate"

        # The entity over HTTP: both looks and the OCR's read, on three cameras, each appearance showing the plate.
        status, detail, _ = await get_json(f"{worker.base}/api/entities/{entity}")
        assert status == 200 and detail["cameras_seen"] == ["drive", "gate", "street"]
        apps = {a["detection_id"].removeprefix(f"{unique}-"): a for a in detail["appearances"]}
        assert sorted(apps) == ["ocr", "v1-0", "v1-1", "v1-2", "v2"]
        assert {a["attributes"]["plate"] for a in apps.values()} == {"AB123CD"}
        assert apps["v2"]["attributes"] == {"colour": "silver", "plate": "AB123CD"}
        assert apps["ocr"]["attributes"]["plate_source"] == "ocr"
        assert detail["plates"] == ["AB123CD"]  # the entity's plates at a glance

        # An operator cannot merge two vehicles with different plates.
        status, refused_merge = await send_json(f"{worker.base}/api/entities/{entity}/merge", "POST",
                                                {"other_id": x1["entity_id"]})
        assert status == 409 and refused_merge["error_code"] == "plate_conflict"
