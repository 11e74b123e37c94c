"""The right to erasure, driven as a user would (detections into Kafka, corrections over HTTP, erasure over HTTP
or through the purge CLI), then checked where the data lives: every Redis key and value of the site, and every
row of the archive. Erasing an entity must leave nothing that names it -- its ids, name, notes, watch label,
plate, or the cameras and times of its detections -- beyond the documented tombstones (the archive's
`archive_erased` rows)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from reid_stream.config import Settings
from tests.e2e.harness import REPO, Collector, get_json, running_worker, worker_env
from tests.e2e.test_operator_e2e import BOOTSTRAP, Stream, event_of, frames, send_json

pytestmark = pytest.mark.e2e
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def seen(tag: str, root: Path, look: str, n: int, camera: str, at: float, track: str | None = None,
         site: str = "default", **extra: Any) -> dict[str, Any]:
    """A detection of `look`, `at` seconds after T0 (fractions make its epoch time a token no other value holds)."""
    value = {"detection_id": f"{tag}-{look}{n}", "camera_id": camera, "entity_type": "vehicle", "site_id": site,
             "timestamp": (T0 + timedelta(seconds=at)).isoformat(), "bbox": {"x1": 0, "y1": 0, "x2": 64, "y2": 128},
             "image_path": str(root / f"{look}.png"), **extra}
    if track is not None:
        value["track_id"] = track
    return value


def time_tokens(detections: Iterable[dict[str, Any]]) -> set[str]:
    """A detection's time as the store may write it: ISO 8601 with +00:00 or Z, and epoch seconds."""
    out = set()
    for d in detections:
        ts = datetime.fromisoformat(d["timestamp"])
        out |= {ts.isoformat(), ts.isoformat().replace("+00:00", "Z"), repr(ts.timestamp())}
    return out


async def redis_dump(prefix: str) -> dict[str, str]:
    """Every key under the prefix -> its whole value as text (hash fields and values, set members, sorted set
    members with their scores, list items)."""
    client = aioredis.Redis.from_url(Settings.from_env().redis_url)
    out: dict[str, str] = {}
    try:
        async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            kind = await client.type(key)
            if kind == b"string":
                parts = [await client.get(key) or b""]
            elif kind == b"hash":
                parts = [x for kv in (await client.hgetall(key)).items() for x in kv]
            elif kind == b"set":
                parts = list(await client.smembers(key))
            elif kind == b"zset":
                parts = [x for m, score in await client.zrange(key, 0, -1, withscores=True)
                         for x in (m, repr(score).encode())]
            else:
                parts = list(await client.lrange(key, 0, -1))
            out[key.decode()] = "\n".join(p.decode(errors="replace") for p in parts)
    finally:
        await client.aclose()
    return out


def naming(dump: dict[str, str], tokens: set[str]) -> dict[str, list[str]]:
    """The keys whose name or value holds a token, with the tokens found."""
    found = {key: sorted(t for t in tokens if t in key or t in value) for key, value in dump.items()}
    return {key: ts for key, ts in found.items() if ts}


async def stored_event(prefix: str, detection_id: str, site: str = "default") -> dict[str, Any]:
    client = aioredis.Redis.from_url(Settings.from_env().redis_url)
    try:
        raw = await client.get(f"{prefix}:{{{site}}}:det:{detection_id}")
    finally:
        await client.aclose()
    assert raw is not None, f"no marker for {detection_id}"
    return json.loads(raw)["event"]


