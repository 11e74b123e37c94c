"""Site adaptation on held-out synthetic sites (`python -m bench.adaptation`, part of `make eval`).

For each encoder and each site drawn with a seed never used while the method was developed (development used
seeds 100-199), `reid_stream.eval.run.evaluate(..., adapt=True)` measures retrieval, verification and a stream
replay through the assign stage in the encoder's own space and again in the space the site's stream taught
(camera bias, tracklets, space-time successions: never its true ids), with the held-out gate's verdict.
On seeds 0 and 7 it also measures the second visit: a space learned from session 0's stream alone, applied to
session 1 (the same people and cameras, a later day: new walks, poses, noise), as a worker would use it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS, announce, write_results

MAX_FALSE_MERGES = 0.01
SWEEP_POINTS = 12
EXTEND = (0.25, 0.5, 0.75, 0.9, 0.97)  # fractions of the way from the sweep's top to 1.0 (see `extend`)
TARGET_F1, TARGET_ENTITIES, TARGET_RANK1 = 0.75, 1.3, 0.5  # the targets (F1 at <= 1 % false merges)


@dataclass(frozen=True)
class Site:
    label: str
    ids: int
    cameras: int
    seed: int
    twins: float = 0.25
    nuisance: float = 1.0
    visits: int = 3
    second_visit: bool = False  # also measure session 1 in the space learned from session 0

    def path(self, cache: Path) -> Path:
        """The cached site (drawn once); named by generator version and settings, as bench.identity names it."""
        from reid_stream.eval.synth import GENERATOR_VERSION, generate

        extra = "".join(f"-{k}{v:g}" for k, v, default in (("n", self.nuisance, 1.0), ("t", self.twins, 0.25),
                                                            ("v", self.visits, 3)) if v != default)
        site = cache / f"synth-v{GENERATOR_VERSION}-{self.ids}x{self.cameras}-s{self.seed}{extra}"
        kw = {"ids": self.ids, "cameras": self.cameras, "seed": self.seed, "twins": self.twins,
              "nuisance": self.nuisance, "visits_per_id": self.visits}
        if not (site / "stream.jsonl").exists():
            generate(site, **kw)
        if self.second_visit and not (site / "stream-s1.jsonl").exists():
            generate(site, **kw, session=1)
        return site


SITES = (
    Site("make-eval site (seed 0)", 40, 4, 0, second_visit=True),
    Site("its held-out twin (seed 1)", 40, 4, 1),
    Site("demo site (seed 7)", 12, 3, 7, second_visit=True),
    Site("seed 201: harsher cameras, more twins", 60, 5, 201, twins=0.4, nuisance=1.5),
    Site("seed 202: mild cameras, few twins, returning visitors", 30, 3, 202, twins=0.1, nuisance=0.5, visits=4),
    Site("seed 203: harshest cameras", 40, 4, 203, nuisance=2.0),
)
ENCODERS: dict[str, dict[str, Any]] = {
    "MobileNetV2 (ImageNet)": {"encoder": "mobilenetv2"},
    "ViT-B-32, random weights": {"encoder": "clip", "clip_model": "ViT-B-32", "clip_pretrained": "none"},
}
CLIP = "ViT-B-32, random weights"


def best_at(sweep: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best F1 among the swept thresholds with at most 1 % false merges (an oracle: swept with true ids)."""
    ok = [r for r in sweep if r["false_merge_rate"] <= MAX_FALSE_MERGES]
    return max(ok, key=lambda r: (r["pairwise_f1"], -r["threshold"])) if ok else None


def figures(r: dict[str, Any] | None) -> dict[str, Any] | None:
    keys = ("threshold", "pairwise_f1", "false_merge_rate", "fragmentation", "num_predicted", "num_true_ids",
            "pairwise_precision", "pairwise_recall", "num_items")
    return None if r is None else {k: r[k] for k in (*keys, "threshold_source", "extended") if k in r}


def fmt(r: dict[str, Any] | None, at: bool = True) -> str:
    if r is None:
        return "never ≤ 1 %"
    s = f"{r['pairwise_f1']:.3f} / {r['false_merge_rate']:.3f} / {r['fragmentation']:.2f}"
    return f"{s} at {r['threshold']:.4f}{'⁺' if r.get('extended') else ''}" if at else s


