"""Scale-out: the same null-encoder backlog over many sites, drained by 1, 2 and 3 workers, side by side in one run.

    python -m bench.scale [--n 12000] [--sites 48] [--workers 1,2,3] [--rounds 1]

Sites spread the single writer: `reid-embedded` is keyed by (site, type), so each worker assigns the sites of
its partitions. The workers join one consumer group before the backlog is produced, so no rebalance falls
inside the timed span; the rate comes from the match events' own timestamps (first to last).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    Worker,
    announce,
    bar_plot,
    cpu_share,
    cpu_times,
    create_topics,
    crop_jpeg,
    drain_matches,
    free_port,
    produce_fast,
    worker_env,
    write_results,
)

BOOTSTRAP = "127.0.0.1:9092"
SETTLE_S = 3.0  # after every worker is ready: the group's last rebalance completes


def site_detection(i: int, image: bytes, tag: str, sites: int) -> tuple[bytes, bytes]:
    cam = f"cam-{i % 8}"
    det = {"detection_id": f"{tag}-{i}", "camera_id": cam, "site_id": f"site-{i % sites}",
           "entity_type": "person" if i % 3 else "vehicle", "timestamp": datetime.now(UTC).isoformat(),
           "bbox": {"x1": 0, "y1": 0, "x2": 64, "y2": 128}, "image_b64": base64.b64encode(image).decode()}
    return f"site-{i % sites}/{cam}".encode(), json.dumps(det).encode()


async def drain_with(workers: int, n: int, sites: int, crops: list[bytes], env: dict[str, str],
                     tmp: Path) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    base = worker_env(tag, REID_LOG_LEVEL="warning", **env)
    await create_topics(base)
    procs = [Worker({**base, "REID_WEB_PORT": str(free_port())}, tmp / f"{tag}-{k}.log").start()
             for k in range(workers)]
    stamps: list[int] = []
    try:
        await asyncio.gather(*(w.wait_ready() for w in procs))
        await asyncio.sleep(SETTLE_S)
        before = cpu_times()
        await produce_fast(BOOTSTRAP, base["REID_TOPIC_DETECTIONS"],
                           (site_detection(i, crops[i % len(crops)], tag, sites) for i in range(n)))

        await drain_matches(BOOTSTRAP, base["REID_TOPIC_MATCHES"], n, timeout=1800,
                            on_record=lambda rec: stamps.append(rec.timestamp))
        cpu = cpu_share(before, cpu_times())
    finally:
        codes = [w.stop() for w in procs]
    rate = (n - 1) / max(1e-9, (max(stamps) - min(stamps)) / 1000)
    return {"workers": workers, "per_s": rate, "per_worker_per_s": rate / workers, "cpu_share": cpu,
            "exit_codes": codes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=12000)
    parser.add_argument("--sites", type=int, default=48)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    settings = {"n": args.n, "sites": args.sites, "workers": counts, "rounds": args.rounds, "encoder": "null",
                "batch": args.batch}
    info = announce("scale-out over sites", settings)
    crops = [crop_jpeg(i) for i in range(256)]
    env = {"REID_ENCODER": "null", "REID_BATCH_SIZE": str(args.batch), "REID_BATCH_MAX_LATENCY_MS": "5",
           "REID_MAX_EMBEDDINGS": "20000"}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            # Alternate the order between rounds, so a drift in the machine's load favours no count.
            for workers in (counts if r % 2 == 0 else list(reversed(counts))):
                result = asyncio.run(drain_with(workers, args.n, args.sites, crops, env, Path(tmp)))
                print(f"round {r + 1}, {workers} worker(s): {result['per_s']:.0f} det/s")
                runs.append(result)
    by_count = {w: sorted(x["per_s"] for x in runs if x["workers"] == w) for w in counts}
    median = {w: v[len(v) // 2] for w, v in by_count.items()}
    one = median[counts[0]]
    busy = {w: round(sum(v for k, v in x["cpu_share"].items() if k != "other"), 2)
            for x in runs for w in [x["workers"]]}
    md = [f"### Scale-out over {args.sites} sites ({args.n:,} detections, null encoder, {info['cores']} cores)\n",
          "| workers | detections/s | vs 1 worker | per worker | machine busy (reid + Kafka + Redis) |",
          "|---|---|---|---|---|"]
    for w in counts:
        md.append(f"| {w} | {median[w]:.0f} | {median[w] / one:.2f}x | {median[w] / w:.0f} | {busy[w]:.2f} |")
    result = {"settings": settings, "machine": info, "runs": runs, "median_per_s": median,
              "speedup": {w: median[w] / one for w in counts}}
    text = "\n".join(md) + "\n"
    write_results("scale", result, text)
    bar_plot("scale", "null-encoder drain by worker count", [str(w) for w in counts],
             [median[w] for w in counts], "detections/s")
    print(text)


if __name__ == "__main__":
    main()