async def test_erasure_scrubs_the_stored_event_of_a_detection_split_out_of_the_entity(infra, unique, tmp_path: Path):
    root = frames(tmp_path, "x")
    env = worker_env(unique, REID_ENCODER="null", REID_IMAGE_ROOTS=str(root), REID_SIMILARITY_THRESHOLD="0.9")
    three = [seen(unique, root, "x", n, f"{unique}-cam{n}", 0.25 + 120.25 * n) for n in range(3)]
    erased, moved = three[:2], three[2]
    async with running_worker(env, tmp_path / "worker.log") as worker, \
            Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches, Stream(env["REID_TOPIC_DETECTIONS"]) as stream:
        await stream.send(three)
        await matches.until(lambda items: len(items) >= 3, 60, "three match events")
        x = event_of(matches.items, f"{unique}-x0")["entity_id"]
        assert {e["entity_id"] for e in matches.items} == {x}, "the three join one entity"
        before = await stored_event(env["REID_REDIS_PREFIX"], moved["detection_id"])
        assert before["entity_id"] == x and {m["detection_id"] for m in before["matches"]} == {
            d["detection_id"] for d in erased}
        status, split = await send_json(f"{worker.base}/api/entities/{x}/split", "POST",
                                        {"detection_ids": [moved["detection_id"]]})
        assert status == 200, split
        created = split["update"]["created"]
        status, body, _ = await get_json(f"{worker.base}/api/entities/{x}", method="DELETE")
        assert status == 200 and sorted(body["purged"]["detections"]) == [d["detection_id"] for d in erased]

        after = await stored_event(env["REID_REDIS_PREFIX"], moved["detection_id"])
        text = json.dumps(after)
        traces = {x, *(d["detection_id"] for d in erased), *(d["camera_id"] for d in erased), *time_tokens(erased)}
        assert [t for t in traces if t in text] == [], text
        assert (after["entity_id"], after["detection_id"]) == (created, moved["detection_id"])
        assert after["matches"] == [] and all(c["entity_id"] != x for c in after["candidates"])

        # A redelivery publishes the stored outcome again: as it is now.
        await stream.send([moved])
        await matches.until(lambda items: sum(e["detection_id"] == moved["detection_id"] for e in items) >= 2, 60,
                            "the redelivered detection's event")
    again = [e for e in matches.items if e["detection_id"] == moved["detection_id"]][-1]
    assert again["entity_id"] == created and [t for t in traces if t in json.dumps(again)] == []


async def archive_rows(url: str) -> dict[str, list[dict[str, Any]]]:
    conn = await asyncpg.connect(url)
    try:
        return {table: [dict(r) for r in await conn.fetch(f"SELECT * FROM {table}")]
                for table in ("archive_entities", "archive_appearances", "archive_aliases", "archive_applied",
                              "archive_erased")}
    finally:
        await conn.close()


def row_text(row: dict[str, Any]) -> str:
    return " ".join(v.isoformat() if isinstance(v, datetime) else str(v) for v in row.values())


async def until(check, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.5)
    return found