def site_row(payload: dict[str, Any], more: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """What the tables need from one `evaluate` payload, before and after adaptation (with `more`: the oracle
    sweeps' extensions, per side)."""
    a = payload["adapted"] or {}
    before_sweep = payload["replay_sweep"] + more.get("before", [])
    row: dict[str, Any] = {
        "model": payload["model"], "dataset": payload["dataset"],
        "before": {"rank1": payload["retrieval"]["rank1"], "mAP": payload["retrieval"]["mAP"],
                   "eer": payload["verification"]["eer"], "replay": figures(payload["replay"]),
                   "best_at_1pct": figures(best_at(before_sweep)), "sweep": [figures(r) for r in before_sweep]},
        "adopted": a.get("adopted", False), "reason": a.get("reason"), "seconds": payload["seconds"]}
    if "retrieval" in a:
        after_sweep = a["replay_sweep"] + more.get("after", [])
        row["after"] = {"rank1": a["retrieval"]["rank1"], "mAP": a["retrieval"]["mAP"],
                        "eer": a["verification"]["eer"], "replay": figures(a["replay"]),
                        "best_at_1pct": figures(best_at(after_sweep)), "sweep": [figures(r) for r in after_sweep]}
        row.update(threshold=a["threshold"], validation=a["validation"], evidence=a["evidence"],
                   fit_seconds=a["fit_seconds"], adaptation_seconds=a["seconds"])
    return row


def impostor_scores(vectors: np.ndarray, items: list[Any], limit: int = 400_000) -> np.ndarray:
    """Similarities of stream pairs of different people (junk boxes: a person each), for the oracle sweep."""
    from reid_stream.eval.replay import scored_id

    ids = [str(scored_id(i.true_id, i.detection.detection_id)) for i in items]
    codes = np.unique(ids, return_inverse=True)[1]
    upper = np.triu_indices(len(items), 1)
    sim = (vectors @ vectors.T)[upper]
    out = sim[codes[upper[0]] != codes[upper[1]]]
    return np.random.default_rng(0).choice(out, limit, replace=False) if len(out) > limit else out


@contextlib.contextmanager
def captured_stream() -> Iterator[list[tuple[list[Any], np.ndarray]]]:
    """The stream vectors `evaluate` computes, kept for the extra replays below instead of encoding the stream
    a second time: its module's `embed_stream`, wrapped for the duration (nothing else changes)."""
    import reid_stream.eval.run as eval_run

    kept: list[tuple[list[Any], np.ndarray]] = []
    original = eval_run.embed_stream

    def keep(encoder: Any, items: list[Any], *args: Any, **kwargs: Any) -> np.ndarray:
        vectors = original(encoder, items, *args, **kwargs)
        kept.append((items, vectors))
        return vectors

    eval_run.embed_stream = keep
    try:
        yield kept
    finally:
        eval_run.embed_stream = original


def learn(items: list[Any], vectors: np.ndarray, settings: Any, model: str) -> tuple[Any, Any, float]:
    """The space `evaluate` learned from this stream (the same deterministic final fit on all the evidence that
    `adapted_figures` makes), its evidence, and the fit's seconds; the space is None with too little evidence."""
    from reid_stream.identity.topology import Topology
    from reid_stream.learn.evidence import Labels, Sighting, gather
    from reid_stream.learn.fit import FitConfig, NotEnoughEvidence, fit

    dets = [i.detection for i in items]
    sightings = [Sighting(d.detection_id, d.camera_id, d.track_id or f"det|{d.detection_id}", d.timestamp.timestamp())
                 for d in dets]
    t0 = time.perf_counter()
    ev = gather(sightings, Topology.load(settings.camera_topology), Labels())
    try:
        space = fit(vectors, [d.camera_id for d in dets], ev, model, dets[0].entity_type, 1, FitConfig())
    except NotEnoughEvidence:
        space = None
    return space, ev, time.perf_counter() - t0


async def extend(items: list[Any], vectors: np.ndarray, model: str, settings: Any,
                 sweep: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where no swept threshold keeps false merges at or below 1 % (the sweep tops out at the 99.95th percentile
    of the different-person scores), replays further up, between its top and 1.0, until one does."""
    from reid_stream.eval.replay import replay

    if not sweep or best_at(sweep) is not None:
        return []
    top = max(r["threshold"] for r in sweep)
    more = []
    for f in EXTEND:
        r = (await replay(items, vectors, model, settings, round(top + (1 - top) * f, 4))).to_dict()
        more.append({**r, "extended": True})
        if r["false_merge_rate"] <= MAX_FALSE_MERGES:
            break
    return more


async def tracklets_alone(items: list[Any], vectors: np.ndarray, model: str, settings: Any) -> dict[str, Any]:
    """The reference point: threshold 1.0, where nothing but a tracker's own tracklet ever joins an entity."""
    from reid_stream.eval.replay import replay

    return (await replay(items, vectors, model, settings, 1.0)).to_dict()


async def second_visit(site: Path, settings: Any, encoder: Any, first: list[Any], v0: np.ndarray,
                       raw_threshold: float) -> dict[str, Any]:
    """Session 1 replayed in the space learned from session 0's stream alone (inductive: nothing of session 1
    is fitted on), against session 1 in the encoder's own space at session 0's raw threshold."""
    from reid_stream.eval.replay import embed_stream, read_stream, replay
    from reid_stream.eval.run import sweep_thresholds

    model = encoder.model_id
    second = read_stream(site / "stream-s1.jsonl")
    v1 = embed_stream(encoder, second, settings.max_image_pixels)
    space, ev, fit_s = learn(first, v0, settings, model)
    if space is None:
        return {"fitted": False, "reason": f"not enough evidence ({ev.counts()})"}
    adapted = space.apply(v1, [i.detection.camera_id for i in second])
    own = space.threshold if space.threshold is not None else settings.similarity_threshold
    out: dict[str, Any] = {"fitted": True, "detections": {"session 0": len(first), "session 1": len(second)},
                           "evidence": ev.counts(), "fit_seconds": round(fit_s, 2), "space_threshold": own}
    for side, vectors, name, threshold in (("raw", v1, model, raw_threshold),
                                           ("adapted", adapted, f"{model}+space", own)):
        at = (await replay(second, vectors, name, settings, threshold)).to_dict()
        sweep = [(await replay(second, vectors, name, settings, t)).to_dict()
                 for t in sweep_thresholds(impostor_scores(vectors, second), SWEEP_POINTS)]
        sweep += await extend(second, vectors, name, settings, sweep)
        out[side] = {"replay": figures(at), "best_at_1pct": figures(best_at(sweep)),
                     "sweep": [figures(r) for r in sweep]}
    return out


def targets(row: dict[str, Any]) -> dict[str, bool]:
    """The issue's targets, for the adapted space at its own threshold (what a worker would run)."""
    a = row.get("after")
    if a is None:
        return {"f1": False, "entities": False, "rank1": False}
    rep = a["replay"]
    return {"f1": rep["pairwise_f1"] >= TARGET_F1 and rep["false_merge_rate"] <= MAX_FALSE_MERGES,
            "entities": rep["fragmentation"] <= TARGET_ENTITIES, "rank1": a["rank1"] >= TARGET_RANK1}


def gate(row: dict[str, Any]) -> str:
    if "validation" not in row:
        return f"nothing fitted ({row['reason']})"
    b, a = row["validation"]["before"], row["validation"]["after"]
    what = "recall" if a.get("cross_camera_recall") is not None else "TAR@FAR1%"

    def num(x: Any) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    return f"{'adopt' if row['adopted'] else 'refuse'} ({what} {num(b.get('score'))} → {num(a.get('score'))})"


def markdown(rows: dict[tuple[str, str], dict[str, Any]], visits: dict[tuple[str, str], dict[str, Any]],
             seconds: float, dropped: list[str]) -> str:
    main = ["| encoder | site (ids × cameras, detections) | Rank-1 before → after | mAP before → after "
            "| raw space at its threshold: F1 / false merges / entities per person at threshold "
            "| adapted space at its own threshold: same | oracle best F1 with ≤ 1 % false merges, raw: same "
            "| oracle, adapted: same | tracklets alone (threshold 1.0): same "
            "| held-out gate (held-out score raw → adapted) | fit s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (enc, label), r in rows.items():
        b, a, ds = r["before"], r.get("after"), r["dataset"]
        src = {"calibrated": "calibrated", "REID_SIMILARITY_THRESHOLD": "configured"}.get(
            (b["replay"] or {}).get("threshold_source", ""), "")
        scores = (f"{b['rank1']:.3f} → {a['rank1']:.3f} | {b['mAP']:.3f} → {a['mAP']:.3f}" if a
                  else f"{b['rank1']:.3f} | {b['mAP']:.3f}")
        main.append(f"| {enc} | {label} ({ds['ids']} × {r['cameras']}, {r['detections']}) | {scores} "
                    f"| {fmt(b['replay'])} ({src}) | {fmt(a['replay']) if a else '-'} | {fmt(b['best_at_1pct'])} "
                    f"| {fmt(a['best_at_1pct']) if a else '-'} | {fmt(r['tracklets_alone'], at=False)} | {gate(r)} "
                    f"| {r.get('fit_seconds', '-')} |")
    second = ["| encoder | site | session 1, raw space at session 0's threshold "
              "| session 1, session 0's space at its own threshold | oracle best ≤ 1 % false merges, raw "
              "| oracle, adapted | fit s (session 0) |", "|---|---|---|---|---|---|---|"]
    for (enc, label), v in visits.items():
        if not v.get("fitted"):
            second.append(f"| {enc} | {label} | nothing fitted: {v.get('reason')} | | | | |")
            continue
        second.append(f"| {enc} | {label} ({v['detections']['session 1']} detections) | {fmt(v['raw']['replay'])} "
                      f"| {fmt(v['adapted']['replay'])} | {fmt(v['raw']['best_at_1pct'])} "
                      f"| {fmt(v['adapted']['best_at_1pct'])} | {v['fit_seconds']} |")
    goals = ["| encoder | site | F1 ≥ 0.75 at ≤ 1 % false merges | entities per person ≤ 1.3 | Rank-1 ≥ 0.5 |",
             "|---|---|---|---|---|"]
    for (enc, label), r in rows.items():
        t, a = targets(r), r.get("after")
        rep = (a or {}).get("replay") or {}

        def mark(ok: bool, value: str) -> str:
            return f"{'met' if ok else 'not met'} ({value})"

        frag = f"{rep['fragmentation']:.2f}" if rep else "-"
        rank1 = f"{a['rank1']:.3f}" if a else "-"
        goals.append(f"| {enc} | {label} | {mark(t['f1'], fmt(rep, at=False) if rep else '-')} "
                     f"| {mark(t['entities'], frag)} | {mark(t['rank1'], rank1)} |")
    return ("### Site adaptation on held-out sites (seeds never used while developing the method)\n\n"
            + summary(rows, visits) + "\n\n"
            "Each site: `evaluate(..., adapt=True, sweep_points=12)` with the site's camera topology. *Raw space*: "
            "the encoder's own, replayed at the threshold calibrated for precision 0.99 on the site's query/gallery "
            "crops (which uses true ids), or REID_SIMILARITY_THRESHOLD when none reaches it (*configured*). "
            "*Adapted space*: learned from the stream alone (cameras, tracklets, times, the topology; never true "
            "ids), replayed at the threshold it set from that evidence. The *oracle* columns pick the best of 12 "
            "swept thresholds with the true ids: what a perfectly tuned threshold would give, not what a site gets "
            "(where none of the 12 keeps false merges at or below 1 %, the sweep goes on between its top and 1.0, "
            "at most 5 more thresholds, until one does: those are marked ⁺). "
            "The held-out gate is the writer's adoption test (validate.better: cross-camera recall of held-out "
            "tracklets, or TAR@FAR 1 % where the site has no walkways); `fit s` is the final fit on all the "
            "evidence (the gate's three trial fits come on top). Entities per person count every junk box as a "
            "person of its own.\n\n"
            + "\n".join(main) + "\n\n"
            "#### The second visit (inductive)\n\n"
            "Session 1 of the site (same people and cameras, a later day) replayed in the space learned from "
            "session 0's stream only, at that space's own threshold; the raw side at session 0's threshold. The "
            "oracle columns sweep 12 thresholds over session 1's own different-person scores (extended as above)."
            "\n\n"
            + "\n".join(second) + "\n\n"
            "#### The issue's targets, adapted space at its own threshold (what a worker would run)\n\n"
            + "\n".join(goals) + "\n\n"
            + (f"Not run (time): {', '.join(dropped)}.\n\n" if dropped else "")
            + f"Run time {seconds / 60:.1f} min on this machine. Per-site reports (plots, sweeps): "
            "bench/results/adaptation/<site>/<model>/eval.md.\n")


def summary(rows: dict[tuple[str, str], dict[str, Any]], visits: dict[tuple[str, str], dict[str, Any]]) -> str:
    """One plain paragraph from the figures themselves (so a rerun cannot leave it stale)."""
    n = len(rows)
    met = {k: [f"{enc} on {label}" for (enc, label), r in rows.items() if targets(r)[k]]
           for k in ("f1", "entities", "rank1")}
    adopted = sum(bool(r["adopted"]) for r in rows.values())
    up_r1 = sum(r["after"]["rank1"] > r["before"]["rank1"] for r in rows.values() if "after" in r)
    up_map = sum(r["after"]["mAP"] > r["before"]["mAP"] for r in rows.values() if "after" in r)
    f1_pairs = [(r["before"]["replay"], r["after"]["replay"]) for r in rows.values() if "after" in r]
    safer = sum(a["false_merge_rate"] <= MAX_FALSE_MERGES for _, a in f1_pairs)
    raw_safe = sum(b["false_merge_rate"] <= MAX_FALSE_MERGES for b, _ in f1_pairs)
    better_f1 = sum(a["pairwise_f1"] > b["pairwise_f1"] for b, a in f1_pairs)
    frag = [a["fragmentation"] for _, a in f1_pairs]

    def listed(key: str) -> str:
        return "none" if not met[key] else f"{len(met[key])} ({'; '.join(met[key])})"

    text = (f"**What the figures show.** Over {n} (encoder, site) pairs, adaptation raised Rank-1 on {up_r1} and "
            f"mAP on {up_map}; the held-out gate would adopt the learned space on {adopted} of {n}. At each side's "
            f"own threshold (no true ids), the raw space kept false merges at or below 1 % on {raw_safe} of "
            f"{len(f1_pairs)} and the adapted space on {safer}; the adapted replay's F1 was higher on {better_f1}, "
            f"with {min(frag, default=float('nan')):.2f}-{max(frag, default=float('nan')):.2f} entities per "
            f"person. Against the issue's targets (adapted space, own threshold): F1 ≥ 0.75 at ≤ 1 % false merges "
            f"met on {listed('f1')}; entities per person ≤ 1.3 met on {listed('entities')}; Rank-1 ≥ 0.5 met on "
            f"{listed('rank1')}.")
    fm = [a["false_merge_rate"] for _, a in f1_pairs]
    near = max(((r["after"]["replay"], f"{enc} on {label}") for (enc, label), r in rows.items() if "after" in r),
               key=lambda x: (x[0]["false_merge_rate"] <= 0.05, x[0]["pairwise_f1"]), default=None)
    if fm:
        text += (f" The adapted space's own threshold let through {100 * min(fm):.1f}-{100 * max(fm):.1f} % false "
                 "merges: the 1 % it is calibrated for is a quantile of tracklets' nearest known-different "
                 "tracklets, not of the replay's pairs.")
    if near is not None:
        text += f" The nearest to the F1 target is {near[1]} ({fmt(near[0])})."
    oracle = [(r["before"]["best_at_1pct"], (r.get("after") or {}).get("best_at_1pct"), r["tracklets_alone"])
              for r in rows.values()]
    gains = [b_or_a["pairwise_f1"] - t["pairwise_f1"] for b, a, t in oracle for b_or_a in (b, a) if b_or_a]
    best_oracle = max((x["pairwise_f1"] for b, a, _ in oracle for x in (b, a) if x), default=0.0)
    if gains:
        text += (" Even with the threshold tuned on the true ids (the oracle columns), F1 at ≤ 1 % false merges "
                 f"is within {min(gains):+.3f} to {max(gains):+.3f} of tracklets alone (threshold 1.0) in either "
                 "space" + (": at that false-merge rate almost nothing joins across tracklets, so no site reaches "
                            "the target there, before or after adaptation." if best_oracle < TARGET_F1 else "."))
    fitted = [v for v in visits.values() if v.get("fitted")]
    if fitted:
        kept = sum(v["adapted"]["replay"]["false_merge_rate"] <= MAX_FALSE_MERGES for v in fitted)
        gain = sum(v["adapted"]["replay"]["pairwise_f1"] > v["raw"]["replay"]["pairwise_f1"] for v in fitted)
        text += (f" On the second visit, the space learned from session 0 alone kept false merges at or below 1 % "
                 f"on {kept} of {len(fitted)} and beat the raw space's F1 on {gain} of {len(fitted)}.")
    text += (" The oracle columns are an upper bound that needs true ids; the synthetic sites are not real "
             "footage, so none of this is a claim about a real site.")
    return text


def run(args: argparse.Namespace) -> None:
    from reid_stream.config import Settings
    from reid_stream.encoders import load_encoder
    from reid_stream.eval.run import evaluate

    started = time.perf_counter()
    cache = Path(os.environ.get("REID_CACHE_DIR", Path.home() / ".cache" / "reid-stream"))
    sites = [s for s in SITES if not args.seeds or s.seed in args.seeds]
    clip_seeds = None if args.clip_seeds == "all" else {int(x) for x in args.clip_seeds.split(",") if x}
    plan = [(enc, s) for enc in ENCODERS if enc in args.encoders for s in sites
            if enc != CLIP or clip_seeds is None or s.seed in clip_seeds]
    dropped = [f"{enc} on {s.label}" for enc in ENCODERS if enc in args.encoders for s in sites
               if (enc, s) not in plan]
    paths = {s.label: s.path(cache) for s in sites}
    info = announce("adaptation", {"sites": {k: str(v) for k, v in paths.items()}, "encoders": args.encoders,
                                   "clip_seeds": args.clip_seeds, "sweep_points": SWEEP_POINTS})
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    visits: dict[tuple[str, str], dict[str, Any]] = {}
    for enc in ENCODERS:
        todo = [s for e, s in plan if e == enc]
        if not todo:
            continue
        base = Settings.from_env(device="cpu", **ENCODERS[enc])
        encoder = load_encoder(base)
        for s in todo:
            site = paths[s.label]
            print(f"== {enc} on {s.label} ({site.name})")
            t0 = time.perf_counter()
            settings = replace(base, camera_topology=str(site / "site.json"))
            out = RESULTS / "adaptation" / site.name / encoder.model_id
            with captured_stream() as kept:
                payload = evaluate(site, settings, encoder, out, adapt=True, sweep_points=SWEEP_POINTS)
            items, vectors = kept[0]
            more = {"before": asyncio.run(extend(items, vectors, encoder.model_id, settings, payload["replay_sweep"]))}
            if (payload["adapted"] or {}).get("replay_sweep"):
                space, _, _ = learn(items, vectors, settings, encoder.model_id)
                assert space is not None and space.threshold == payload["adapted"]["threshold"], "the same space"
                more["after"] = asyncio.run(extend(items, space.apply(vectors, [i.detection.camera_id for i in items]),
                                                   f"{encoder.model_id}+space", settings,
                                                   payload["adapted"]["replay_sweep"]))
            row = site_row(payload, more)
            row["tracklets_alone"] = figures(asyncio.run(tracklets_alone(items, vectors, encoder.model_id, settings)))
            row.update(site=str(site), seed=s.seed, cameras=s.cameras, twins=s.twins, nuisance=s.nuisance,
                       visits_per_id=s.visits, detections=len(items), results=str(out.relative_to(RESULTS)))
            rows[enc, s.label] = row
            if s.second_visit:
                visits[enc, s.label] = asyncio.run(second_visit(site, settings, encoder, items, vectors,
                                                                payload["replay"]["threshold"]))
            print(f"   {time.perf_counter() - t0:.0f} s")
    seconds = time.perf_counter() - started
    md = markdown(rows, visits, seconds, dropped)
    payload = {"machine": info, "seconds": round(seconds, 1), "targets": {
        "f1_at_1pct_false_merges": TARGET_F1, "entities_per_person": TARGET_ENTITIES, "rank1": TARGET_RANK1},
        "not_run": dropped,
        "rows": [{"encoder": enc, "site": label, **r, "targets_met": targets(r)} for (enc, label), r in rows.items()],
        "second_visit": [{"encoder": enc, "site": label, **v} for (enc, label), v in visits.items()]}
    write_results("adaptation", payload, md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--seeds", type=int, nargs="*", default=[], help="only these sites (default: all)")
    parser.add_argument("--clip-seeds", default="0,7",
                        help="the sites the (slower) CLIP encoder runs on: comma-separated seeds, or 'all'")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
