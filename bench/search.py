"""Top-10 nearest-neighbour search at scale on 768-d unit vectors: exact BLAS vs usearch, hnswlib and FAISS HNSW.

Usage: python bench/search.py [--sizes 10000,100000,1000000] [--queries 200] [--out bench/results]

Per size N it builds each index, tunes the search beam (ef) on a tuning query set until recall@10 >= 0.992,
then times single queries (1 thread) on a separate evaluation set and scores recall against exact search.
All HNSW libraries get the same graph parameters (M, ef_construction), so differences are implementation.
Self-contained on purpose: bench/common.py imports torch and the e2e harness, which this does not need.
"""

from __future__ import annotations

import os

# Before faiss loads: idle OpenMP workers would otherwise spin and steal one of our two cores from the
# single-threaded measurements of the other methods.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import ctypes
import faulthandler
import gc
import glob
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import faiss
import hnswlib
import matplotlib
import numpy as np
import usearch
from tqdm import tqdm
from usearch.index import Index as UsearchIndex

matplotlib.use("Agg")
import matplotlib.pyplot as plt

K = 10
CHUNK = 50_000  # generation/insert chunk; fixed so a smaller N is an exact prefix of a larger one
REPO = Path(__file__).resolve().parents[1]
EXACT_S_PER_ROW = 4e-7  # pessimistic single-thread GEMV cost per stored vector, for the time budget


@dataclass
class Settings:
    sizes: list[int]
    queries: int
    out: Path
    methods: list[str]
    dim: int = 768
    clusters: int = 2000
    noise: float = 0.5  # norm of the noise relative to the (unit) cluster centre
    spectrum_alpha: float = 1.0  # per-coordinate variance ~ (j+1)^-alpha: low intrinsic dimension, like CLIP
    seed: int = 20240611
    m: int = 16
    ef_construction: int = 128
    min_ef_construction: int = 40
    ef_grid: list[int] = field(default_factory=lambda: [10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192,
                                                        256, 320, 384, 512])
    target_recall: float = 0.99
    tune_queries: int = 1000  # separate from the eval queries, so the chosen ef is not fitted to them
    tune_margin: float = 0.002  # tune to 0.992 so sampling noise leaves the eval set at >= 0.99
    build_threads: int = os.cpu_count() or 1
    query_threads: int = 1
    budget_s: float = 45 * 60
    churn_max_n: int = 100_000


# --------------------------------------------------------------------------- machine and BLAS threads


class Blas:
    """numpy 2.x has no thread knob and threadpoolctl is not installed, so call the bundled OpenBLAS directly."""

    def __init__(self) -> None:
        self.lib: Any = None
        libs = glob.glob(str(Path(np.__file__).parent.parent / "numpy.libs" / "*openblas*"))
        if libs:
            lib = ctypes.CDLL(libs[0])
            if hasattr(lib, "scipy_openblas_set_num_threads64_"):
                self.lib = lib

    def threads(self) -> int | None:
        return int(self.lib.scipy_openblas_get_num_threads64_()) if self.lib else None

    def set_threads(self, n: int) -> None:
        if self.lib:
            self.lib.scipy_openblas_set_num_threads64_(ctypes.c_int(n))


BLAS = Blas()


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {"cores": os.cpu_count(), "cpu": cpu, "mem_gb": round(mem_kb / 2**20, 1),
            "numpy_blas_threads": BLAS.threads(), "python": platform.python_version(), "numpy": np.__version__,
            "usearch": usearch.__version__, "hnswlib": getattr(hnswlib, "__version__", "0.8.0"),
            "faiss": faiss.__version__, "faiss_omp_max_threads": faiss.omp_get_max_threads(),
            "loadavg_start": os.getloadavg(), "when": datetime.now(UTC).isoformat()}


def mem_total() -> int:
    return int(Path("/proc/meminfo").read_text().split()[1]) * 1024


