"""The operator's tools, driven as a user would: detections into Kafka, corrections over HTTP, match events and
entity updates out of Kafka, entities read over HTTP.

The null encoder makes looks exact (the same crop gives the same vector, different crops near-orthogonal ones),
so what decides is the rules and the corrections, not model noise.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from PIL import Image

from tests.e2e.harness import Collector, auth_headers, get_json, running_worker, worker_env

pytestmark = pytest.mark.e2e
BOOTSTRAP = "127.0.0.1:9092"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def looks(root: Path, names: str) -> None:
    for n, name in enumerate(names):
        pixels = np.random.default_rng(100 + n).integers(0, 255, (128, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{name}.png")


def frames(tmp_path: Path, names: str) -> Path:
    """A new image root holding one distinct look per letter of names (`a.png`, ...)."""
    root = tmp_path / "frames"
    root.mkdir()
    looks(root, names)
    return root


def detection(tag: str, root: Path, look: str, camera: str, frame: int, track: str | None) -> dict[str, Any]:
    value = {"detection_id": f"{tag}-{look}{frame}", "camera_id": camera, "entity_type": "person",
             "timestamp": (T0 + timedelta(seconds=frame * 0.5)).isoformat(),
             "bbox": {"x1": 0, "y1": 0, "x2": 64, "y2": 128}, "image_path": str(root / f"{look}.png")}
    if track is not None:
        value["track_id"] = track
    return value


async def send_json(url: str, method: str, body: Any, token: str | None = "default") -> tuple[int, Any]:
    headers = auth_headers() if token == "default" else auth_headers(token)
    async with aiohttp.ClientSession() as http, http.request(method, url, json=body, headers=headers) as r:
        return r.status, await r.json()


class Stream:
    """A producer that sends detections at a steady pace and remembers every id it sent."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.sent: list[str] = []
        self.producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)

    async def __aenter__(self) -> Stream:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def send(self, values: list[dict[str, Any]], rate: float | None = None) -> None:
        t0 = time.monotonic()
        for n, v in enumerate(values):
            await self.producer.send_and_wait(self.topic, json.dumps(v).encode(), key=v["camera_id"].encode())
            self.sent.append(v["detection_id"])
            if rate:
                await asyncio.sleep(max(0.0, t0 + (n + 1) / rate - time.monotonic()))


def event_of(items: list[dict[str, Any]], det: str) -> dict[str, Any] | None:
    return next((e for e in items if e["detection_id"] == det), None)


async def test_name_and_trust_survive_the_embedding_ttl_and_erasure_removes_them(infra, unique, tmp_path: Path):
    root = frames(tmp_path, "yw")
    ttl = 15
    env = worker_env(unique, REID_ENCODER="null", REID_IMAGE_ROOTS=str(root), REID_SIMILARITY_THRESHOLD="0.9",
                     REID_EMBEDDING_TTL_SECONDS=str(ttl), REID_NAMED_RETENTION_SECONDS="600")
    async with running_worker(env, tmp_path / "worker.log") as worker:
        base = worker.base
        async with Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches, Stream(
                env["REID_TOPIC_DETECTIONS"]) as stream:
            await stream.send([detection(unique, root, "y", "porch", n, "1") for n in range(3)]
                              + [detection(unique, root, "w", "yard", n, "2") for n in range(3)])
            await matches.until(lambda items: len(items) >= 6, 60, "six match events")
            ann, stranger = event_of(matches.items, f"{unique}-y0")["entity_id"], \
                event_of(matches.items, f"{unique}-w0")["entity_id"]

            status, detail = await send_json(f"{base}/api/entities/{ann}", "PATCH",
                                             {"name": "Ann", "trust": "trusted", "notes": "lives next door"})
            assert status == 200, detail
            assert (detail["name"], detail["trust"], detail["notes"]) == ("Ann", "trusted", "lives next door")
            assert detail["retained_until"] is not None and detail["appearance_count"] == 3

            # Past the embedding TTL: the stranger is gone, Ann is still there with her name.
            await asyncio.sleep(ttl + 5)
            status, _, _ = await get_json(f"{base}/api/entities/{stranger}")
            assert status == 404
            status, listing, _ = await get_json(f"{base}/api/entities")
            assert [(e["id"], e["name"], e["trust"]) for e in listing["entities"]] == [(ann, "Ann", "trusted")]

            # Tomorrow (past the TTL), on another camera: recognised, and the match event says who.
            await stream.send([detection(unique, root, "y", "gate", 7200, None)])
            await matches.until(lambda items: event_of(items, f"{unique}-y7200") is not None, 60, "the return")
            back = event_of(matches.items, f"{unique}-y7200")
            assert (back["entity_id"], back["decision"], back["entity_name"], back["trust"]) == (
                ann, "joined", "Ann", "trusted")
            # The stranger seen again is a new entity: nothing of it survived the TTL.
            await stream.send([detection(unique, root, "w", "gate", 7300, None)])
            await matches.until(lambda items: event_of(items, f"{unique}-w7300") is not None, 60, "the stranger")
            again = event_of(matches.items, f"{unique}-w7300")
            assert again["is_new_entity"] and again["entity_name"] is None and again["trust"] is None

        status, detail, _ = await get_json(f"{base}/api/entities/{ann}")
        assert status == 200 and detail["appearance_count"] == 4 and detail["name"] == "Ann"

        # Erasure removes it all, the name and notes included.
        status, body, _ = await get_json(f"{base}/api/entities/{ann}", method="DELETE")
        assert status == 200 and len(body["purged"]["detections"]) == 4
        status, _, _ = await get_json(f"{base}/api/entities/{ann}")
        assert status == 404
        r = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
        try:
            found = []
            async for key in r.scan_iter(match=f"{env['REID_REDIS_PREFIX']}:*"):
                kind = await r.type(key)
                if kind == b"string":
                    blob = await r.get(key) or b""
                elif kind == b"hash":
                    blob = json.dumps({k.decode(): v.decode(errors="replace")
                                       for k, v in (await r.hgetall(key)).items()}).encode()
                elif kind in (b"set", b"zset"):
                    members = await (r.smembers(key) if kind == b"set" else r.zrange(key, 0, -1))
                    blob = b"\n".join(members)
                else:
                    blob = b"\n".join(await r.lrange(key, 0, -1))
                if b"Ann" in blob or b"lives next door" in blob or ann.encode() in key + blob:
                    found.append(key.decode())
        finally:
            await r.aclose()
        assert found == []


