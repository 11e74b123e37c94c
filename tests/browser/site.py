"""What the browser tests show: a few detections written as image files (so thumbnails load), sent to a real
worker through Kafka. The same crop in two cameras' frames is one entity seen on both (the tiny test model
matches identical pixels at 0.9995; nothing else does)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image

from tests.conftest import encode_png, pattern_image

BOOTSTRAP = "127.0.0.1:9092"


def frame_file(root: Path, name: str, crop: Image.Image, at: tuple[int, int]) -> tuple[str, dict[str, int]]:
    img = Image.new("RGB", (220, 180), (20, 30, 40))
    img.paste(crop, at)
    path = root / f"{name}.png"
    path.write_bytes(encode_png(img))
    return str(path), {"x1": at[0], "y1": at[1], "x2": at[0] + crop.width, "y2": at[1] + crop.height}


def detection(root: Path, det_id: str, camera: str, crop: Image.Image, at: tuple[int, int], kind: str = "person",
              ago_s: float = 0.0) -> dict[str, Any]:
    path, bbox = frame_file(root, det_id, crop, at)
    when = datetime.now(UTC) - timedelta(seconds=ago_s)
    return {"detection_id": det_id, "camera_id": camera, "camera_name": f"Camera {camera.rpartition('-')[2]}",
            "entity_type": kind, "timestamp": when.isoformat(), "bbox": bbox, "image_path": path}


def site(root: Path, tag: str) -> dict[str, dict[str, Any]]:
    """Four entities: a person on cam-1 then cam-2, another person, a vehicle, and a person seen inline only
    (no image kept: its thumbnail answers 404, which the page must show as such)."""
    alice, bob, car, dora = (pattern_image(101), pattern_image(202), pattern_image(303, size=(96, 64)),
                             pattern_image(404))
    inline = detection(root, f"dora-{tag}", "cam-2", dora, (5, 5), ago_s=50)
    inline["image_b64"] = base64.b64encode(Path(inline.pop("image_path")).read_bytes()).decode()
    return {
        "alice1": detection(root, f"alice1-{tag}", "cam-1", alice, (10, 20), ago_s=40),
        "alice2": detection(root, f"alice2-{tag}", "cam-2", alice, (120, 50), ago_s=20),
        "bob": detection(root, f"bob-{tag}", "cam-1", bob, (60, 40), ago_s=30),
        "car": detection(root, f"car-{tag}", "cam-3", car, (30, 60), kind="vehicle", ago_s=10),
        "dora": inline,
    }


def message(det: dict[str, Any]) -> tuple[bytes, bytes]:
    return det["camera_id"].encode(), json.dumps(det).encode()
