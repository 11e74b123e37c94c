"""R4: 10,000 hostile events interleaved with 1,000 valid ones; every bad one is dead-lettered with its code."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import encode_jpeg, encode_png, pattern_image
from tests.e2e.harness import Collector, Worker, worker_env
from tests.faults.report import peak_rss_kib, record

pytestmark = pytest.mark.faults
BOOTSTRAP = "127.0.0.1:9092"
N_BAD, N_VALID = 10_000, 1_000


def base_event(det_id: str, **changes: Any) -> dict[str, Any]:
    ev = {"detection_id": det_id, "camera_id": "cam-h", "entity_type": "person",
          "timestamp": datetime.now(UTC).isoformat(), "bbox": {"x1": 0, "y1": 0, "x2": 48, "y2": 96},
          "image_b64": VALID_B64}
    ev.update(changes)
    return {k: v for k, v in ev.items() if v is not ...}


VALID_B64 = base64.b64encode(encode_png(pattern_image(99))).decode()


def bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (10_000, 10_000)).save(buf, format="PNG", optimize=True)  # 100 Mpx that compress to ~100 KB
    return buf.getvalue()


def curated(root: Path, url_base: str) -> list[tuple[bytes, str]]:
    """(value, expected error code) for every hostile case the issue lists."""
    (root / "ok.png").write_bytes(encode_png(pattern_image(5)))
    (root.parent / "secret.png").write_bytes(encode_png(pattern_image(6)))
    os.symlink(root.parent / "secret.png", root / "escape.png")
    truncated = encode_jpeg(pattern_image(7))[:400]

    def j(ev: dict[str, Any]) -> bytes:
        return json.dumps(ev).encode()

    cases = [
        (b"{", "invalid_json"), (b"null", "invalid_json"), (b"[1,2]", "invalid_json"),
        (b"\xff\xfe\x00", "invalid_json"), (b"", "invalid_json"),
        (j(base_event("c-types", camera_id=123)), "schema_invalid"),
        (j(base_event("c-bbox-type", bbox="0,0,1,1")), "schema_invalid"),
        (j(base_event("c-attrs", attributes=[1, 2])), "schema_invalid"),
        (j(base_event(..., )), "schema_invalid"),
        (j(base_event("c-nobbox", bbox=...)), "schema_invalid"),
        (j(base_event("c-type", entity_type="cat")), "unknown_entity_type"),
        (j(base_event("c-neg", bbox={"x1": -5, "y1": 0, "x2": 10, "y2": 10})), "schema_invalid"),
        (j(base_event("c-zero", bbox={"x1": 5, "y1": 5, "x2": 5, "y2": 50})), "schema_invalid"),
        (j(base_event("c-outside", bbox={"x1": 500, "y1": 500, "x2": 600, "y2": 600})), "bbox_outside_image"),
        (j(base_event("c-nan")).replace(b'"x1": 0', b'"x1": NaN'), "schema_invalid"),
        (j(base_event("c-missing", image_b64=..., image_path="nope.png")), "image_not_found"),
        (j(base_event("c-notimage", image_b64=base64.b64encode(b"hello world, not an image").decode())),
         "image_decode_failed"),
        (j(base_event("c-truncated", image_b64=base64.b64encode(truncated).decode())), "image_decode_failed"),
        (j(base_event("c-bomb", image_b64=base64.b64encode(bomb_png()).decode())), "image_too_large"),
        (j(base_event("c-huge", image_b64="A" * (50 * 1024 * 1024))), "event_too_large"),
        (j(base_event("c-dotdot", image_b64=..., image_path="../secret.png")), "path_not_allowed"),
        (j(base_event("c-abs", image_b64=..., image_path="/etc/passwd")), "path_not_allowed"),
        (j(base_event("c-symlink", image_b64=..., image_path="escape.png")), "path_not_allowed"),
        (j(base_event("c-host", image_b64=..., image_url="http://example.invalid/x.png")), "url_not_allowed"),
        (j(base_event("c-redirect", image_b64=..., image_url=f"{url_base}/escape")), "url_not_allowed"),
        (j(base_event("c-future", timestamp="9999-12-31T23:59:59+00:00")), "timestamp_out_of_range"),
        (j(base_event("c-b64", image_b64="***")), "invalid_base64"),
        (j(base_event("c-plate-type", entity_type="vehicle", attributes={"plate": 1234567})), "plate_invalid"),
        (j(base_event("c-plate-junk", entity_type="vehicle", attributes={"plate": "N/A"})), "plate_invalid"),
        (j(base_event("c-plate-long", entity_type="vehicle", attributes={"plate": "AB1" * 1000})), "plate_invalid"),
        (j(base_event("c-plate-obj", entity_type="vehicle", attributes={"plate": {"$ne": ""}})), "plate_invalid"),
    ]
    return cases


def generated(n: int) -> list[bytes]:
    """Hypothesis-made bad events: garbage bytes, random JSON, and valid events with one field broken."""
    out: list[bytes] = []
    broken_field = st.sampled_from(["detection_id", "camera_id", "entity_type", "timestamp", "bbox", "image_b64"])
    # Never a valid value for any of these fields: non-strings, or strings with a control character.
    junk = st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.booleans(),
                     st.lists(st.integers(), max_size=3),
                     st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
                     st.text(max_size=10).map(lambda t: t + "\x00"))

    @st.composite
    def broken_event(draw: st.DrawFn) -> bytes:
        ev = base_event("gen")
        field = draw(broken_field)
        if draw(st.booleans()):
            ev.pop(field)
        elif field == "image_b64":
            ev[field] = draw(st.text(alphabet="ABCDEFGH+/=", min_size=1, max_size=64))  # never a valid image
        else:
            ev[field] = draw(junk)
        return json.dumps(ev).encode()

    strategy = st.one_of(st.binary(max_size=64).filter(lambda b: not b.strip().startswith(b"{")),
                         st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                                      lambda c: st.lists(c, max_size=3), max_leaves=5).map(
                             lambda v: json.dumps(v).encode()),
                         broken_event())

    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(value: bytes) -> None:
        out.append(value)

    collect()
    return out


@pytest.fixture
async def url_server():
    app = web.Application()

    async def escape(_: web.Request) -> web.Response:
        raise web.HTTPFound("http://localhost:9/x.png")

    app.add_routes([web.get("/escape", escape)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    await runner.cleanup()


async def test_hostile_events_are_dead_lettered_and_valid_ones_processed(infra, unique, image_root: Path,
                                                                       tmp_path: Path, url_server: str):
    env = worker_env(unique, REID_IMAGE_ROOTS=str(image_root), REID_URL_ALLOWED_HOSTS=url_server.removeprefix("http://"),
                     REID_BATCH_SIZE="32")
    worker = Worker(env, tmp_path / "worker.log").start()
    pid = worker.proc.pid
    try:
        await worker.wait_ready()
        cases = curated(image_root, url_server)
        gen = generated(N_BAD - len(cases) - 1)
        bad: list[tuple[bytes, bytes, str | None]] = [(f"bad-{i}".encode(), v, code)
                                                      for i, (v, code) in enumerate(cases)]
        bad += [(f"bad-g{i}".encode(), v, None) for i, v in enumerate(gen)]
        valid = [(f"ok-{i}".encode(), json.dumps(base_event(f"{unique}-ok-{i}")).encode()) for i in range(N_VALID)]
        # The same detection_id again with other content: a conflict, not a redelivery.
        bad.append((b"bad-dup", json.dumps(base_event(f"{unique}-ok-0", camera_id="other")).encode(),
                    "detection_id_conflict"))
        while len(bad) < N_BAD:  # hypothesis may return fewer distinct examples than asked
            bad.append((f"bad-pad{len(bad)}".encode(), os.urandom(16), None))
        stream: list[tuple[bytes, bytes]] = [(k, v) for k, v, _ in bad[:-1]]
        random.Random(4).shuffle(stream)
        stream = [x for pair in zip(stream[::10], valid, strict=False) for x in pair] + \
            [x for i, x in enumerate(stream) if i % 10] + [(bad[-1][0], bad[-1][1])]  # the conflict goes last
        assert len(stream) == N_BAD + N_VALID

        producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, max_request_size=64 * 1024 * 1024 + 4096,
                                    linger_ms=5)
        await producer.start()
        t0 = time.monotonic()
        try:
            for key, value in stream:
                await producer.send(env["REID_TOPIC_DETECTIONS"], value, key=key)
            await producer.flush()
        finally:
            await producer.stop()

        async with Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches, \
                Collector(BOOTSTRAP, env["REID_TOPIC_DLQ"]) as dlq:
            await dlq.until(lambda items: len(items) >= N_BAD, 600, f"{N_BAD} dead letters")
            await matches.until(lambda items: len({e["detection_id"] for e in items}) >= N_VALID, 600,
                                f"{N_VALID} match events")
        elapsed = time.monotonic() - t0
        rss = peak_rss_kib(pid)
        assert worker.alive() and worker.proc.pid == pid, "the worker must never restart"
    finally:
        code = worker.stop()
    assert code == 0

    letters = {base64.b64decode(x["original_key_b64"]).decode(): x for x in dlq.items}
    assert set(letters) == {k.decode() for k, _, _ in bad}, "every bad event, and only those, is dead-lettered"
    wrong = {k.decode(): (letters[k.decode()]["error_code"], code) for k, _, code in bad
             if code is not None and letters[k.decode()]["error_code"] != code}
    assert wrong == {}
    assert all(x["error_code"] and x["stage"] and x["message"] for x in dlq.items)
    assert letters["bad-19"]["original_truncated"] is True  # the 50 MB string, cut to fit the letter
    processed = {e["detection_id"] for e in matches.items}
    assert processed == {f"{unique}-ok-{i}" for i in range(N_VALID)}
    record("R4 hostile input", {"bad_events": N_BAD, "valid_events": N_VALID, "dead_lettered": len(letters),
                                "valid_processed": len(processed), "seconds": round(elapsed, 1),
                                "worker_restarts": 0, "peak_rss_mib": round(rss / 1024, 1)})


def hostile_bodies(n: int, ids: list[str]) -> list[bytes]:
    """Hypothesis-made bodies for the correction routes: random JSON, right keys with wrong or odd values."""
    out: list[bytes] = []
    odd_text = st.one_of(st.text(max_size=300), st.text(alphabet=st.characters(max_codepoint=0x1f), max_size=5),
                         st.sampled_from(["", " ", "\u202e", "../../etc", "x" * 5000, *ids]))
    value = st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.booleans(), odd_text,
                      st.lists(odd_text, max_size=5), st.dictionaries(st.text(max_size=4), st.integers(), max_size=3))
    some_ids = st.sampled_from(ids)
    shaped = st.one_of(  # well-formed bodies with odd values, so the routes get past validation too
        st.builds(lambda t, tr: {"name": t, "trust": tr}, odd_text, st.sampled_from(["trusted", "untrusted", None])),
        st.builds(lambda t: {"notes": t}, odd_text),
        st.builds(lambda i: {"other_id": i}, some_ids),
        st.builds(lambda ds: {"detection_ids": ds}, st.lists(some_ids, min_size=1, max_size=4)),
    ).map(lambda d: json.dumps(d).encode())
    body = st.one_of(
        shaped, shaped,
        st.dictionaries(st.sampled_from(["name", "notes", "trust", "other_id", "detection_ids", "x"]), value,
                        max_size=4).map(lambda d: json.dumps(d).encode()),
        st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
                     max_leaves=8).map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=64))

    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(body)
    def collect(value: bytes) -> None:
        out.append(value)

    collect()
    return out


async def test_hostile_correction_bodies_get_json_errors_and_never_break_an_entity(infra, unique, tmp_path: Path,
                                                                                  image_root: Path):
    """PATCH, merge and split with 1,500 hostile bodies and ids: never a server error, always a JSON answer with
    an error_code when refused, and afterwards every detection is still an appearance of exactly one entity."""
    import aiohttp

    from tests.e2e.harness import auth_headers

    for n in range(3):
        pattern_image(n).save(image_root / f"p{n}.png")
    env = worker_env(unique, REID_ENCODER="null", REID_IMAGE_ROOTS=str(image_root), REID_SIMILARITY_THRESHOLD="0.9")
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await worker.wait_ready()
        sent = [base_event(f"{unique}-h{n}", image_path=str(image_root / f"p{n % 3}.png"), image_b64=...,
                           camera_id=f"cam{n % 3}", track_id=str(n % 3)) for n in range(12)]
        producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP)
        await producer.start()
        try:
            for ev in sent:
                await producer.send_and_wait(env["REID_TOPIC_DETECTIONS"], json.dumps(ev).encode())
        finally:
            await producer.stop()
        async with Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches:
            await matches.until(lambda items: len(items) >= len(sent), 120, "the match events")
        entities = sorted({e["entity_id"] for e in matches.items})
        ids = entities + [e["detection_id"] for e in sent]
        bodies = hostile_bodies(1500, ids)
        rng = random.Random(11)
        statuses: dict[int, int] = {}
        bad: list[str] = []
        paths = ["", "/merge", "/split"]
        async with aiohttp.ClientSession() as http:
            for n, body in enumerate(bodies):
                target = rng.choice([*entities, "nobody", "x" * 300, "%00", "..%2F..%2Fetc"])
                suffix = paths[n % 3]
                if n % 2:  # half go where their keys belong, the others anywhere
                    suffix = "/merge" if b'"other_id"' in body else "/split" if b'"detection_ids"' in body else ""
                method = "PATCH" if suffix == "" else "POST"
                async with http.request(method, f"{worker.base}/api/entities/{target}{suffix}", data=body,
                                        headers=auth_headers()) as r:
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                    answer = await r.json(content_type=None)
                    if r.status >= 500 or (r.status >= 400 and r.status != 404 and not answer.get("error_code")
                                           and r.status != 422) or not isinstance(answer, dict):
                        bad.append(f"{r.status} {method} {target}{suffix} {body[:80]!r} {answer}")
            assert bad == []
            assert worker.alive()
            async with http.get(f"{worker.base}/api/entities?limit=1000", headers=auth_headers()) as r:
                listing = await r.json()
        seen = []
        async with aiohttp.ClientSession() as http:
            for e in listing["entities"]:
                async with http.get(f"{worker.base}/api/entities/{e['id']}", headers=auth_headers()) as r:
                    seen += [a["detection_id"] for a in (await r.json())["appearances"]]
        assert sorted(seen) == sorted(ev["detection_id"] for ev in sent)
    finally:
        code = worker.stop()
    assert code == 0
    record("R4b hostile correction bodies", {"requests": len(bodies), "statuses": dict(sorted(statuses.items())),
                                             "server_errors": 0, "detections_kept_exactly_once": len(seen)})


# --- the search routes' inputs: uploads (size, type, pixels) and texts ---------------------------------------

SEARCH_MAX_BYTES, SEARCH_MAX_PIXELS = 256 * 1024, 4_000_000
CONTENT_TYPES = ["image/png", "image/jpeg", "image/gif", "text/plain", "application/octet-stream",
                 "multipart/form-data; boundary=x", "image/png; charset=utf-8", ""]


def search_requests(n: int) -> list[tuple[str, str, dict[str, Any]]]:
    """Hypothesis-made hostile search requests: (method, path, aiohttp keyword arguments)."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    junk = st.one_of(st.text(max_size=40), st.integers().map(str), st.sampled_from(
        ["-1", "0", "1001", "1e9", "NaN", "2026-01-01", "2026-13-01T00:00:00Z", "person", "cat", "\x00"]))
    params = st.one_of(st.just({}), st.dictionaries(  # often none: the body or text itself must be refused
        st.sampled_from(["entity_type", "camera_id", "since", "until", "limit", "offset", "label"]), junk,
        max_size=3))
    # The same uploads to search by image and to watch list enrolment (which also takes a JSON body).
    upload = st.tuples(st.sampled_from(["/api/search/image", "/api/watchlist"]), st.sampled_from(CONTENT_TYPES),
                       st.one_of(st.binary(max_size=2048), st.sampled_from(
                           [encode_png(pattern_image(3)), encode_jpeg(pattern_image(4)),
                            encode_jpeg(pattern_image(5))[:300], b"", b'{"entity_id": "x", "label": "y"}',
                            b'{"entity_id": "", "label": "\\u0000"}', b"[]"])), params).map(
        lambda t: ("POST", t[0], {"data": t[2], "headers": {"Content-Type": t[1]} if t[1] else {}, "params": t[3]}))
    text = st.tuples(st.text(max_size=400), params).map(
        lambda t: ("GET", "/api/search", {"params": {**t[1], "text": t[0]}}))
    # Ids the router hands to the view (no "/", "." segments or URL syntax): the view checks their length.
    ident = st.text(alphabet=st.characters(whitelist_categories=["L", "N"], whitelist_characters="-_:@~ "),
                    min_size=1, max_size=300)
    similar = st.tuples(ident, params).map(
        lambda t: ("GET", f"/api/detections/{t[0]}/similar", {"params": t[1]}))
    unwatch = ident.map(lambda i: ("DELETE", f"/api/watchlist/{i}", {}))

    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(upload, text, similar, unwatch))
    def collect(request: tuple[str, str, dict[str, Any]]) -> None:
        out.append(request)

    collect()
    return out


