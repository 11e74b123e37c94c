"""Pipeline benchmarks: encoder efficiency (bare vs pipeline), null-encoder overhead and latency, batch curve.

    python bench/pipeline.py encoder  [--n 320] [--batch 16]
    python bench/pipeline.py overhead [--n 20000] [--seconds 15]
    python bench/pipeline.py batch    [--sizes 1,2,4,8,16,32,64]
    python bench/pipeline.py ab       --baseline REF [--rounds 3] [--n 10000] [--warmup 1]

`ab` drains the same null-encoder backlog with workers of this working tree and of an earlier commit
(checked out in a temporary `git worktree`), alternating which side goes first in each round.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import signal
import statistics
import subprocess
import sys
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
    REPO,
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
    passthrough_drain,
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
    from reid_stream.encoders import load_encoder
    from reid_stream.events import BBox
    from reid_stream.vision.images import crop_letterbox, decode_image

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


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far: busy excludes idle and iowait."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


async def pipeline_drain(n: int, crops: list[bytes], env: dict[str, str], log: Path, repo: Path = REPO,
                         timeout: float = 3600) -> dict[str, Any]:
    """Load a backlog of n detections first, then start a worker (of the checkout `repo`) and time its drain.

    The rate comes from the match events' own timestamps (first to last), so neither the producer's
    speed nor when this process starts reading can leak into it.
    """
    tag = uuid.uuid4().hex[:8]
    worker = Worker(worker_env(tag, repo, REID_WEB_PORT=str(free_port()), REID_LOG_LEVEL="warning", **env), log,
                    repo)
    await create_topics(worker.env)
    stamps: list[int] = []
    await produce_fast(BOOTSTRAP, worker.env["REID_TOPIC_DETECTIONS"],
                       (detection_message(i, crops[i % len(crops)], tag) for i in range(n)))
    worker.start()
    try:
        await worker.wait_ready()
        assert worker.proc is not None
        mine = {worker.proc.pid}
        before, busy_before = cpu_times(mine), busy_jiffies()
        with tqdm(total=n, desc="match events", unit="det") as bar:
            await drain_matches(BOOTSTRAP, worker.env["REID_TOPIC_MATCHES"], n, timeout=timeout,
                                on_record=lambda r: stamps.append(r.timestamp), progress=bar)
        after, busy_after = cpu_times(mine), busy_jiffies()
        cpu = cpu_share(before, after)
        metrics = scrape(worker.base)
    finally:
        worker.stop()
    rate = (n - 1) / max(1e-9, (max(stamps) - min(stamps)) / 1000)
    stages = {k.split("stage=")[1].rstrip("}"): 1000 * v / n for k, v in metrics.items()
              if k.startswith("reid_stage_seconds_total")}
    busy = (busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1])
    cpu_ms = {role: round(1000 * (after[0].get(role, 0.0) - before[0].get(role, 0.0)) / n, 4)
              for role in ("worker", "decoders")}  # CPU time per detection: hardly moved by outside load
    return {"per_s": rate, "stage_ms_per_detection": stages, "worker_env": env, "cpu_share": cpu,
            "busy_share": round(busy, 3), "cpu_ms_per_detection": cpu_ms}


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
        passthrough = asyncio.run(passthrough_drain(BOOTSTRAP, args.n, crops))  # same messages, same run
        print(f"   passthrough: {passthrough['per_s']:.0f} messages/s; pipeline / passthrough "
              f"{peak / passthrough['per_s']:.3f}")
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
    cores = info["cores"] or 2
    # ms of one core per detection = share of the machine x cores / rate x 1000
    budget = {k: v * cores / peak * 1000 for k, v in drain["cpu_share"].items() if k != "other"}
    outside = sum(v for k, v in budget.items() if k != "worker")
    result = {"settings": settings, "machine": info, "sustained_per_s": peak, "cpu_ms_per_detection": budget,
              "passthrough_per_s": passthrough["per_s"], "pipeline_over_passthrough": peak / passthrough["per_s"],
              "stages_ms": drain["stage_ms_per_detection"], "cpu_share": drain["cpu_share"], "latency_ms": loads}
    rows = "\n".join(
        f"| {x['offered_per_s']:.0f} | {x['received']} | {x['p50']:.1f} | {x['p95']:.1f} | {x['p99']:.1f} |"
        for x in loads)
    stages = " · ".join(f"{k} {v:.3f}" for k, v in sorted(drain["stage_ms_per_detection"].items()))
    md = (f"### Pipeline overhead (null encoder, one worker, batch {args.batch})\n\n"
          f"Sustained: **{peak:.0f} detections/s** (target ≥ 3,000), draining a backlog of {args.n}. The same "
          f"messages moved by bare aiokafka in the same run (getmany, produce each, acknowledged, commit): "
          f"{passthrough['per_s']:.0f}/s, so pipeline / passthrough = **{peak / passthrough['per_s']:.3f}**.\n\n"
          f"| offered det/s | received | p50 ms | p95 ms | p99 ms |\n|---|---|---|---|---|\n{rows}\n\n"
          f"Per-stage time per detection (ms): {stages}\n\n"
          f"Share of the machine (1.0 = both cores) during the drain: "
          + " · ".join(f"{k} {v:.2f}" for k, v in drain["cpu_share"].items()) + "\n\n"
          "CPU per detection (ms of one core): " + " · ".join(f"{k} {v:.3f}" for k, v in budget.items())
          + f". At 3,000/s the parts outside the worker process (decoders, Redis, Kafka) would take "
          f"{outside * 3:.2f} cores of the machine's {cores}, leaving {cores - outside * 3:.2f} for the worker, "
          f"which needs {budget.get('worker', 0.0) * 3:.2f} at its measured cost.\n")
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


def cmd_gpu(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline around an encoder as fast as a GPU: the null encoder waiting, off the GIL, as long as a GPU at
    `--rate` crops/s would. Efficiency = pipeline rate / that rate; the decode processes' cost per detection
    says how many cores one such GPU needs."""
    settings = {"encoder": f"null, {args.rate:.0f} crops/s simulated", "n": args.n, "batch": args.batch}
    info = announce("pipeline at GPU speed (simulated)", settings)
    crops = [crop_jpeg(i) for i in range(256)]
    env = {"REID_ENCODER": "null", "REID_NULL_ENCODER_CROPS_PER_S": str(args.rate),
           "REID_BATCH_SIZE": str(args.batch), "REID_BATCH_MAX_LATENCY_MS": "5", "REID_MAX_EMBEDDINGS": "1000"}
    with tempfile.TemporaryDirectory() as tmp:
        drain = asyncio.run(pipeline_drain(args.n, crops, env, Path(tmp) / "gpu.log"))
    stages = drain["stage_ms_per_detection"]
    decode_ms = stages.get("parse", 0.0) + stages.get("decode_crop", 0.0)  # CPU in the decode processes
    per_core = 1000 / decode_ms if decode_ms else float("inf")
    result = {"settings": settings, "machine": info, "per_s": drain["per_s"], "encoder_per_s": args.rate,
              "efficiency": drain["per_s"] / args.rate, "stages_ms": stages, "cpu_share": drain["cpu_share"],
              "decode_per_core_per_s": per_core, "cores_per_gpu": args.rate / per_core}
    md = (f"### The pipeline at GPU speed (simulated: {args.rate:.0f} crops/s, batch {args.batch})\n\n"
          f"Drained {drain['per_s']:.0f} detections/s: pipeline / encoder = **{result['efficiency']:.3f}**. "
          f"The decode processes spend {decode_ms:.3f} ms per detection (parse {stages.get('parse', 0):.3f}, "
          f"decode and crop {stages.get('decode_crop', 0):.3f}): about {per_core:.0f} detections/s per core, so "
          f"one such GPU needs about **{result['cores_per_gpu']:.1f} cores** of decoding, besides the worker's "
          "own event loop (stage 2 and Kafka).\n\nPer-stage ms per detection: "
          + " · ".join(f"{k} {v:.3f}" for k, v in sorted(stages.items())) + "\n")
    write_results("pipeline_gpu", result, md)
    print(md)
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


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def tree_fingerprint() -> str:
    """HEAD plus a hash of the uncommitted changes (tracked diffs and untracked files), to spot edits mid-run."""
    h = hashlib.sha256(subprocess.run(["git", "-C", str(REPO), "diff", "HEAD", "--binary"], check=True,
                                      capture_output=True).stdout)
    for name in git("ls-files", "--others", "--exclude-standard", "-z").split("\0"):
        if name and (REPO / name).is_file():
            h.update(name.encode() + b"\0" + (REPO / name).read_bytes())
    return f"{git('rev-parse', '--short', 'HEAD')}+{h.hexdigest()[:12]}"