def keep_all_fits(n: int, s: Settings) -> bool:
    """Keep every index of this size alive for the side-by-side pass only if that, with the data, stays under
    40% of RAM: the machine is shared (a 13 GB run at 1e6 was killed), so large sizes free each index at once."""
    vectors = n * s.dim * 4
    return vectors * (1 + 1.1 * len(s.methods)) <= 0.4 * mem_total()


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_memory() -> None:
    """Free the last index and hand its pages back to the OS, so the next index's RSS growth is its real size."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: RSS growth is then only approximate
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# --------------------------------------------------------------------------- data


def spectrum(dim: int, alpha: float) -> np.ndarray:
    """Per-coordinate std with power-law variance, scaled to unit expected squared norm."""
    std = np.arange(1, dim + 1, dtype=np.float64) ** (-alpha / 2)
    return (std / np.linalg.norm(std)).astype(np.float32)


def normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def centres(s: Settings) -> np.ndarray:
    rng = np.random.default_rng([s.seed, 0])
    return normalise(rng.standard_normal((s.clusters, s.dim), dtype=np.float32) * spectrum(s.dim, s.spectrum_alpha))


def noisy_points(s: Settings, centre: np.ndarray, n: int, stream: list[int]) -> np.ndarray:
    """Points = random centre + power-law noise of norm ~s.noise, normalised. `stream` seeds the RNG."""
    rng = np.random.default_rng([s.seed, *stream])
    labels = rng.integers(s.clusters, size=n)
    noise = rng.standard_normal((n, s.dim), dtype=np.float32) * (s.noise * spectrum(s.dim, s.spectrum_alpha))
    return normalise(centre[labels] + noise)


def corpus(s: Settings, centre: np.ndarray, n: int) -> np.ndarray:
    out = np.empty((n, s.dim), dtype=np.float32)  # 3 GB at 1e6: filled chunk by chunk, no temporaries of that size
    for start in tqdm(range(0, n, CHUNK), desc=f"generate {n:,}", unit="chunk", mininterval=2):
        stop = min(n, start + CHUNK)
        out[start:stop] = noisy_points(s, centre, stop - start, [1, start // CHUNK])
    return out


# --------------------------------------------------------------------------- exact search


def exact_one(matrix: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The ground-truth method as the service would run it: one GEMV, partial sort, sort the top 10."""
    scores = matrix @ q
    top = np.argpartition(scores, len(scores) - K)[-K:]
    return top[np.argsort(-scores[top])]


