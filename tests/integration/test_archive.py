"""The archive against a real PostgreSQL: idempotent writes, merges and splits in either order with the match
events, annotations, erasure with its tombstones, retention, and the entity as the views' fallback reads it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reid_stream.memory.archive import Archive, parse_records
from tests.conftest import make_settings

pytestmark = pytest.mark.integration
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


@pytest.fixture
async def archive(archive_url: str, unique: str) -> AsyncIterator[Archive]:
    a = Archive(make_settings(unique, archive_url=archive_url))
    yield a
    pool = await a._connection_pool()  # this test's sites only: the database is shared with the other tests
    for table in ("archive_appearances", "archive_entities", "archive_aliases", "archive_applied", "archive_erased"):
        await pool.execute(f"DELETE FROM {table} WHERE site_id LIKE $1", f"%-{unique}")
    await a.close()


def match(site: str, det: str, entity: str, camera: str = "c1", minutes: float = 0, **extra: Any) -> dict[str, Any]:
    ev = {"site_id": site, "detection_id": det, "entity_id": entity, "is_new_entity": det == entity,
          "entity_type": "person", "camera_id": camera, "camera_name": None, "track_id": None,
          "timestamp": (T0 + timedelta(minutes=minutes)).isoformat(), "model": "m", "matches": [],
          "processed_at": T0.isoformat(), "decision": "new" if det == entity else "joined",
          "candidates": [] if det == entity else [{"entity_id": entity, "similarity": 0.93, "refused": None}]}
    ev.update(extra)
    return ev


def merged(site: str, survivor: str, gone: str) -> dict[str, Any]:
    return {"site_id": site, "type": "merged", "survivor": survivor, "merged": gone, "entity_type": "person",
            "similarity": 0.99, "at": T0.isoformat(), "by": None}


def split(site: str, source: str, created: str, dets: list[str]) -> dict[str, Any]:
    return {"site_id": site, "type": "split", "survivor": source, "created": created, "detections": dets,
            "entity_type": "person", "at": T0.isoformat(), "by": "ops"}


def annotated(site: str, entity: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {"site_id": site, "type": "annotated", "survivor": entity, "entity_type": "person", "at": at.isoformat(),
            "by": "ops", "annotation": {"name": None, "notes": None, "trust": None, "watch": None, **fields}}


async def rows(archive: Archive, site: str) -> dict[str, str]:
    pool = await archive._connection_pool()
    return {r["detection_id"]: r["entity_id"] for r in await pool.fetch(
        "SELECT detection_id, entity_id FROM archive_appearances WHERE site_id = $1", site)}


async def appearances(archive: Archive, site: str, entity: str) -> list[str]:
    detail = await archive.get_entity(site, entity)
    return [] if detail is None else [a.detection_id for a in detail.appearances]


async def test_the_same_batch_twice_stores_the_same_rows(archive: Archive, unique: str):
    site = f"s-{unique}"
    batch = [match(site, "a1", "a1"), match(site, "a2", "a1", "c2", 5), match(site, "a2", "a1", "c2", 5)]
    assert await archive.apply(batch, []) == 2
    first = await rows(archive, site)
    assert await archive.apply(batch, []) == 0  # a redelivery stores nothing
    assert await rows(archive, site) == first == {"a1": "a1", "a2": "a1"}
    detail = await archive.get_entity(site, "a1")
    assert detail is not None and detail.source == "archive"
    assert (detail.appearance_count, detail.cameras_seen, detail.first_seen, detail.last_seen) == (
        2, ["c1", "c2"], T0, T0 + timedelta(minutes=5))
    assert [(a.detection_id, a.similarity_score, a.camera_name) for a in detail.appearances] == [
        ("a1", 1.0, "c1"), ("a2", 0.93, "c2")]
    assert detail.retained_until == T0 + timedelta(minutes=5) + timedelta(days=30)
    # Another site is another world: the same ids there are other entities.
    assert await archive.get_entity(f"other-{unique}", "a1") is None


async def test_merges_repoint_appearances_in_either_order_and_once(archive: Archive, unique: str):
    site = f"s-{unique}"
    await archive.apply([match(site, "a1", "a1"), match(site, "b1", "b1", "c2", 1)],
                        [annotated(site, "b1", T0, name="Bob", trust="trusted")])
    await archive.apply([], [merged(site, "a1", "b1")])
    assert await rows(archive, site) == {"a1": "a1", "b1": "a1"}
    detail = await archive.get_entity(site, "b1")  # the merged id answers with the survivor
    assert detail is not None and (detail.id, detail.resolved_from, detail.merged_ids) == ("a1", "b1", ["b1"])
    assert (detail.name, detail.trust) == ("Bob", "trusted")  # the survivor takes the fields it lacked
    # A match event of the merged entity that arrives after the merge lands on the survivor.
    await archive.apply([match(site, "b2", "b1", "c2", 2)], [])
    assert await appearances(archive, site, "a1") == ["a1", "b1", "b2"]
    # The survivor merged again: chains stay one hop; a redelivered old merge changes nothing.
    await archive.apply([match(site, "z1", "z1", "c9", 3)], [merged(site, "z1", "a1")])
    await archive.apply([], [merged(site, "a1", "b1")])
    assert set((await rows(archive, site)).values()) == {"z1"}
    detail = await archive.get_entity(site, "b1")
    assert detail is not None and (detail.id, detail.merged_ids, detail.appearance_count) == ("z1", ["a1", "b1"], 4)


async def test_splits_move_appearances_even_before_their_match_events(archive: Archive, unique: str):
    site = f"s-{unique}"
    await archive.apply([match(site, "a1", "a1"), match(site, "a2", "a1", minutes=1)], [])
    # The split arrives before the match event of a3, which it also moves.
    await archive.apply([], [split(site, "a1", "split-x", ["a2", "a3"])])
    await archive.apply([match(site, "a3", "a1", minutes=2)], [])
    assert await rows(archive, site) == {"a1": "a1", "a2": "split-x", "a3": "split-x"}
    assert await appearances(archive, site, "split-x") == ["a2", "a3"]
    assert await appearances(archive, site, "a1") == ["a1"]
    # split-x merged into a1 later; the redelivered split moves nothing back out of it.
    await archive.apply([], [merged(site, "a1", "split-x"), split(site, "a1", "split-x", ["a2", "a3"])])
    assert set((await rows(archive, site)).values()) == {"a1"}


async def test_annotations_last_writer_wins(archive: Archive, unique: str):
    site = f"s-{unique}"
    await archive.apply([match(site, "a1", "a1")], [annotated(site, "a1", T0 + timedelta(minutes=2), name="Ann",
                                                              notes="next door", watch="ex")])
    await archive.apply([], [annotated(site, "a1", T0 + timedelta(minutes=1), name="Old")])  # older: ignored
    detail = await archive.get_entity(site, "a1")
    assert detail is not None and (detail.name, detail.notes, detail.watch, detail.trust) == (
        "Ann", "next door", "ex", "unknown")
    await archive.apply([], [annotated(site, "a1", T0 + timedelta(minutes=3), trust="untrusted")])
    detail = await archive.get_entity(site, "a1")
    assert detail is not None and (detail.name, detail.trust, detail.watch) == (None, "untrusted", None)


async def test_the_list_pages_filters_and_follows_merges(archive: Archive, unique: str):
    site = f"s-{unique}"
    await archive.apply([match(site, "a1", "a1", "c1", 0), match(site, "a2", "a1", "c2", 10),
                         match(site, "b1", "b1", "c2", 5), match(site, "v1", "v1", "c3", 20, entity_type="vehicle"),
                         match(site, "m1", "m1", "c1", 1), match(f"other-{unique}", "x1", "x1", "c1", 30)],
                        [annotated(site, "b1", T0, name="Bob"), merged(site, "a1", "m1")])
    every, total = await archive.list_entities(site, None, None, None, 50, 0)
    assert total == 3 and [e.id for e in every] == ["v1", "a1", "b1"]  # most recently seen first; m1 is a1 now
    a1 = every[1]
    assert (a1.appearance_count, a1.cameras_seen, a1.merged_ids, a1.first_seen, a1.last_seen, a1.source) == (
        3, ["c1", "c2"], ["m1"], T0, T0 + timedelta(minutes=10), "archive")
    assert "/detections/a2/image" in a1.thumbnail_url  # its latest appearance's crop
    assert every[2].name == "Bob" and every[0].entity_type == "vehicle"
    page, total = await archive.list_entities(site, None, None, None, 1, 1)
    assert total == 3 and [e.id for e in page] == ["a1"]
    assert (await archive.list_entities(site, "person", None, None, 50, 0))[1] == 2
    assert [e.id for e in (await archive.list_entities(site, None, "c2", None, 50, 0))[0]] == ["a1", "b1"]
    since = (T0 + timedelta(minutes=6)).timestamp()
    assert [e.id for e in (await archive.list_entities(site, None, None, since, 50, 0))[0]] == ["v1", "a1"]
    assert await archive.list_entities(site, None, None, None, 50, 10) == ([], 3)  # past the end: still counted
    assert (await archive.list_entities(f"nowhere-{unique}", None, None, None, 50, 0)) == ([], 0)


async def test_erasure_removes_the_rows_and_tombstones_keep_them_out(archive: Archive, unique: str):
    site = f"s-{unique}"
    batch = [match(site, "a1", "a1"), match(site, "a2", "a1", minutes=1), match(site, "b1", "b1", minutes=2),
             match(site, "k1", "k1", minutes=3)]
    await archive.apply(batch, [merged(site, "a1", "b1"), annotated(site, "a1", T0, name="Ann")])
    erased = await archive.erase(site, "b1")  # an alias erases what it became
    assert erased is not None and (erased["entity_id"], erased["merged_ids"], erased["detections"]) == (
        "a1", ["b1"], ["a1", "a2", "b1"])
    assert await rows(archive, site) == {"k1": "k1"}
    assert await archive.get_entity(site, "a1") is None and await archive.get_entity(site, "b1") is None
    # Redelivered: old match events, the merge, a split, the annotation, and the erasure itself.
    await archive.apply([*batch, match(site, "a3", "a1", minutes=4)],
                        [merged(site, "a1", "b1"), split(site, "k1", "a1", ["k1"]),
                         annotated(site, "a1", T0 + timedelta(minutes=9), name="Ann"),
                         {"site_id": site, "type": "erased", "survivor": "a1", "erased_ids": ["b1"],
                          "detections": ["a1", "a2", "b1"], "entity_type": "person", "at": T0.isoformat()}])
    assert await rows(archive, site) == {"k1": "k1"}
    assert await archive.get_entity(site, "a1") is None
    # Beyond the tombstones nothing names them: not even which of their merges and splits were applied.
    pool = await archive._connection_pool()
    assert await pool.fetch("SELECT update_key FROM archive_applied WHERE site_id = $1", site) == []
    assert await archive.erase(site, "nobody") is None
    # A detection erased in Redis whose event the archive had not seen yet stays out too.
    await archive.erase(site, "gone", detections=["g1"])
    await archive.apply([match(site, "g1", "g1", minutes=5)], [])
    assert "g1" not in await rows(archive, site)


async def test_retention_deletes_old_rows_and_refuses_old_events(archive: Archive, unique: str):
    site = f"s-{unique}"
    old = T0 - timedelta(days=31)
    await archive.apply([match(site, "o1", "o1", minutes=-31 * 24 * 60)], [])  # older than the retention: refused
    assert await rows(archive, site) == {}
    await archive.apply([match(site, "a1", "a1"), match(site, "a2", "a1", minutes=1)],
                        [annotated(site, "a1", T0, name="Ann")])
    pool = await archive._connection_pool()
    # a1's first appearance ages past the retention; so do an entity and its only appearance, and a tombstone.
    await archive.apply([match(site, "x1", "x1", minutes=2)], [])
    await archive.erase(site, "e1", detections=["e1"])
    await pool.execute("UPDATE archive_appearances SET seen_at = $2 WHERE site_id = $1 AND detection_id IN "
                       "('a1', 'x1')", site, old)
    await pool.execute("UPDATE archive_entities SET touched_at = $2 WHERE site_id = $1 AND entity_id = 'x1'",
                       site, old)
    await pool.execute("UPDATE archive_erased SET erased_at = $2 WHERE site_id = $1", site, old)
    counts = await archive.expire()
    assert counts["appearances"] >= 2 and counts["entities"] >= 1 and counts["tombstones"] >= 2
    assert await rows(archive, site) == {"a2": "a1"}
    assert await archive.get_entity(site, "x1") is None
    detail = await archive.get_entity(site, "a1")
    assert detail is not None and (detail.name, detail.appearance_count) == ("Ann", 1)
    assert await pool.fetchval("SELECT count(*) FROM archive_erased WHERE site_id = $1", site) == 0


def test_records_that_are_not_ours_are_skipped():
    good = b'{"detection_id": "d", "entity_id": "d", "entity_type": "person", "camera_id": "c", ' \
           b'"timestamp": "2026-01-01T00:00:00+00:00"}'
    matches, updates, bad = parse_records(
        [("m", good), ("m", b"not json"), ("m", b"[1]"), ("m", b'{"detection_id": 3}'),
         ("u", b'{"type": "merged", "survivor": "a", "entity_type": "person", "at": "x"}'),
         ("u", b'{"type": "exploded", "survivor": "a"}'), ("u", None)], "m", "u")
    assert (len(matches), updates, bad) == (1, [], 6)
