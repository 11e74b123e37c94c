"""Identity-evaluation metrics: retrieval (CMC/mAP), pair verification (ROC/EER) and stream clustering.

Pure numpy, no I/O: the harness computes a similarity matrix or a stream's entity assignments elsewhere and
hands them here, so every number in a report can be re-derived from arrays alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

JUNK_PID = -1
"""Gallery items with this pid are dropped from every ranking and every pair (Market-1501's "junk" boxes).

pid 0 (Market's "0000" distractors) is deliberately *not* special: no query has it, so it is a negative.
"""


# --------------------------------------------------------------------------------------------------- helpers


def _jsonable(value: Any) -> Any:
    """Plain JSON types only: numpy scalars become Python ones, tuples/arrays lists, non-finite floats None."""
    if isinstance(value, np.ndarray | tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # json.dumps would write `Infinity`/`NaN`, which strict JSON parsers reject
    return value


def _labels(name: str, values: Sequence[int] | np.ndarray, length: int) -> np.ndarray:
    """Integer label vector of the expected length; anything else is a caller bug worth a clear message."""
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != length:
        raise ValueError(f"{name} must be a 1-D sequence of {length} labels, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


@dataclass(frozen=True)
class _Labelled:
    """A checked similarity matrix with its query/gallery labels."""

    sim: np.ndarray
    q_pids: np.ndarray
    g_pids: np.ndarray
    q_camids: np.ndarray
    g_camids: np.ndarray


def _check(sim: np.ndarray, q_pids: Sequence[int] | np.ndarray, g_pids: Sequence[int] | np.ndarray,
           q_camids: Sequence[int] | np.ndarray, g_camids: Sequence[int] | np.ndarray) -> _Labelled:
    s = np.asarray(sim)
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)  # float32 stays float32: a benchmark's matrix is big enough already
    if s.ndim != 2:
        raise ValueError(f"sim must be a (queries x gallery) matrix, got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError("sim contains NaN: rankings would be undefined")
    nq, ng = s.shape
    return _Labelled(s, _labels("q_pids", q_pids, nq), _labels("g_pids", g_pids, ng),
                     _labels("q_camids", q_camids, nq), _labels("g_camids", g_camids, ng))


# ------------------------------------------------------------------------------------------------- retrieval


@dataclass(frozen=True)
class RetrievalResult:
    """Market-1501 protocol retrieval scores, averaged over the valid queries."""

    cmc: tuple[float, ...]  # cmc[k-1]: fraction of valid queries with a true match in the top k
    rank1: float
    rank5: float
    rank10: float
    mAP: float  # the name every re-id paper uses, hence not snake_case
    num_queries: int
    num_valid_queries: int  # queries with at least one true match left after the exclusions

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


def ranked_relevance(sim_row: np.ndarray, q_pid: int, q_camid: int,
                     g_pids: np.ndarray, g_camids: np.ndarray) -> np.ndarray:
    """One query's ranking as a boolean "is a true match" vector, after the protocol's exclusions.

    Sorted by descending similarity with a *stable* sort: tied gallery items keep their gallery order, so
    results are deterministic (but a tie between a match and a non-match is resolved by input order, not
    averaged). Junk (pid -1) and same-pid-same-camera items are removed: the latter are trivially easy
    matches from the query's own camera, which cross-camera re-id must not be credited for.
    """
    order = np.argsort(-sim_row, kind="stable")
    pids, cams = g_pids[order], g_camids[order]
    same_pid = pids == q_pid
    keep = (pids != JUNK_PID) & ~(same_pid & (cams == q_camid))
    return same_pid[keep]


def average_precision(relevant: np.ndarray) -> float:
    """torchreid's AP: mean over the true-match positions k of precision@k (= sum(P@k * rel_k) / num_rel)."""
    hits = np.flatnonzero(relevant)
    if hits.size == 0:
        raise ValueError("average precision needs at least one relevant item")
    return float(np.mean(np.arange(1, hits.size + 1) / (hits + 1)))


def retrieval_metrics(sim: np.ndarray, q_pids: Sequence[int] | np.ndarray, g_pids: Sequence[int] | np.ndarray,
                      q_camids: Sequence[int] | np.ndarray, g_camids: Sequence[int] | np.ndarray,
                      max_rank: int = 10) -> RetrievalResult:
    """CMC and mAP as torchreid's `eval_market1501`, with similarities (higher = closer) instead of distances.

    Queries with no true match left after the exclusions are skipped, not counted as failures. Unlike
    torchreid, the CMC always has `max_rank` entries: where a query's ranking is shorter than k, its first
    match is within the top k by definition, so the curve is simply extended (torchreid would truncate it).
    """
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    d = _check(sim, q_pids, g_pids, q_camids, g_camids)
    first_hits: list[int] = []
    aps: list[float] = []
    for i in range(d.sim.shape[0]):
        relevant = ranked_relevance(d.sim[i], int(d.q_pids[i]), int(d.q_camids[i]), d.g_pids, d.g_camids)
        if not relevant.any():
            continue  # this identity is not in the gallery from another camera: nothing to retrieve
        first_hits.append(int(np.argmax(relevant)))
        aps.append(average_precision(relevant))
    if not first_hits:
        raise ValueError("no query has a true match in the gallery from another camera")
    first = np.asarray(first_hits)

    def rank(k: int) -> float:
        return float(np.mean(first < k))

    return RetrievalResult(cmc=tuple(rank(k) for k in range(1, max_rank + 1)), rank1=rank(1), rank5=rank(5),
                           rank10=rank(10), mAP=float(np.mean(aps)), num_queries=int(d.sim.shape[0]),
                           num_valid_queries=len(first_hits))


# ---------------------------------------------------------------------------------------------- verification


def pair_scores(sim: np.ndarray, q_pids: Sequence[int] | np.ndarray, g_pids: Sequence[int] | np.ndarray,
                q_camids: Sequence[int] | np.ndarray,
                g_camids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores and same-identity flags of every query-gallery pair the retrieval protocol would rank.

    Same exclusions as retrieval: junk on either side and same-pid-same-camera pairs are dropped.
    """
    d = _check(sim, q_pids, g_pids, q_camids, g_camids)
    same_pid = d.q_pids[:, None] == d.g_pids[None, :]
    same_cam = d.q_camids[:, None] == d.g_camids[None, :]
    valid = (d.q_pids[:, None] != JUNK_PID) & (d.g_pids[None, :] != JUNK_PID) & ~(same_pid & same_cam)
    return d.sim[valid], same_pid[valid]


@dataclass(frozen=True)
class _OperatingPoints:
    """Counts of accepted pairs when accepting every score >= each distinct threshold (descending)."""

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    positives: int
    negatives: int


def _operating_points(scores: np.ndarray, genuine: np.ndarray) -> _OperatingPoints:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(genuine, dtype=bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.shape} vs {y.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(f"ROC needs both same- and different-identity pairs, got {positives} and {negatives}")
    # One point per distinct score, so tied pairs are accepted or rejected together, never split. Counting
    # "scores >= t" by binary search in each sorted class is several times faster than an argsort.
    thresholds = np.unique(s)[::-1]
    tp = positives - np.searchsorted(np.sort(s[y]), thresholds, side="left")
    fp = negatives - np.searchsorted(np.sort(s[~y]), thresholds, side="left")
    return _OperatingPoints(thresholds, tp, fp, positives, negatives)


def roc_curve(scores: np.ndarray, genuine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), thresholds descending, starting at (0, 0, +inf) like scikit-learn's.

    A pair is accepted when its score >= threshold; there is one point per distinct score.
    """
    return _roc(_operating_points(scores, genuine))


def _roc(p: _OperatingPoints) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fpr = np.r_[0.0, p.fp / p.negatives]
    tpr = np.r_[0.0, p.tp / p.positives]
    return fpr, tpr, np.r_[np.inf, p.thresholds]


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
    """Best true-accept rate among operating points whose false-accept rate is at most `far`.

    With fewer than 1/far impostor pairs this is the TAR at zero false accepts: the estimate is only as
    fine as the number of impostor pairs allows.
    """
    return float(tpr[fpr <= far].max())  # the (0, 0) point always qualifies


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): where FAR = FRR, interpolated linearly between the two ROC points around the crossing.

    The threshold is that of the first ROC point with FAR >= FRR (a real operating point; the interpolated
    rate sits between two thresholds).
    """
    gap = (1.0 - tpr) - fpr  # FRR - FAR: +1 at the (0, 0) start, -1 at the (1, 1) end
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0:
        return float(fpr[i]), float(thresholds[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1])), float(thresholds[i])


def _threshold_at_precision(p: _OperatingPoints, target: float) -> tuple[float | None, float | None]:
    """(threshold, recall) at the LOWEST threshold whose precision is >= target, else (None, None).

    Precision is not monotonic in the threshold, so higher thresholds may fall below the target: this is
    the operating point with the most recall that still meets it, as "recall at precision" metrics use.
    """
    ok = np.flatnonzero(p.tp / (p.tp + p.fp) >= target)
    if ok.size == 0:
        return None, None
    j = int(ok[-1])  # thresholds descend, so the last qualifying one is the lowest
    return float(p.thresholds[j]), float(p.tp[j] / p.positives)


@dataclass(frozen=True)
class VerificationResult:
    """Same-identity-or-not decisions on all query-gallery pairs, thresholding the similarity."""

    num_genuine: int  # same-identity pairs
    num_impostor: int  # different-identity pairs
    genuine_mean: float
    impostor_mean: float
    auc: float
    eer: float
    eer_threshold: float
    tar_at_far_1e_2: float
    tar_at_far_1e_3: float
    target_precision: float
    threshold_at_precision: float | None  # lowest threshold with precision >= target_precision
    recall_at_precision: float | None
    fpr: np.ndarray = field(compare=False, repr=False)
    tpr: np.ndarray = field(compare=False, repr=False)
    thresholds: np.ndarray = field(compare=False, repr=False)

    def to_dict(self, max_roc_points: int | None = 1000) -> dict[str, Any]:
        """JSON-ready; the ROC is thinned to about `max_roc_points` evenly spaced points (None: all of it).

        Real benchmarks have millions of distinct scores; the scalar metrics above are always exact.
        """
        out = {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.compare}
        keep = _thin(self.fpr.size, max_roc_points)
        out["roc"] = {"fpr": _jsonable(self.fpr[keep]), "tpr": _jsonable(self.tpr[keep]),
                      "thresholds": _jsonable(self.thresholds[keep])}
        return out


def _thin(n: int, max_points: int | None) -> np.ndarray:
    """Indices of about max_points evenly spaced items of n, always with the first and the last."""
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max(max_points, 2)).round().astype(np.int64))


def verification_metrics(sim: np.ndarray, q_pids: Sequence[int] | np.ndarray, g_pids: Sequence[int] | np.ndarray,
                         q_camids: Sequence[int] | np.ndarray, g_camids: Sequence[int] | np.ndarray,
                         target_precision: float = 0.99) -> VerificationResult:
    """ROC, AUC, EER, TAR@FAR and the precision-targeted threshold over all protocol pairs."""
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    scores, genuine = pair_scores(sim, q_pids, g_pids, q_camids, g_camids)
    points = _operating_points(scores, genuine)
    fpr, tpr, thresholds = _roc(points)
    eer, eer_threshold = equal_error_rate(fpr, tpr, thresholds)
    threshold, recall = _threshold_at_precision(points, target_precision)
    for arr in (fpr, tpr, thresholds):
        arr.flags.writeable = False  # the result is frozen; so are its arrays
    return VerificationResult(
        num_genuine=points.positives, num_impostor=points.negatives,
        genuine_mean=float(scores[genuine].mean()), impostor_mean=float(scores[~genuine].mean()),
        auc=float(np.trapezoid(tpr, fpr)), eer=eer, eer_threshold=eer_threshold,
        tar_at_far_1e_2=tar_at_far(fpr, tpr, 1e-2), tar_at_far_1e_3=tar_at_far(fpr, tpr, 1e-3),
        target_precision=float(target_precision), threshold_at_precision=threshold, recall_at_precision=recall,
        fpr=fpr, tpr=tpr, thresholds=thresholds)


# ------------------------------------------------------------------------------------------------ clustering


@dataclass(frozen=True)
class ClusteringResult:
    """How a stream's predicted entities agree with the true identities, counted over pairs of items."""

    num_items: int
    num_true_ids: int
    num_predicted: int
    true_pairs: int  # pairs with the same true id
    predicted_pairs: int  # pairs put in the same predicted entity
    correct_pairs: int  # both
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f1: float
    false_merge_rate: float  # predicted same-entity pairs whose true ids differ = 1 - pairwise_precision
    fragmentation: float  # mean number of predicted entities per true id (1.0 = never split)
    purity: float
    ari: float

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


def _codes(values: Sequence[Any]) -> np.ndarray:
    """Dense integer codes for arbitrary hashable labels (mixed types are fine, unlike np.unique)."""
    index: dict[Any, int] = {}
    return np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))