def imported_from(repo: Path) -> str:
    """Where a worker started for `repo` (same interpreter, env and cwd as Worker) imports reid_stream from."""
    out = subprocess.run([sys.executable, "-c", "import reid_stream; print(reid_stream.__file__)"],
                         env=worker_env("probe", repo), cwd=repo, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def cmd_ab(args: argparse.Namespace) -> dict[str, Any]:
    """Null-encoder drain of this working tree vs an earlier commit, alternating B,C / C,B per round."""
    sha = git("rev-parse", "--verify", f"{args.baseline}^{{commit}}")
    current_id = tree_fingerprint()
    settings = {"encoder": "null", "n": args.n, "batch": args.batch, "rounds": args.rounds, "warmup": args.warmup,
                "baseline": {"ref": args.baseline, "commit": sha, "subject": git("log", "-1", "--format=%s", sha)},
                "current": {"repo": str(REPO), "at_start": {
                    "head": git("rev-parse", "HEAD"), "tree": current_id,
                    "dirty": git("status", "--porcelain", "--untracked-files=no").splitlines()}}}
    info = announce("pipeline A/B (null encoder)", settings)
    crops = [crop_jpeg(i) for i in range(256)]
    env = {"REID_ENCODER": "null", "REID_BATCH_SIZE": str(args.batch), "REID_BATCH_MAX_LATENCY_MS": "5",
           "REID_MAX_EMBEDDINGS": "1000"}
    logs = RESULTS / "tmp" / f"ab-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"  # git-ignored; kept for post-mortems
    logs.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="reid-ab-"))
    tree = tmp / "baseline"
    runs: list[dict[str, Any]] = []
    warmups: list[dict[str, Any]] = []
    # SIGTERM (e.g. from make or CI) unwinds through the finally below instead of leaving the worktree behind.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        git("worktree", "add", "--detach", str(tree), sha)
        repos = {"baseline": tree, "current": REPO}
        for side, repo in repos.items():
            where = imported_from(repo)
            if not where.startswith(str(repo) + "/"):
                raise RuntimeError(f"the {side} worker would import reid_stream from {where}, not from {repo}")
            settings[side]["imports"] = where

        def drain(side: str, n: int, label: str) -> dict[str, Any]:
            log = logs / f"{label}-{side}.log"
            print(f"-- {label}: {side} ({repos[side]}), log {log}")
            fingerprint = tree_fingerprint() if side == "current" else sha[:12]
            try:
                r = asyncio.run(pipeline_drain(n, crops, env, log, repos[side], timeout=max(300.0, n / 50)))
            except BaseException:
                if log.exists():
                    print(f"!! {side} worker failed; last lines of {log}:\n"
                          + "\n".join(log.read_text(errors="replace").splitlines()[-40:]), file=sys.stderr)
                raise
            print(f"   {side}: {r['per_s']:.0f} detections/s")
            known = sum(v for k, v in r["cpu_share"].items() if k != "other")
            return {"side": side, "per_s": r["per_s"], "tree": fingerprint, "cpu_share": r["cpu_share"],
                    "busy_share": r["busy_share"], "outside_share": round(max(0.0, r["busy_share"] - known), 3),
                    "cpu_ms_per_detection": r["cpu_ms_per_detection"],
                    "stage_ms_per_detection": r["stage_ms_per_detection"], "log": str(log)}

        for w in range(args.warmup):  # untimed: Kafka's JIT, page cache, first imports
            for side in ("baseline", "current"):
                warmups.append(drain(side, max(1000, args.n // 5), f"warmup{w + 1}"))
        for rnd in range(args.rounds):
            order = ("baseline", "current") if rnd % 2 == 0 else ("current", "baseline")
            for side in order:
                runs.append({"round": rnd + 1, "position": order.index(side) + 1,
                             **drain(side, args.n, f"round{rnd + 1}")})
    finally:
        signal.signal(signal.SIGTERM, previous)
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True)

    def rate(rnd: int, side: str) -> float:
        return next(r["per_s"] for r in runs if r["round"] == rnd and r["side"] == side)

    median = {side: statistics.median(r["per_s"] for r in runs if r["side"] == side)
              for side in ("baseline", "current")}
    ratio = median["current"] / median["baseline"]
    def other(rnd: int, side: str) -> float:  # busy CPU not used by the worker, decoders, Kafka or Redis: noise
        return next(r["outside_share"] for r in runs if r["round"] == rnd and r["side"] == side)

    def cpu_ms(rnd: int, side: str) -> float:  # worker + decoders
        return next(sum(r["cpu_ms_per_detection"].values()) for r in runs if r["round"] == rnd and r["side"] == side)

    per_round = [{"round": k, "order": "B,C" if k % 2 else "C,B", "baseline_per_s": rate(k, "baseline"),
                  "current_per_s": rate(k, "current"), "ratio": rate(k, "current") / rate(k, "baseline"),
                  "cpu_ms_per_detection": {"baseline": cpu_ms(k, "baseline"), "current": cpu_ms(k, "current")},
                  "other_cpu_share": {"baseline": other(k, "baseline"), "current": other(k, "current")}}
                 for k in range(1, args.rounds + 1)]
    median_cpu_ms = {side: statistics.median(cpu_ms(k, side) for k in range(1, args.rounds + 1))
                     for side in ("baseline", "current")}
    trees = list(dict.fromkeys(r["tree"] for r in runs if r["side"] == "current"))  # in run order
    result = {"settings": settings, "machine": info, "runs": runs, "warmups": warmups, "per_round": per_round,
              "median_per_s": median, "ratio_current_over_baseline": ratio,
              "median_cpu_ms_per_detection": median_cpu_ms, "current_trees": trees}
    rows = "\n".join(f"| {x['round']} | {x['order']} | {x['baseline_per_s']:.0f} | {x['current_per_s']:.0f} | "
                     f"{x['ratio']:.3f} | {x['cpu_ms_per_detection']['baseline']:.3f} / "
                     f"{x['cpu_ms_per_detection']['current']:.3f} | {x['other_cpu_share']['baseline']:.2f} / "
                     f"{x['other_cpu_share']['current']:.2f} |" for x in per_round)
    changed = ("" if len(trees) == 1 else
               "\n**Note:** the working tree changed between the current runs (see their hashes above).\n")
    md = (f"### A/B: null-encoder drain, working tree vs `{args.baseline}` ({sha[:7]})\n\n"
          f"One worker, batch {args.batch}, a backlog of {args.n} detections per run on fresh topics; "
          f"{args.rounds} rounds, the side that goes first alternating (B = baseline, C = current); "
          f"{args.warmup} untimed warm-up drain(s) per side before.\n\n"
          f"Baseline: `{sha[:7]}` {settings['baseline']['subject']}  \n"
          f"Current: the working tree, as `HEAD+hash of uncommitted changes` when each run started: "
          f"{', '.join(f'`{t}`' for t in trees)}\n\n"
          f"| round | order | baseline det/s | current det/s | current / baseline | CPU ms/det B / C "
          f"| other CPU B / C |\n|---|---|---|---|---|---|---|\n{rows}\n"
          f"| **median** | | **{median['baseline']:.0f}** | **{median['current']:.0f}** | **{ratio:.3f}** | "
          f"**{median_cpu_ms['baseline']:.3f} / {median_cpu_ms['current']:.3f}** | |\n"
          f"{changed}\n"
          f"The ratio is of the two medians; per-round ratios compare runs made back to back. "
          f"*CPU ms/det* is the worker's and its decoders' CPU time per detection during the drain. "
          f"*Other CPU* is the share of the machine (1.0 = all {info['cores']} cores) busy during the drain but "
          f"not in the worker, its decoders, Kafka or Redis; well above ~0.05 means outside load and a suspect run.\n")
    write_results("ab_overhead", result, md)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    enc = sub.add_parser("encoder")
    enc.add_argument("--n", type=int, default=320)
    enc.add_argument("--batch", type=int, default=16)
    enc.set_defaults(func=cmd_encoder)
    gpu = sub.add_parser("gpu", help="the pipeline around an encoder as fast as a GPU (simulated)")
    gpu.add_argument("--rate", type=float, default=2500.0, help="the simulated encoder's crops/s")
    gpu.add_argument("--n", type=int, default=10000)
    gpu.add_argument("--batch", type=int, default=64)
    gpu.set_defaults(func=cmd_gpu)
    ovh = sub.add_parser("overhead")
    ovh.add_argument("--n", type=int, default=20000)
    ovh.add_argument("--batch", type=int, default=256)
    ovh.add_argument("--seconds", type=float, default=15)
    ovh.set_defaults(func=cmd_overhead)
    bat = sub.add_parser("batch")
    bat.add_argument("--sizes", default="1,2,4,8,16,32,64")
    bat.add_argument("--n", type=int, default=128)
    bat.set_defaults(func=cmd_batch)
    ab = sub.add_parser("ab", help="null-encoder drain: this working tree vs an earlier commit")
    ab.add_argument("--baseline", required=True, help="git ref of the baseline, e.g. HEAD~1 or a59c379")
    ab.add_argument("--rounds", type=int, default=3)
    ab.add_argument("--n", type=int, default=10000)
    ab.add_argument("--batch", type=int, default=256)
    ab.add_argument("--warmup", type=int, default=1, help="untimed warm-up drains per side (n/5 each)")
    ab.set_defaults(func=cmd_ab)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
