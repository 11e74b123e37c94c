"""Sites on a Redis Cluster, driven as a user would: detections of two sites (the same ids and the same looks)
into Kafka, match events read back, entities read and named over HTTP, with the worker's store a real
three-primary Redis Cluster that the project starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from reid_stream.infra.services import CLUSTER_PORTS, redis_cluster_up
from tests.e2e.harness import Collector, get_json, running_worker, worker_env
from tests.e2e.test_operator_e2e import BOOTSTRAP, Stream, detection, frames, send_json

pytestmark = pytest.mark.e2e


def at(site: str, value: dict) -> dict:
    return {**value, "site_id": site}


async def test_two_sites_on_a_redis_cluster_never_share_an_entity(infra, unique, tmp_path: Path):
    url = redis_cluster_up(infra)
    root = frames(tmp_path, "ab")
    env = worker_env(unique, REID_ENCODER="null", REID_IMAGE_ROOTS=str(root), REID_SIMILARITY_THRESHOLD="0.9",
                     REID_REDIS_URL=url)
    async with running_worker(env, tmp_path / "worker.log") as worker:
        base = worker.base
        async with Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches, Collector(
                BOOTSTRAP, env["REID_TOPIC_DLQ"]) as dlq, Stream(env["REID_TOPIC_DETECTIONS"]) as stream:
            # The same person at both sites, with the same detection ids; at site b also somebody else.
            await stream.send([at("home-a", detection(unique, root, "a", "porch", n, "1")) for n in range(3)]
                              + [at("home-b", detection(unique, root, "a", "porch", n, "1")) for n in range(3)]
                              + [at("home-b", detection(unique, root, "b", "drive", 10, None)),
                                 at("no site", detection(unique, root, "b", "drive", 11, None))])
            await matches.until(lambda items: len(items) >= 7, 90, "match events of both sites")
            await dlq.until(lambda items: len(items) >= 1, 30, "the detection with a malformed site_id")
        by = {(e["site_id"], e["detection_id"]): e for e in matches.items}
        assert len(by) == 7, "every detection of both sites has its own match event"
        founder = f"{unique}-a0"
        assert by["home-a", founder]["is_new_entity"] and by["home-b", founder]["is_new_entity"]
        assert {by["home-a", f"{unique}-a{n}"]["entity_id"] for n in range(3)} == {founder}
        assert {by["home-b", f"{unique}-a{n}"]["entity_id"] for n in range(3)} == {founder}
        assert dlq.items[0]["error_code"] == "schema_invalid" and "site_id" in str(dlq.items[0]["details"])

        # The same entity id names a different person at each site; the default site has neither.
        _, a_detail, _ = await get_json(f"{base}/api/entities/{founder}?site_id=home-a")
        _, b_detail, _ = await get_json(f"{base}/api/entities/{founder}?site_id=home-b")
        assert (a_detail["site_id"], a_detail["appearance_count"]) == ("home-a", 3)
        assert (b_detail["site_id"], b_detail["appearance_count"]) == ("home-b", 3)
        status, _, _ = await get_json(f"{base}/api/entities/{founder}")
        assert status == 404
        _, b_list, _ = await get_json(f"{base}/api/entities?site_id=home-b")
        assert b_list["count"] == 2 and {e["site_id"] for e in b_list["entities"]} == {"home-b"}
        status, err, _ = await get_json(f"{base}/api/entities?site_id=no%20site")
        assert status == 422 and err["error_code"] == "invalid_parameter"
        status, err, _ = await get_json(f"{base}/api/entities/{founder}/history?site_id=a%7Bb%7D")
        assert status == 422 and err["detail"][0]["loc"] == ["query", "site_id"]

        # An operator's name belongs to one site's entity.
        status, named = await send_json(f"{base}/api/entities/{founder}?site_id=home-b", "PATCH", {"name": "Bea"})
        assert status == 200 and named["name"] == "Bea" and named["site_id"] == "home-b"
        _, a_detail, _ = await get_json(f"{base}/api/entities/{founder}?site_id=home-a")
        assert a_detail["name"] is None

    # Every key lives in its site's hash slot, on whichever primary owns it, and expires.
    cluster = RedisCluster(host="127.0.0.1", port=CLUSTER_PORTS[0])
    slots: dict[str, set[int]] = {}
    try:
        for port in CLUSTER_PORTS:
            node = aioredis.Redis(host="127.0.0.1", port=port)
            async for key in node.scan_iter(match=f"{env['REID_REDIS_PREFIX']}:*", count=1000):
                site = key.decode().split("{", 1)[1].split("}", 1)[0]
                slots.setdefault(site, set()).add(int(await node.cluster("keyslot", key)))
                assert await node.ttl(key) > 0, key
            await node.aclose()
    finally:
        await cluster.aclose()
    assert set(slots) == {"home-a", "home-b"} and all(len(s) == 1 for s in slots.values()), slots
