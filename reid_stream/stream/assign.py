"""Stage 2, free of Kafka: match each embedded detection, decide its entity, store it.

The only stage that creates entities: its input is keyed by site and entity type, so each (site, type) has
one writer.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

import numpy as np

from reid_stream.config import Settings
from reid_stream.errors import DetectionError, DimensionMismatch
from reid_stream.events import (
    Candidate,
    DeadLetter,
    EntityAppearance,
    MatchEvent,
    MatchRef,
    TrackletRef,
    complete,
)
from reid_stream.identity.decide import Decider, Decision, Incoming, Merge, Policy, quality, track_key
from reid_stream.identity.gallery import SINGLE, Gallery, Row
from reid_stream.identity.matching import Assignment, EntityEmbedding, VectorIndex, assign_entity, merge_matches
from reid_stream.identity.topology import Topology
from reid_stream.learn.space import Space
from reid_stream.lru import Lru
from reid_stream.metrics import Metrics
from reid_stream.store.corrections import Corrections, Named
from reid_stream.store.reid_store import CommitResult, PlannedWrite, ReidStore
from reid_stream.store.spaces import SpaceStore
from reid_stream.store.watch import Enrolments, Watchlist, alert_for
from reid_stream.stream.wire import EmbeddedRecord, dead_letter

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_CONFLICT_RETRIES = 20
COMMIT_CHUNK = 256  # detections per commit: the next chunk is planned while Redis stores this one
PLAN_SLICE = 32  # detections planned between two turns of the event loop
THREADED_PRODUCTS_MIN = 64  # smaller batches (a paced stream) compute their products inline: no thread hand-off
SIMILARITY_DIGITS = 6
MAX_CACHED = 256  # (model, site, type) copies a worker keeps, and sites' correction readers


@dataclass
class _TypeCache:
    version: int
    index: VectorIndex  # every stored row, in the site's space: the detection-level matches of each event
    gallery: Gallery  # the same rows as tracklets and entity prototypes: who each detection is
    names: dict[str, Named] = field(default_factory=dict)  # operators' names, trust and watch labels
    enrolments: Enrolments | None = None  # the watch list's enrolled looks (in the encoder's own space)
    space: Space | None = None  # the site's similarity space; None: the encoder's own
    raw_dim: int = 0  # the encoder's dimension (stored rows stay in it)
    policy: Policy | None = None  # the identity rules with the space's threshold

    @property
    def threshold(self) -> float:
        assert self.policy is not None
        return self.policy.threshold

    @property
    def space_version(self) -> int:
        return self.space.version if self.space is not None else 0

    def project(self, raw: np.ndarray, cameras: Sequence[str]) -> np.ndarray:
        return raw if self.space is None else self.space.apply(raw, cameras)


@dataclass
class _Site:
    """One site's store and the operators' state read with it."""

    store: ReidStore
    corrections: Corrections
    watchlist: Watchlist


_CONFLICT = ("detection_id_conflict", "a different detection with this detection_id was already processed")


@dataclass
class _Triage:
    """A site's share of a batch against its markers: what is fresh, what was stored before (re-emitted as
    stored), what reuses a stored id for other content (a dead letter), and exact in-batch repeats."""

    batch: list[EmbeddedRecord]
    markers: dict[str, dict[str, Any]]
    fresh: list[EmbeddedRecord]
    seen: dict[str, str]  # detection id -> the fingerprint of its first fresh copy
    events: list[MatchEvent]
    letters: list[DeadLetter]

    @classmethod
    def of(cls, batch: list[EmbeddedRecord], markers: dict[str, dict[str, Any]]) -> _Triage:
        seen: dict[str, str] = {}
        fresh: list[EmbeddedRecord] = []
        events: list[MatchEvent] = []
        letters: list[DeadLetter] = []
        for item in batch:
            det_id = item.detection_id
            known = markers.get(det_id, {}).get("fp") or seen.get(det_id)
            if known is None:
                seen[det_id] = item.fingerprint
                fresh.append(item)
            elif known != item.fingerprint:
                letters.append(dead_letter(item.source, DetectionError(*_CONFLICT, "store"), det_id))
            elif det_id in markers:  # a redelivery: publish the stored outcome again, store nothing
                events.append(MatchEvent.model_validate(markers[det_id]["event"]))
        return cls(batch, markers, fresh, seen, events, letters)

    def outcome(self, events: list[MatchEvent], letters: list[DeadLetter]) -> tuple[list[MatchEvent], list[DeadLetter]]:
        """Given the fresh detections' outcome: the site's events and dead letters, exact in-batch repeats
        following their first copy's outcome."""
        out = self.events + events
        by_id = {e.detection_id: e for e in out}
        fresh_ids = {id(item) for item in self.fresh}
        for item in self.batch:
            det_id = item.detection_id
            if (det_id not in self.markers and id(item) not in fresh_ids and self.seen.get(det_id) == item.fingerprint
                    and det_id in by_id):
                out.append(by_id[det_id])
        return out, self.letters + letters


