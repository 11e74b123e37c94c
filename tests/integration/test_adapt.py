"""Site adaptation against a real Redis, through the assign stage's own code: a site whose cameras each add
their own bias (strangers on one camera look alike, one person on two cameras does not) learns a space from
its stored rows, adopts it atomically with the writer's version, and the next detections are decided in it;
an operator's merge is a label the next fit uses; a rollback returns to the encoder's own space."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from reid_stream.events import Detection
from reid_stream.learn.adapt import adapt, rollback
from reid_stream.learn.space import Space
from reid_stream.store.reid_store import ReidStore, resolve_alias
from reid_stream.store.spaces import SpaceStore
from reid_stream.stream.assign import Assigner
from reid_stream.stream.wire import EmbeddedRecord
from tests.conftest import make_settings
from tests.integration.test_store_merge import all_keys

pytestmark = pytest.mark.integration
MODEL, TYPE, DIM = "synthetic-biased", "person", 48
CAMERAS = ("cam-1", "cam-2", "cam-3")
PEOPLE = 24
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def topology(tmp_path: Path) -> Path:
    path = tmp_path / "site.json"
    path.write_text(json.dumps({"adjacency": [
        {"a": "cam-1", "b": "cam-2", "min_transit_s": 20, "typical_transit_s": 30},
        {"a": "cam-2", "b": "cam-3", "min_transit_s": 20, "typical_transit_s": 30}]}))
    return path


class Site:
    """People with their own look, cameras with a strong bias of their own, and sensor noise."""

    def __init__(self, seed: int = 3) -> None:
        rng = np.random.default_rng(seed)
        self.looks = rng.standard_normal((PEOPLE, DIM)).astype(np.float32) * 0.8
        self.bias = {c: rng.standard_normal(DIM).astype(np.float32) * 2.0 for c in CAMERAS}
        self.rng = np.random.default_rng(seed + 1)

    def vector(self, person: int, camera: str) -> np.ndarray:
        v = self.looks[person] + self.bias[camera] + self.rng.standard_normal(DIM).astype(np.float32) * 0.12
        return v / np.linalg.norm(v)

    def visit(self, tag: str, start: datetime, shots: int = 4) -> list[EmbeddedRecord]:
        """Every person walks cam-1 -> cam-2 -> cam-3, 25 s between cameras, arriving 40 s apart."""
        out = []
        for p in range(PEOPLE):
            t = start + timedelta(seconds=30 * p)
            for k, cam in enumerate(CAMERAS):
                for s in range(shots):
                    when = t + timedelta(seconds=k * (25 + shots) + s)
                    det = Detection(detection_id=f"{tag}-p{p}-{cam}-{s}", camera_id=cam, entity_type=TYPE,
                                    timestamp=when.isoformat(), track_id=f"{tag}-{p}-{k}",
                                    bbox={"x1": 0, "y1": 0, "x2": 64, "y2": 128}, image_path="x.png")
                    out.append(EmbeddedRecord.of(det, self.vector(p, cam), MODEL))
        return sorted(out, key=lambda r: r.timestamp)


def person_of(detection_id: str) -> str:
    return detection_id.split("-")[1]


async def entities_per_person(store: ReidStore, events: list) -> tuple[float, int]:
    """Entities per person (after the merges the batches published), and how many entities hold more than one
    person (false merges)."""
    aliases = {k.decode(): v.decode() for k, v in (await store.redis.hgetall(store.keys.aliases(MODEL, TYPE))).items()}
    by_person: dict[str, set[str]] = {}
    by_entity: dict[str, set[str]] = {}
    for e in events:
        entity = resolve_alias(aliases, e.entity_id)
        by_person.setdefault(person_of(e.detection_id), set()).add(entity)
        by_entity.setdefault(entity, set()).add(person_of(e.detection_id))
    return (sum(len(v) for v in by_person.values()) / len(by_person),
            sum(len(v) > 1 for v in by_entity.values()))


@pytest.fixture
async def store(redis_client, unique, tmp_path):
    settings = make_settings(unique, embedding_ttl_seconds=7 * 86400, max_embeddings=5000, similarity_threshold=0.95,
                             camera_topology=str(topology(tmp_path)))
    s = ReidStore(redis_client, settings)
    yield s
    keys = await all_keys(s)
    if keys:
        await redis_client.delete(*keys)


async def assign_all(assigner: Assigner, records: list[EmbeddedRecord]) -> list:
    events = []
    for start in range(0, len(records), 16):
        got, letters = await assigner.assign(records[start:start + 16])
        assert not letters
        events += got
    return events


async def test_a_biased_site_learns_its_space_and_recognises_people_across_cameras(store):
    site = Site()
    assigner = Assigner(store.settings, store)
    before, wrong = await entities_per_person(store, await assign_all(assigner, site.visit("a", T0)))
    assert before >= 2.5 and wrong == 0  # the encoder's own space: one person on three cameras is three entities

    outcome = await adapt(store, MODEL, TYPE)
    assert outcome.adopted, outcome.reason
    assert outcome.version == 1 and outcome.evidence["tracklets"] == 3 * PEOPLE
    assert outcome.after["cross_camera_recall"] > outcome.before["cross_camera_recall"]
    assert outcome.threshold is not None  # from the site's own evidence, not REID_SIMILARITY_THRESHOLD

    # The same writer: the adoption moved the version, so its copy is read again through the new space.
    events = await assign_all(assigner, site.visit("b", T0 + timedelta(hours=2)))
    assert {e.space_version for e in events} == {1}
    after, false_merges = await entities_per_person(store, events)
    assert after <= 1.3 and false_merges == 0, (after, false_merges)
    stored = Space.from_bytes((await SpaceStore(store).current(MODEL, TYPE))[1])
    assert stored.version == 1 and set(stored.camera_means) == set(CAMERAS)

    await rollback(store, MODEL, TYPE, 0)
    events = await assign_all(assigner, site.visit("c", T0 + timedelta(hours=4)))
    assert {e.space_version for e in events} == {0}
    assert (await SpaceStore(store).history(MODEL, TYPE))[0]["reason"] == "rollback"


async def test_a_space_that_is_not_better_is_kept_but_not_adopted(store):
    site = Site()
    await assign_all(Assigner(store.settings, store), site.visit("a", T0))
    first = await adapt(store, MODEL, TYPE)
    assert first.adopted
    again = await adapt(store, MODEL, TYPE)  # the same evidence: nothing to gain
    assert not again.adopted and "does not beat" in again.reason
    spaces = SpaceStore(store)
    assert (await spaces.current(MODEL, TYPE))[0] == first.version
    history = await spaces.history(MODEL, TYPE)
    assert history[again.version]["adopted"] is False and history[first.version]["adopted"] is True


async def test_every_key_of_a_space_expires(store, redis_client):
    await assign_all(Assigner(store.settings, store), Site().visit("a", T0))
    await adapt(store, MODEL, TYPE)
    keys = [k for k in await all_keys(store) if ":space:" in k]
    assert len(keys) >= 4
    ttls = [await redis_client.ttl(k) for k in keys]
    assert all(0 < ttl <= store.settings.adapt_retention_seconds for ttl in ttls), ttls


async def test_too_little_evidence_says_so_and_adopts_nothing(store):
    site = Site()
    await assign_all(Assigner(store.settings, store), site.visit("a", T0)[:6])
    outcome = await adapt(store, MODEL, TYPE)
    assert not outcome.adopted and "not enough evidence" in outcome.reason
    assert (await SpaceStore(store).current(MODEL, TYPE))[0] == 0


async def test_an_operators_merges_across_cameras_improve_the_next_adaptation(redis_client, unique, tmp_path):
    """The same stream, learned twice: once from the stream alone, once after an operator merged a few people's
    entities across cameras. A site without a camera topology has no walkways, so the stream alone says
    nothing about one person on two cameras: the operator's word is what teaches it, and their own people come
    out closer across cameras, and so do the people nobody corrected (the space learned what a camera change
    is)."""
    from reid_stream.store.corrections import Corrections

    site = Site(seed=9)
    visit = site.visit("a", T0)
    stores = []
    for name in ("alone", "corrected"):
        settings = make_settings(f"{unique}{name}", embedding_ttl_seconds=86400, max_embeddings=5000,
                                 similarity_threshold=0.95)
        store = ReidStore(redis_client, settings)
        events = await assign_all(Assigner(settings, store), visit)
        stores.append((store, events))
    store, events = stores[1]
    first: dict[tuple[str, str], str] = {}
    for e in events:
        first.setdefault((person_of(e.detection_id), e.camera_id), e.entity_id)
    corrected = [f"p{p}" for p in range(8)]
    for p in corrected:  # cam-1's entity and cam-2's entity of each are one person, says the operator
        await Corrections(store).merge(first[p, "cam-1"], first[p, "cam-2"], "tester")
    outcomes = [await adapt(s, MODEL, TYPE, force=True) for s, _ in stores]
    assert outcomes[0].evidence["operator_same"] == 0 and outcomes[1].evidence["operator_same"] >= len(corrected)

    def cross_camera(space: Space, people: list[str]) -> float:
        """Mean similarity, in the space, of each person's cam-1 and cam-2 detections."""
        sims = []
        for p in people:
            a = [r for r in visit if person_of(r.detection_id) == p and r.camera_id == "cam-1"]
            b = [r for r in visit if person_of(r.detection_id) == p and r.camera_id == "cam-2"]
            va = space.apply(np.stack([r.vector for r in a]), ["cam-1"] * len(a))
            vb = space.apply(np.stack([r.vector for r in b]), ["cam-2"] * len(b))
            sims.append(float((va @ vb.T).mean()))
        return float(np.mean(sims))

    spaces = [Space.from_bytes((await SpaceStore(s).current(MODEL, TYPE))[1]) for s, _ in stores]
    others = [f"p{p}" for p in range(8, PEOPLE)]
    assert cross_camera(spaces[1], corrected) > cross_camera(spaces[0], corrected) + 0.02
    assert cross_camera(spaces[1], others) > cross_camera(spaces[0], others) + 0.02  # it generalises
    for s, _ in stores:
        keys = await all_keys(s)
        if keys:
            await redis_client.delete(*keys)


