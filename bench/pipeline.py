"""Pipeline benchmarks: encoder efficiency (bare vs pipeline), null-encoder overhead and latency, batch curve.

    python bench/pipeline.py encoder  [--n 320] [--batch 16]
    python bench/pipeline.py overhead [--n 20000] [--seconds 15]
    python bench/pipeline.py batch    [--sizes 1,2,4,8,16,32,64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.common import (
    RESULTS,
    Worker,
    announce,
    bar_plot,
    cpu_share,
    cpu_times,
    create_topics,
    crop_jpeg,
    detection_message,
    drain_matches,
    free_port,
    percentiles,
    produce_fast,
    start_worker,
    worker_env,
    write_results,
)

BOOTSTRAP = "127.0.0.1:9092"
MODEL = "ViT-B-32"


def bare_encoder(n: int, batch: int, crops: list[bytes], repeats: int = 1) -> dict[str, float]:
    """The same model, batch size and device in a tight loop over preprocessed crops."""
    from reid_stream.config import Settings
    from reid_stream.encoder import load_encoder
    from reid_stream.events import BBox
    from reid_stream.images import crop_letterbox, decode_image

    enc = load_encoder(Settings.from_env({}, clip_model=MODEL, clip_pretrained="none", device="cpu"))
    arrays = []
    for data in crops[:n]:
        img = decode_image(data, 10**8)
        arrays.append(enc.preprocess(crop_letterbox(img, BBox(x1=0, y1=0, x2=img.width, y2=img.height),
                                                    enc.input_size, (0, 0, 0))))
    stacked = np.stack(arrays)
    enc.encode(stacked[:batch])  # warm-up
    rates, per_batch = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            tb = time.perf_counter()
            enc.encode(stacked[i:i + batch])
            per_batch.append(time.perf_counter() - tb)
        rates.append(n / (time.perf_counter() - t0))
    return {"per_s": float(np.median(rates)), "batch_ms_p50": 1000 * float(np.median(per_batch))}


def scrape(base: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}" if s.labels else "")
            out[key] = s.value
    return out


async def pipeline_drain(n: int, crops: list[bytes], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Load a backlog of n detections first, then start a worker and time its drain.

    The rate comes from the match events' own timestamps (first to last), so neither the producer's
    speed nor when this process starts reading can leak into it.
    """
    tag = uuid.uuid4().hex[:8]
    worker = Worker(worker_env(tag, REID_WEB_PORT=str(free_port()), REID_LOG_LEVEL="warning", **env), log)
    await create_topics(worker.env)
    stamps: list[int] = []
    await produce_fast(BOOTSTRAP, worker.env["REID_TOPIC_DETECTIONS"],
                       (detection_message(i, crops[i % len(crops)], tag) for i in range(n)))
    worker.start()
    try:
        await worker.wait_ready()
        before = cpu_times()
        with tqdm(total=n, desc="match events", unit="det") as bar:
            await drain_matches(BOOTSTRAP, worker.env["REID_TOPIC_MATCHES"], n, timeout=3600,
                                on_record=lambda r: stamps.append(r.timestamp), progress=bar)
        cpu = cpu_share(before, cpu_times())
        metrics = scrape(worker.base)
    finally:
        worker.stop()
    rate = (n - 1) / max(1e-9, (max(stamps) - min(stamps)) / 1000)
    stages = {k.split("stage=")[1].rstrip("}"): 1000 * v / n for k, v in metrics.items()
              if k.startswith("reid_stage_seconds_total")}
    return {"per_s": rate, "stage_ms_per_detection": stages, "worker_env": env, "cpu_share": cpu}


