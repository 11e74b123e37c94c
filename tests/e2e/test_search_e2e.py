"""Search through the worker process, with real Kafka and Redis, and a real open_clip model with a text tower
(reid-tiny-clip, random weights: its text ranking means nothing, so here text search is checked for being
well formed; the ranking itself is proved with a stubbed tower in tests/unit/api/test_search.py)."""

from __future__ import annotations

import base64
import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image, ImageDraw

from tests.conftest import encode_png, pattern_image
from tests.e2e.harness import Collector, Worker, auth_headers, produce, worker_env

pytestmark = pytest.mark.e2e
BOOTSTRAP = "127.0.0.1:9092"
MAX_BYTES = 64 * 1024
MAX_PIXELS = 1_000_000
IDENTITIES = 6
COPIES = 3  # near-duplicates of each identity: the same crop with a small mark that moves


def near_duplicate(seed: int, copy: int) -> bytes:
    img = pattern_image(seed)
    ImageDraw.Draw(img).rectangle((2 + 3 * copy, 2, 4 + 3 * copy, 4), fill=(255, 255, 255))
    return encode_png(img)


def detection(det_id: str, camera: str, png: bytes, at: datetime, etype: str = "person") -> tuple[bytes, bytes]:
    body = {"detection_id": det_id, "camera_id": camera, "entity_type": etype, "timestamp": at.isoformat(),
            "bbox": {"x1": 0, "y1": 0, "x2": 48, "y2": 96}, "image_b64": base64.b64encode(png).decode()}
    return camera.encode(), json.dumps(body).encode()