async def test_merge_and_split_under_concurrent_detections_lose_and_double_nothing(infra, unique, tmp_path: Path):
    root = frames(tmp_path, "sabc")
    env = worker_env(unique, REID_ENCODER="null", REID_IMAGE_ROOTS=str(root), REID_SIMILARITY_THRESHOLD="0.9",
                     REID_BATCH_SIZE="8")
    async with running_worker(env, tmp_path / "worker.log") as worker:
        base = worker.base
        async with Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches, \
                Collector(BOOTSTRAP, env["REID_TOPIC_UPDATES"]) as updates, \
                Stream(env["REID_TOPIC_DETECTIONS"]) as stream:
            # Tracklet s founds an entity; a, b and c (three other people) start.
            await stream.send([detection(unique, root, "s", "cam-s", n, "1") for n in range(10)]
                              + [detection(unique, root, look, f"cam-{look}", 0, "1") for look in "abc"])
            await matches.until(lambda items: len(items) >= 13, 60, "the first match events")
            ent = {look: event_of(matches.items, f"{unique}-{look}0")["entity_id"] for look in "sabc"}
            assert len(set(ent.values())) == 4

            # a, b and c keep coming while an operator splits s and merges b into a.
            dets = [detection(unique, root, look, f"cam-{look}", n, "1") for n in range(1, 61) for look in "abc"]
            traffic = asyncio.create_task(stream.send(dets, rate=60))
            await asyncio.sleep(1.0)
            moved = [f"{unique}-s{n}" for n in range(5, 10)]
            status, split = await send_json(f"{base}/api/entities/{ent['s']}/split", "POST",
                                            {"detection_ids": moved})
            assert status == 200, split
            created = split["update"]["created"]
            assert {e["id"]: e["appearance_count"] for e in split["entities"]} == {ent["s"]: 5, created: 5}
            await asyncio.sleep(0.5)
            status, merged = await send_json(f"{base}/api/entities/{ent['a']}/merge", "POST", {"other_id": ent["b"]})
            assert status == 200, merged
            # Undoing the split by hand is refused: the two were split apart on purpose.
            status, refused = await send_json(f"{base}/api/entities/{ent['s']}/merge", "POST",
                                              {"other_id": created})
            assert status == 409 and refused["error_code"] == "entities_split_apart"
            await traffic

            # Later frames of the split tracklet follow the new entity: it does not snap back.
            await stream.send([detection(unique, root, "s", "cam-s", n, "1") for n in range(10, 20)])
            total = len(stream.sent)
            await matches.until(lambda items: len({e["detection_id"] for e in items}) >= total, 120,
                                "every match event")
            for n in range(10, 20):
                ev = event_of(matches.items, f"{unique}-s{n}")
                assert (ev["entity_id"], ev["decision"]) == (created, "tracklet"), ev
            got = await updates.until(lambda items: {u["type"] for u in items} >= {"split", "merged"}, 30,
                                      "the corrections on entity-updates")
            mine = [(u["type"], u["survivor"], u.get("merged") or u.get("created"), u["by"]) for u in got]
            assert mine == [("split", ent["s"], created, "tester"), ("merged", ent["a"], ent["b"], "tester")]

        # Every detection sent is an appearance of exactly one entity.
        status, listing, _ = await get_json(f"{base}/api/entities?limit=1000")
        assert status == 200
        seen: list[str] = []
        for e in listing["entities"]:
            status, detail, _ = await get_json(f"{base}/api/entities/{e['id']}")
            assert status == 200 and detail["appearance_count"] == len(detail["appearances"])
            seen += [a["detection_id"] for a in detail["appearances"]]
        assert sum(e["appearance_count"] for e in listing["entities"]) == len(stream.sent) == 13 + 180 + 10
        assert sorted(seen) == sorted(stream.sent)
        counts = {e["id"]: e["appearance_count"] for e in listing["entities"]}
        assert counts == {ent["s"]: 5, created: 15, ent["a"]: 122, ent["c"]: 61}


