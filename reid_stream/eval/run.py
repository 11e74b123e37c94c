"""`python -m reid_stream eval`: retrieval and verification metrics of the configured encoder on a dataset,
the threshold that reaches a target precision, and a stream replay through the assign stage at it."""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from reid_stream.config import Settings
from reid_stream.encoders import Encoder, load_encoder
from reid_stream.eval import report
from reid_stream.eval.datasets import LAYOUTS, ReidDataset, labels, load_dataset
from reid_stream.eval.embed import embed_images
from reid_stream.eval.metrics import JUNK_PID, pair_scores, retrieval_metrics, verification_metrics
from reid_stream.eval.replay import embed_stream, read_stream, replay
from reid_stream.learn.fit import FitConfig


def evaluate(root: Path, settings: Settings, encoder: Encoder, out: Path, layout: str = "auto",
             target_precision: float = 0.99, threshold: float | None = None, stream: Path | None = None,
             batch: int = 32, sweep_points: int = 8, adapt: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    data: ReidDataset = load_dataset(root, layout)
    q = embed_images(encoder, [s.path for s in data.query], settings.max_image_pixels, batch=batch, desc="query")
    g = embed_images(encoder, [s.path for s in data.gallery], settings.max_image_pixels, batch=batch,
                     desc="gallery")
    sim = q @ g.T
    (qp, qc), (gp, gc) = labels(data.query), labels(data.gallery)
    retrieval = retrieval_metrics(sim, qp, gp, qc, gc)
    verification = verification_metrics(sim, qp, gp, qc, gc, target_precision)
    scores, genuine = pair_scores(sim, qp, gp, qc, gc)
    ids = len({int(p) for p in np.concatenate([qp, gp]) if p not in (JUNK_PID, 0)})
    dataset = {"name": data.name, "path": str(root), "queries": len(data.query), "gallery": len(data.gallery),
               "ids": ids, "skipped": data.skipped}
    replayed = adapted = None
    stream = stream if stream is not None else (root / "stream.jsonl" if (root / "stream.jsonl").exists() else None)
    # The replay's threshold: the one asked for, else the calibrated one, else the configured one (said so).
    used, source = next((t, src) for t, src in ((threshold, "given"),
                                                (verification.threshold_at_precision, "calibrated"),
                                                (settings.similarity_threshold, "REID_SIMILARITY_THRESHOLD"))
                        if t is not None)
    sweep: list[dict[str, Any]] = []
    if stream is not None:
        # A synthetic site describes its cameras' walkways: the space-time gate uses them unless told otherwise.
        site = stream.parent / "site.json"
        if not settings.camera_topology and site.exists():
            settings = replace(settings, camera_topology=str(site))
        items = read_stream(stream)
        vectors = embed_stream(encoder, items, settings.max_image_pixels, batch)
        replayed = asyncio.run(replay(items, vectors, encoder.model_id, settings, used)).to_dict()
        replayed["threshold_source"] = source
        if sweep_points:
            sweep = asyncio.run(_sweep(items, vectors, encoder.model_id, settings,
                                       sweep_thresholds(scores[~genuine], sweep_points)))
        if adapt:
            adapted = adapted_figures(items, vectors, q, g, data, encoder.model_id, settings, sweep_points)
    elif adapt:
        raise ValueError("--adapt learns from the dataset's stream (stream.jsonl, or --stream): none found")
    payload = {"model": encoder.model_id, "device": encoder.device, "dataset": dataset,
               "assignment": settings.assignment, "camera_topology": settings.camera_topology or None,
               "retrieval": retrieval.to_dict(), "verification": verification.to_dict(),
               "recommended_threshold": verification.threshold_at_precision, "replay": replayed,
               "replay_sweep": sweep, "best_replay": max(sweep, key=lambda r: r["pairwise_f1"]) if sweep else None,
               "adapted": adapted, "seconds": round(time.perf_counter() - t0, 1)}
    out.mkdir(parents=True, exist_ok=True)
    md = report.markdown(encoder.model_id, dataset, retrieval, verification, replayed, sweep)
    if adapted is not None:
        md += report.adaptation(payload)
    report.plots(out, encoder.model_id, retrieval, verification, scores[genuine], scores[~genuine],
                 payload["best_replay"]["threshold"] if payload["best_replay"] else None)
    report.write(out, payload, md)
    return payload


def adapted_figures(items: list[Any], vectors: np.ndarray, q: np.ndarray, g: np.ndarray, data: ReidDataset,
                    model: str, settings: Settings, sweep_points: int) -> dict[str, Any]:
    """Every figure again after site adaptation learned from the stream alone (cameras, tracklets, times and
    the site's topology: never its true ids), as `reid-stream adapt` would learn it."""
    from reid_stream.identity.topology import Topology
    from reid_stream.learn import validate
    from reid_stream.learn.adapt import _fit_and_judge
    from reid_stream.learn.evidence import Labels, Sighting

    dets = [i.detection for i in items]
    sightings = [Sighting(d.detection_id, d.camera_id, d.track_id or f"det|{d.detection_id}", d.timestamp.timestamp())
                 for d in dets]
    topology = Topology.load(settings.camera_topology) if settings.camera_topology else Topology()
    t0 = time.perf_counter()
    result = _fit_and_judge(vectors, [d.camera_id for d in dets], sightings, topology, Labels(), model,
                            items[0].detection.entity_type if items else "person", 1, None, FitConfig(),
                            lambda what, done: None)
    if isinstance(result, str):
        return {"adopted": False, "reason": result}
    space, before, after = result
    ok, reason = validate.better(after, before)
    known = sorted(space.camera_means)

    def camera(c: int) -> str:  # a crop's camera number as the stream names it (synth: cam-N)
        return next((k for k in (f"cam-{c}", f"c{c}", str(c)) if k in known), str(c))

    (qp, qc), (gp, gc) = labels(data.query), labels(data.gallery)
    qa, ga = space.apply(q, [camera(int(c)) for c in qc]), space.apply(g, [camera(int(c)) for c in gc])
    sim = qa @ ga.T
    retrieval = retrieval_metrics(sim, qp, gp, qc, gc)
    verification = verification_metrics(sim, qp, gp, qc, gc, 0.99)
    streamed = space.apply(vectors, [d.camera_id for d in dets])
    thr = space.threshold if space.threshold is not None else settings.similarity_threshold
    at_own = asyncio.run(replay(items, streamed, f"{model}+space", settings, thr)).to_dict()
    scores, genuine = pair_scores(sim, qp, gp, qc, gc)
    sweep = asyncio.run(_sweep(items, streamed, f"{model}+space", settings,
                               sweep_thresholds(scores[~genuine], sweep_points))) if sweep_points else []
    return {"adopted": ok, "reason": reason, "validation": {"before": before, "after": after},
            "threshold": thr, "evidence": space.report.get("evidence"), "fit_seconds": space.report.get("fit_seconds"),
            "retrieval": retrieval.to_dict(), "verification": verification.to_dict(), "replay": at_own,
            "replay_sweep": sweep, "seconds": round(time.perf_counter() - t0, 1)}


def sweep_thresholds(impostor: np.ndarray, points: int) -> list[float]:
    """Thresholds spread where they matter for this model: over the top of its different-person scores,
    from the median to the highest (a threshold below most impostors merges everyone)."""
    qs = 1 - np.geomspace(0.5, 0.5 / 10 ** 3, points)  # quantiles 0.5 ... 0.9995, denser near the top
    return sorted({round(float(np.quantile(impostor, q)), 4) for q in qs}) if impostor.size else []


async def _sweep(items: list[Any], vectors: np.ndarray, model: str, settings: Settings,
                 thresholds: list[float]) -> list[dict[str, Any]]:
    """The same replay at each threshold: how entity quality trades merges against splits for this model."""
    return [(await replay(items, vectors, model, settings, t)).to_dict() for t in thresholds]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="Market-1501, DukeMTMC-reID, MSMT17, VeRi-776 or ID/CAMERA/*.jpg")
    parser.add_argument("--layout", default="auto",
                        choices=["auto", *LAYOUTS])
    parser.add_argument("--out", type=Path, default=Path("eval-results"), help="folder for JSON, Markdown, PNGs")
    parser.add_argument("--target-precision", type=float, default=0.99)
    parser.add_argument("--threshold", type=float, default=None,
                        help="replay at this threshold instead of the calibrated one")
    parser.add_argument("--stream", type=Path, default=None,
                        help="detections to replay (default: DATASET/stream.jsonl when present)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sweep", type=int, default=8,
                        help="also replay at this many thresholds over the model's score range (0: no sweep)")
    parser.add_argument("--adapt", action="store_true",
                        help="also learn the site's similarity space from its stream (never its true ids) and "
                             "report every figure before and after, side by side")


def run(args: argparse.Namespace, settings: Settings) -> int:
    encoder = load_encoder(settings)
    payload = evaluate(args.dataset, settings, encoder, args.out, args.layout, args.target_precision,
                       args.threshold, args.stream, args.batch, args.sweep, args.adapt)
    print((args.out / "eval.md").read_text())
    rec = payload["recommended_threshold"]
    if rec is not None:
        print(f"REID_SIMILARITY_THRESHOLD={rec:.4f}  # precision {args.target_precision:g} for {encoder.model_id}")
    print(f"results: {args.out}/eval.json, eval.md, cmc.png, roc.png, scores.png")
    return 0
