"""The evaluation metrics, checked against hand-derived values and independent plain-Python re-implementations."""

from __future__ import annotations

import ast
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from reid_stream.eval.metrics import (
    average_precision,
    clustering_metrics,
    equal_error_rate,
    retrieval_metrics,
    roc_curve,
    verification_metrics,
)

EVAL = Path(__file__).resolve().parents[3] / "reid_stream" / "eval"


def test_the_eval_core_imports_nothing_heavy():
    for module in ("metrics.py", "datasets.py", "__init__.py"):
        roots = set()
        for node in ast.walk(ast.parse((EVAL / module).read_text())):
            if isinstance(node, ast.Import):
                roots |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                roots.add(node.module.split(".")[0])
        assert not roots & {"torch", "aiokafka", "faust", "redis", "open_clip", "sklearn", "PIL"}, (module, roots)


# ------------------------------------------------------------------------------------------------- retrieval

# Gallery for the hand case. pid -1 is junk, pid 0 a Market-style distractor.
#   g0 pid 1 cam 1   (same pid and camera as q0: excluded for q0)
#   g1 pid 1 cam 2
#   g2 pid 2 cam 2
#   g3 pid -1 cam 2  (junk: excluded for everyone)
#   g4 pid 0 cam 3   (distractor: stays, a negative)
#   g5 pid 3 cam 1   (q2's only match, but in q2's own camera: q2 is skipped)
#   g6 pid 2 cam 3
G_PIDS = [1, 1, 2, -1, 0, 3, 2]
G_CAMS = [1, 2, 2, 2, 3, 1, 3]
Q_PIDS = [1, 2, 3]
Q_CAMS = [1, 1, 1]
SIM = np.array([
    # g0    g1    g2    g3    g4    g5    g6
    [0.90, 0.50, 0.70, 0.80, 0.60, 0.10, 0.20],  # q0
    [0.10, 0.60, 0.80, 0.95, 0.90, 0.30, 0.50],  # q1
    [0.99, 0.10, 0.20, 0.30, 0.40, 0.95, 0.50],  # q2
])


def test_retrieval_by_hand():
    # q0 (pid 1, cam 1): descending g0 .9, g3 .8, g2 .7, g4 .6, g1 .5, g6 .2, g5 .1.
    #   Drop g0 (same pid+cam) and g3 (junk): g2 g4 g1 g6 g5 -> relevance 0 0 1 0 0.
    #   First match at rank 3 (it would be rank 1 without the camera rule, rank 4 without the junk rule).
    #   AP = P@3 = 1/3.
    # q1 (pid 2, cam 1): descending g3 .95, g4 .9, g2 .8, g1 .6, g6 .5, g5 .3, g0 .1.
    #   Drop g3 (junk): g4 g2 g1 g6 g5 g0 -> relevance 0 1 0 1 0 0. First match at rank 2.
    #   AP = (P@2 + P@4) / 2 = (1/2 + 2/4) / 2 = 1/2.
    # q2 (pid 3, cam 1): its only gallery image g5 is in camera 1 -> no valid match, skipped (not a miss).
    # CMC over the 2 valid queries (first matches at ranks 3 and 2): [0, 1/2, 1, 1, 1]; mAP = (1/3 + 1/2)/2 = 5/12.
    r = retrieval_metrics(SIM, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5)
    assert r.cmc == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0])
    assert (r.rank1, r.rank5, r.rank10) == (0.0, 1.0, 1.0)
    assert r.mAP == pytest.approx(5 / 12)
    assert (r.num_queries, r.num_valid_queries) == (3, 2)


def test_the_cmc_extends_past_a_short_ranking_and_rank_k_does_not_depend_on_max_rank():
    # q0 ranks 5 gallery items after the exclusions; a max_rank of 10 just continues the curve at 1.0.
    long = retrieval_metrics(SIM, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=10)
    short = retrieval_metrics(SIM, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=1)
    assert long.cmc == pytest.approx([0.0, 0.5] + [1.0] * 8)
    assert short.cmc == (0.0,) and (short.rank5, short.rank10, short.mAP) == (long.rank5, long.rank10, long.mAP)