async def test_the_background_learner_adapts_in_a_child_process_only_when_enough_is_new(store, monkeypatch):
    """The worker's learner runs `reid-stream adapt --if-new` as a child process (the same environment as the
    worker: here, the test's prefix and topology), adopts what it judges better, and leaves a site alone until
    REID_ADAPT_MIN_NEW more detections were stored."""
    from reid_stream.worker.learner import Learner

    for name, value in (("REID_REDIS_PREFIX", store.settings.redis_prefix),
                        ("REID_CAMERA_TOPOLOGY", store.settings.camera_topology), ("REID_ADAPT_MIN_NEW", "50")):
        monkeypatch.setenv(name, value)
    settings = replace(store.settings, adapt_min_new=50)
    assigner = Assigner(settings, store)
    site = Site()
    await assign_all(assigner, site.visit("a", T0))
    learner = Learner(settings, store, assigner.shards)
    assert assigner.shards() == [(MODEL, "default", TYPE)]
    first = await learner.learn("default", MODEL, TYPE)
    assert first is not None and first["adopted"] and first["version"] == 1
    assert await learner.learn("default", MODEL, TYPE) is None  # nothing new since
    await assign_all(assigner, site.visit("b", T0 + timedelta(hours=2))[:60])
    again = await learner.learn("default", MODEL, TYPE)
    assert again is not None and again["version"] == 2  # fitted again (adopted only if better)


def test_the_command_line_says_what_is_wrong_instead_of_a_traceback(unique):
    """`reid-stream adapt` on a site with nothing stored, and a rollback to a version never fitted: exit codes
    and one line each, no traceback."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "REID_REDIS_PREFIX": f"reidtest:{unique}"}
    empty = subprocess.run([sys.executable, "-m", "reid_stream", "adapt", "--site", "nowhere"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert empty.returncode == 1 and "has no stored detections" in empty.stderr and "Traceback" not in empty.stderr
    missing = subprocess.run([sys.executable, "-m", "reid_stream", "adapt", "--type", "person", "--model", MODEL,
                              "--rollback", "7"], env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "is not stored" in missing.stderr and "Traceback" not in missing.stderr