async def test_hostile_search_inputs_get_clear_4xx_codes(infra, unique, tmp_path: Path):
    import aiohttp

    from tests.e2e.harness import auth_headers

    env = worker_env(unique, REID_CLIP_MODEL="reid-tiny-clip", REID_MAX_IMAGE_BYTES=str(SEARCH_MAX_BYTES),
                     REID_MAX_IMAGE_PIXELS=str(SEARCH_MAX_PIXELS))
    worker = Worker(env, tmp_path / "worker.log").start()
    pid = worker.proc.pid
    big = encode_png(pattern_image(8)) + os.urandom(SEARCH_MAX_BYTES)
    curated_cases = [
        ({"data": big, "headers": {"Content-Type": "image/png"}}, 413, "image_too_large"),
        ({"data": bomb_png(), "headers": {"Content-Type": "image/png"}}, 413, "image_too_many_pixels"),
        ({"data": encode_png(pattern_image(3)), "headers": {"Content-Type": "text/plain"}}, 415,
         "unsupported_media_type"),
        ({"data": encode_jpeg(pattern_image(5))[:300], "headers": {"Content-Type": "image/jpeg"}}, 400,
         "image_decode_failed"),
        ({"data": encode_jpeg(pattern_image(5)), "headers": {"Content-Type": "image/jpeg"}}, 200, None),
    ]
    statuses: dict[int, int] = {}
    try:
        await worker.wait_ready()
        async with aiohttp.ClientSession(headers=auth_headers()) as http:
            for kwargs, want_status, want_code in curated_cases:
                for path, ok in (("/api/search/image", 200), ("/api/watchlist?label=curated", 201)):
                    async with http.post(f"{worker.base}{path}", **kwargs) as resp:
                        body = await resp.json()
                        want = ok if want_status == 200 else want_status
                        assert (resp.status, body.get("error_code")) == (want, want_code), (path, body)
            generated_requests = search_requests(600)
            for method, path, kwargs in generated_requests:
                async with http.request(method, worker.base + path, **kwargs) as resp:
                    body = await resp.json(content_type=None)
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                    assert resp.status in (200, 201, 400, 404, 413, 415, 422), (method, path, kwargs, resp.status,
                                                                               body)
                    assert resp.status in (200, 201) or (body["detail"] and (
                        body.get("error_code") or resp.status in (404, 422))), (method, path, body)
            async with http.get(f"{worker.base}/ready") as resp:
                assert resp.status == 200
        assert worker.alive() and worker.proc.pid == pid, "the worker must never restart"
        rss = peak_rss_kib(pid)
    finally:
        code = worker.stop()
    assert code == 0
    assert statuses.get(400, 0) and statuses.get(415, 0) and statuses.get(422, 0)
    record("R4 hostile search input", {"requests": len(generated_requests) + len(curated_cases),
                                       "by_status": {str(k): v for k, v in sorted(statuses.items())},
                                       "server_errors": 0, "worker_restarts": 0, "peak_rss_mib": round(rss / 1024, 1)})