def test_ties_keep_gallery_order():
    # All three scores tie; the stable sort keeps gallery order g0 g1 g2 -> relevance 0 1 1.
    # First match at rank 2; AP = (P@2 + P@3) / 2 = (1/2 + 2/3) / 2 = 7/12.
    r = retrieval_metrics(np.full((1, 3), 0.5), [1], [2, 1, 1], [1], [2, 2, 2], max_rank=3)
    assert r.cmc == pytest.approx([0.0, 1.0, 1.0]) and r.mAP == pytest.approx(7 / 12)
    # Reordering the gallery so the matches come first makes it a perfect ranking.
    r = retrieval_metrics(np.full((1, 3), 0.5), [1], [1, 1, 2], [1], [2, 2, 2], max_rank=3)
    assert r.rank1 == 1.0 and r.mAP == 1.0


def test_average_precision_definition():
    # Hits at ranks 1, 3, 6: (1/1 + 2/3 + 3/6) / 3.
    assert average_precision(np.array([1, 0, 1, 0, 0, 1], dtype=bool)) == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    with pytest.raises(ValueError):
        average_precision(np.zeros(3, dtype=bool))


def reference_market1501(sim, q_pids, g_pids, q_cams, g_cams, max_rank):
    """torchreid's eval_market1501 written out in plain Python, plus dropping junk (pid -1) from the gallery.

    Python's sorted() is stable, as the implementation's argsort is documented to be.
    """
    cmcs, aps = [], []
    for i in range(len(q_pids)):
        order = sorted(range(len(g_pids)), key=lambda j: -sim[i][j])
        rel = [g_pids[j] == q_pids[i] for j in order
               if g_pids[j] != -1 and not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])]
        if not any(rel):
            continue
        found, hits, precisions = 0, 0, []
        cmc = []
        for k, is_match in enumerate(rel, start=1):
            if is_match:
                hits += 1
                precisions.append(hits / k)
            found = found or is_match
            cmc.append(1.0 if found else 0.0)
        cmc += [1.0] * max(0, max_rank - len(cmc))
        cmcs.append(cmc[:max_rank])
        aps.append(sum(precisions) / len(precisions))
    n = len(cmcs)
    return [sum(c[k] for c in cmcs) / n for k in range(max_rank)], sum(aps) / n, n


