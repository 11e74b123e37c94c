"""One adaptation of a (site, model, type): read its stored rows and the operator's labels, fit a space on
part of the evidence, judge it against the current space on the rest, and adopt it (refitted on all of it)
only if it is better. Runs in its own process (`reid-stream adapt`, or the worker's background learner starts
one), never on the writer's event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from reid_stream.config import Settings
from reid_stream.identity.matching import EntityEmbedding
from reid_stream.identity.topology import Topology
from reid_stream.learn import validate
from reid_stream.learn.evidence import Labels, Sighting, gather
from reid_stream.learn.fit import FitConfig, NotEnoughEvidence, fit
from reid_stream.learn.space import Space
from reid_stream.store.corrections import Corrections
from reid_stream.store.reid_store import ReidStore
from reid_stream.store.spaces import SpaceStore

Progress = Callable[[str, float], None]
TRIAL_ROWS = 30_000  # a trial fit's sample: the judgement costs three of them, the adopted space one full fit


@dataclass
class Outcome:
    site_id: str
    model: str
    entity_type: str
    current: int  # the version in force before
    version: int | None = None  # the version fitted (None: nothing fitted)
    adopted: bool = False
    reason: str = ""
    before: dict[str, Any] = field(default_factory=dict)  # held-out scores of the current space
    after: dict[str, Any] = field(default_factory=dict)  # ... and of the fitted one
    evidence: dict[str, int] = field(default_factory=dict)
    threshold: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sightings_of(rows: list[EntityEmbedding]) -> list[Sighting]:
    return [Sighting(r.detection_id, r.camera_id, r.track_key or f"det|{r.detection_id}", r.timestamp.timestamp())
            for r in rows]


async def labels_of(corrections: Corrections, rows: list[EntityEmbedding], model: str, etype: str) -> Labels:
    """The operator's word at detection level: the rows of an entity they named, watched or merged by hand are
    one person; the rows of two entities they split apart are two."""
    by_entity: dict[str, list[str]] = {}
    first_of_track: dict[tuple[str, str], str] = {}
    pinned = await corrections.pinned(model, etype)
    named = await corrections.names(etype)
    vouched: set[str] = set(named)
    for r in rows:
        eid = r.entity_id or r.detection_id
        key = r.track_key or f"det|{r.detection_id}"
        if (eid, key) not in first_of_track:  # a tracklet's first row speaks for it
            first_of_track[eid, key] = r.detection_id
            by_entity.setdefault(eid, []).append(r.detection_id)
        if key in pinned:
            vouched.add(eid)
    same = tuple((ids[0], other) for eid, ids in by_entity.items() if eid in vouched for other in ids[1:])
    apart = tuple((a, b) for pair in await corrections.apart(model, etype) if len(pair) == 2
                  for a in by_entity.get(sorted(pair)[0], []) for b in by_entity.get(sorted(pair)[1], []))
    return Labels(same, apart)


async def adapt(store: ReidStore, model: str, etype: str, config: FitConfig | None = None,
                progress: Progress | None = None, force: bool = False) -> Outcome:
    """Fit, judge and (if better, or `force`) adopt a new space for (model, type) at the store's site."""
    config = config or FitConfig()
    t0 = time.perf_counter()
    tell = progress or (lambda what, done: None)
    spaces = SpaceStore(store)
    current_version, current_data = await spaces.current(model, etype)
    out = Outcome(store.site, model, etype, current_version)
    dim = await spaces.raw_dim(model, etype)
    if dim is None:
        out.reason = "no stored detections of this model and type"
        return out
    tell("reading", 0.0)
    _, index = await store.load_index(model, etype, dim, ann=False)
    rows = index.items()
    labels = await labels_of(Corrections(store), rows, model, etype)
    settings: Settings = store.settings
    topology = Topology.load(settings.camera_topology) if settings.camera_topology else Topology()
    raw = np.stack([r.embedding for r in rows]) if rows else np.zeros((0, dim), np.float32)
    cameras = [r.camera_id for r in rows]
    version = await spaces.next_version(model, etype)
    out.version = version
    # The CPU work in a thread: this process's loop keeps its Redis connection alive meanwhile.
    result = await asyncio.to_thread(_fit_and_judge, raw, cameras, sightings_of(rows), topology, labels, model,
                                     etype, version, current_data, config, tell)
    if isinstance(result, str):
        out.reason = result
        out.seconds = round(time.perf_counter() - t0, 2)
        return out
    space, before, after = result
    out.before, out.after, out.evidence, out.threshold = before, after, space.report["evidence"], space.threshold
    ok, out.reason = validate.better(after, before)
    # `stored_at`: the writer's version counter, which every stored detection moves: the background learner
    # measures "new detections since" by it (the number of rows stops growing at REID_MAX_EMBEDDINGS).
    summary = {"at": time.time(), "threshold": space.threshold, "validation": after, "before": before,
               "evidence": out.evidence, "adopted": False, "reason": out.reason,
               "stored_at": await store.version(model, etype)}
    await spaces.save(model, etype, version, space.to_bytes(), summary)
    if ok or force:
        await spaces.adopt(model, etype, version, {**summary, "adopted": True, "forced": force and not ok})
        out.adopted = True
    await spaces.touch(model, etype)
    out.seconds = round(time.perf_counter() - t0, 2)
    tell("done", 1.0)
    return out


def _fit_and_judge(raw: np.ndarray, cameras: list[str], sightings: list[Sighting], topology: Topology,
                   labels: Labels, model: str, etype: str, version: int, current_data: bytes | None,
                   config: FitConfig, tell: Progress) -> tuple[Space, dict[str, Any], dict[str, Any]] | str:
    ev = gather(sightings, topology, labels)
    current = Space.from_bytes(current_data) if current_data is not None else Space.raw(model, etype)
    in_current = current.apply(raw, cameras)
    before_t, after_t = [], []
    trial_config = replace(config, max_rows=min(config.max_rows, TRIAL_ROWS))
    for fold in range(validate.FOLDS):  # each fold held out of a trial fit once, and judged in it
        parts = validate.split(ev, fold)
        try:
            trial = fit(raw[parts.fit_rows], [cameras[i] for i in parts.fit_rows], parts.fit, model, etype, version,
                        trial_config, lambda what, done, f=fold: tell(f"trial {f + 1}/{validate.FOLDS}: {what}",
                                                                0.7 * (f + done) / validate.FOLDS))
        except NotEnoughEvidence as exc:
            return f"not enough evidence yet: {exc}"
        before_t.append(validate.counts(in_current, ev, parts.held))
        after_t.append(validate.counts(trial.apply(raw, cameras), ev, parts.held))
    space = fit(raw, cameras, ev, model, etype, version, config,
                lambda what, done: tell(f"fit on all: {what}", 0.7 + 0.28 * done))
    after = validate.score(after_t)
    return replace(space, report={**space.report, "validation": after}), validate.score(before_t), after


async def rollback(store: ReidStore, model: str, etype: str, version: int) -> None:
    """Make an earlier version current again (0: the encoder's own space)."""
    spaces = SpaceStore(store)
    history = await spaces.history(model, etype)
    summary = {**history.get(version, {}), "at": time.time(), "adopted": True, "reason": "rollback"}
    await spaces.adopt(model, etype, version, summary)
