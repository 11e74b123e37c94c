"""Held-out evidence: a space is adopted only when it tells apart, better than the current one, tracklets it
was not fitted on (and the operator's labels, where there are any).

The tracklets are dealt into FOLDS folds (by a stable hash of their index); each fold in turn is kept out of a
trial fit on the others and judged in it, so every tracklet is held out once. On the held-out ones, the score that 1 %
of known-different pairs reach (cannot-linked tracklets, the operator's splits) is the cut, and two figures
are measured against it:
- cross-camera recall: the share of held-out tracklets leaving a camera whose best candidate entering an
  adjacent camera in the transit window (a mutual best) clears the cut, as a true successor would in a space
  that recognises people across cameras (a space that merely squeezes everything together raises the cut too);
- TAR at FAR 1 %: the share of one tracklet's detection pairs (and of the operator's one-person pairs) above it.
The first decides where the site has walkways and people walk them; the second where it has none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reid_stream.learn.evidence import Evidence

FOLDS = 3
FAR = 0.01
MAX_PAIRS = 100_000


@dataclass(frozen=True)
class Split:
    fit_rows: np.ndarray  # detection indices the fit may use
    fit: Evidence  # the evidence among them (tracklets renumbered)
    held: np.ndarray  # (tracklets,) bool: kept out


def split(ev: Evidence, fold: int = 0, folds: int = FOLDS) -> Split:
    held = (np.arange(ev.tracklets) * 2654435761 % 2 ** 32) % folds == fold  # stable, spread over time
    keep = np.flatnonzero(~held)
    renumber = -np.ones(ev.tracklets, dtype=np.int64)
    renumber[keep] = np.arange(len(keep))
    rows = np.flatnonzero(~held[ev.track_of])

    def inside(pairs: list[tuple[int, int]] | set[tuple[int, int]]) -> list[tuple[int, int]]:
        return [(int(renumber[i]), int(renumber[j])) for i, j in pairs if renumber[i] >= 0 and renumber[j] >= 0]

    fit = Evidence(renumber[ev.track_of[rows]], [ev.cameras[i] for i in keep], ev.start[keep], ev.end[keep],
                   set(inside(ev.cannot)), inside(ev.successions), inside(ev.same))
    return Split(rows, fit, held)


def _pairs_scores(y: np.ndarray, members: list[np.ndarray], pairs: list[tuple[int, int]],
                  rng: np.random.Generator) -> np.ndarray:
    out = [(y[members[i]] @ y[members[j]].T).ravel() for i, j in pairs]
    scores = np.concatenate(out) if out else np.zeros(0)
    return rng.choice(scores, MAX_PAIRS, replace=False) if len(scores) > MAX_PAIRS else scores


def _cross_camera_recall(y: np.ndarray, ev: Evidence, held: np.ndarray) -> tuple[int, int] | None:
    sums = np.zeros((ev.tracklets, y.shape[1]))
    np.add.at(sums, ev.track_of, y)
    t = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    apart = np.array([t[i] @ t[j] for i, j in ev.cannot if held[i] or held[j]])
    if len(apart) < 10:
        return None
    cut = float(np.quantile(apart, 1.0 - FAR))
    best_out: dict[int, tuple[float, int]] = {}
    best_in: dict[int, tuple[float, int]] = {}
    for i, j in ev.successions:
        sim = float(t[i] @ t[j])
        if held[i] and sim > best_out.get(i, (-2.0, -1))[0]:
            best_out[i] = (sim, j)
        if sim > best_in.get(j, (-2.0, -1))[0]:
            best_in[j] = (sim, i)
    found = sum(sim > cut and best_in[j][1] == i for i, (sim, j) in best_out.items())
    return found, len(best_out)


def counts(y: np.ndarray, ev: Evidence, held: np.ndarray, seed: int = 0) -> dict[str, int]:
    """The held-out tallies for vectors `y` (one per detection, in some space): summed over folds by `score`."""
    rng = np.random.default_rng(seed)
    members = ev.members()
    genuine: list[np.ndarray] = []
    for i in np.flatnonzero(held):
        rows = members[i]
        if len(rows) > 1:
            sims = y[rows] @ y[rows].T
            genuine.append(sims[np.triu_indices(len(rows), 1)])
    same = [(i, j) for i, j in ev.same if held[i] or held[j]]
    apart = [(i, j) for i, j in ev.cannot if held[i] and held[j]]
    gen = np.concatenate([*genuine, _pairs_scores(y, members, same, rng)]) if genuine or same else np.zeros(0)
    imp = _pairs_scores(y, members, apart, rng)
    found, leaving = _cross_camera_recall(y, ev, held) or (0, 0)
    out = {"successors_found": found, "leaving": leaving, "genuine_pairs": len(gen), "impostor_pairs": len(imp),
           "genuine_above": 0, "operator_pairs": 0, "operator_above": 0}
    if len(imp) >= 10:
        cut = float(np.quantile(imp, 1.0 - FAR))
        out["genuine_above"] = int((gen > cut).sum())
        if same:  # the operator's own word: how many of their one-person pairs clear that score
            op = _pairs_scores(y, members, same, rng)
            out["operator_pairs"], out["operator_above"] = len(op), int((op > cut).sum())
    return out


def score(tallies: list[dict[str, int]]) -> dict[str, float | int | None]:
    """The folds' tallies as figures; `score` is the one a new space must beat."""
    total = {k: sum(t[k] for t in tallies) for k in tallies[0]} if tallies else {}
    recall = round(total["successors_found"] / total["leaving"], 4) if total.get("leaving", 0) >= 5 else None
    tar = round(total["genuine_above"] / total["genuine_pairs"], 4) \
        if total.get("genuine_pairs", 0) >= 10 and total.get("impostor_pairs", 0) >= 10 else None
    op = round(total["operator_above"] / total["operator_pairs"], 4) if total.get("operator_pairs") else None
    return {"score": recall if recall is not None else tar, "cross_camera_recall": recall, "tar_at_far": tar,
            "operator_tar": op, "leaving": total.get("leaving", 0), "genuine_pairs": total.get("genuine_pairs", 0),
            "impostor_pairs": total.get("impostor_pairs", 0)}


def better(candidate: dict[str, float | int | None], current: dict[str, float | int | None],
           margin: float = 0.005) -> tuple[bool, str]:
    """Whether the candidate beats the current space on the held-out evidence, and why (or why not)."""
    c, k = candidate.get("score"), current.get("score")
    what = "cross-camera recall" if candidate.get("cross_camera_recall") is not None else "TAR@FAR1%"
    if c is None:
        return False, "too little held-out evidence to judge"
    if k is not None and c < k + margin:
        return False, f"held-out {what} {c:.3f} does not beat the current {k:.3f}"
    co, ko = candidate.get("operator_tar"), current.get("operator_tar")
    if co is not None and ko is not None and co < ko:
        return False, f"worse on the operator's labels ({co:.3f} < {ko:.3f})"
    return True, f"held-out {what} {c:.3f} vs {'none' if k is None else f'{k:.3f}'}"
