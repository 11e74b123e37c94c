"""Store benchmarks: Redis bytes per embedding, and restart time with many embeddings stored.

    python bench/store.py memory  [--n 2000]
    python bench/store.py restart [--n 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from tqdm import tqdm

from bench.common import (
    RESULTS,
    announce,
    bar_plot,
    crop_jpeg,
    detection_message,
    drain_matches,
    start_worker,
    write_results,
)
from reid_stream.events import Detection
from reid_stream.store.reid_store import ReidStore
from reid_stream.stream.assign import Assigner
from reid_stream.stream.wire import EmbeddedRecord
from tests.conftest import make_settings
from tests.e2e.harness import produce

BOOTSTRAP = "127.0.0.1:9092"
DIM = 768


def embedded(i: int, vec: np.ndarray, model: str) -> EmbeddedRecord:
    det = Detection.model_validate({
        "detection_id": f"det-{i:08d}", "camera_id": f"cam-{i % 16}", "entity_type": "person",
        "timestamp": datetime.now(UTC).isoformat(), "bbox": {"x1": 0, "y1": 0, "x2": 4, "y2": 4},
        "image_path": "x.jpg"})
    return EmbeddedRecord.of(det, vec, model)


async def memory(n: int, dtype: str = "float32") -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    # similarity_threshold 2: every detection a new entity
    settings = make_settings(tag, max_embeddings=n * 2, similarity_threshold=2.0, vector_dtype=dtype)
    client = aioredis.Redis.from_url(settings.redis_url)
    store = ReidStore(client, settings)
    assigner = Assigner(settings, store)
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    for i in tqdm(range(0, n, 200), desc="storing"):
        await assigner.assign([embedded(j, vecs[j], "bench") for j in range(i, min(n, i + 200))])
    usage: dict[str, int] = {}
    async for key in client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000):
        k = key.decode()
        family = ("markers" if ":det:" in k else "vectors" if ":entity_embeddings:" in k else
                  "vector metadata" if ":entity_meta:" in k else "vector index" if ":idx:" in k else
                  "entity indexes" if ":entities:" in k or ":cam:" in k else "version" if ":ver:" in k else
                  "entities")
        usage[family] = usage.get(family, 0) + int(await client.memory_usage(key, samples=0) or 0)
    keys = [k async for k in client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000)]
    for i in range(0, len(keys), 1000):
        await client.delete(*keys[i:i + 1000])
    await client.aclose()
    embedding = (usage.get("vectors", 0) + usage.get("vector metadata", 0) + usage.get("vector index", 0)) / n
    return {"n": n, "dtype": dtype, "bytes_by_family": usage, "embedding_bytes_each": embedding,
            "all_bytes_per_detection": sum(usage.values()) / n}


def cmd_memory(args: argparse.Namespace) -> None:
    info = announce("redis memory", {"n": args.n, "dim": DIM, "dtypes": ["float32", "float16"]})
    r = asyncio.run(memory(args.n))
    r16 = asyncio.run(memory(args.n, "float16"))
    fams = sorted(set(r["bytes_by_family"]) | set(r16["bytes_by_family"]))
    table = "\n".join(f"| {k} | {r['bytes_by_family'].get(k, 0) / args.n:.0f} | "
                      f"{r16['bytes_by_family'].get(k, 0) / args.n:.0f} |" for k in fams)
    md = (f"### Redis memory ({args.n} detections, 768-d, MEMORY USAGE of every key)\n\n"
          f"Per stored embedding (vector + its metadata + index entry): **{r['embedding_bytes_each']:.0f} B** "
          f"at float32 (target ≤ 3,300 B); **{r16['embedding_bytes_each']:.0f} B** with "
          f"`REID_VECTOR_DTYPE=float16`. Everything a detection leaves (entity, appearance, marker too): "
          f"{r['all_bytes_per_detection']:.0f} B / {r16['all_bytes_per_detection']:.0f} B.\n\n"
          f"| key family | float32 bytes per detection | float16 |\n|---|---|---|\n{table}\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    xs = np.arange(len(fams))
    ax.bar(xs - 0.2, [r["bytes_by_family"].get(k, 0) / args.n for k in fams], 0.4, label="float32")
    ax.bar(xs + 0.2, [r16["bytes_by_family"].get(k, 0) / args.n for k in fams], 0.4, label="float16")
    ax.set_xticks(xs, fams, rotation=20, ha="right")
    ax.set_ylabel("bytes per detection")
    ax.set_title("Redis bytes per detection, by key family")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "memory.png", dpi=110)
    plt.close(fig)
    md += "\n![memory](memory.png)\n"
    write_results("memory", {"machine": info, "float32": r, "float16": r16}, md)


async def populate(settings: Any, n: int, model: str) -> None:
    """Writes n embeddings straight into the store's layout (pipelined), as a worker would have left them."""
    from reid_stream.store.keys import Keys, day_of

    client = aioredis.Redis.from_url(settings.redis_url)
    keys = Keys.of(settings.redis_prefix)
    rng = np.random.default_rng(1)
    now = datetime.now(UTC)
    day = day_of(now)
    ttl = settings.embedding_ttl_seconds
    for start in tqdm(range(0, n, 2000), desc="populating"):
        vecs = rng.standard_normal((min(2000, n - start), DIM)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        pipe = client.pipeline(transaction=False)
        for j, vec in enumerate(vecs):
            det = f"pre-{start + j:08d}"
            pipe.hset(keys.vec_prefix(model, "person") + day, det, vec.tobytes())
            pipe.hset(keys.meta_prefix(model, "person") + day, det,
                      json.dumps({"e": det, "c": "cam-0", "t": now.isoformat()}))
            pipe.zadd(keys.index(model, "person"), {f"{day}|{det}": time.time()})
        await pipe.execute()
    for key in (keys.vec_prefix(model, "person") + day, keys.meta_prefix(model, "person") + day,
                keys.index(model, "person")):
        await client.expire(key, ttl)
    await client.set(keys.version(model, "person"), 1, ex=ttl)
    await client.aclose()


async def restart(n: int, tmp: Path) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    env = {"REID_ENCODER": "null", "REID_MAX_EMBEDDINGS": str(n * 2), "REID_SIMILARITY_THRESHOLD": "0.999"}
    settings = make_settings(tag, encoder="null", max_embeddings=n * 2)
    await populate(settings, n, "null")
    t0 = time.monotonic()
    worker = start_worker(tag, tmp / "worker.log", **env)
    try:
        await worker.wait_ready(300)
        ready = time.monotonic() - t0
        # The first person detection makes the single writer load all n vectors: time to its match event.
        t1 = time.monotonic()
        await produce(BOOTSTRAP, worker.env["REID_TOPIC_DETECTIONS"], [detection_message(1, crop_jpeg(1), tag)])
        await drain_matches(BOOTSTRAP, worker.env["REID_TOPIC_MATCHES"], 1, timeout=300)
        first = time.monotonic() - t1
    finally:
        worker.stop()
    client = aioredis.Redis.from_url(settings.redis_url)
    keys = [k async for k in client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    return {"n": n, "start_to_ready_s": ready, "first_match_after_ready_s": first, "total_s": ready + first}


def cmd_restart(args: argparse.Namespace) -> None:
    info = announce("restart", {"n": args.n, "encoder": "null (model load excluded)"})
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(restart(args.n, Path(tmp)))
    md = (f"### Restart with {args.n} stored embeddings (null encoder: model load excluded)\n\n"
          f"| start → /ready | first match (loads all vectors) | total | target |\n|---|---|---|---|\n"
          f"| {r['start_to_ready_s']:.1f} s | {r['first_match_after_ready_s']:.1f} s | {r['total_s']:.1f} s "
          f"| ≤ 10 s |\n")
    bar_plot("restart", f"Restart with {args.n} stored embeddings", ["start → ready", "first match", "total"],
             [r["start_to_ready_s"], r["first_match_after_ready_s"], r["total_s"]], "seconds", target=10)
    md += "\n![restart](restart.png)\n"
    write_results("restart", {"machine": info, **r}, md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    mem = sub.add_parser("memory")
    mem.add_argument("--n", type=int, default=2000)
    mem.set_defaults(func=cmd_memory)
    rst = sub.add_parser("restart")
    rst.add_argument("--n", type=int, default=100_000)
    rst.set_defaults(func=cmd_restart)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