def _pairs(counts: np.ndarray) -> int:
    """Number of unordered pairs within groups of these sizes: sum n*(n-1)/2."""
    c = counts.astype(np.int64)
    return int((c * (c - 1) // 2).sum())


def _ratio(num: int, den: int) -> float:
    """num/den, and 1.0 when there is nothing to get wrong (den == 0 means no pairs to judge)."""
    return num / den if den else 1.0


def adjusted_rand_index(correct_pairs: int, true_pairs: int, predicted_pairs: int, n: int) -> float:
    """Hubert & Arabie (1985) ARI from contingency-table pair counts.

    ARI = (Σ C(n_ij,2) - E) / (½[Σ C(a_i,2) + Σ C(b_j,2)] - E),  E = Σ C(a_i,2) Σ C(b_j,2) / C(n,2).
    The denominator is 0 only when both partitions are all-singletons or both one cluster (or n < 2): they
    are then identical, and ARI is 1.0 (scikit-learn's convention).
    """
    all_pairs = n * (n - 1) // 2
    if all_pairs == 0:
        return 1.0
    expected = true_pairs * predicted_pairs / all_pairs
    denominator = (true_pairs + predicted_pairs) / 2 - expected
    return 1.0 if denominator == 0 else (correct_pairs - expected) / denominator


def clustering_metrics(true_ids: Sequence[Any], predicted: Sequence[Any]) -> ClusteringResult:
    """Pairwise precision/recall/F1, false merges, fragmentation, purity and ARI of a stream's entities.

    All from the sparse contingency table (true id x predicted entity), O(n log n), never O(n^2) pairs.
    With no predicted pairs precision is 1.0 (no merge can be wrong); with no true pairs recall is 1.0
    (nothing to find).
    """
    if len(true_ids) != len(predicted):
        raise ValueError(f"true_ids and predicted differ in length: {len(true_ids)} vs {len(predicted)}")
    if len(true_ids) == 0:
        raise ValueError("clustering metrics need at least one item")
    t, p = _codes(true_ids), _codes(predicted)
    n, n_pred = t.size, int(p.max()) + 1
    cells, cell_counts = np.unique(t * n_pred + p, return_counts=True)
    cell_true = cells // n_pred
    correct = _pairs(cell_counts)
    true_pairs, predicted_pairs = _pairs(np.bincount(t)), _pairs(np.bincount(p))
    precision, recall = _ratio(correct, predicted_pairs), _ratio(correct, true_pairs)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    majority = np.zeros(n_pred, dtype=np.int64)
    np.maximum.at(majority, cells % n_pred, cell_counts)  # largest true-id share of each predicted entity
    num_true = int(t.max()) + 1
    return ClusteringResult(
        num_items=n, num_true_ids=num_true, num_predicted=n_pred, true_pairs=true_pairs,
        predicted_pairs=predicted_pairs, correct_pairs=correct, pairwise_precision=precision,
        pairwise_recall=recall, pairwise_f1=f1, false_merge_rate=1.0 - precision,
        fragmentation=float(np.bincount(cell_true, minlength=num_true).mean()),
        purity=float(majority.sum() / n), ari=adjusted_rand_index(correct, true_pairs, predicted_pairs, n))