def cmd_encoder(args: argparse.Namespace) -> dict[str, Any]:
    settings = {"model": MODEL, "weights": "random", "device": "cpu", "batch": args.batch, "n": args.n}
    info = announce("encoder efficiency", settings)
    crops = [crop_jpeg(i) for i in range(args.n)]
    bare1 = bare_encoder(args.n, args.batch, crops)
    env = {"REID_CLIP_MODEL": MODEL, "REID_BATCH_SIZE": str(args.batch), "REID_BATCH_MAX_LATENCY_MS": "50"}
    with tempfile.TemporaryDirectory() as tmp:
        pipe = asyncio.run(pipeline_drain(args.n, crops, env, Path(tmp) / "worker.log"))
    bare2 = bare_encoder(args.n, args.batch, crops)  # before and after, to bracket the machine's drift
    bare = float(np.median([bare1["per_s"], bare2["per_s"]]))
    ratio = pipe["per_s"] / bare
    result = {"settings": settings, "machine": info, "bare_per_s": [bare1["per_s"], bare2["per_s"]],
              "pipeline_per_s": pipe["per_s"], "ratio": ratio, "stages_ms": pipe["stage_ms_per_detection"]}
    stages = " · ".join(f"{k} {v:.2f}" for k, v in sorted(pipe["stage_ms_per_detection"].items()))
    md = (f"### Encoder efficiency ({MODEL}, random weights, batch {args.batch}, {args.n} detections)\n\n"
          f"| bare encoder | full pipeline | pipeline / bare | target |\n|---|---|---|---|\n"
          f"| {bare:.1f} det/s | {pipe['per_s']:.1f} det/s | {ratio:.3f} | ≥ 0.95 |\n\n"
          f"Per-stage time per detection (ms): {stages}\n")
    bar_plot("encoder_efficiency", f"{MODEL} on CPU: bare encoder vs full pipeline (batch {args.batch})",
             ["bare encoder", "pipeline", *(f"{k} ms/det" for k in sorted(pipe["stage_ms_per_detection"]))],
             [bare, pipe["per_s"], *(v for _, v in sorted(pipe["stage_ms_per_detection"].items()))],
             "detections/s (first two bars), ms per detection (stages)")
    md += "\n![encoder efficiency](encoder_efficiency.png)\n"
    write_results("encoder_efficiency", result, md)
    return result