async def call(method: str, url: str, token: bool = True, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(
            method, url, headers={**(auth_headers() if token else {}), **kwargs.pop("headers", {})}, **kwargs) as r:
        return r.status, await r.json()


def png_of(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@pytest.fixture
async def search_worker(infra, unique, tmp_path: Path):
    env = worker_env(unique, REID_CLIP_MODEL="reid-tiny-clip", REID_MAX_IMAGE_BYTES=str(MAX_BYTES),
                     REID_MAX_IMAGE_PIXELS=str(MAX_PIXELS))
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await worker.wait_ready()
        now = datetime.now(UTC)
        pngs = {(s, c): near_duplicate(s, c) for s in range(IDENTITIES) for c in range(COPIES)}
        messages = [detection(f"{unique}-{s}-{c}", f"cam-{c}", png, now - timedelta(minutes=c))
                    for (s, c), png in pngs.items()]
        messages.append(detection(f"{unique}-van", "cam-0", encode_png(pattern_image(99)), now, "vehicle"))
        async with Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches:
            await produce(BOOTSTRAP, env["REID_TOPIC_DETECTIONS"], messages)
            await matches.until(lambda items: len(items) >= len(messages), 120, "every match event")
        yield worker, unique, pngs, now
    finally:
        code = worker.stop()
    assert code == 0, worker.log_tail()


async def test_search_by_detection_image_and_text(search_worker):
    worker, tag, pngs, now = search_worker
    base = worker.base
    n_person = IDENTITIES * COPIES

    # Find-similar: a detection's own near-duplicates come first, itself left out, of its own type.
    for s in range(IDENTITIES):
        status, body = await call("GET", f"{base}/api/detections/{tag}-{s}-0/similar?limit={COPIES - 1}")
        assert status == 200, body
        assert body["query"] == "detection" and body["count"] == n_person - 1
        assert {h["detection_id"] for h in body["results"]} == {f"{tag}-{s}-{c}" for c in range(1, COPIES)}
    status, body = await call("GET", f"{base}/api/detections/{tag}-0-0/similar?limit=1000")
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == n_person - 1
    hit = body["results"][0]
    assert hit["entity_type"] == "person" and hit["entity_id"] and hit["camera_id"].startswith("cam-")
    assert hit["thumbnail_url"] == f"/api/detections/{hit['detection_id']}/image"
    status, body = await call("GET", f"{base}/api/detections/{tag}-0-0/similar?camera_id=cam-2")
    assert status == 200 and body["count"] == IDENTITIES and {h["camera_id"] for h in body["results"]} == {"cam-2"}
    status, body = await call("GET", f"{base}/api/detections/{tag}-0-0/similar?entity_type=vehicle")
    assert status == 200 and [h["detection_id"] for h in body["results"]] == [f"{tag}-van"]
    status, body = await call("GET", f"{base}/api/detections/{tag}-nobody/similar")
    assert (status, body["error_code"]) == (404, "detection_not_found")

    # By image: the same bytes as a detection's crop find that detection first, with a score of ~1.
    for s in range(IDENTITIES):
        status, body = await call("POST", f"{base}/api/search/image?entity_type=person&limit=3",
                                  data=pngs[(s, 1)], headers={"Content-Type": "image/png"})
        assert status == 200, body
        assert body["query"] == "image" and body["count"] == n_person
        assert body["results"][0]["detection_id"] == f"{tag}-{s}-1" and body["results"][0]["score"] >= 0.9999
        assert {h["detection_id"] for h in body["results"]} == {f"{tag}-{s}-{c}" for c in range(COPIES)}

    # By text, through the real (random-weight) CLIP text tower: well-formed, score-sorted, filtered, paged.
    status, body = await call("GET", f"{base}/api/search", params={"text": "person in a blue jacket", "limit": "7"})
    assert status == 200, body
    assert body["query"] == "text" and body["model"] == "reid-tiny-clip.random0"
    assert body["count"] == n_person + 1 and len(body["results"]) == 7 and body["limit"] == 7
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= x <= 1 for x in scores)
    status, rest = await call("GET", f"{base}/api/search",
                              params={"text": "person in a blue jacket", "limit": "1000", "offset": "7"})
    assert len(rest["results"]) == n_person + 1 - 7 and max(h["score"] for h in rest["results"]) <= scores[-1]
    ids = [h["detection_id"] for h in body["results"] + rest["results"]]
    assert len(set(ids)) == n_person + 1
    since = (now - timedelta(seconds=30)).isoformat()
    status, recent = await call("GET", f"{base}/api/search",
                                params={"text": "a van", "since": since, "entity_type": "person"})
    assert status == 200 and recent["count"] == IDENTITIES  # copy 0 of each: the others are minutes older
    until = (now - timedelta(seconds=90)).isoformat()
    status, old = await call("GET", f"{base}/api/search", params={"text": "a van", "until": until})
    assert status == 200 and old["count"] == IDENTITIES  # copy 2 only

    # Hostile inputs: clear codes, never a 5xx, and the worker carries on.
    big = b"\x89PNG" + b"\x00" * MAX_BYTES
    bomb = png_of((1200, 1200))  # 1.44 Mpx over the 1 Mpx limit, a few KB compressed
    assert len(bomb) < MAX_BYTES

    async def chunked():
        for _ in range(20):
            yield b"\x00" * 8192

    gif = io.BytesIO()
    pattern_image(1).save(gif, format="GIF")
    cases = [
        ("POST", "/api/search/image", {"data": big, "headers": {"Content-Type": "image/png"}}, 413,
         "image_too_large"),
        ("POST", "/api/search/image", {"data": chunked(), "headers": {"Content-Type": "image/jpeg"}}, 413,
         "image_too_large"),
        ("POST", "/api/search/image", {"data": bomb, "headers": {"Content-Type": "image/png"}}, 413,
         "image_too_many_pixels"),
        ("POST", "/api/search/image", {"data": pngs[(0, 0)], "headers": {"Content-Type": "image/gif"}}, 415,
         "unsupported_media_type"),
        ("POST", "/api/search/image", {"data": gif.getvalue(), "headers": {"Content-Type": "image/png"}}, 415,
         "unsupported_image_format"),
        ("POST", "/api/search/image", {"data": b"not an image", "headers": {"Content-Type": "image/jpeg"}}, 400,
         "image_decode_failed"),
        ("POST", "/api/search/image", {"data": b"", "headers": {"Content-Type": "image/png"}}, 400, "empty_image"),
        ("GET", "/api/search", {"params": {"text": ""}}, 400, "text_required"),
        ("GET", "/api/search", {}, 400, "text_required"),
        ("GET", "/api/search", {"params": {"text": "x" * 301}}, 400, "text_too_long"),
        ("GET", "/api/search", {"params": {"text": "a", "limit": "0"}}, 422, "invalid_parameter"),
        ("GET", "/api/search", {"params": {"text": "a", "since": "2026-01-01"}}, 422, "invalid_parameter"),
    ]
    for method, path, kwargs, want_status, want_code in cases:
        status, body = await call(method, base + path, **kwargs)
        assert (status, body.get("error_code")) == (want_status, want_code), (path, kwargs.get("params"), body)
        assert body["detail"]

    # Every route the OpenAPI document lists, the search routes included, needs a token (R5): enumerated from
    # the document the worker serves, so a route added later is checked too.
    status, spec = await call("GET", f"{base}/api/openapi.json")
    assert {"/api/detections/{detection_id}/similar", "/api/search", "/api/search/image"} <= set(spec["paths"])
    checked = 0
    for template, methods in spec["paths"].items():
        path = re.sub(r"\{[^}]+\}", f"{tag}-0-0", template)  # any path parameter: a real detection's id
        for method in methods:
            status, body = await call(method.upper(), f"{base}{path}?text=a", token=False, data=pngs[(0, 0)],
                                      headers={"Content-Type": "image/png"})
            assert status == 401 and body["detail"], (method, path)
            checked += 1
    assert checked >= 8
    status, _ = await call("GET", f"{base}/api/openapi.json", token=False)
    assert status == 401
    assert worker.alive()