async def test_correction_routes_need_a_token_and_refuse_bad_input(infra, unique, tmp_path: Path):
    root = frames(tmp_path, "y")
    env = worker_env(unique, REID_ENCODER="null", REID_IMAGE_ROOTS=str(root), REID_AUDIT_LOG="true",
                     REID_AUDIT_LOG_FILE=str(tmp_path / "audit.log"))
    async with running_worker(env, tmp_path / "worker.log") as worker:
        base = worker.base
        async with Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches, Stream(
                env["REID_TOPIC_DETECTIONS"]) as stream:
            await stream.send([detection(unique, root, "y", "porch", n, "1") for n in range(2)])
            await matches.until(lambda items: len(items) >= 2, 60, "two match events")
        eid = matches.items[0]["entity_id"]
        # Every route and method the OpenAPI document lists refuses a request without a valid token.
        status, spec, _ = await get_json(f"{base}/api/openapi.json")
        routes = [(m.upper(), re.sub(r"\{[^}]+\}", eid, p)) for p, ops in spec["paths"].items() for m in ops]
        assert {("PATCH", f"/api/entities/{eid}"), ("POST", f"/api/entities/{eid}/merge"),
                ("POST", f"/api/entities/{eid}/split")} <= set(routes)
        for token in (None, "wrong-token-0123456789"):
            for method, path in routes:
                status, answer = await send_json(base + path, method, {"name": "x", "other_id": eid}, token=token)
                assert status == 401 and answer["detail"], (method, path)
        cases = [
            ("PATCH", eid, {}, 422, "invalid_body"),
            ("PATCH", eid, {"trust": "maybe"}, 422, "invalid_body"),
            ("PATCH", eid, {"name": "a\x00b"}, 422, "invalid_body"),
            ("PATCH", eid, {"name": "x" * 257}, 422, "invalid_body"),
            ("PATCH", eid, {"colour": "red"}, 422, "invalid_body"),
            ("PATCH", eid, [1, 2], 422, "invalid_body"),
            ("PATCH", f"{unique}-nobody", {"name": "x"}, 404, "entity_not_found"),
            ("POST", f"{eid}/merge", {"other_id": eid}, 409, "same_entity"),
            ("POST", f"{eid}/merge", {"other_id": f"{unique}-nobody"}, 404, "entity_not_found"),
            ("POST", f"{eid}/merge", {"other_id": ""}, 422, "invalid_body"),
            ("POST", f"{eid}/split", {"detection_ids": []}, 422, "invalid_body"),
            ("POST", f"{eid}/split", {"detection_ids": ["x" * 300]}, 422, "invalid_body"),
            ("POST", f"{eid}/split", {"detection_ids": [f"{unique}-y0", f"{unique}-y1"]}, 422,
             "split_takes_everything"),
            ("POST", f"{eid}/split", {"detection_ids": ["someone-else"]}, 422, "detection_not_in_entity"),
            ("POST", f"{eid}/split", {"detection_ids": "y0"}, 422, "invalid_body"),
        ]
        for method, path, body, want, code in cases:
            status, answer = await send_json(f"{base}/api/entities/{path}", method, body)
            assert (status, answer.get("error_code")) == (want, code), (method, path, body, answer)
        async with aiohttp.ClientSession() as http:
            async with http.patch(f"{base}/api/entities/{eid}", data=b"{not json", headers=auth_headers()) as r:
                assert r.status == 422 and (await r.json())["error_code"] == "invalid_body"
            async with http.patch(f"{base}/api/entities/{eid}", data=b" " * 300_000, headers=auth_headers()) as r:
                assert r.status == 413 and (await r.json())["error_code"] == "body_too_large"
        status, detail, _ = await get_json(f"{base}/api/entities/{eid}")
        assert status == 200 and detail["name"] is None and detail["appearance_count"] == 2
    lines = [json.loads(x) for x in (tmp_path / "audit.log").read_text().splitlines()]
    # Every correction attempt with a token is audited with its outcome; a name is never written there.
    corrections = [x for x in lines if x["method"] in ("PATCH", "POST")]
    assert len(corrections) == len(cases) + 2 and all(x["token"] == "tester" for x in corrections)
    assert [x["status"] for x in corrections[:len(cases)]] == [want for *_, want, _ in cases]
    assert {"entity_id": f"{unique}-nobody", "fields": ["name"]} in [x["params"] for x in corrections]