async def paced_latency(rate: float, seconds: float, crops: list[bytes], worker: Any, tag: str) -> dict[str, float]:
    """Offer `rate` detections/s for `seconds`; latency = match arrival - the detection's own timestamp."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    n = int(rate * seconds)
    consumer = AIOKafkaConsumer(worker.env["REID_TOPIC_MATCHES"], bootstrap_servers=BOOTSTRAP,
                                group_id=f"lat-{tag}", auto_offset_reset="latest", enable_auto_commit=False)
    await consumer.start()
    while not consumer.assignment():
        await asyncio.sleep(0.05)
    await consumer.seek_to_end()
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=1)
    await producer.start()
    latencies: list[float] = []
    ids = {f"{tag}-{i}" for i in range(n)}

    async def consume() -> None:
        deadline = time.monotonic() + seconds + 30
        while len(latencies) < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=100)
            now = datetime.now(UTC)
            for records in batch.values():
                for rec in records:
                    ev = json.loads(rec.value)
                    if ev["detection_id"] in ids:
                        latencies.append((now - datetime.fromisoformat(ev["timestamp"])).total_seconds())

    reader = asyncio.create_task(consume())
    start = time.monotonic()
    sent = 0
    while sent < n:
        due = min(n, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            key, value = detection_message(sent, crops[sent % len(crops)], tag)
            await producer.send(worker.env["REID_TOPIC_DETECTIONS"], value, key=key)
            sent += 1
        await asyncio.sleep(0.002)
    await producer.flush()
    await reader
    await producer.stop()
    await consumer.stop()
    stats = percentiles([1000 * x for x in latencies])
    stats["offered_per_s"] = rate
    stats["received"] = len(latencies)
    return stats


def cmd_overhead(args: argparse.Namespace) -> dict[str, Any]:
    settings = {"encoder": "null", "n": args.n, "batch": args.batch, "paced_seconds": args.seconds}
    info = announce("pipeline overhead", settings)
    crops = [crop_jpeg(i) for i in range(256)]
    env = {"REID_ENCODER": "null", "REID_BATCH_SIZE": str(args.batch), "REID_BATCH_MAX_LATENCY_MS": "5",
           "REID_MAX_EMBEDDINGS": "1000"}
    with tempfile.TemporaryDirectory() as tmp:
        drain = asyncio.run(pipeline_drain(args.n, crops, env, Path(tmp) / "drain.log"))
        peak = drain["per_s"]
        loads: list[dict[str, float]] = []

        async def latency_runs() -> None:
            tag = uuid.uuid4().hex[:8]
            worker = start_worker(tag, Path(tmp) / "paced.log", **env)
            try:
                await worker.wait_ready()
                await paced_latency(50, 2, crops, worker, tag + "w")  # warm-up: caches, connections
                for rate in [*(peak * f for f in (0.25, 0.5, 0.9)), 1500.0]:
                    print(f"   offering {rate:.0f}/s for {args.seconds}s")
                    loads.append(await paced_latency(rate, args.seconds, crops, worker, f"{tag}{int(rate)}"))
            finally:
                worker.stop()

        asyncio.run(latency_runs())
    result = {"settings": settings, "machine": info, "sustained_per_s": peak,
              "stages_ms": drain["stage_ms_per_detection"], "cpu_share": drain["cpu_share"], "latency_ms": loads}
    rows = "\n".join(
        f"| {x['offered_per_s']:.0f} | {x['received']} | {x['p50']:.1f} | {x['p95']:.1f} | {x['p99']:.1f} |"
        for x in loads)
    stages = " · ".join(f"{k} {v:.3f}" for k, v in sorted(drain["stage_ms_per_detection"].items()))
    md = (f"### Pipeline overhead (null encoder, one worker, batch {args.batch})\n\n"
          f"Sustained: **{peak:.0f} detections/s** (target ≥ 3,000), draining a backlog of {args.n}.\n\n"
          f"| offered det/s | received | p50 ms | p95 ms | p99 ms |\n|---|---|---|---|---|\n{rows}\n\n"
          f"Per-stage time per detection (ms): {stages}\n\n"
          f"Share of the machine (1.0 = both cores) during the drain: "
          + " · ".join(f"{k} {v:.2f}" for k, v in drain["cpu_share"].items()) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for q in ("p50", "p95", "p99"):
        ax.plot([x["offered_per_s"] for x in loads], [x[q] for x in loads], "o-", label=q)
    ax.axhline(200, color="tab:red", linestyle="--", label="p99 target 200 ms (at 1,500/s)")
    ax.set_yscale("log")
    ax.set_xlabel("offered detections/s")
    ax.set_ylabel("end-to-end latency (ms)")
    ax.set_title(f"Null encoder, one worker: sustained {peak:.0f}/s")
    ax.legend()
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "pipeline_overhead.png", dpi=110)
    md += "\n![pipeline overhead](pipeline_overhead.png)\n"
    write_results("pipeline_overhead", result, md)
    return result


def cmd_batch(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = {"model": MODEL, "weights": "random", "device": "cpu", "sizes": sizes, "n": args.n}
    info = announce("batch-size curve", settings)
    crops = [crop_jpeg(i) for i in range(args.n)]
    rows = []
    for b in tqdm(sizes, desc="batch sizes"):
        r = bare_encoder(args.n - args.n % b or b, b, crops)
        rows.append({"batch": b, "per_s": r["per_s"], "batch_ms_p50": r["batch_ms_p50"]})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot(sizes, [r["per_s"] for r in rows], "o-", label="throughput (crops/s)")
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("batch size")
    ax1.set_ylabel("crops/s")
    ax2 = ax1.twinx()
    ax2.plot(sizes, [r["batch_ms_p50"] for r in rows], "s--", color="tab:red", label="batch latency p50 (ms)")
    ax2.set_ylabel("ms per batch")
    fig.legend(loc="upper left")
    ax1.set_title(f"{MODEL} encoder on {info['cores']} CPU cores")
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(RESULTS / "batch_curve.png", dpi=110)
    table = "\n".join(f"| {r['batch']} | {r['per_s']:.1f} | {r['batch_ms_p50']:.0f} |" for r in rows)
    md = (f"### Batch-size curve ({MODEL}, random weights, CPU)\n\n| batch | crops/s | ms per batch (p50) |\n"
          f"|---|---|---|\n{table}\n\n![batch curve](batch_curve.png)\n")
    result = {"settings": settings, "machine": info, "rows": rows}
    write_results("batch_curve", result, md)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    enc = sub.add_parser("encoder")
    enc.add_argument("--n", type=int, default=320)
    enc.add_argument("--batch", type=int, default=16)
    enc.set_defaults(func=cmd_encoder)
    ovh = sub.add_parser("overhead")
    ovh.add_argument("--n", type=int, default=20000)
    ovh.add_argument("--batch", type=int, default=256)
    ovh.add_argument("--seconds", type=float, default=15)
    ovh.set_defaults(func=cmd_overhead)
    bat = sub.add_parser("batch")
    bat.add_argument("--sizes", default="1,2,4,8,16,32,64")
    bat.add_argument("--n", type=int, default=128)
    bat.set_defaults(func=cmd_batch)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