async def _all(coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """gather(), but a failure cancels the rest and waits for them: a retry of the batch must not run
    beside a group of the failed attempt (two writers of one copy)."""
    if len(coros) == 1:
        return [await coros[0]]
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _row(e: EntityEmbedding) -> Row:
    # A copy: the index's embeddings are views of its matrix, whose rows move when others are evicted, and the
    # gallery subtracts a row's vector when it leaves.
    return Row(e.detection_id, e.entity_id or e.detection_id, e.track_key or f"{SINGLE}{e.detection_id}", e.camera_id,
               e.timestamp.timestamp(), np.array(e.embedding, dtype=np.float32), e.quality, e.plate)


def policy_of(settings: Settings, threshold: float | None = None) -> Policy:
    """The identity rules' settings (at a space's own threshold, when it has one); a camera topology file is
    read (and checked) here."""
    topology = Topology.load(settings.camera_topology) if settings.camera_topology else Topology()
    t = settings.similarity_threshold if threshold is None else threshold
    return Policy(t, settings.match_margin, settings.ambiguous_policy, min(1.0, t + settings.merge_margin), topology,
                  settings.match_top_k)


def in_space(index: VectorIndex, space: Space, ann_min_size: int) -> VectorIndex:
    """The stored rows (raw vectors) projected into the site's space: what the writer searches."""
    items = index.items()
    projected = space.apply(np.stack([e.embedding for e in items]), [e.camera_id for e in items]) if items \
        else np.zeros((0, 0), np.float32)
    out = VectorIndex(space.dim(index.dim), capacity=max(1024, len(items)))
    for e, vec in zip(items, projected, strict=True):
        out.add(replace(e, embedding=vec))
    out.enable_ann(ann_min_size)
    return out


class _Products(NamedTuple):
    vectors: np.ndarray  # the batch, a row per detection, in the site's space
    raw: np.ndarray  # the same in the encoder's own space (the watch list's enrolments are in it)
    stored: list[list[tuple[EntityEmbedding, float]]]  # per detection, its best stored rows
    gram: np.ndarray  # the batch against itself
    entities: np.ndarray | None  # the batch against every entity slot (the entity rule's Gallery.scores)


class Assigner:
    """Stage 2: match each embedded detection, decide its entity and store it. The single writer of a (site, type).

    It keeps a local copy of the type's embeddings and trusts it only while Redis' version counter says
    nobody else wrote; any other writer makes the commit fail with 'conflict', and the copy is reloaded.
    """

    def __init__(self, settings: Settings, store: ReidStore, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics or Metrics()
        self.policy = policy_of(settings)
        # By (model, site, type): a worker keeps the copies of the latest MAX_CACHED only (its partitions' sites
        # move away in a rebalance); one dropped is read again when needed.
        self._caches: Lru[tuple[str, str, str], _TypeCache] = Lru(MAX_CACHED)
        self._sites: Lru[str, _Site] = Lru(MAX_CACHED)
        # The last batch's stored events as the marker holds them, by (site, detection id).
        self._json: dict[tuple[str, str], str] = {}
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="reid-assign")  # the batch's matrix products

    def event_json(self, event: MatchEvent) -> str:
        """The event's JSON: the text stored with it when this batch stored it (serialised once), else fresh."""
        text = self._json.get((event.site_id, event.detection_id))
        return text if text is not None else event.model_dump_json()

    def invalidate(self) -> None:
        self._caches.clear()

    def shards(self) -> list[tuple[str, str, str]]:
        """The (model, site, type)s this writer holds a copy of: the ones it decides for now."""
        return list(self._caches)

    def _site(self, site_id: str) -> _Site:
        def make() -> _Site:
            store = self.store.for_site(site_id)
            corrections = Corrections(store)
            return _Site(store, corrections, Watchlist(store, corrections))

        return self._sites.get_or_make(site_id, make)

    async def _cache(self, site: _Site, model: str, etype: str, dim: int, current: int | None = None) -> _TypeCache:
        """The local copy, trusted while the version in Redis (`current`, when the batch already read it) is its."""
        key = (model, site.store.site, etype)
        cache = self._caches.get(key)
        if current is None:
            current = await site.store.version(model, etype)
        if cache is None or cache.version != current or cache.raw_dim != dim:
            space = await self._space(site, model, etype, dim)
            version, index = await site.store.load_index(model, etype, dim)
            if space is not None:
                index = in_space(index, space, self.settings.ann_min_size)
            gallery = Gallery(index.dim)
            for row in index.items():
                gallery.add(_row(row))
            # Read after the rows: a correction in between moved the version, so this copy's next commit
            # conflicts and it is read again: names and pairs are never older than the rows.
            gallery.apart = await site.corrections.apart(model, etype)
            gallery.pinned = await site.corrections.pinned(model, etype)
            names = await site.corrections.names(etype)
            enrolments = await site.watchlist.enrolments(model, etype, dim)
            policy = self.policy if space is None or space.threshold is None else policy_of(self.settings,
                                                                                             space.threshold)
            self._report_space(site.store.site, etype, space, cache)
            cache = self._caches.put(key, _TypeCache(version, index, gallery, names, enrolments, space, dim, policy))
        return cache

    def _report_space(self, site_id: str, etype: str, space: Space | None, old: _TypeCache | None) -> None:
        version = space.version if space is not None else 0
        m = self.metrics
        if old is not None and old.space_version != version:
            m.space_adoptions.labels(site_id, etype).inc()
        m.space_version.labels(site_id, etype).set(version)
        report = space.report if space is not None else {}
        m.space_validation.labels(site_id, etype).set((report.get("validation") or {}).get("score") or 0.0)
        for kind, n in (report.get("evidence") or {}).items():
            m.space_evidence.labels(site_id, etype, kind).set(n)

    async def _space(self, site: _Site, model: str, etype: str, dim: int) -> Space | None:
        """The site's current space for (model, type), read before the rows: an adoption moves the version, so
        a copy read across one conflicts at its first commit and is read again. None: the encoder's own.
        A copy reloaded for another cause (a correction, a conflict) reuses the space it had: versions never
        change their bytes, so the version alone says whether it is the one in force."""
        spaces = SpaceStore(site.store)
        version, _ = await spaces.current_version(model, etype)
        if not version:
            return None
        held = self._caches.get((model, site.store.site, etype))
        if held is not None and held.space is not None and held.space.version == version and held.raw_dim == dim:
            return held.space
        data = await spaces.blob(model, etype, version)
        try:
            space = Space.from_bytes(data) if data is not None else None
        except (ValueError, KeyError, OSError) as exc:
            space, data = None, exc
        if space is None or space.projection is None or space.projection.shape[0] != dim or space.model != model:
            # Never guess: a space that does not fit this encoder is not used, and says so every reload.
            log.error("site %s: similarity space v%d of %s/%s unusable (%r); using the encoder's own space",
                      site.store.site, version, model, etype, data if data is None or isinstance(data, Exception)
                      else "another model or dimension")
            return None
        return space

    def _plan(self, item: EmbeddedRecord, matches: list[tuple[EntityEmbedding, float]], decision: Decision | None,
              now: float, incoming: Incoming, cache: _TypeCache,
              enrolled: tuple[str, str, float] | None = None) -> PlannedWrite:
        # Built without validation (`complete`, model_construct without its per-field handling): every value
        # comes from a detection stage 1 validated, and building the models was a measurable share of this
        # single-writer stage.
        # One rounding for both: the match event and the appearance report the same value.
        refs = [complete(MatchRef, detection_id=m.detection_id, entity_id=m.entity_id or m.detection_id,
                         camera_id=m.camera_id, timestamp=m.timestamp, similarity=round(score, SIMILARITY_DIGITS))
                for m, score in matches]
        extra: dict[str, object] = {}
        if decision is None:  # the nearest-detection rule
            assignment = assign_entity(item.detection_id, matches, cache.threshold)
            similarity = 1.0 if assignment.is_new_entity else refs[0].similarity  # the founder is itself
            extra["decision"] = "new" if assignment.is_new_entity else "joined"
            extra["ambiguous"], extra["candidates"], extra["tracklet"] = False, [], None
        else:
            similarity = next((c.similarity for c in decision.candidates if c.entity_id == decision.entity_id), 1.0)
            assignment = Assignment(decision.entity_id, decision.kind == "new", None if decision.kind == "new"
                                    else similarity)
            extra = {"decision": decision.kind, "ambiguous": decision.ambiguous, "candidates": [
                complete(Candidate, entity_id=c.entity_id, similarity=c.similarity, refused=c.refused)
                for c in decision.candidates]}
            extra["tracklet"] = complete(TrackletRef, key=incoming.track_key, detections=decision.track_rows,
                                         redecided_from=decision.redecided_from) if incoming.has_track else None
        named = cache.names.get(assignment.entity_id)
        processed_at = datetime.now(UTC)
        event = complete(
            MatchEvent,
            detection_id=item.detection_id, entity_id=assignment.entity_id, is_new_entity=assignment.is_new_entity,
            entity_type=item.entity_type, site_id=item.site_id, camera_id=item.camera_id,
            camera_name=item.camera_name, track_id=item.track_id, timestamp=item.timestamp, model=item.model,
            matches=refs, processed_at=processed_at, entity_name=named.name if named else None,
            trust=named.trust if named else None, plate=item.plate, space_version=cache.space_version, **extra)
        appearance = complete(
            EntityAppearance,
            detection_id=item.detection_id, camera_id=item.camera_id, camera_name=item.camera_name or item.camera_id,
            timestamp=item.timestamp, similarity_score=similarity, attributes=item.attributes, thumbnail_url="")
        alert = None
        if enrolled is not None or (named is not None and named.watch):
            alert = alert_for(named, enrolled, detection_id=item.detection_id, entity_id=assignment.entity_id,
                              is_new=assignment.is_new_entity, similarity=similarity, entity_type=item.entity_type,
                              camera_id=item.camera_id, camera_name=item.camera_name, timestamp=item.timestamp,
                              model=item.model, now=processed_at, site_id=item.site_id)
        return PlannedWrite(event, item.vector, assignment, item.fingerprint, appearance, now, item.image_ref,
                            incoming.track_key if incoming.has_track else "", incoming.quality, alert)

    async def assign(self, batch: Sequence[EmbeddedRecord]) -> tuple[list[MatchEvent], list[DeadLetter]]:
        """Match events for every detection (stored ones re-emitted as stored) and dead letters.

        Raises only on infrastructure errors (Redis down); the caller retries the whole batch.
        """
        self._json.clear()
        by_site: dict[str, list[EmbeddedRecord]] = {}
        for item in batch:
            by_site.setdefault(item.site_id, []).append(item)
        # Every site's markers and every (site, model, type)'s version in one round trip, not two per group.
        shards = sorted({(item.site_id, item.model, item.entity_type) for item in batch})
        markers, versions = await self.store.batch_state(
            {site_id: list({item.detection_id for item in items}) for site_id, items in by_site.items()}, shards)
        triaged = {site_id: _Triage.of(items, markers.get(site_id, {})) for site_id, items in by_site.items()}
        groups: dict[tuple[str, str, str], list[EmbeddedRecord]] = {}
        for site_id, triage in triaged.items():
            for item in triage.fresh:
                groups.setdefault((site_id, item.model, item.entity_type), []).append(item)
        # Each group is its own (site, type)'s writer, with its own copy and version: while one waits on Redis
        # (reads, commits), another plans.
        results = await _all([self._assign_group(self._site(site_id), model, etype, items, versions[site_id, model,
                              etype]) for (site_id, model, etype), items in groups.items()])
        found: dict[str, tuple[list[MatchEvent], list[DeadLetter]]] = {site_id: ([], []) for site_id in by_site}
        for (site_id, _model, _etype), (group_events, group_letters) in zip(groups, results, strict=True):
            found[site_id][0].extend(group_events)
            found[site_id][1].extend(group_letters)
        events: list[MatchEvent] = []
        letters: list[DeadLetter] = []
        for site_id, triage in triaged.items():
            site_events, site_letters = triage.outcome(*found[site_id])
            events += site_events
            letters += site_letters
        return events, letters

    async def _products(self, items: list[EmbeddedRecord], cache: _TypeCache) -> _Products:
        """A batch's matrix products: against the stored rows, the entities' prototypes, and itself. Large
        batches compute them in threads: BLAS lets go of the GIL, so the event loop (stage 1, the views) runs
        meanwhile, and this single-writer stage holds the loop for its Python work only."""
        k, threshold = self.settings.match_top_k, cache.threshold
        raw = np.stack([i.vector for i in items])
        vectors = cache.project(raw, [i.camera_id for i in items])
        decided = self.settings.assignment == "entity"
        if decided:
            cache.gallery.reserve(len(items))  # what Decider.prime does first: the slots stay put from here
            cache.gallery.refresh()
        if len(items) < THREADED_PRODUCTS_MIN:
            return _Products(vectors, raw, cache.index.search_many(vectors, k, threshold), vectors @ vectors.T,
                             cache.gallery.scores(vectors, refresh=False) if decided else None)
        loop = asyncio.get_running_loop()
        stored = loop.run_in_executor(self._pool, cache.index.search_many, vectors, k, threshold)
        entities = loop.run_in_executor(self._pool, cache.gallery.scores, vectors, False) if decided else None
        gram = vectors @ vectors.T
        return _Products(vectors, raw, await stored, gram, await entities if entities is not None else None)

    async def _plan_batch(self, items: list[EmbeddedRecord], cache: _TypeCache, now: float,
                          products: _Products) -> tuple[list[PlannedWrite], list[Merge]]:
        """Match a batch in order: against the stored vectors, and against the batch's earlier items
        (each with the entity it was just given), both from the products; then decide who each is."""
        # The cyclic collector waits while a chunk is planned and runs once after it: planning allocates
        # thousands of short-lived objects, and a collection every few hundred of them re-traversed the
        # survivors over and over (~10% of its CPU). Memory is freed by reference counts as before; only
        # cycles wait the few milliseconds.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return await self._plan_chunk(items, cache, now, products)
        finally:
            if collecting:
                gc.enable()

    async def _plan_chunk(self, items: list[EmbeddedRecord], cache: _TypeCache, now: float,
                          products: _Products) -> tuple[list[PlannedWrite], list[Merge]]:
        k, threshold = self.settings.match_top_k, cache.threshold
        vectors, stored, sims = products.vectors, products.stored, products.gram
        earlier: dict[int, list[int]] = {}
        for i, j in zip(*np.nonzero(np.tril(sims >= threshold, k=-1)), strict=True):
            earlier.setdefault(int(i), []).append(int(j))
        entries: list[EntityEmbedding] = []
        plans = []
        merges: list[Merge] = []
        decider = Decider(cache.gallery, cache.policy or self.policy) if self.settings.assignment == "entity" \
            else None
        if decider is not None:
            decider.prime(vectors, [i.detection_id for i in items], gram=sims, scores=products.entities)
        watched = cache.enrolments.best(products.raw, self.settings.watch_min_similarity) if cache.enrolments else []
        ens = cache.enrolments
        for n, (item, prior) in enumerate(zip(items, stored, strict=True)):
            if n and not n % PLAN_SLICE:
                # Let the loop run between slices: stage 1's decoded and encoded batches come back through it,
                # and holding it for a whole chunk (tens of ms) was most of a detection's latency under load.
                # Nothing else touches this (site, type)'s copy meanwhile: the batch is its only writer.
                await asyncio.sleep(0)
            near = earlier.get(n)  # most detections match none of the batch's earlier ones
            in_batch = sorted(((entries[j], float(sims[n, j])) for j in near), key=lambda m: -m[1]) if near else []
            key, has_track = track_key(item.camera_id, item.track_id, item.detection_id)
            vector = vectors[n]  # in the site's space; the stored row keeps item.vector, the encoder's
            incoming = Incoming(item.detection_id, item.camera_id, item.timestamp.timestamp(), vector, key,
                                quality(item.bbox), has_track, item.plate)
            decision = decider.decide(incoming, primed=n) if decider is not None else None
            hit = watched[n] if watched else None
            enrolled = (ens.ids[hit[0]], ens.labels[hit[0]], hit[1]) if hit is not None and ens is not None else None
            plan = self._plan(item, merge_matches(prior, in_batch[:k], limit=k), decision, now, incoming,
                              cache, enrolled)
            plans.append(plan)
            entry = EntityEmbedding(item.detection_id, item.camera_id, item.entity_type, item.timestamp, vector,
                                    entity_id=plan.assignment.entity_id, model=item.model, stored_at=now,
                                    track_key=plan.track_key, quality=plan.quality, plate=item.plate)
            entries.append(entry)
            # Kept in the cache only if the commit succeeds (a failed one drops the cache).
            cache.index.add(entry)
            # The batch's own vector, not the index's view of it (rows move there on eviction); nothing
            # writes to it, so it needs no copy.
            cache.gallery.add(Row(item.detection_id, plan.assignment.entity_id, key, item.camera_id,
                                  incoming.ts, vector, plan.quality, item.plate))
            if decision is not None and decision.merge is not None:
                merges.append(decision.merge)
                self._merge_locally(cache, decision.merge)
        if decider is not None:
            touched = {p.assignment.entity_id for p in plans} - {m.merged for m in merges}
            for merge in decider.convergent(touched):
                merges.append(merge)
                self._merge_locally(cache, merge)
        return plans, merges

    @staticmethod
    def _merge_locally(cache: _TypeCache, merge: Merge) -> None:
        cache.gallery.merge(merge.survivor, merge.merged)
        cache.index.rename_entity(merge.merged, merge.survivor)

    async def _assign_group(self, site: _Site, model: str, etype: str, items: list[EmbeddedRecord],
                            version: int | None = None) -> tuple[list[MatchEvent], list[DeadLetter]]:
        """Plan and store a group in chunks, pipelined: chunk i+1 is planned while Redis runs chunk i's
        commit. Chunk i+1 expects the version chunk i leaves, and is sent only once chunk i was stored whole,
        so the chain is exactly one batch's compare-and-set; at the first detection not stored, the local
        copy is dropped and everything not stored is planned again on a fresh one."""
        items, letters = await self._of_stored_dimension(site, model, etype, items, version)
        if not items:
            return [], letters
        commits: list[asyncio.Future[list[CommitResult]]] = []
        try:
            events, stored_letters = await self._assign_chunks(site, model, etype, items, version, commits)
            return events, letters + stored_letters
        except BaseException:
            # Failed, or cancelled because a sibling group failed: the copy may hold planned rows that were never
            # stored (at the version Redis still has, so a retry would trust them), and a commit may still be on
            # its way. Neither may outlive this attempt: the batch's retry reads the copy again, alone.
            self._caches.pop((model, site.store.site, etype))
            for commit in commits:
                commit.cancel()
            await asyncio.gather(*commits, return_exceptions=True)
            raise

    async def _of_stored_dimension(self, site: _Site, model: str, etype: str, items: list[EmbeddedRecord],
                                   version: int | None) -> tuple[list[EmbeddedRecord], list[DeadLetter]]:
        """The items whose vectors have as many numbers as the model's stored ones (the first item's count when
        none are stored), and dead letters for the others: compared, they would score nonsense."""
        dim, usable = items[0].vector.shape[0], True
        for attempt in range(2):
            try:
                await self._cache(site, model, etype, dim, version)
                break
            except DimensionMismatch as err:
                dim = err.stored
                usable = attempt == 0  # twice: the stored rows disagree among themselves, nothing fits them
        fits = [i for i in items if usable and i.vector.shape[0] == dim]
        letters = [dead_letter(i.source, DimensionMismatch(i.vector.shape[0], dim, model).as_detection_error(),
                               i.detection_id) for i in items if not (usable and i.vector.shape[0] == dim)]
        return fits, letters

    async def _assign_chunks(self, site: _Site, model: str, etype: str, items: list[EmbeddedRecord],
                             version: int | None, commits: list[asyncio.Future[list[CommitResult]]]
                             ) -> tuple[list[MatchEvent], list[DeadLetter]]:
        out: list[MatchEvent] = []
        letters: list[DeadLetter] = []
        pending = items
        for _attempt in range(MAX_CONFLICT_RETRIES):
            t0 = time.perf_counter()
            cache = await self._cache(site, model, etype, pending[0].vector.shape[0], version)
            version = None  # a retry reads it again
            now = time.time()
            cache.gallery.remove(cache.index.expire(now - self.settings.embedding_ttl_seconds))
            chunks = [pending[i:i + COMMIT_CHUNK] for i in range(0, len(pending), COMMIT_CHUNK)]
            expected = cache.version
            merges: list[Merge] = []
            inflight: tuple[list[EmbeddedRecord], list[PlannedWrite], asyncio.Future[list[CommitResult]]] | None = None
            redo: list[EmbeddedRecord] = []
            whole = True
            for n, chunk in enumerate(chunks):
                products = await self._products(chunk, cache)  # threads: the previous commit goes out meanwhile
                plans, chunk_merges = await self._plan_batch(chunk, cache, now, products)
                merges += chunk_merges
                self.metrics.stage("match", time.perf_counter() - t0)
                if inflight is not None:
                    redo, whole = await self._stored(cache, *inflight, out, letters)
                    if not whole:  # not stored whole: this chunk and the rest are planned again on a fresh copy
                        redo += [item for later in chunks[n:] for item in later]
                        break
                t0 = time.perf_counter()
                inflight = (chunk, plans, asyncio.ensure_future(site.store.commit(plans, expected)))
                commits.append(inflight[2])
                expected += len(plans)
                await asyncio.sleep(0)  # let the commit go out before the next chunk holds the loop
            else:
                assert inflight is not None
                redo, whole = await self._stored(cache, *inflight, out, letters)
            if not whole:
                # The local copy holds tentative rows that were not stored: reload it.
                self._caches.pop((model, site.store.site, etype))
            elif merges:
                await self._commit_merges(site, model, etype, cache, merges)
            if not redo:
                return out, letters
            log.info("assignment conflict on %s/%s: %d detections re-matched", model, etype, len(redo))
            pending = redo
        raise RuntimeError(f"gave up after {MAX_CONFLICT_RETRIES} assignment conflicts on {model}/{etype}")

    async def _stored(self, cache: _TypeCache, chunk: list[EmbeddedRecord], plans: list[PlannedWrite],
                      commit: asyncio.Future[list[CommitResult]], out: list[MatchEvent],
                      letters: list[DeadLetter]) -> tuple[list[EmbeddedRecord], bool]:
        """A chunk's commit, awaited and applied to the local copy: its detections to plan again, and whether
        it was stored whole (else the copy holds tentative rows that are not in Redis)."""
        t0 = time.perf_counter()
        results = await commit
        self.metrics.stage("store", time.perf_counter() - t0)
        redo: list[EmbeddedRecord] = []
        for item, plan, res in zip(chunk, plans, results, strict=True):
            if res.status == "ok":
                cache.version = res.version or cache.version
                if res.alert:
                    self.metrics.alerts.labels(res.alert).inc()
                if res.evicted:
                    cache.index.remove(list(res.evicted))
                    cache.gallery.remove(list(res.evicted))  # the gallery holds exactly the stored rows
                out.append(plan.event)
                self._json[item.site_id, item.detection_id] = plan.event_json()
            elif res.status == "dup" and res.marker is not None:
                # Stored meanwhile by another writer: same content re-emits, different content is a conflict.
                if res.marker["fp"] == item.fingerprint:
                    out.append(MatchEvent.model_validate(res.marker["event"]))
                else:
                    letters.append(dead_letter(item.source, DetectionError(*_CONFLICT, "store"), item.detection_id))
            else:
                redo.append(item)
        return redo, all(res.status == "ok" for res in results)

    async def _commit_merges(self, site: _Site, model: str, etype: str, cache: _TypeCache,
                             merges: list[Merge]) -> None:
        """After the batch's detections are stored. A merge that cannot be stored (another writer, an entity
        erased meanwhile) is dropped with the cache: a later detection finds it again if it still holds."""
        for merge in merges:
            res = await site.store.merge(model, etype, merge.survivor, merge.merged, merge.similarity,
                                         cache.version, datetime.now(UTC))
            if res.status != "ok":
                log.info("merge %s into %s not stored (%s)", merge.merged, merge.survivor, res.status)
                self._caches.pop((model, site.store.site, etype))
                return
            cache.version = res.version or cache.version
            self.metrics.merges.inc()
