"""The HTTP contract where the router, aiohttp or Unicode could bend it, driven against a worker process: ids the
stream accepts are addressable, refusals are JSON with a stable code, and text that can disguise itself is
refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.conftest import encode_png, pattern_image
from tests.e2e.harness import Collector, Worker, auth_headers, produce, running_worker, worker_env

pytestmark = pytest.mark.e2e
BOOTSTRAP = "127.0.0.1:9092"


def detection(det_id: str, root: Path, look: int) -> tuple[bytes, bytes]:
    path = root / f"look-{look}.png"
    path.write_bytes(encode_png(pattern_image(look)))
    value = {"detection_id": det_id, "camera_id": "cam-h", "entity_type": "person",
             "timestamp": datetime.now(UTC).isoformat(), "bbox": {"x1": 0, "y1": 0, "x2": 48, "y2": 96},
             "image_path": str(path)}
    return b"cam-h", json.dumps(value).encode()


@pytest.fixture
async def worker(infra, unique, image_root: Path, tmp_path: Path) -> AsyncIterator[Worker]:
    env = worker_env(unique, REID_ENCODER="null", REID_IMAGE_ROOTS=str(image_root))
    async with running_worker(env, tmp_path / "worker.log") as w:
        yield w


async def stored(worker: Worker, messages: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    async with Collector(BOOTSTRAP, worker.env["REID_TOPIC_MATCHES"]) as matches:
        await produce(BOOTSTRAP, worker.env["REID_TOPIC_DETECTIONS"], messages)
        return await matches.until(lambda items: len(items) >= len(messages), 90, "the match events")


async def call(method: str, url: str, **kwargs: Any) -> tuple[int, str, Any]:
    """(status, content type, body: JSON when it is JSON, else bytes)."""
    async with aiohttp.ClientSession(headers=auth_headers()) as http, http.request(method, url, **kwargs) as r:
        raw = await r.read()
        return r.status, r.content_type, json.loads(raw) if r.content_type == "application/json" else raw


async def test_an_entity_whose_id_holds_braces_is_readable_correctable_erasable_and_thumbnailable(
        worker: Worker, unique: str, image_root: Path):
    ids = [f"{{{unique}}}", f"{unique}-a}}b{{c", f"{unique}/{{x}}"]  # "/" is sent as %2F, as ids are quoted
    events = await stored(worker, [detection(d, image_root, n) for n, d in enumerate(ids)])
    assert {e["entity_id"] for e in events} == set(ids)
    base = worker.base
    status, _, listed = await call("GET", f"{base}/api/entities?limit=1000")
    assert status == 200 and set(ids) <= {e["id"] for e in listed["entities"]}
    for eid in ids:
        url = f"{base}/api/entities/{quote(eid, safe='')}"
        status, kind, detail = await call("GET", url)
        assert (status, kind) == (200, "application/json"), detail
        assert detail["id"] == eid and detail["appearance_count"] == 1
        status, _, history = await call("GET", f"{url}/history")
        assert status == 200 and history["count"] == 1, history
        status, _, patched = await call("PATCH", url, json={"name": "Brace"})
        assert status == 200 and patched["name"] == "Brace", patched
        thumb = detail["appearances"][0]["thumbnail_url"]
        status, kind, jpeg = await call("GET", base + thumb)
        assert (status, kind) == (200, "image/jpeg") and jpeg[:2] == b"\xff\xd8", (thumb, jpeg)
        status, _, similar = await call("GET", f"{base}/api/detections/{quote(eid, safe='')}/similar")
        assert status == 200, similar
        status, _, erased = await call("DELETE", url)
        assert status == 200 and erased["purged"]["entity_id"] == eid, erased
        status, kind, gone = await call("GET", url)
        assert (status, kind) == (404, "application/json"), gone


async def test_a_json_body_over_a_mebibyte_is_refused_with_the_documented_json_413(worker: Worker, unique: str,
                                                                                   image_root: Path):
    await stored(worker, [detection(f"{unique}-big", image_root, 7)])
    base, eid = worker.base, f"{unique}-big"
    huge = {"notes": "x" * (2 * 1024 * 1024)}
    for method, path, body in (("PATCH", f"/api/entities/{eid}", huge),
                               ("POST", f"/api/entities/{eid}/merge", {"other_id": "y" * (2 << 20)}),
                               ("POST", f"/api/entities/{eid}/split", {"detection_ids": ["z" * 200] * 12000}),
                               ("POST", "/api/watchlist", {"entity_id": eid, "label": "l" * (2 << 20)})):
        status, kind, answer = await call(method, base + path, json=body)
        assert (status, kind) == (413, "application/json"), (path, answer)
        assert answer["error_code"] == "body_too_large", answer
    # Below the limit, the same route answers as ever.
    status, _, patched = await call("PATCH", f"{base}/api/entities/{eid}", json={"notes": "small"})
    assert status == 200 and patched["notes"] == "small"


DISGUISED = ["Ann\u202eeviL", "Ann\u200b", "\u2066Ann\u2069", "A\u200dnn", "Ann\ufeff", "Ann\u061c", "Ann\u00ad",
             "Ann\u2028"]


async def test_names_notes_and_labels_refuse_bidi_controls_and_invisible_characters(worker: Worker, unique: str,
                                                                                   image_root: Path):
    await stored(worker, [detection(f"{unique}-n", image_root, 8)])
    for text in DISGUISED:
        await refused_everywhere(worker.base, f"{unique}-n", text)


async def refused_everywhere(base: str, eid: str, text: str) -> None:
    url = f"{base}/api/entities/{eid}"
    for field in ("name", "notes", "watch"):
        status, _, answer = await call("PATCH", url, json={field: text})
        assert status == 422 and answer["error_code"] == "invalid_body", (field, answer)
        (error,) = answer["detail"]
        assert error["loc"] == ["body", field] and error["type"] == "disallowed_character", error
        assert f"U+{ord(next(c for c in text if c not in 'AnevLi')):04X}" in error["msg"], error
    status, _, answer = await call("POST", f"{base}/api/watchlist", json={"entity_id": eid, "label": text})
    assert status == 422 and answer["detail"][0]["type"] == "disallowed_character", answer
    status, _, answer = await call("POST", f"{base}/api/watchlist", params={"label": text},
                                   data=encode_png(pattern_image(9)), headers={"Content-Type": "image/png"})
    assert status == 422 and answer["error_code"] == "invalid_label", answer
    status, _, detail = await call("GET", url)
    assert status == 200 and (detail["name"], detail["notes"], detail["watch"]) == (None, None, None)


async def test_names_in_any_script_are_accepted(worker: Worker, unique: str, image_root: Path):
    await stored(worker, [detection(f"{unique}-s", image_root, 10)])
    url = f"{worker.base}/api/entities/{unique}-s"
    for name in ("Zoë", "דוד", "محمد", "李雷", "🙂 Ann"):
        status, _, detail = await call("PATCH", url, json={"name": name, "notes": f"{name}\nline two\tend"})
        assert status == 200 and detail["name"] == name, detail


@pytest.mark.parametrize("route", ["/api/entities", "/api/search/image"])
async def test_limit_and_offset_take_ascii_digits_only(worker: Worker, route: str):
    method = "POST" if route.endswith("image") else "GET"
    kwargs = {"data": encode_png(pattern_image(11)), "headers": {"Content-Type": "image/png"}} \
        if method == "POST" else {}
    for name in ("limit", "offset"):
        for bad in ("１０", "1_0", " 5", "+5", "٣", "5 ", "0x10"):
            status, _, answer = await call(method, worker.base + route, params={name: bad}, **kwargs)
            assert status == 422 and answer["error_code"] == "invalid_parameter", (name, bad, answer)
            assert answer["detail"][0]["loc"] == ["query", name], answer
        status, _, answer = await call(method, worker.base + route, params={name: "10"}, **kwargs)
        assert status == 200 and answer[name] == 10, answer
