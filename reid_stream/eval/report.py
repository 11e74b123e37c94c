"""Writes an evaluation's JSON, Markdown and PNG plots (CMC, ROC, same/different score histograms)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from reid_stream.eval.metrics import RetrievalResult, VerificationResult


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(model: str, dataset: dict[str, Any], retrieval: RetrievalResult, verification: VerificationResult,
             replay: dict[str, Any] | None, sweep: list[dict[str, Any]] | None = None) -> str:
    v, r = verification, retrieval
    lines = [
        f"### Identity evaluation: `{model}` on {dataset['name']} ({dataset['path']})",
        "",
        f"{dataset['queries']} queries, {dataset['gallery']} gallery images, {dataset['ids']} identities.",
        "",
        "| Rank-1 | Rank-5 | Rank-10 | mAP | EER | TAR@FAR 1e-2 | TAR@FAR 1e-3 | AUC |",
        "|---|---|---|---|---|---|---|---|",
        f"| {r.rank1:.3f} | {r.rank5:.3f} | {r.rank10:.3f} | {r.mAP:.3f} | {v.eer:.3f} | {v.tar_at_far_1e_2:.3f} "
        f"| {v.tar_at_far_1e_3:.3f} | {v.auc:.3f} |",
        "",
        f"Same-identity pairs: {v.num_genuine} (mean similarity {v.genuine_mean:.3f}); different: {v.num_impostor} "
        f"(mean {v.impostor_mean:.3f}).",
        "",
        f"Threshold for precision {v.target_precision:g}: **{_fmt(v.threshold_at_precision, 4)}** "
        f"(recall there {_fmt(v.recall_at_precision)}).",
    ]
    if v.threshold_at_precision is not None:
        lines.append(f"Recommended: `REID_SIMILARITY_THRESHOLD={v.threshold_at_precision:.4f}` for `{model}`.")
    else:
        lines.append(f"No threshold reaches precision {v.target_precision:g} on this set: the model cannot "
                     "separate these identities that cleanly.")
    if replay is not None:
        lines += [
            "",
            f"Stream replay through the assign stage at threshold {replay['threshold']:.4f} "
            f"({replay['threshold_source']}), "
            f"{replay['num_items']} detections:",
            "",
            "| pairwise precision | recall | F1 | false-merge rate | fragmentation | purity | ARI "
            "| entities / true ids |",
            "|---|---|---|---|---|---|---|---|",
            f"| {replay['pairwise_precision']:.3f} | {replay['pairwise_recall']:.3f} | {replay['pairwise_f1']:.3f} "
            f"| {replay['false_merge_rate']:.3f} | {replay['fragmentation']:.2f} | {replay['purity']:.3f} "
            f"| {replay['ari']:.3f} | {replay['num_predicted']} / {replay['num_true_ids']} |",
        ]
    if sweep:
        best = max(sweep, key=lambda r: r["pairwise_f1"])
        lines += ["", "The same replay over a range of thresholds (junk boxes count as one true id each):", "",
                  "| threshold | precision | recall | F1 | false-merge rate | fragmentation | entities |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['threshold']:.4f}{' (best F1)' if r is best else ''} | {r['pairwise_precision']:.3f} "
                  f"| {r['pairwise_recall']:.3f} | {r['pairwise_f1']:.3f} | {r['false_merge_rate']:.3f} "
                  f"| {r['fragmentation']:.2f} | {r['num_predicted']} |" for r in sweep]
    lines += ["", "![CMC](cmc.png) ![ROC](roc.png) ![scores](scores.png)"]
    return "\n".join(lines) + "\n"


def plots(out: Path, model: str, retrieval: RetrievalResult, verification: VerificationResult,
          genuine: np.ndarray, impostor: np.ndarray, replay_threshold: float | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ranks = np.arange(1, len(retrieval.cmc) + 1)
    ax.plot(ranks, retrieval.cmc, "o-")
    ax.set(xlabel="rank", ylabel="matching rate", ylim=(0, 1.02), title=f"CMC: {model}")
    fig.tight_layout()
    fig.savefig(out / "cmc.png", dpi=100)
    written.append(out / "cmc.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    fpr, tpr = np.asarray(verification.fpr), np.asarray(verification.tpr)
    ax.plot(np.maximum(fpr, 1e-5), tpr)
    ax.set_xscale("log")
    ax.set(xlabel="false accept rate", ylabel="true accept rate", ylim=(0, 1.02),
           title=f"ROC: {model} (EER {verification.eer:.3f})")
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=100)
    written.append(out / "roc.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.linspace(min(genuine.min(initial=1), impostor.min(initial=1)), 1, 60)
    ax.hist(impostor, bins=bins, density=True, alpha=0.6, label="different identity")
    ax.hist(genuine, bins=bins, density=True, alpha=0.6, label="same identity")
    if verification.threshold_at_precision is not None:
        ax.axvline(verification.threshold_at_precision, color="k", linestyle="--",
                   label=f"threshold @ precision {verification.target_precision:g}")
    if replay_threshold is not None:
        ax.axvline(replay_threshold, color="tab:red", linestyle=":",
                   label=f"best replay threshold {replay_threshold:.3f}")
    ax.set(xlabel="cosine similarity", ylabel="density", title=f"Scores: {model}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=100)
    written.append(out / "scores.png")
    plt.close(fig)
    return written


def write(out: Path, payload: dict[str, Any], md: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    (out / "eval.md").write_text(md)


def _best_at(sweep: list[dict[str, Any]], max_false_merge: float = 0.01) -> dict[str, Any] | None:
    ok = [r for r in sweep if r["false_merge_rate"] <= max_false_merge]
    return max(ok, key=lambda r: r["pairwise_f1"]) if ok else None


def adaptation(payload: dict[str, Any]) -> str:
    """The figures before and after site adaptation (`eval --adapt`), side by side."""
    a = payload["adapted"]
    if "retrieval" not in a:
        return f"\n\n### Site adaptation\n\nNothing learned: {a['reason']}.\n"
    before_best = _best_at(payload.get("replay_sweep") or [])
    after_best = _best_at(a["replay_sweep"])

    def best(r: dict[str, Any] | None) -> str:
        return "never" if r is None else (f"{r['pairwise_f1']:.3f} ({r['fragmentation']:.2f} entities per id, "
                                          f"at {r['threshold']:.4f})")

    rb, ra, pb, pa = payload["retrieval"], a["retrieval"], payload.get("replay") or {}, a["replay"]
    rows = [
        ("Rank-1", f"{rb['rank1']:.3f}", f"{ra['rank1']:.3f}"),
        ("mAP", f"{rb['mAP']:.3f}", f"{ra['mAP']:.3f}"),
        ("EER", f"{payload['verification']['eer']:.3f}", f"{a['verification']['eer']:.3f}"),
        ("replay threshold (where from)", f"{pb.get('threshold', 0):.4f} ({pb.get('threshold_source', '')})",
         f"{a['threshold']:.4f} (the site's own evidence)"),
        ("replay F1 / false merges / entities per id at it",
         f"{pb.get('pairwise_f1', 0):.3f} / {pb.get('false_merge_rate', 0):.3f} / {pb.get('fragmentation', 0):.2f}",
         f"{pa['pairwise_f1']:.3f} / {pa['false_merge_rate']:.3f} / {pa['fragmentation']:.2f}"),
        ("best replay F1 with ≤ 1 % false merges (swept with true ids)", best(before_best), best(after_best)),
        ("held-out evidence: cross-camera recall", str(a["validation"]["before"].get("cross_camera_recall")),
         str(a["validation"]["after"].get("cross_camera_recall"))),
    ]
    return ("\n\n### Site adaptation: learned from the stream alone (never its true ids)\n\n"
            f"Evidence: {a['evidence']}; fitted in {a['fit_seconds']} s; the writer would "
            f"{'adopt' if a['adopted'] else 'NOT adopt'} it ({a['reason']}).\n\n"
            "| figure | encoder's own space | adapted space |\n|---|---|---|\n"
            + "\n".join(f"| {k} | {b} | {v} |" for k, b, v in rows) + "\n")