def exact_batch(matrix: np.ndarray, queries: np.ndarray, chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Top-K ids and scores for many queries via GEMM, chunked so the score matrix stays small."""
    best_s = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), K), dtype=np.int64)
    for start in range(0, len(matrix), chunk):
        scores = queries @ matrix[start:start + chunk].T
        take = np.argpartition(-scores, K - 1, axis=1)[:, :K] if scores.shape[1] > K else np.indices(scores.shape)[1]
        all_s = np.hstack([best_s, np.take_along_axis(scores, take, 1)])
        all_i = np.hstack([best_i, take + start])
        keep = np.argpartition(-all_s, K - 1, axis=1)[:, :K]
        best_s, best_i = np.take_along_axis(all_s, keep, 1), np.take_along_axis(all_i, keep, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1), np.take_along_axis(best_s, order, 1)


def per_query_recall(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.array([len(np.intersect1d(f, t)) / K for f, t in zip(found, truth, strict=True)])


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(per_query_recall(found, truth).mean())


def misses(found: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """HNSW on clustered data fails per query (a whole cluster not reached), not per neighbour: show which."""
    r = per_query_recall(found, truth)
    return {"queries_all_10": int((r == 1).sum()), "queries_below_half": int((r < 0.5).sum()),
            "min_query_recall": float(r.min())}


# --------------------------------------------------------------------------- HNSW adapters


class Ann(Protocol):
    name: str

    def add(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None: ...
    def set_ef(self, ef: int) -> None: ...
    def search(self, q: np.ndarray) -> np.ndarray: ...
    def reported_bytes(self) -> int | None: ...


class Usearch:
    name = "usearch"

    def __init__(self, s: Settings, capacity: int, efc: int) -> None:
        # "ip" on unit vectors equals cosine without re-normalising each vector.
        self.index = UsearchIndex(ndim=s.dim, metric="ip", dtype="f32", connectivity=s.m, expansion_add=efc)

    def add(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        self.index.add(keys, vectors, threads=threads)

    def set_ef(self, ef: int) -> None:
        self.index.expansion_search = ef

    def search(self, q: np.ndarray) -> np.ndarray:
        return self.index.search(q, K, threads=1).keys

    def remove(self, keys: np.ndarray) -> None:
        self.index.remove(keys)

    def reported_bytes(self) -> int | None:
        return int(self.index.memory_usage)


class Hnswlib:
    name = "hnswlib"

    def __init__(self, s: Settings, capacity: int, efc: int) -> None:
        self.index = hnswlib.Index(space="ip", dim=s.dim)
        # allow_replace_deleted: eviction must be able to reuse slots, capacity is fixed at init.
        self.index.init_index(max_elements=capacity, M=s.m, ef_construction=efc, random_seed=s.seed,
                              allow_replace_deleted=True)
        self.m, self.dim = s.m, s.dim

    def add(self, keys: np.ndarray, vectors: np.ndarray, threads: int, replace_deleted: bool = False) -> None:
        self.index.add_items(vectors, keys, num_threads=threads, replace_deleted=replace_deleted)

    def set_ef(self, ef: int) -> None:
        self.index.set_ef(ef)
        self.index.set_num_threads(1)

    def search(self, q: np.ndarray) -> np.ndarray:
        return self.index.knn_query(q, k=K, num_threads=1)[0][0]

    def remove(self, keys: np.ndarray) -> None:
        for key in keys:  # no batch API
            self.index.mark_deleted(int(key))

    def reported_bytes(self) -> int | None:
        """hnswlib reports nothing: estimate from hnswalg.h's layout, for the whole fixed capacity."""
        cap, m = self.index.get_max_elements(), self.m
        level0 = 2 * m * 4 + 4 + self.dim * 4 + 8  # links, vector, label
        per_element = level0 + 8 + 40 + 4 + 48  # upper-link pointer, mutex, level, label map entry
        return int(cap * per_element + cap / (m - 1) * (m * 4 + 4))


class Faiss:
    name = "faiss"

    def __init__(self, s: Settings, capacity: int, efc: int) -> None:
        self.index = faiss.IndexHNSWFlat(s.dim, s.m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = efc

    def add(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        assert keys[0] == self.index.ntotal, "IndexHNSWFlat numbers vectors sequentially"
        faiss.omp_set_num_threads(threads)
        self.index.add(vectors)

    def set_ef(self, ef: int) -> None:
        self.index.hnsw.efSearch = ef
        faiss.omp_set_num_threads(1)

    def search(self, q: np.ndarray) -> np.ndarray:
        return self.index.search(q[None, :], K)[1][0]

    def reported_bytes(self) -> int | None:
        h = self.index.hnsw
        return int(self.index.ntotal * self.index.d * 4 + h.neighbors.size() * 4 + h.offsets.size() * 8
                   + h.levels.size() * 4)


ADAPTERS: dict[str, Callable[[Settings, int, int], Any]] = {"faiss": Faiss, "usearch": Usearch, "hnswlib": Hnswlib}


# --------------------------------------------------------------------------- measurement


def interleaved(searchers: dict[str, Callable[[np.ndarray], np.ndarray]], queries: np.ndarray, desc: str = "",
                block: int = 20) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Time the methods in alternating blocks of `block` queries, rotating their order, so that load from other
    users of the machine hits all methods alike. Blocks rather than single queries, and one untimed warm-up query
    per block, because each index's hot upper layers would otherwise be evicted by the other indexes' queries,
    which no single-index service would see. Returns method -> (ids, per-query ms)."""
    names = list(searchers)
    ids = {m: np.zeros((len(queries), K), dtype=np.int64) for m in names}
    ms = {m: np.zeros(len(queries)) for m in names}
    starts = range(0, len(queries), block)
    for b, start in enumerate(tqdm(starts, desc=desc, leave=False, mininterval=5, disable=not desc)):
        for m in names[b % len(names):] + names[:b % len(names)]:
            searchers[m](queries[start - 1])  # warm-up: a neighbouring query, untimed
            for i in range(start, min(start + block, len(queries))):
                t0 = time.perf_counter_ns()
                found = searchers[m](queries[i])
                ms[m][i] = (time.perf_counter_ns() - t0) / 1e6
                ids[m][i, :len(found)] = found
    return {m: (ids[m], ms[m]) for m in names}


def timed_queries(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray,
                  desc: str = "") -> tuple[np.ndarray, np.ndarray]:
    return interleaved({"solo": search}, queries, desc)["solo"]


def latency(ms: np.ndarray) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "n_queries": len(ms)}


def build(ann: Any, data: np.ndarray, threads: int, desc: str) -> list[float]:
    """Incremental insert in CHUNK-sized batches, as the stream processor would; returns seconds per batch
    (a stall in one batch matters to a stream processor even if the total looks fine)."""
    chunk_s: list[float] = []
    with tqdm(total=len(data), desc=desc, unit="vec", unit_scale=True, mininterval=5) as bar:
        for start in range(0, len(data), CHUNK):
            stop = min(len(data), start + CHUNK)
            t0 = time.perf_counter()
            ann.add(np.arange(start, stop, dtype=np.int64), data[start:stop], threads)
            chunk_s.append(time.perf_counter() - t0)
            bar.update(stop - start)
    return chunk_s


def tune_ef(ann: Any, s: Settings, tune_q: np.ndarray, tune_truth: np.ndarray) -> tuple[int, list[dict[str, float]]]:
    """Smallest ef on the grid reaching target + margin on the tuning set (the largest if none does)."""
    sweep: list[dict[str, float]] = []
    for ef in s.ef_grid:
        ann.set_ef(max(ef, K))
        ids, ms = timed_queries(ann.search, tune_q)
        sweep.append({"ef": ef, "recall": recall(ids, tune_truth), "p50_ms": float(np.percentile(ms, 50))})
        if sweep[-1]["recall"] >= s.target_recall + s.tune_margin:
            return ef, sweep
    return s.ef_grid[-1], sweep


@dataclass
class Budget:
    """Keeps the run under s.budget_s by predicting each build from the same method's previous size."""

    total_s: float
    start: float = field(default_factory=time.perf_counter)
    history: dict[str, tuple[int, int, float]] = field(default_factory=dict)  # method -> (n, efc, build s)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def predict(self, method: str, n: int, efc: int) -> float | None:
        if method not in self.history:
            return None
        n0, efc0, t0 = self.history[method]
        # HNSW insert cost ~ log N per vector and ~linear in ef_construction (measured: 1e5 -> 1e6 came out
        # at 7-10x, under this model's 12x, so the log term doubles as the safety margin).
        return t0 * (n / n0) * (math.log(n) / math.log(n0)) * (efc / efc0)

    def plan_efc(self, methods: list[str], n: int, s: Settings, reserve_s: float) -> tuple[int, str]:
        """One ef_construction for every method at this size (a fair comparison), scaled down to fit the budget."""
        needs = [self.predict(m, n, s.ef_construction) for m in methods]
        if any(need is None for need in needs):
            return s.ef_construction, ""
        total, avail = sum(needs), self.total_s - self.elapsed() - reserve_s
        if total <= avail:
            return s.ef_construction, ""
        efc = max(s.min_ef_construction, int(s.ef_construction * avail / total) // 8 * 8)
        return efc, (f"ef_construction lowered {s.ef_construction}->{efc}: predicted builds {total:.0f}s "
                     f"> {avail:.0f}s left in the budget")

    def fits(self, method: str, n: int, efc: int, reserve_s: float) -> str:
        """Empty if this build is predicted to fit what is left of the budget, else the reason it is skipped."""
        need, avail = self.predict(method, n, efc), self.total_s - self.elapsed() - reserve_s
        if need is None or need <= avail:
            return ""
        return f"not measured: predicted build {need:.0f}s at ef_construction={efc} > {avail:.0f}s left in the budget"


def measure_exact(data: np.ndarray, eval_q: np.ndarray, eval_truth: np.ndarray) -> dict[str, Any]:
    """Timed alone: interleaved, its 3 GB scan at 1e6 would flush the caches the HNSW queries after it use."""
    BLAS.set_threads(1)
    row = {"method": "exact", "build_s": 0.0, "params": "BLAS GEMV, 1 thread", "rss_delta_bytes": data.nbytes,
           "reported_bytes": data.nbytes}
    score(row, "solo", *timed_queries(lambda q: exact_one(data, q), eval_q, desc=f"exact {len(data):,}"), eval_truth)
    return row


def measure_ann(method: str, data: np.ndarray, s: Settings, efc: int, queries: dict[str, np.ndarray],
                budget: Budget) -> tuple[dict[str, Any], Any]:
    n = len(data)
    release_memory()
    rss0 = rss_bytes()
    ann = ADAPTERS[method](s, n, efc)
    chunk_s = build(ann, data, s.build_threads, f"{method} build {n:,}")
    build_s = sum(chunk_s)
    budget.history[method] = (n, efc, build_s)
    index_bytes = rss_bytes() - rss0
    ef, sweep = tune_ef(ann, s, queries["tune"], queries["tune_truth"])
    ann.set_ef(ef)
    row = {"method": method, "build_s": build_s, "chunk_s": chunk_s, "slowest_chunk_s": max(chunk_s),
           "median_chunk_s": float(np.median(chunk_s)), "inserts_per_s": n / build_s, "m": s.m, "ef_construction": efc,
           "ef_search": ef, "params": f"M={s.m} efC={efc} ef={ef}", "tune_recall": sweep[-1]["recall"],
           "rss_delta_bytes": index_bytes, "reported_bytes": ann.reported_bytes(), "ef_sweep": sweep}
    # Timed alone now; replaced by the side-by-side pass if the index can stay in memory until then.
    score(row, "solo", *timed_queries(ann.search, queries["eval"], desc=f"{method} query {n:,}"),
          queries["eval_truth"])
    row["solo"] = {k: row[k] for k in ("p50_ms", "p99_ms", "recall")}
    return row, ann


def score(row: dict[str, Any], timing: str, ids: np.ndarray, ms: np.ndarray, truth: np.ndarray) -> None:
    row.update(timing=timing, recall=recall(ids, truth), **misses(ids, truth), **latency(ms),
               loadavg_1m=os.getloadavg()[0])


def churn(ann: Any, data: np.ndarray, s: Settings, centre: np.ndarray, queries: dict[str, np.ndarray]) -> dict:
    """Evict the oldest 10% by id and insert as many new vectors, as the service does; check recall afterwards."""
    n, evict = len(data), len(data) // 10
    old, new_keys = np.arange(evict), np.arange(n, n + evict)
    fresh = noisy_points(s, centre, evict, [3, n])
    before = ann.reported_bytes()
    t0 = time.perf_counter()
    ann.remove(old)
    remove_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if isinstance(ann, Hnswlib):  # capacity is fixed: the new vectors must take the deleted slots
        ann.add(new_keys, fresh, s.build_threads, replace_deleted=True)
    else:
        ann.add(new_keys, fresh, s.build_threads)
    add_s = time.perf_counter() - t0
    live = np.vstack([data[evict:], fresh])
    BLAS.set_threads(s.build_threads)
    truth = exact_batch(live, queries["eval"])[0] + evict  # live row r holds key r + evict
    ids, ms = timed_queries(ann.search, queries["eval"])
    return {"evicted": evict, "remove_s": remove_s, "add_s": add_s, "recall_after": recall(ids, truth),
            "evicted_ids_returned": int(np.isin(ids, old).sum()), "p50_ms_after": float(np.percentile(ms, 50)),
            "reported_bytes_before": before, "reported_bytes_after": ann.reported_bytes()}


def data_stats(data: np.ndarray, truth_scores: np.ndarray, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(len(data), size=(2, 2000))
    return {"cos_random_pair_mean": float(np.mean(np.sum(data[a] * data[b], axis=1))),
            "cos_query_nn1_mean": float(truth_scores[:, 0].mean()),
            "cos_query_nn10_mean": float(truth_scores[:, K - 1].mean())}


# --------------------------------------------------------------------------- one size


def side_by_side(kept: dict[str, Any], out: dict[str, Any], queries: dict[str, np.ndarray]) -> None:
    """The reported latencies: all kept indexes timed in alternating blocks of queries (see interleaved)."""
    if not kept:
        return
    rows = {r["method"]: r for r in out["rows"]}
    for method, ann in kept.items():
        ann.set_ef(rows[method]["ef_search"])  # also puts FAISS's OpenMP back to 1 thread
    timings = interleaved({m: ann.search for m, ann in kept.items()}, queries["eval"],
                          desc=f"side by side {out['n']:,}")
    for method, (ids, ms) in timings.items():
        score(rows[method], "interleaved", ids, ms, queries["eval_truth"])
        r = rows[method]
        print(f"  {method} side by side: p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, "
              f"recall {r['recall']:.4f}", flush=True)


def finish(method: str, ann: Any, data: np.ndarray, s: Settings, centre: np.ndarray,
           queries: dict[str, np.ndarray], out: dict[str, Any]) -> None:
    """Eviction check (mutates the index, so after timing), then free the index for the next one."""
    if method != "faiss" and len(data) <= s.churn_max_n:
        out["churn"][method] = churn(ann, data, s, centre, queries)
    del ann
    release_memory()


def run_size(n: int, full: np.ndarray, s: Settings, centre: np.ndarray, q: np.ndarray, budget: Budget,
             sizes_left: list[int], save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = full[:n]  # contiguous prefix view, no copy
    BLAS.set_threads(s.build_threads)  # ground truth is a batch job: use every core
    tune_q, eval_q = q[:s.tune_queries], q[s.tune_queries:]
    tune_truth = exact_batch(data, tune_q)[0]
    eval_truth, eval_scores = exact_batch(data, eval_q)
    queries = {"tune": tune_q, "tune_truth": tune_truth, "eval": eval_q, "eval_truth": eval_truth}
    out: dict[str, Any] = {"n": n, "data": data_stats(data, eval_scores, s.seed), "rows": [], "churn": {},
                           "notes": []}
    out["rows"].append(measure_exact(data, queries["eval"], eval_truth))
    print(f"  exact: p50 {out['rows'][-1]['p50_ms']:.2f} ms", flush=True)
    # Reserve ~60 s of tuning/query work per build still to come, plus the exact scans at later sizes.
    later = sum(EXACT_S_PER_ROW * m * s.queries + 60.0 * len(s.methods) for m in sizes_left)
    efc, note = budget.plan_efc(s.methods, n, s, later + 60.0 * len(s.methods))
    if note:
        print(f"  {note}", flush=True)
        out["notes"].append(f"@ {n:,}: {note}")
    kept: dict[str, Any] = {}
    keep = keep_all_fits(n, s)
    if not keep:
        out["notes"].append(f"@ {n:,}: indexes timed one at a time right after their build (keeping all "
                            f"{len(s.methods)} for a side-by-side pass would exceed 40% of RAM)")
    for i, method in enumerate(s.methods):
        skip = budget.fits(method, n, efc, later + 60.0 * (len(s.methods) - i))
        if skip:
            print(f"  {method}: {skip}", flush=True)
            out["notes"].append(f"{method} @ {n:,}: {skip}")
            out["rows"].append({"method": method, "skipped": skip})
            continue
        row, ann = measure_ann(method, data, s, efc, queries, budget)
        out["rows"].append(row)
        print(f"  {method}: build {row['build_s']:.1f}s (slowest {CHUNK:,} batch {row['slowest_chunk_s']:.1f}s, "
              f"median {row['median_chunk_s']:.1f}s), {row['params']}, alone: p50 {row['p50_ms']:.3f} ms, "
              f"recall {row['recall']:.4f}  [elapsed {budget.elapsed():.0f}s]", flush=True)
        if keep:
            kept[method] = ann
        else:
            finish(method, ann, data, s, centre, queries, out)
        save(out)  # a kill mid-size still leaves this method's numbers on disk
        del ann  # kept or finish() own it now; a stray reference here would keep 3 GB alive during the next build
    side_by_side(kept, out, queries)
    for method in list(kept):
        finish(method, kept.pop(method), data, s, centre, queries, out)
    faiss_row = next((r for r in out["rows"] if r["method"] == "faiss" and "p50_ms" in r), None)
    for r in out["rows"]:
        r["ratio_to_faiss_p50"] = r["p50_ms"] / faiss_row["p50_ms"] if faiss_row and "p50_ms" in r else None
    return out


# --------------------------------------------------------------------------- reports


def fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def markdown(results: list[dict[str, Any]], s: Settings, info: dict[str, Any]) -> str:
    lines = [f"# Top-{K} search, {s.dim}-d unit vectors, clustered synthetic data",
             "",
             f"{info['cpu']}, {info['cores']} cores; queries single-threaded, builds with {s.build_threads} threads; "
             f"{s.queries} eval queries; target recall@{K} >= {s.target_recall}. HNSW latencies come from a "
             "side-by-side pass (methods alternate in blocks of 20 queries, so other load on the machine hits them "
             "alike) where RAM allowed keeping every index, else each index is timed alone right after its build "
             "(see Notes); exact is timed alone. ef is the smallest reaching "
             f"{s.target_recall + s.tune_margin:.3f} on {s.tune_queries} separate tuning queries.",
             "",
             "| N | method | build s | p50 ms | p99 ms | recall@10 | ratio to FAISS p50 | params | RSS growth MB "
             f"| recall@10, {s.tune_queries} tuning queries | p50 ms timed alone |",
             "|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for res in results:
        for r in res["rows"]:
            if "skipped" in r:
                lines.append(f"| {res['n']:,} | {r['method']} | {r['skipped']} | | | | | | | | |")
                continue
            lines.append(f"| {res['n']:,} | {r['method']} | {r['build_s']:.1f} | {r['p50_ms']:.3f} | "
                         f"{r['p99_ms']:.3f} | {r['recall']:.4f} | {fmt(r.get('ratio_to_faiss_p50'), '.2f')} | "
                         f"{r['params']} | {r['rss_delta_bytes'] / 2**20:.0f} | {fmt(r.get('tune_recall'), '.4f')} | "
                         f"{fmt(r.get('solo', r)['p50_ms'], '.3f')} |")
    churn_rows = [(res["n"], m, c) for res in results for m, c in res["churn"].items()]
    if churn_rows:
        lines += ["", "Eviction churn (remove oldest 10% by id, insert as many new):", "",
                  "| N | method | remove s | add s | recall@10 after | evicted ids returned |",
                  "|---:|---|---:|---:|---:|---:|"]
        lines += [f"| {n:,} | {m} | {c['remove_s']:.3f} | {c['add_s']:.2f} | {c['recall_after']:.4f} | "
                  f"{c['evicted_ids_returned']} |" for n, m, c in churn_rows]
    notes = [note for res in results for note in res["notes"]]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    fig, (ax_lat, ax_rec) = plt.subplots(1, 2, figsize=(11, 4.5))
    methods = dict.fromkeys(r["method"] for res in results for r in res["rows"])
    for method in methods:
        pts = [(res["n"], r) for res in results for r in res["rows"] if r["method"] == method and "p50_ms" in r]
        if not pts:
            continue
        ns = [n for n, _ in pts]
        ax_lat.plot(ns, [r["p50_ms"] for _, r in pts], marker="o", label=method)
        ax_rec.plot(ns, [r["recall"] for _, r in pts], marker="o", label=method)
    ax_lat.set(xscale="log", yscale="log", xlabel="N stored vectors", ylabel="p50 latency, ms (1 thread)",
               title="Single-query p50 latency")
    ax_rec.set(xscale="log", xlabel="N stored vectors", ylabel=f"recall@{K}", title=f"recall@{K} vs exact")
    ax_rec.axhline(0.99, color="grey", linestyle="--", linewidth=0.8)
    for ax in (ax_lat, ax_rec):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--queries", type=int, default=200, help="timed eval queries per size")
    p.add_argument("--tune-queries", type=int, default=Settings.tune_queries, help="separate queries for tuning ef")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--methods", default="faiss,usearch,hnswlib", help="faiss first: every ratio needs it")
    p.add_argument("--m", type=int, default=Settings.m)
    p.add_argument("--ef-construction", type=int, default=Settings.ef_construction)
    p.add_argument("--budget-min", type=float, default=Settings.budget_s / 60)
    a = p.parse_args(argv)
    return Settings(sizes=sorted(int(x) for x in a.sizes.split(",")), queries=a.queries,
                    tune_queries=a.tune_queries, out=a.out,
                    methods=a.methods.split(","), m=a.m, ef_construction=a.ef_construction,
                    budget_s=a.budget_min * 60)


def describe_data(s: Settings) -> str:
    return (f"{s.clusters} centres c = normalise(z * std), z ~ N(0, I_{s.dim}), std_j = (j+1)^(-{s.spectrum_alpha}/2) "
            f"scaled to unit total variance (power-law spectrum, ~30 effective dimensions, like CLIP); "
            f"point = normalise(c[label] + {s.noise} * z' * std), z' ~ N(0, I), label uniform; queries are fresh "
            f"points of the same centres; numpy default_rng seeded [{s.seed}, stream, chunk]: stream 0 centres, "
            f"1 corpus in chunks of {CHUNK:,} (so smaller N is a prefix), 2 queries ({s.tune_queries} tuning then "
            f"{s.queries} eval), 3 churn inserts")


def write(results: list[dict[str, Any]], s: Settings, info: dict[str, Any], budget: Budget) -> None:
    s.out.mkdir(parents=True, exist_ok=True)
    payload = {"settings": asdict(s), "machine": info, "data": describe_data(s), "elapsed_s": budget.elapsed(),
               "loadavg_end": os.getloadavg(), "results": results}
    (s.out / "search.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (s.out / "search.md").write_text(markdown(results, s, info))
    plot(results, s.out / "search.png")


def main(argv: list[str] | None = None) -> None:
    faulthandler.enable()  # a crash inside a C++ library should at least leave a stack in the log
    s = parse(argv)
    budget = Budget(s.budget_s)
    info = machine()
    print(f"== search benchmark on {info['cores']} cores, {info['cpu']}, numpy BLAS threads "
          f"{info['numpy_blas_threads']}, {info['mem_gb']} GB RAM", flush=True)
    print(f"   versions: numpy {info['numpy']}, usearch {info['usearch']}, hnswlib {info['hnswlib']}, "
          f"faiss {info['faiss']}", flush=True)
    print(f"   settings: {json.dumps(asdict(s), default=str)}", flush=True)
    print(f"   data: {describe_data(s)}", flush=True)
    centre = centres(s)
    q = noisy_points(s, centre, s.tune_queries + s.queries, [2])  # first tune_queries tune ef, the rest are measured
    full = corpus(s, centre, max(s.sizes))
    results: list[dict[str, Any]] = []
    for i, n in enumerate(s.sizes):
        print(f"-- N = {n:,}  [elapsed {budget.elapsed():.0f}s]", flush=True)
        results.append(run_size(n, full, s, centre, q, budget, s.sizes[i + 1:],
                                lambda partial: write([*results, partial], s, info, budget)))
        write(results, s, info, budget)
    print(markdown(results, s, info), flush=True)
    print(f"== done in {budget.elapsed():.0f}s; wrote {s.out}/search.{{json,md,png}}", flush=True)


if __name__ == "__main__":
    main()
