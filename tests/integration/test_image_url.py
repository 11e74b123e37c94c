"""image_url references against a real HTTP server on loopback: allow-list, redirects, limits."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp import web

from reid_stream.encoders.null import NullEncoder
from reid_stream.errors import DetectionError
from reid_stream.stream.embed import Embedder
from reid_stream.stream.wire import RawEvent
from reid_stream.vision.images import MAX_REDIRECTS, fetch_url
from tests.conftest import encode_png, make_settings, pattern_image

pytestmark = pytest.mark.integration
SLOW_HOP_S = 0.6


@pytest.fixture
async def server():
    png = encode_png(pattern_image(5))
    app = web.Application()

    async def image(_: web.Request) -> web.Response:
        return web.Response(body=png, content_type="image/png")

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG" + b"0" * 300_000, content_type="image/png")

    async def to_local(_: web.Request) -> web.Response:
        raise web.HTTPFound("/image.png")

    async def to_foreign(_: web.Request) -> web.Response:
        raise web.HTTPFound("http://localhost:1/image.png")  # localhost is not on the allow-list

    async def slow_hop(request: web.Request) -> web.Response:
        await asyncio.sleep(SLOW_HOP_S)  # each hop alone is well inside the limit, the chain is not
        left = int(request.match_info["left"])
        if left == 0:
            return web.Response(body=png, content_type="image/png")
        raise web.HTTPFound(f"/slow/{left - 1}")

    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        await resp.prepare(request)
        for _ in range(10):  # headers at once, then the body slowly
            await resp.write(b"0" * 100)
            await asyncio.sleep(SLOW_HOP_S / 2)
        return resp

    app.add_routes([web.get("/image.png", image), web.get("/big.png", big), web.get("/hop", to_local),
                    web.get("/escape", to_foreign), web.get("/slow/{left}", slow_hop), web.get("/trickle", trickle)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def event(url: str, det_id: str) -> RawEvent:
    det = {"detection_id": det_id, "camera_id": "c", "entity_type": "vehicle",
           "timestamp": datetime.now(UTC).isoformat(), "bbox": {"x1": 0, "y1": 0, "x2": 20, "y2": 20},
           "image_url": url}
    return RawEvent(json.dumps(det).encode())


def allowed(server: str) -> tuple[str, ...]:
    """The server's host and port: a bare host allows its scheme's default port only."""
    return (server.removeprefix("http://"),)


async def test_url_references(server: str):
    settings = make_settings("url", url_allowed_hosts=allowed(server), max_image_bytes=100_000)
    async with aiohttp.ClientSession() as http:
        with ThreadPoolExecutor(2) as pool:
            embedder = Embedder(settings, NullEncoder(dim=8), pool, pool, http)
            records, letters = await embedder.embed([
                event(f"{server}/image.png", "ok"),
                event(f"{server}/hop", "redirected-ok"),
                event(f"{server}/escape", "redirect-out"),
                event(server.replace("127.0.0.1", "localhost") + "/image.png", "foreign"),
                event(f"{server}/big.png", "big"),
                event(f"{server}/missing.png", "missing"),
                event("ftp://127.0.0.1/x.png", "scheme"),
            ])
    assert sorted(r.detection_id for r in records) == ["ok", "redirected-ok"]
    assert records[0].vector.shape == (8,)
    codes = {ltr.detection_id: ltr.error_code for ltr in letters}
    assert codes == {"redirect-out": "url_not_allowed", "foreign": "url_not_allowed", "big": "image_too_large",
                     "missing": "image_fetch_failed", "scheme": "url_not_allowed"}


async def test_the_url_time_limit_covers_the_whole_redirect_chain_and_body(server: str):
    limit = 1.0
    async with aiohttp.ClientSession() as http:
        assert len(await fetch_url(http, f"{server}/slow/0", allowed(server), 100_000, limit)) > 0  # one hop fits
        # MAX_REDIRECTS redirects and the image, 0.6 s each: every hop fits the limit, the chain (2.4 s) does not.
        for path in (f"/slow/{MAX_REDIRECTS}", "/trickle"):
            start = time.monotonic()
            with pytest.raises(DetectionError) as err:
                await fetch_url(http, server + path, allowed(server), 100_000, limit)
            elapsed = time.monotonic() - start
            assert err.value.code == "image_fetch_failed"
            assert "total time limit" in err.value.message
            assert elapsed < limit + 0.3, f"{path} took {elapsed:.2f}s with a {limit}s limit"
