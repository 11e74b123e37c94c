"""What a learned similarity space costs the writer: stage 2 (the assign stage's own code against the real
Redis) over the same detections with no space and with an adopted one, in interleaved rounds, CPU seconds of
this process per detection (`python -m bench.adaptation_cost`, part of `make bench`)."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from bench.common import announce, write_results

N, DIM, CAMERAS, BATCH, ROUNDS = 4000, 1280, 6, 64, 3


def records(tag: str, rng: np.random.Generator) -> list[Any]:
    from reid_stream.events import Detection
    from reid_stream.stream.wire import EmbeddedRecord

    people = rng.standard_normal((N // 40, DIM)).astype(np.float32)
    bias = rng.standard_normal((CAMERAS, DIM)).astype(np.float32)
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    out = []
    for i in range(N):
        tracklet, frame = divmod(i, 8)
        cam = tracklet % CAMERAS
        v = people[tracklet % len(people)] + bias[cam] + 0.3 * rng.standard_normal(DIM).astype(np.float32)
        det = Detection(detection_id=f"{tag}-{i}", camera_id=f"cam-{cam}", entity_type="person",
                        timestamp=(t0 + timedelta(seconds=tracklet * 5 + frame)).isoformat(),
                        track_id=f"t{tracklet}", bbox={"x1": 0, "y1": 0, "x2": 64, "y2": 128}, image_path="x.png")
        out.append(EmbeddedRecord.of(det, v / np.linalg.norm(v), "bench-model"))
    return out


async def drain(settings: Any, recs: list[Any], space: bool) -> tuple[float, int]:
    from reid_stream.learn.adapt import adapt
    from reid_stream.store.reid_store import ReidStore
    from reid_stream.stream.assign import Assigner

    s = replace(settings, redis_prefix=f"bench-adapt:{uuid.uuid4().hex[:8]}")
    store = ReidStore.from_settings(s)
    try:
        warm = records("warm", np.random.default_rng(1))[:1000]
        assigner = Assigner(s, store)
        for start in range(0, len(warm), BATCH):
            await assigner.assign(warm[start:start + BATCH])
        version = 0
        if space:
            outcome = await adapt(store, "bench-model", "person", force=True)
            version = outcome.version or 0
        cpu = time.process_time()
        for start in range(0, len(recs), BATCH):
            await assigner.assign(recs[start:start + BATCH])
        return (time.process_time() - cpu) / len(recs), version
    finally:
        await store.forget_everything()
        await store.close()


async def main() -> None:
    from reid_stream.config import Settings

    settings = Settings.from_env(max_embeddings=20_000, similarity_threshold=0.9)
    info = announce("adaptation_cost", {"detections": N, "dim": DIM, "cameras": CAMERAS, "batch": BATCH,
                                        "rounds": ROUNDS})
    recs = records("bench", np.random.default_rng(0))
    off: list[float] = []
    on: list[float] = []
    for _ in range(ROUNDS):  # interleaved: the machine's drift hits both sides alike
        off.append((await drain(settings, recs, False))[0])
        cost, version = await drain(settings, recs, True)
        assert version, "the space was adopted"
        on.append(cost)
    ratio = statistics.median(on) / statistics.median(off)
    md = ("### What a learned space costs stage 2\n\n"
          f"{N} detections ({DIM}-d, {CAMERAS} cameras, tracklets of 8) through the assign stage against Redis, "
          f"batches of {BATCH}, {ROUNDS} interleaved rounds; CPU of this process per detection:\n\n"
          "| | no space | adopted space | ratio |\n|---|---|---|---|\n"
          f"| median ms | {1000 * statistics.median(off):.3f} | {1000 * statistics.median(on):.3f} | "
          f"**{ratio:.3f}** |\n| rounds ms | {', '.join(f'{1000 * x:.3f}' for x in off)} | "
          f"{', '.join(f'{1000 * x:.3f}' for x in on)} | |\n")
    write_results("adaptation_cost", {"machine": info, "off_s": off, "on_s": on, "ratio": ratio}, md)
    print(md)


if __name__ == "__main__":
    asyncio.run(main())
