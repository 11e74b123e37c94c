"""Input the stream must refuse or accept the same way everywhere, driven through a worker as a user would:
detections into Kafka, dead letters and match events out of Kafka, thumbnails and search over HTTP, images
fetched from a real HTTP server on loopback."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import encode_png, pattern_image
from tests.e2e.harness import Collector, Worker, auth_headers, produce, running_worker, worker_env

pytestmark = pytest.mark.e2e
BOOTSTRAP = "127.0.0.1:9092"
REDIS_PORT = 6379
BOX = {"x1": 0, "y1": 0, "x2": 48, "y2": 96}


def event(det_id: str, **ref: Any) -> dict[str, Any]:
    return {"detection_id": det_id, "camera_id": "cam-in", "entity_type": "person",
            "timestamp": datetime.now(UTC).isoformat(), "bbox": BOX, **ref}


def two_frame_mpo() -> bytes:
    """A multi-picture JPEG (MPO) as stereo and some phone cameras write it: the first frame is a plain JPEG."""
    buf = io.BytesIO()
    pattern_image(41).save(buf, "MPO", save_all=True, append_images=[pattern_image(42)])
    data = buf.getvalue()
    assert data[:2] == b"\xff\xd8" and b"MPF\x00" in data[:512]
    return data


@pytest.fixture
async def image_server() -> AsyncIterator[tuple[int, bytes]]:
    """Serves a PNG at /a.png, and at /to-redis a redirect to the local Redis port."""
    png = encode_png(pattern_image(40))
    app = web.Application()

    async def image(_: web.Request) -> web.Response:
        return web.Response(body=png, content_type="image/png")

    async def to_redis(_: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{REDIS_PORT}/a.png")

    app.add_routes([web.get("/a.png", image), web.get("/to-redis", to_redis)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1], png
    await runner.cleanup()


@pytest.fixture
async def worker(infra, unique, image_root: Path, image_server, tmp_path: Path) -> AsyncIterator[Worker]:
    port, _ = image_server
    # A bare host allows its scheme's default port only; the image server's port is named.
    env = worker_env(unique, REID_ENCODER="null", REID_IMAGE_ROOTS=str(image_root),
                     REID_URL_ALLOWED_HOSTS=f"localhost,127.0.0.1:{port}", REID_URL_TIMEOUT_SECONDS="3")
    async with running_worker(env, tmp_path / "worker.log") as w:
        yield w


async def outcomes(worker: Worker, values: list[bytes], events: set[str],
                   letters: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send raw values; wait for match events of these detection ids and this many dead letters."""
    env = worker.env
    async with Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches, \
            Collector(BOOTSTRAP, env["REID_TOPIC_DLQ"]) as dlq:
        await produce(BOOTSTRAP, env["REID_TOPIC_DETECTIONS"], [(b"cam-in", v) for v in values])
        await matches.until(lambda items: events <= {e["detection_id"] for e in items}, 90, f"events {events}")
        await dlq.until(lambda items: len(items) >= letters, 60, f"{letters} dead letters")
    return {e["detection_id"]: e for e in matches.items}, dlq.items


async def test_json_nested_thousands_deep_is_dead_lettered_as_invalid_json_at_decode(worker: Worker, unique: str):
    deep_array = b"[" * 5000 + b"]" * 5000
    nested = "[" * 5000 + "]" * 5000
    deep_field = json.dumps(event(f"{unique}-deep")).replace('"bbox"', f'"attributes": {{"a": {nested}}}, "bbox"')
    # Within what the JSON parser takes, but deeper than anything downstream may serialise and read back.
    image = base64.b64encode(encode_png(pattern_image(43))).decode()
    deep_attrs = json.dumps(event(f"{unique}-attrs", image_b64=image,
                                  attributes={"a": json.loads("[" * 100 + "]" * 100)}))
    ok = event(f"{unique}-ok", image_b64=image)
    sent = [deep_array, deep_field.encode(), deep_attrs.encode()]
    _, letters = await outcomes(worker, [*sent, json.dumps(ok).encode()], {f"{unique}-ok"}, 3)
    assert sorted(base64.b64decode(ltr["original_b64"]) for ltr in letters) == sorted(sent)
    for ltr in letters:
        assert (ltr["error_code"], ltr["stage"]) == ("invalid_json", "decode"), ltr
        assert "deep" in ltr["message"]


