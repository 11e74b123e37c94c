"""Fits a site's similarity space on its evidence: camera bias, then a projection learned from tracklets,
the operator's labels and space-time successions, and a threshold calibrated on the same evidence.

The method, and why (the literature it follows):
- Camera bias: each camera's mean embedding (shrunk toward the site's mean while it has few detections) is
  removed, as camera-aware normalisation does (CAP, Wang et al. 2021; camera-based batch normalisation,
  Zhuang et al. 2020): strangers on one camera stop looking alike because of its light and background.
- The projection: regularised LDA (Fisher discriminant) in a PCA subspace, with tracklets (joined into
  pseudo-people) as the classes, as in tracklet association learning (TAUDL, Li et al. 2018) and closed-form
  metric learning (KISSME/XQDA, Koestinger 2012, Liao 2015): directions along which one person's detections
  vary are shrunk, directions that tell people apart are kept. The between-class side is the total scatter
  (with whitened within-class noise its top directions separate classes), so two fragments of one person
  that were never joined are not pushed apart. The PCA basis is computed once (it does not depend on the
  labels); each round only refits the small discriminant on the PCA coordinates.
  The subspace is wide (PCA_DIMS 256): on synthetic sites the look-alikes ("near-twins", one garment apart)
  are only separable there; 96 dimensions lose them even with true labels.
- Space-time pseudo-labels (TASTR, Lv et al. 2018; self-paced learning, Kumar et al. 2010): a tracklet
  leaving a camera and one entering an adjacent camera within the walkway's transit window are joined when
  they are each other's best candidate AND beat the runner-up of either end by a margin, one successor and
  one predecessor per tracklet (a greedy one-to-one matching, best score first), never across a cannot-link,
  and only between tracklets of at least MIN_LINK_ROWS detections (a single box is often junk). The margin
  starts strict and is relaxed round by round, and the links are chosen afresh every round, so a link the
  improved space no longer supports is dropped instead of being locked in. Precision matters more than count:
  a wrong link (mostly near-twins) is learnt as "one person" and then scores like one in the stream.
  The operator's merges and splits are classes and cannot-links that always hold.
- The threshold: for every tracklet, its most similar known-different tracklet (cannot-link: seen at the same
  time) by tracklet mean; the threshold is the (1 - MAX_FALSE_MERGE) quantile of those. The assign stage
  compares a tracklet's aggregate with entity prototypes and joins the *best* match, so the impostor that
  matters is a person's nearest one, not a random pair (a random pair's quantile, the former calibration,
  sat far below the look-alikes' scores). Each site's threshold comes from its own evidence.
- Known limit: impostors who never appear at the same time as the person (near-twins on a busy site) are
  not in the cannot-links, so neither the threshold nor the links see them; see the report of this change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reid_stream.learn.evidence import Evidence
from reid_stream.learn.space import Space, unit_rows

Progress = Callable[[str, float], None]  # (what, fraction done)


@dataclass(frozen=True)
class FitConfig:
    pca_dims: int = 256
    out_dims: int = 48
    ridge: float = 0.1  # within-class scatter += ridge * its mean eigenvalue: small classes stay well posed
    rounds: int = 4  # pseudo-label rounds after the first fit
    link_margin: float = 0.1  # a succession beats the runner-up of either end by this much in the first round
    link_margin_min: float = 0.02  # ... halved each round down to this
    min_link_rows: int = 2  # tracklets with fewer detections are never linked by the stream's evidence
    camera_prior: float = 20.0  # detections' worth of the site's mean in each camera's mean
    max_false_merge: float = 0.01  # the threshold: this share of tracklets' nearest known impostors reach it
    threshold_margin: float = 0.0  # added to the calibrated threshold
    max_rows: int = 100_000  # a larger store is sampled for the fit (every row is still projected)
    min_tracklets: int = 8  # fewer than this: nothing to learn from, the space stays raw
    seed: int = 0


class NotEnoughEvidence(ValueError):
    """The site has too few tracklets (or cameras) to learn from yet."""


def camera_means(x: np.ndarray, cameras: Sequence[str], prior: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    site = x.mean(0)
    cams = np.asarray(cameras)
    out = {}
    for cam in sorted(set(cameras)):
        rows = x[cams == cam]
        out[cam] = ((rows.sum(0) + prior * site) / (len(rows) + prior)).astype(np.float32)
    return out, site.astype(np.float32)


def remove_bias(vectors: np.ndarray, cameras: Sequence[str], means: dict[str, np.ndarray],
                chunk: int = 16384) -> np.ndarray:
    """Unit rows of (vector - its camera's mean), in float32, a chunk at a time (no full-size bias matrix)."""
    names = sorted(means)
    table = np.stack([means[c] for c in names]).astype(np.float32)
    idx = np.searchsorted(names, np.asarray(cameras))
    out = np.empty(vectors.shape, dtype=np.float32)
    for a in range(0, len(vectors), chunk):
        out[a:a + chunk] = unit_rows(vectors[a:a + chunk] - table[idx[a:a + chunk]])
    return out


def pca_basis(x: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(center, basis (d, k)): the top-k principal directions, from the smaller side of the data."""
    center64 = x.mean(0, dtype=np.float64)
    center = center64.astype(np.float32)
    k = max(1, min(dims, len(x) - 1, x.shape[1]))
    if len(x) < x.shape[1]:
        xc = x - center
        w, u = np.linalg.eigh((xc @ xc.T).astype(np.float64))
        top = np.argsort(w)[::-1][:k]
        basis = xc.T @ (u[:, top] / np.sqrt(np.maximum(w[top], 1e-12))).astype(np.float32)
    else:  # the covariance without a centred copy of x: X'X - n c c'
        cov = (x.T @ x).astype(np.float64) - len(x) * np.outer(center64, center64)
        w, v = np.linalg.eigh(cov)
        basis = v[:, np.argsort(w)[::-1][:k]].astype(np.float32)
    return center, basis


def discriminant(z: np.ndarray, classes: np.ndarray, out_dims: int, ridge: float) -> np.ndarray:
    """(k, dims) on PCA coordinates z: whiten the regularised within-class scatter, keep the top directions
    of the total scatter in the whitened space (Fisher LDA with total scatter as the between side)."""
    k = z.shape[1]
    labels, inverse = np.unique(classes, return_inverse=True)
    sums = np.zeros((len(labels), k))
    _group_sum(z, inverse, sums)
    counts = np.bincount(inverse, minlength=len(labels))[:, None]
    within = z - (sums / counts).astype(z.dtype)[inverse]  # float32 rows, float64 (k, k) scatters
    sw = (within.T @ within).astype(np.float64) / len(z)
    sw += ridge * max(np.trace(sw) / k, 1e-9) * np.eye(k)
    sb = (z.T @ z).astype(np.float64) / len(z)  # z is centred: the total scatter
    e, u = np.linalg.eigh(sw)
    white = u / np.sqrt(e)
    e2, u2 = np.linalg.eigh(white.T @ sb @ white)
    dims = max(1, min(out_dims, len(labels) - 1, k))
    return white @ u2[:, np.argsort(e2)[::-1][:dims]]


def _group_sum(z: np.ndarray, inverse: np.ndarray, out: np.ndarray) -> None:
    order = np.argsort(inverse, kind="stable")
    present, starts = np.unique(inverse[order], return_index=True)
    out[present] = np.add.reduceat(z[order], starts, axis=0)


def lda(x: np.ndarray, classes: np.ndarray, pca_dims: int, out_dims: int, ridge: float) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
    """(center, projection): PCA to pca_dims, then the Fisher directions of `classes` (regularised)."""
    center, basis = pca_basis(x, pca_dims)
    w = discriminant((x - center) @ basis, classes, out_dims, ridge)
    return center, (basis @ w).astype(np.float32)


class Clusters:
    """Tracklets joined into people, never across a cannot-link (union-find with the conflicts carried along)."""

    def __init__(self, n: int, cannot: set[tuple[int, int]]) -> None:
        self.parent = list(range(n))
        self.apart: dict[int, set[int]] = {}
        for i, j in cannot:
            self.apart.setdefault(i, set()).add(j)
            self.apart.setdefault(j, set()).add(i)

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int) -> bool:
        a, b = self.find(i), self.find(j)
        if a == b or b in self.apart.get(a, ()):
            return False
        if len(self.apart.get(a, ())) < len(self.apart.get(b, ())):
            a, b = b, a  # the larger conflict set survives: merging costs the smaller one
        self.parent[b] = a
        moved = self.apart.pop(b, set())
        if moved:
            self.apart.setdefault(a, set()).update(moved)
            for other in moved:
                peers = self.apart[other]
                peers.discard(b)
                peers.add(a)
        return True

    def labels(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))])


def tracklet_means(y: np.ndarray, ev: Evidence) -> np.ndarray:
    sums = np.zeros((ev.tracklets, y.shape[1]))
    _group_sum(y, ev.track_of, sums)
    return unit_rows(sums)


def pair_scores(t: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", t[pairs[:, 0]], t[pairs[:, 1]]) if len(pairs) else np.zeros(0, np.float32)


def _best_two(keys: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per key (0..n-1): its best and second-best score (-inf where absent)."""
    best = np.full(n, -np.inf)
    second = np.full(n, -np.inf)
    order = np.lexsort((-scores, keys))
    k, s = keys[order], scores[order]
    first = np.r_[True, k[1:] != k[:-1]]
    best[k[first]] = s[first]
    nxt = np.r_[False, first[:-1]] & ~first  # the row right after a group's first, same group
    second[k[nxt]] = s[nxt]
    return best, second


def select_links(pairs: np.ndarray, scores: np.ndarray, n: int, margin: float) -> list[tuple[int, int, float]]:
    """Successions (leaves, enters) kept as one person: each end's best candidate, ahead of the runner-up of
    either end by `margin`, one successor and one predecessor per tracklet, best first."""
    if len(pairs) == 0:
        return []
    best_out, second_out = _best_two(pairs[:, 0], scores, n)
    best_in, second_in = _best_two(pairs[:, 1], scores, n)
    i, j = pairs[:, 0], pairs[:, 1]
    ok = (scores >= best_out[i]) & (scores >= best_in[j]) & \
        (scores - np.maximum(second_out[i], second_in[j]) >= margin)
    out: list[tuple[int, int, float]] = []
    used_out: set[int] = set()
    used_in: set[int] = set()
    for k in np.nonzero(ok)[0][np.argsort(-scores[ok], kind="stable")]:
        a, b = int(i[k]), int(j[k])
        if a in used_out or b in used_in:
            continue
        used_out.add(a)
        used_in.add(b)
        out.append((a, b, float(scores[k])))
    return out


def nearest_impostors(t: np.ndarray, cannot: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Per eligible tracklet with a cannot-link: the score of its most similar known-different tracklet."""
    if len(cannot) == 0:
        return np.zeros(0)
    s = pair_scores(t, cannot)
    top = np.full(len(t), -np.inf)
    np.maximum.at(top, cannot[:, 0], s)
    np.maximum.at(top, cannot[:, 1], s)
    return top[eligible & np.isfinite(top)]


def calibrate(impostors: np.ndarray, max_false_merge: float, margin: float,
              linked: np.ndarray | None = None, linked_quantile: float = 0.1) -> float | None:
    """The score at most `max_false_merge` of the tracklets' nearest known impostors reach; where the
    pseudo-linked successions (one person, by the fit's own judgement) score clearly above it, halfway up to
    their low quantile: the impostors the cannot-links never show (people who are never on site at the same
    time) are nearer than the ones they do, so the gap between the two populations is used, not its edge."""
    if len(impostors) < 20:
        return None  # too little to say: the configured threshold stays
    floor = float(np.quantile(impostors, 1.0 - max_false_merge))
    if linked is not None and len(linked) >= 10:
        floor = max(floor, (floor + float(np.quantile(linked, linked_quantile))) / 2)
    return float(min(0.999, floor + margin))


def link_margin(config: FitConfig, r: int) -> float:
    return max(config.link_margin_min, config.link_margin * 0.5 ** r)


def fit(vectors: np.ndarray, cameras: Sequence[str], ev: Evidence, model: str, entity_type: str, version: int,
        config: FitConfig = FitConfig(), progress: Progress | None = None) -> Space:
    """A new space for (model, entity type) from unit raw vectors, their cameras and the evidence among them."""
    t0 = time.perf_counter()
    tell = progress or (lambda what, done: None)
    if ev.tracklets < config.min_tracklets:
        raise NotEnoughEvidence(f"{ev.tracklets} tracklets; at least {config.min_tracklets} are needed")
    means, site = camera_means(vectors, cameras, config.camera_prior)
    x = remove_bias(vectors, cameras, means)
    rng = np.random.default_rng(config.seed)
    sample = np.sort(rng.choice(len(x), config.max_rows, replace=False)) if len(x) > config.max_rows \
        else np.arange(len(x))
    tell("subspace", 0.05)
    # A small site (the first hour of a new install) cannot carry a wide space: its dimensions grow with the
    # evidence, so the discriminant never has more directions to fit than tracklets to fit them on.
    pca_dims = min(config.pca_dims, max(16, len(sample) // 2))
    out_dims = min(config.out_dims, max(8, ev.tracklets // 4))
    center, basis = pca_basis(x if len(sample) == len(x) else x[sample], pca_dims)
    z_all = x @ basis - center @ basis  # (n, k): every row, for the tracklet means
    z = z_all[sample]
    sizes = np.bincount(ev.track_of, minlength=ev.tracklets)
    pairs = np.array([(i, j) for i, j in ev.successions if sizes[i] >= config.min_link_rows
                      and sizes[j] >= config.min_link_rows], dtype=np.int64).reshape(-1, 2)

    def people(links: list[tuple[int, int, float]]) -> Clusters:
        clusters = Clusters(ev.tracklets, ev.cannot)
        for i, j in ev.same:  # the operator's word first: it always holds
            clusters.join(i, j)
        for i, j, _ in links:
            clusters.join(i, j)
        return clusters

    report: dict[str, Any] = {"evidence": ev.counts(), "rounds": []}
    clusters = people([])
    links: list[tuple[int, int, float]] = []
    w = discriminant(z, clusters.labels()[ev.track_of[sample]], out_dims, config.ridge)
    for r in range(config.rounds):
        tell("pseudo-labels", 0.1 + 0.8 * r / max(config.rounds, 1))
        t = tracklet_means(z_all @ w, ev)
        links = select_links(pairs, pair_scores(t, pairs), ev.tracklets, link_margin(config, r))
        clusters = people(links)
        report["rounds"].append({"linked": len(links), "margin": round(link_margin(config, r), 4)})
        w = discriminant(z, clusters.labels()[ev.track_of[sample]], out_dims, config.ridge)
    tell("threshold", 0.95)
    proj = (basis @ w).astype(np.float32)
    t = tracklet_means(z_all @ w, ev)
    cannot = np.array(sorted(ev.cannot), dtype=np.int64).reshape(-1, 2)
    impostors = nearest_impostors(t, cannot, sizes >= config.min_link_rows)
    linked = np.array([float(t[i] @ t[j]) for i, j, _ in links]) if config.rounds else None
    threshold = calibrate(impostors, config.max_false_merge, config.threshold_margin, linked)
    report.update(known_apart_tracklets=len(impostors), people=len(set(clusters.labels().tolist())),
                  fit_seconds=round(time.perf_counter() - t0, 2), rows=len(x), fitted_on=len(sample))
    tell("done", 1.0)
    return Space(version, model, entity_type, means, site, center, proj, threshold, report)