async def test_erasure_leaves_nothing_of_an_entity_through_splits_merges_names_watch_plates_and_search(
        infra, archive_url, unique, tmp_path: Path):
    root = frames(tmp_path, "xyzq")
    site = f"erase-{unique}"
    env = worker_env(unique, REID_ENCODER="null", REID_IMAGE_ROOTS=str(root), REID_SIMILARITY_THRESHOLD="0.9",
                     REID_ARCHIVE_URL=archive_url)
    plate, name, notes, label = f"ER{unique[:6].upper()}9", f"Name-{unique}", f"Notes-{unique}", f"Watch-{unique}"
    # X: a vehicle with a plate on three cameras of its own (two tracklets); Y: another look, merged into X by an
    # operator; D: X's look without the plate, split off into an entity of its own (it stays).
    xs = [seen(unique, root, "x", 0, f"{unique}-cx1", 0.125, "t1", site, attributes={"plate": plate}),
          seen(unique, root, "x", 1, f"{unique}-cx1", 1.125, "t1", site, attributes={"plate": plate}),
          seen(unique, root, "x", 2, f"{unique}-cx2", 180.375, "t2", site, attributes={"plate": plate})]
    ys = [seen(unique, root, "y", 0, f"{unique}-cy", 60.625, "t9", site)]
    d = seen(unique, root, "x", 3, f"{unique}-cd", 400.5, None, site)
    later = seen(unique, root, "x", 4, f"{unique}-cx3", 700.875, "t3", site, attributes={"plate": plate})
    x_id = xs[0]["detection_id"]
    async with running_worker(env, tmp_path / "worker.log") as worker, \
            Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches, Stream(env["REID_TOPIC_DETECTIONS"]) as stream:
        base, env_base = worker.base, f"?site_id={site}"
        # An enrolled look: X's first detection raises an image alert (its rate-limit entry holds X's camera and time).
        status, enrolled = await post_image(f"{base}/api/watchlist?label=Enrolled&entity_type=vehicle&site_id={site}",
                                            (root / "x.png").read_bytes())
        assert status == 201, enrolled
        await stream.send([*xs, *ys, d])
        await matches.until(lambda items: len(items) >= 5, 60, "the first match events")
        assert {event_of(matches.items, v["detection_id"])["entity_id"] for v in (*xs, d)} == {x_id}
        y_id = event_of(matches.items, ys[0]["detection_id"])["entity_id"]
        assert y_id != x_id

        for body in ({"name": name, "notes": notes}, {"trust": "untrusted"}):
            status, answer = await send_json(f"{base}/api/entities/{x_id}{env_base}", "PATCH", body)
            assert status == 200, answer
        status, answer = await send_json(f"{base}/api/watchlist{env_base}", "POST", {"entity_id": x_id,
                                                                                   "label": label})
        assert status == 201, answer
        status, answer = await send_json(f"{base}/api/entities/{x_id}/merge{env_base}", "POST", {"other_id": y_id})
        assert status == 200, answer
        status, answer = await send_json(f"{base}/api/entities/{x_id}/split{env_base}", "POST",
                                         {"detection_ids": [d["detection_id"]]})
        assert status == 200, answer
        created = answer["update"]["created"]
        # Seen again, watched: an entity alert (its rate-limit entry is keyed by X's id).
        await stream.send([later])
        await matches.until(lambda items: event_of(items, later["detection_id"]) is not None, 60, "the return")
        assert event_of(matches.items, later["detection_id"])["entity_id"] == x_id
        for path in (f"/api/detections/{x_id}/similar{env_base}", f"/api/search?text=car&site_id={site}"):
            status, _, _ = await get_json(base + path)
            assert status in (200, 400)
        status, found = await post_image(f"{base}/api/search/image{env_base}", (root / "x.png").read_bytes())
        assert status == 200 and x_id in {h["entity_id"] for h in found["results"]}

        async def archived() -> bool:
            rows = await archive_rows(archive_url)
            mine = {r["detection_id"]: r["entity_id"] for r in rows["archive_appearances"] if r["site_id"] == site}
            named = any(r["name"] == name for r in rows["archive_entities"] if r["site_id"] == site)
            return named and mine.get(d["detection_id"]) == created and mine.get(later["detection_id"]) == x_id \
                and mine.get(ys[0]["detection_id"]) == x_id

        await until(archived, "the archive to hold the entity, its name, the merge and the split")
        erased_dets = [*xs, *ys, later]
        tokens = {x_id, y_id, name, notes, label, plate, *(v["detection_id"] for v in erased_dets),
                  *(v["camera_id"] for v in erased_dets), *time_tokens(erased_dets)}
        # The scan sees them before: every kind of token is somewhere in Redis.
        before = {t for found in naming(await redis_dump(env["REID_REDIS_PREFIX"]), tokens).values() for t in found}
        assert {x_id, y_id, name, notes, label, plate} | {repr(datetime.fromisoformat(v["timestamp"]).timestamp())
                                                          for v in erased_dets} <= before, tokens - before

        # Erased through the CLI, as an operator with shell access would.
        done = subprocess.run([sys.executable, "-m", "reid_stream", "purge", "--site", site, "--entity", y_id],
                              env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        purged = json.loads(done.stdout)["purged"]
        assert (purged["entity_id"], purged["resolved_from"], purged["archive"]) == (x_id, y_id, "erased")
        # The CLI queued the `erased` update; the site's next batch publishes it (and empties the outbox).
        nudge = seen(unique, root, "z", 0, f"{unique}-cz", 900.5, None, site)
        await stream.send([nudge])
        await matches.until(lambda items: event_of(items, nudge["detection_id"]) is not None, 60, "the next batch")
        await asyncio.sleep(1.0)

        dump = await redis_dump(env["REID_REDIS_PREFIX"])
        assert naming(dump, tokens) == {}
        assert f"{env['REID_REDIS_PREFIX']}:{{{site}}}:det:{d['detection_id']}" in dump, "what the split moved stays"
        rows = await archive_rows(archive_url)
        left = {table: [row_text(r) for r in found if any(t in row_text(r) for t in tokens)]
                for table, found in rows.items() if table != "archive_erased"}
        assert left == {table: [] for table in left}
        seen_at = {datetime.fromisoformat(v["timestamp"]) for v in erased_dets}
        assert not [r for r in rows["archive_appearances"] if r["seen_at"] in seen_at]
        tombstones = {(r["kind"], r["id"]) for r in rows["archive_erased"] if r["site_id"] == site}
        assert {("entity", x_id), ("entity", y_id)} <= tombstones

        # What the split moved out of X lives on, and names X nowhere; so do the views.
        status, kept, _ = await get_json(f"{base}/api/entities/{created}{env_base}")
        assert status == 200 and [a["detection_id"] for a in kept["appearances"]] == [d["detection_id"]]
        for eid in (x_id, y_id):
            status, _, _ = await get_json(f"{base}/api/entities/{eid}{env_base}")
            assert status == 404


async def post_image(url: str, data: bytes) -> tuple[int, Any]:
    import aiohttp

    from tests.e2e.harness import auth_headers

    async with aiohttp.ClientSession(headers=auth_headers()) as http, http.post(
            url, data=data, headers={"Content-Type": "image/png"}) as r:
        return r.status, await r.json()