async def test_a_two_frame_mpo_is_accepted_everywhere_or_nowhere(worker: Worker, unique: str, image_root: Path):
    mpo = two_frame_mpo()
    (image_root / "stereo.jpg").write_bytes(mpo)
    det = event(f"{unique}-mpo", image_path=str(image_root / "stereo.jpg"))
    events, _ = await outcomes(worker, [json.dumps(det).encode()], {det["detection_id"]}, 0)
    assert det["detection_id"] in events
    async with aiohttp.ClientSession(headers=auth_headers()) as http:
        # The stream decoded its first frame: the thumbnail is cut from that same frame.
        async with http.get(f"{worker.base}/api/detections/{det['detection_id']}/image") as r:
            body = await r.read()
            assert r.status == 200, body
            assert r.headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
        async with http.post(f"{worker.base}/api/search/image?limit=1", data=mpo,
                             headers={"Content-Type": "image/jpeg"}) as r:
            found = await r.json()
            assert r.status == 200, found
            assert [h["detection_id"] for h in found["results"]] == [det["detection_id"]]
            assert found["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
        async with http.post(f"{worker.base}/api/watchlist?label=stereo", data=mpo,
                             headers={"Content-Type": "image/jpeg"}) as r:
            assert r.status == 201, await r.text()


async def test_the_url_allow_list_names_ports_and_a_bare_host_means_its_default_port(
        worker: Worker, unique: str, image_server: tuple[int, bytes]):
    port, _ = image_server
    cases = {
        "named-port": f"http://127.0.0.1:{port}/a.png",  # allowed as 127.0.0.1:<port>
        "other-port": f"http://localhost:{port}/a.png",  # localhost is allowed on port 80 only
        "redis": f"http://localhost:{REDIS_PORT}/",  # the worker must never talk to Redis over HTTP
        "redirect-to-redis": f"http://127.0.0.1:{port}/to-redis",
        "default-port": "http://localhost/a.png",  # allowed; nothing listens on 80 here
    }
    values = [json.dumps(event(f"{unique}-{name}", image_url=url)).encode() for name, url in cases.items()]
    async with Collector(BOOTSTRAP, worker.env["REID_TOPIC_MATCHES"]) as matches, \
            Collector(BOOTSTRAP, worker.env["REID_TOPIC_DLQ"]) as dlq:
        await produce(BOOTSTRAP, worker.env["REID_TOPIC_DETECTIONS"], [(b"cam-in", v) for v in values])
        await dlq.until(lambda items: len(items) >= len(cases) - 1, 90, "a dead letter for each refused URL")
        await matches.until(lambda items: bool(items) or len(dlq.items) >= len(cases), 30, "the allowed one")
    letters = {ltr["detection_id"]: ltr for ltr in dlq.items}
    assert [e["detection_id"] for e in matches.items] == [f"{unique}-named-port"], letters.get(f"{unique}-named-port")
    codes = {k.removeprefix(f"{unique}-"): (v["error_code"], v["stage"]) for k, v in letters.items()}
    assert codes == {"other-port": ("url_not_allowed", "load_image"), "redis": ("url_not_allowed", "load_image"),
                     "redirect-to-redis": ("url_not_allowed", "load_image"),
                     "default-port": ("image_fetch_failed", "load_image")}
    said = letters[f"{unique}-redis"]["message"]
    assert f"port {REDIS_PORT}" in said and f"localhost:{REDIS_PORT}" in said, said