@pytest.mark.parametrize("seed", range(6))
def test_retrieval_matches_a_plain_python_reference(seed):
    rng = np.random.default_rng(seed)
    sim = rng.normal(size=(20, 50))
    if seed % 2:
        sim = sim.round(1)  # many ties: both sides must break them the same (stable) way
    q_pids, g_pids = rng.integers(1, 8, 20), rng.integers(-1, 8, 50)  # gallery has junk (-1) and pid 0
    q_cams, g_cams = rng.integers(1, 4, 20), rng.integers(1, 4, 50)
    cmc, mean_ap, valid = reference_market1501(sim.tolist(), q_pids.tolist(), g_pids.tolist(), q_cams.tolist(),
                                               g_cams.tolist(), max_rank=10)
    r = retrieval_metrics(sim, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    assert r.cmc == pytest.approx(cmc) and r.mAP == pytest.approx(mean_ap) and r.num_valid_queries == valid
    assert r.rank1 == pytest.approx(cmc[0]) and r.rank5 == pytest.approx(cmc[4])


def test_retrieval_rejects_bad_input():
    with pytest.raises(ValueError, match="no query"):
        retrieval_metrics(np.ones((1, 2)), [1], [1, 2], [1], [1, 1])  # the only match is same-camera
    with pytest.raises(ValueError, match="g_pids"):
        retrieval_metrics(np.ones((1, 2)), [1], [1, 2, 3], [1], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.array([[np.nan, 1.0]]), [1], [1, 2], [1], [2, 2])
    with pytest.raises(ValueError, match="integers"):
        retrieval_metrics(np.ones((1, 2)), [1.5], [1, 2], [1], [2, 2])
    with pytest.raises(ValueError, match="max_rank"):
        retrieval_metrics(np.ones((1, 2)), [1], [1, 2], [1], [2, 2], max_rank=0)


def test_retrieval_result_is_json():
    r = retrieval_metrics(SIM, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5)
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["cmc"] == [0.0, 0.5, 1.0, 1.0, 1.0] and d["num_valid_queries"] == 2 and d["mAP"] == pytest.approx(5 / 12)


# ---------------------------------------------------------------------------------------------- verification


def one_query(genuine: list[float], impostor: list[float], extra: bool = True):
    """A 1 x n similarity row whose protocol pairs are exactly these genuine and impostor scores.

    With `extra`, two more gallery items score highest and must be excluded: a same-camera match and junk.
    """
    scores = genuine + impostor + ([1.5, 1.6] if extra else [])
    g_pids = [1] * len(genuine) + [2] * len(impostor) + ([1, -1] if extra else [])
    g_cams = [2] * (len(genuine) + len(impostor)) + ([1, 2] if extra else [])
    return np.array([scores]), [1], g_pids, [1], g_cams


def test_verification_by_hand():
    # Genuine .9 .8 .6 .4, impostor .7 .5 .3 .2 (P = N = 4). Accepting scores >= t:
    #   t    tp fp  TPR  FPR  FRR  precision
    #   .9   1  0   .25  0    .75  1
    #   .8   2  0   .5   0    .5   1
    #   .7   2  1   .5   .25  .5   2/3
    #   .6   3  1   .75  .25  .25  3/4     <- FAR = FRR = .25 exactly: EER .25 at threshold .6
    #   .5   3  2   .75  .5   .25  3/5
    #   .4   4  2   1    .5   0    2/3
    #   .3   4  3   1    .75  0    4/7
    #   .2   4  4   1    1    0    1/2
    # AUC = P(genuine > impostor) = (4 + 4 + 3 + 2) / 16 = 13/16.
    # FAR <= 1e-2 or 1e-3 with 4 impostors means no false accept at all: TAR = .5 (t = .8).
    # Precision >= .99: lowest such threshold .8, recall .5. Precision >= .75: .6 (3/4 exactly), recall .75.
    v = verification_metrics(*one_query([0.9, 0.8, 0.6, 0.4], [0.7, 0.5, 0.3, 0.2]))
    assert (v.num_genuine, v.num_impostor) == (4, 4)  # the same-camera match and the junk item are not pairs
    assert v.eer == pytest.approx(0.25) and v.eer_threshold == 0.6
    assert v.auc == pytest.approx(13 / 16)
    assert v.tar_at_far_1e_2 == 0.5 and v.tar_at_far_1e_3 == 0.5
    assert (v.threshold_at_precision, v.recall_at_precision) == (0.8, 0.5)
    assert v.genuine_mean == pytest.approx(0.675) and v.impostor_mean == pytest.approx(0.425)
    v75 = verification_metrics(*one_query([0.9, 0.8, 0.6, 0.4], [0.7, 0.5, 0.3, 0.2]), target_precision=0.75)
    assert (v75.threshold_at_precision, v75.recall_at_precision) == (0.6, 0.75)
    assert v.fpr.tolist() == [0, 0, 0, 0.25, 0.25, 0.5, 0.5, 0.75, 1]
    assert v.tpr.tolist() == [0, 0.25, 0.5, 0.5, 0.75, 0.75, 1, 1, 1]


def test_tar_at_far_eer_and_precision_on_a_thousand_impostors():
    # 10 genuine: 2 at 1.0, 5 at .95, 3 at .5. 1000 impostors: 1 at .99, 9 at .9, 990 at .1.
    #   t     tp  fp    TPR  FPR    precision
    #   1.0   2   0     .2   0      1
    #   .99   2   1     .2   .001   2/3
    #   .95   7   1     .7   .001   7/8
    #   .9    7   10    .7   .01    7/17
    #   .5    10  10    1    .01    1/2
    #   .1    10  1000  1    1      1/101
    # TAR@FAR=1e-3: best TPR with FPR <= .001 is .7; TAR@FAR=1e-2: 1.0.
    # EER: FRR - FAR is .3 - .01 > 0 at t=.9 and 0 - .01 < 0 at t=.5; both points have FAR .01, so the
    #   interpolated crossing is at FAR = FRR = .01, and the threshold is .5 (first point with FAR >= FRR).
    # Precision >= .99 only at t = 1.0 (recall .2). Precision >= .8: lowest is t = .95 (7/8, recall .7) even
    #   though t = .99 above it falls to 2/3: the lowest qualifying threshold is wanted, not a monotone one.
    # AUC: 2 * 1000 + 5 * 999 + 3 * 990 = 9965 wins of 10 * 1000 pairs = .9965.
    case = one_query([1.0] * 2 + [0.95] * 5 + [0.5] * 3, [0.99] + [0.9] * 9 + [0.1] * 990)
    v = verification_metrics(*case)
    assert (v.num_genuine, v.num_impostor) == (10, 1000)
    assert v.tar_at_far_1e_3 == pytest.approx(0.7) and v.tar_at_far_1e_2 == 1.0
    assert v.eer == pytest.approx(0.01) and v.eer_threshold == 0.5
    assert (v.threshold_at_precision, v.recall_at_precision) == (1.0, pytest.approx(0.2))
    v80 = verification_metrics(*case, target_precision=0.8)
    assert (v80.threshold_at_precision, v80.recall_at_precision) == (0.95, pytest.approx(0.7))
    assert v.auc == pytest.approx(0.9965)


def test_an_interpolated_eer():
    # Genuine .9 .4, impostor .6 .1. ROC (FPR, FRR): t=.9 (0, .5), t=.6 (.5, .5), t=.4 (.5, 0), ...
    # FRR - FAR: .5 at t=.9, 0 at t=.6 -> exact crossing at .6: EER .5.
    v = verification_metrics(*one_query([0.9, 0.4], [0.6, 0.1]))
    assert v.eer == pytest.approx(0.5) and v.eer_threshold == 0.6
    # Genuine .9 .8 .2, impostor .7 .1 (P=3, N=2). (FAR, FRR): t=.9 (0, 2/3), .8 (0, 1/3), .7 (1/2, 1/3),
    #   .2 (1/2, 0). FRR - FAR goes 1/3 (t=.8) -> -1/6 (t=.7): crossing at 2/3 of the way from (0, 1/3) to
    #   (1/2, 1/3): FAR = 1/3 = FRR. EER = 1/3, threshold .7.
    v = verification_metrics(*one_query([0.9, 0.8, 0.2], [0.7, 0.1]))
    assert v.eer == pytest.approx(1 / 3) and v.eer_threshold == 0.7


def test_perfect_separation():
    v = verification_metrics(*one_query([0.9, 0.8, 0.7], [0.3, 0.2, 0.1]))
    assert (v.eer, v.auc, v.tar_at_far_1e_3) == (0.0, 1.0, 1.0)
    assert v.eer_threshold == 0.7  # the lowest genuine score accepts every genuine pair and no impostor
    assert (v.threshold_at_precision, v.recall_at_precision) == (0.7, 1.0)


def test_unreachable_precision_is_none_and_json_has_no_infinity():
    # The best impostor outscores every genuine pair: precision is below .99 at every threshold.
    v = verification_metrics(*one_query([0.5, 0.4], [0.9, 0.1]))
    assert v.threshold_at_precision is None and v.recall_at_precision is None
    d = json.loads(json.dumps(v.to_dict(), allow_nan=False))
    assert d["threshold_at_precision"] is None
    assert d["roc"]["thresholds"][0] is None  # the (0, 0) point's +inf threshold
    assert d["roc"]["fpr"] == v.fpr.tolist()


def test_to_dict_thins_a_long_roc_but_keeps_its_ends():
    rng = np.random.default_rng(0)
    v = verification_metrics(*one_query(rng.normal(1, 1, 500).tolist(), rng.normal(0, 1, 2000).tolist()))
    roc = v.to_dict(max_roc_points=50)["roc"]
    assert 2 <= len(roc["fpr"]) <= 50 and roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0
    assert len(v.to_dict(max_roc_points=None)["roc"]["fpr"]) == v.fpr.size == 2501
    with pytest.raises(ValueError):
        v.fpr[0] = 1.0  # a frozen result's arrays are read-only


@pytest.mark.parametrize("seed", range(4))
def test_auc_equals_the_mann_whitney_statistic(seed):
    # AUC = P(genuine > impostor) + P(tie) / 2, counted over every (genuine, impostor) pair in plain Python.
    rng = np.random.default_rng(seed)
    genuine, impostor = rng.normal(1, 1, 40).round(1).tolist(), rng.normal(0, 1, 60).round(1).tolist()
    wins = sum(1.0 if g > i else 0.5 if g == i else 0.0 for g, i in itertools.product(genuine, impostor))
    v = verification_metrics(*one_query(genuine, impostor))
    assert v.auc == pytest.approx(wins / (len(genuine) * len(impostor)))


def test_roc_curve_and_eer_helpers():
    fpr, tpr, thr = roc_curve(np.array([0.3, 0.9, 0.3, 0.1]), np.array([True, True, False, False]))
    # Descending: .9 (G), .3 (G and I tie: one point, never split), .1 (I).
    assert fpr.tolist() == [0, 0, 0.5, 1] and tpr.tolist() == [0, 0.5, 1, 1] and thr[1:].tolist() == [0.9, 0.3, 0.1]
    assert equal_error_rate(fpr, tpr, thr) == (pytest.approx(0.25), 0.3)  # (FAR, FRR) (0, .5) -> (.5, 0): .25
    with pytest.raises(ValueError, match="both"):
        roc_curve(np.array([0.1, 0.2]), np.array([True, True]))


def test_a_junk_query_makes_no_pairs_and_no_ranking():
    sim, _, g_pids, _, g_cams = one_query([0.9, 0.8], [0.3, 0.1])
    # Second query is junk (pid -1): it would otherwise "match" the junk gallery item and reject everything else.
    args = (np.vstack([sim, sim]), [1, -1], g_pids, [1, 1], g_cams)
    v = verification_metrics(*args)
    assert (v.num_genuine, v.num_impostor) == (2, 2)
    assert retrieval_metrics(*args).num_valid_queries == 1


def test_verification_rejects_a_bad_target():
    with pytest.raises(ValueError, match="target_precision"):
        verification_metrics(*one_query([0.9], [0.1]), target_precision=0.0)


# ------------------------------------------------------------------------------------------------ clustering


def test_clustering_by_hand():
    # truth     a a a b b
    # predicted 1 1 2 2 2
    # Contingency: a -> {1: 2, 2: 1}, b -> {2: 2}.
    # Pairs with the same true id: C(3,2) + C(2,2) = 4. Pairs put together: C(2,2) + C(3,2) = 4.
    # Both: C(2,2) [a,a in 1] + C(1,2) + C(2,2) [b,b in 2] = 2.
    # Precision 2/4, recall 2/4, F1 .5. False merges: 2 of the 4 predicted pairs (the a-b pairs in entity 2) = .5.
    # Fragmentation: a is split over 2 entities, b over 1 -> 1.5. Purity: (2 [a in 1] + 2 [b in 2]) / 5 = .8.
    # ARI: E = 4 * 4 / C(5,2) = 1.6; max = (4 + 4) / 2 = 4; (2 - 1.6) / (4 - 1.6) = 1/6.
    c = clustering_metrics(list("aaabb"), [1, 1, 2, 2, 2])
    assert (c.true_pairs, c.predicted_pairs, c.correct_pairs) == (4, 4, 2)
    assert (c.pairwise_precision, c.pairwise_recall, c.pairwise_f1, c.false_merge_rate) == (0.5, 0.5, 0.5, 0.5)
    assert c.fragmentation == 1.5 and c.purity == pytest.approx(0.8) and c.ari == pytest.approx(1 / 6)
    assert (c.num_items, c.num_true_ids, c.num_predicted) == (5, 2, 2)


def test_perfect_clustering_under_any_renaming():
    c = clustering_metrics(list("aaabbc"), ["x", "x", "x", 7, 7, None])
    assert (c.pairwise_f1, c.ari, c.purity, c.fragmentation, c.false_merge_rate) == (1.0, 1.0, 1.0, 1.0, 0.0)


def test_everything_in_one_cluster():
    # truth a a a b b, one predicted entity: all C(5,2) = 10 pairs merged, 4 of them truly the same.
    # Precision .4, recall 1, F1 = 2 * .4 / 1.4 = 4/7, false merges .6, purity 3/5.
    # ARI: E = 4 * 10 / 10 = 4 = the index itself -> 0.
    c = clustering_metrics(list("aaabb"), [0] * 5)
    assert c.pairwise_precision == 0.4 and c.pairwise_recall == 1.0 and c.pairwise_f1 == pytest.approx(4 / 7)
    assert c.false_merge_rate == pytest.approx(0.6) and c.purity == 0.6 and c.fragmentation == 1.0
    assert c.ari == pytest.approx(0.0)


def test_all_singletons():
    # No predicted pairs: precision 1.0 by convention (no merge to get wrong), recall 0 of 4 true pairs.
    # Fragmentation (3 + 2) / 2 = 2.5; every entity is pure. ARI: E = 4 * 0 / 10 = 0, index 0 -> 0.
    c = clustering_metrics(list("aaabb"), range(5))
    assert (c.pairwise_precision, c.pairwise_recall, c.pairwise_f1, c.false_merge_rate) == (1.0, 0.0, 0.0, 0.0)
    assert (c.fragmentation, c.purity, c.ari) == (2.5, 1.0, 0.0)


def test_no_pairs_anywhere_is_perfect_and_empty_is_an_error():
    # All-singleton truth and prediction: nothing to merge, nothing to find; the partitions are identical.
    c = clustering_metrics([1, 2, 3], ["a", "b", "c"])
    assert (c.pairwise_precision, c.pairwise_recall, c.pairwise_f1, c.ari) == (1.0, 1.0, 1.0, 1.0)
    assert clustering_metrics(["a"], [9]).ari == 1.0
    with pytest.raises(ValueError, match="at least one"):
        clustering_metrics([], [])
    with pytest.raises(ValueError, match="length"):
        clustering_metrics([1, 2], [1])


@pytest.mark.parametrize(("truth", "pred", "expected"), [
    # scikit-learn's documented adjusted_rand_score examples (Hubert & Arabie's ARI):
    # [0,0,1,2] vs [0,0,1,1]: Σ C(a_i,2) = 1 ({0,0}), Σ C(b_j,2) = 1 + 1 = 2, Σ C(n_ij,2) = 1, C(4,2) = 6.
    #   E = 1 * 2 / 6 = 1/3; max = (1 + 2) / 2 = 3/2; ARI = (1 - 1/3) / (3/2 - 1/3) = (2/3) / (7/6) = 4/7 = 0.571...
    ([0, 0, 1, 2], [0, 0, 1, 1], 4 / 7),
    ([0, 0, 1, 1], [0, 0, 1, 2], 4 / 7),  # ARI is symmetric
    # [0,0,1,1] vs [0,1,0,1]: every cell is 1, Σ C(n_ij,2) = 0; Σ C(a_i,2) = Σ C(b_j,2) = 2; E = 4/6;
    #   ARI = (0 - 2/3) / (2 - 2/3) = -1/2 (the documented -0.5: worse than chance).
    ([0, 0, 1, 1], [0, 1, 0, 1], -0.5),
    # [0,0,0,0] vs [0,1,2,3]: E = 6 * 0 / 6 = 0, index 0 -> 0.0 (documented).
    ([0, 0, 0, 0], [0, 1, 2, 3], 0.0),
    ([0, 0, 1, 1], [1, 1, 0, 0], 1.0),
])
def test_ari_matches_published_examples(truth, pred, expected):
    assert clustering_metrics(truth, pred).ari == pytest.approx(expected)


def brute_force_pairs(truth, pred):
    """Every pair of items in plain Python: (same in both, same only in truth, same only in pred, in neither)."""
    a = b = c = d = 0
    for i, j in itertools.combinations(range(len(truth)), 2):
        same_t, same_p = truth[i] == truth[j], pred[i] == pred[j]
        a += same_t and same_p
        b += same_t and not same_p
        c += same_p and not same_t
        d += not same_t and not same_p
    return a, b, c, d


@pytest.mark.parametrize("seed", range(5))
def test_pair_counts_and_ari_match_an_all_pairs_count(seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 6, 60).tolist()
    pred = [t if rng.random() < 0.7 else int(rng.integers(0, 9)) for t in truth]  # a noisy clustering
    a, b, c, d = brute_force_pairs(truth, pred)
    r = clustering_metrics(truth, pred)
    assert (r.correct_pairs, r.true_pairs, r.predicted_pairs) == (a, a + b, a + c)
    assert r.pairwise_precision == pytest.approx(a / (a + c)) and r.pairwise_recall == pytest.approx(a / (a + b))
    # The pair-count form of the same ARI (Hubert & Arabie; Steinley 2004): 2(ad - bc) / ((a+b)(b+d) + (a+c)(c+d)).
    assert r.ari == pytest.approx(2 * (a * d - b * c) / ((a + b) * (b + d) + (a + c) * (c + d)))


def test_clustering_result_is_json():
    d = json.loads(json.dumps(clustering_metrics(list("aaabb"), [1, 1, 2, 2, 2]).to_dict(), allow_nan=False))
    assert d["purity"] == pytest.approx(0.8) and d["correct_pairs"] == 2
