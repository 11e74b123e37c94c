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


def evaluate(root: Path, settings: Settings, encoder: Encoder, out: Path, layout: str = "auto",
             target_precision: float = 0.99, threshold: float | None = None, stream: Path | None = None,
             batch: int = 32, sweep_points: int = 8) -> dict[str, Any]:
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
    replayed = None
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
    payload = {"model": encoder.model_id, "device": encoder.device, "dataset": dataset,
               "assignment": settings.assignment, "camera_topology": settings.camera_topology or None,
               "retrieval": retrieval.to_dict(), "verification": verification.to_dict(),
               "recommended_threshold": verification.threshold_at_precision, "replay": replayed,
               "replay_sweep": sweep, "best_replay": max(sweep, key=lambda r: r["pairwise_f1"]) if sweep else None,
               "seconds": round(time.perf_counter() - t0, 1)}
    out.mkdir(parents=True, exist_ok=True)
    md = report.markdown(encoder.model_id, dataset, retrieval, verification, replayed, sweep)
    report.plots(out, encoder.model_id, retrieval, verification, scores[genuine], scores[~genuine],
                 payload["best_replay"]["threshold"] if payload["best_replay"] else None)
    report.write(out, payload, md)
    return payload


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


def run(args: argparse.Namespace, settings: Settings) -> int:
    encoder = load_encoder(settings)
    payload = evaluate(args.dataset, settings, encoder, args.out, args.layout, args.target_precision,
                       args.threshold, args.stream, args.batch, args.sweep)
    print((args.out / "eval.md").read_text())
    rec = payload["recommended_threshold"]
    if rec is not None:
        print(f"REID_SIMILARITY_THRESHOLD={rec:.4f}  # precision {args.target_precision:g} for {encoder.model_id}")
    print(f"results: {args.out}/eval.json, eval.md, cmc.png, roc.png, scores.png")
    return 0
