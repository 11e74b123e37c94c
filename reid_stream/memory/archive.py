"""The long-term memory in PostgreSQL: entities, appearances, names, trust and watch labels beyond the Redis TTL.
The only module that talks to PostgreSQL.

Every write is idempotent, since Kafka delivers at least once: an appearance is keyed by (site_id,
detection_id) and never rewritten once stored; merges and splits are applied once each (`archive_applied`);
an annotation applies only if it is newer than the one stored; an erasure leaves tombstones for the retention
period, so that a redelivered old event cannot bring the entity back. Match events and entity updates come from
two topics, so their order between each other is not known: a match event of an entity merged since lands on
the survivor (through the alias), and a split that arrives before the match events of the detections it moves
leaves placeholders that keep their new owner when the events fill them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from reid_stream.config import Settings
from reid_stream.events import DEFAULT_SITE, EntityAppearance, EntityDetail, EntitySummary
from reid_stream.identity.plates import entity_plates

log = logging.getLogger(__name__)
# What a lost or refusing database raises; anything else is a bug, and the archiver logs it too (and retries).
ARCHIVE_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, asyncpg.PostgresError,
                                                   asyncpg.InterfaceError)
UPDATE_TYPES = ("merged", "split", "annotated", "erased")
CONNECT_TIMEOUT_S = 5
COMMAND_TIMEOUT_S = 15

SCHEMA = """
CREATE TABLE IF NOT EXISTS archive_entities (
    site_id text NOT NULL,
    entity_id text NOT NULL,
    entity_type text NOT NULL,
    name text, notes text, trust text, watch text,
    annotated_at timestamptz,           -- the annotation stored: a later one replaces it, an earlier one not
    touched_at timestamptz NOT NULL,    -- its latest appearance or change: the retention counts from it
    PRIMARY KEY (site_id, entity_id));
CREATE TABLE IF NOT EXISTS archive_appearances (
    site_id text NOT NULL,
    detection_id text NOT NULL,
    entity_id text NOT NULL,
    entity_type text, camera_id text, camera_name text, track_id text,
    seen_at timestamptz,                -- null: a split's placeholder, waiting for its match event
    similarity double precision, plate text, model text, decision text,
    archived_at timestamptz NOT NULL,
    PRIMARY KEY (site_id, detection_id));
CREATE INDEX IF NOT EXISTS archive_appearances_entity ON archive_appearances (site_id, entity_id, seen_at);
CREATE INDEX IF NOT EXISTS archive_appearances_seen ON archive_appearances (seen_at);
CREATE TABLE IF NOT EXISTS archive_aliases (
    site_id text NOT NULL, alias text NOT NULL, target text NOT NULL, at timestamptz NOT NULL,
    PRIMARY KEY (site_id, alias));
CREATE INDEX IF NOT EXISTS archive_aliases_target ON archive_aliases (site_id, target);
CREATE TABLE IF NOT EXISTS archive_applied (
    site_id text NOT NULL, update_key text NOT NULL, at timestamptz NOT NULL,
    PRIMARY KEY (site_id, update_key));
CREATE TABLE IF NOT EXISTS archive_erased (
    site_id text NOT NULL, kind text NOT NULL, id text NOT NULL, erased_at timestamptz NOT NULL,
    PRIMARY KEY (site_id, kind, id));
"""

# The list: each entity's appearances summed up. $2-$4 filter like the live list (null: no filter), and narrow
# the rows summed first: a type, the entities a camera saw, those seen since (through the seen_at index). Without
# filters it sums all of a site's appearances for each page.
_LISTED = """
WITH seen AS (
    SELECT entity_id, count(*) AS appearances, min(seen_at) AS first_seen, max(seen_at) AS last_seen,
           array_agg(DISTINCT camera_id) AS cameras,
           (array_agg(camera_id ORDER BY seen_at DESC, detection_id DESC))[1] AS last_camera,
           (array_agg(detection_id ORDER BY seen_at DESC, detection_id DESC))[1] AS last_detection
    FROM archive_appearances
    WHERE site_id = $1 AND seen_at IS NOT NULL AND ($2::text IS NULL OR entity_type = $2)
      AND ($3::text IS NULL OR entity_id IN (
          SELECT entity_id FROM archive_appearances WHERE site_id = $1 AND camera_id = $3))
      AND ($4::timestamptz IS NULL OR entity_id IN (
          SELECT entity_id FROM archive_appearances WHERE seen_at >= $4 AND site_id = $1))
    GROUP BY entity_id)
SELECT {columns} FROM archive_entities e JOIN seen USING (entity_id)
WHERE e.site_id = $1 AND ($2::text IS NULL OR e.entity_type = $2)
"""
LIST_ENTITIES = _LISTED.format(columns="e.*, seen.appearances, seen.first_seen, seen.last_seen, seen.cameras, "
                                "seen.last_camera, seen.last_detection, count(*) OVER () AS total") + (
    "ORDER BY seen.last_seen DESC, e.entity_id LIMIT $5 OFFSET $6")
COUNT_ENTITIES = _LISTED.format(columns="count(*)")

INSERT_APPEARANCES = """
WITH incoming AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::timestamptz[], $9::float8[], $10::text[], $11::text[], $12::text[])
        AS r(site_id, detection_id, entity_id, entity_type, camera_id, camera_name, track_id, seen_at,
             similarity, plate, model, decision)
), owned AS (
    SELECT r.*, COALESCE(a.target, r.entity_id) AS owner FROM incoming r
    LEFT JOIN archive_aliases a ON a.site_id = r.site_id AND a.alias = r.entity_id
)
INSERT INTO archive_appearances AS t (site_id, detection_id, entity_id, entity_type, camera_id, camera_name,
                                      track_id, seen_at, similarity, plate, model, decision, archived_at)
SELECT o.site_id, o.detection_id, o.owner, o.entity_type, o.camera_id, o.camera_name, o.track_id, o.seen_at,
       o.similarity, o.plate, o.model, o.decision, $13
FROM owned o
WHERE NOT EXISTS (SELECT 1 FROM archive_erased e WHERE e.site_id = o.site_id
                  AND ((e.kind = 'detection' AND e.id = o.detection_id)
                       OR (e.kind = 'entity' AND e.id IN (o.entity_id, o.owner))))
ON CONFLICT (site_id, detection_id) DO UPDATE SET
    entity_type = EXCLUDED.entity_type, camera_id = EXCLUDED.camera_id, camera_name = EXCLUDED.camera_name,
    track_id = EXCLUDED.track_id, seen_at = EXCLUDED.seen_at, similarity = EXCLUDED.similarity,
    plate = EXCLUDED.plate, model = EXCLUDED.model, decision = EXCLUDED.decision
    WHERE t.seen_at IS NULL  -- a split's placeholder is filled and keeps its owner; a stored row never changes
RETURNING site_id, entity_id, entity_type, seen_at
"""

TOUCH_ENTITIES = """
INSERT INTO archive_entities AS t (site_id, entity_id, entity_type, touched_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
ON CONFLICT (site_id, entity_id) DO UPDATE SET touched_at = GREATEST(t.touched_at, EXCLUDED.touched_at)
"""


def similarity_of(event: Mapping[str, Any]) -> float:
    """The appearance's score as the assign stage gives it: the candidate similarity of the entity it joined,
    1.0 for a founder (or a detection that joined without one), `matches[0]` under the nearest rule."""
    if event.get("is_new_entity"):
        return 1.0
    for c in event.get("candidates") or ():
        if c.get("entity_id") == event["entity_id"]:
            return float(c["similarity"])
    matches = event.get("matches") or ()
    if not event.get("candidates") and event.get("decision", "joined") == "joined" and matches:
        return float(matches[0]["similarity"])
    return 1.0


def _time(value: Any) -> datetime:
    ts = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def site_of(message: Mapping[str, Any]) -> str:
    return str(message.get("site_id") or DEFAULT_SITE)


class Archive:
    """A small pool of connections to the archive; nothing connects until the first use, so a database that is
    down at start delays only the archive."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.retention = timedelta(days=settings.archive_retention_days)
        self._pool: asyncpg.Pool | None = None
        self._schema_ready = False

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)

    async def _connection_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.settings.archive_url, min_size=0, max_size=4, timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S, max_inactive_connection_lifetime=60)
        if not self._schema_ready:
            async with self._pool.acquire() as conn, conn.transaction():
                # Two workers starting together must not both create the tables (a unique violation).
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('reid_stream.memory.archive.schema'))")
                await conn.execute(SCHEMA)
            self._schema_ready = True
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> None:
        pool = await self._connection_pool()
        await pool.fetchval("SELECT 1")

    # --- writes: a batch from entity-matches and entity-updates -------------------------------------

    async def apply(self, matches: Sequence[Mapping[str, Any]], updates: Sequence[Mapping[str, Any]]) -> int:
        """Store a batch in one transaction: the match events, then the updates in the order given. Returns the
        appearances stored new (redeliveries and erased ones are not)."""
        pool = await self._connection_pool()
        async with pool.acquire() as conn, conn.transaction():
            stored = await self._store_matches(conn, matches)
            for update in updates:
                await self._apply_update(conn, update)
        return stored

    async def _store_matches(self, conn: asyncpg.Connection, events: Sequence[Mapping[str, Any]]) -> int:
        rows: dict[tuple[str, str], Mapping[str, Any]] = {}
        cutoff = self.now() - self.retention
        for ev in events:  # one row per detection: a redelivery inside the batch is the same event
            if _time(ev["timestamp"]) >= cutoff:
                rows.setdefault((site_of(ev), ev["detection_id"]), ev)
        if not rows:
            return 0
        evs = list(rows.values())
        columns = [
            [site_of(e) for e in evs], [e["detection_id"] for e in evs], [e["entity_id"] for e in evs],
            [e["entity_type"] for e in evs], [e["camera_id"] for e in evs], [e.get("camera_name") for e in evs],
            [e.get("track_id") for e in evs], [_time(e["timestamp"]) for e in evs], [similarity_of(e) for e in evs],
            [e.get("plate") for e in evs], [e.get("model") for e in evs], [e.get("decision") for e in evs]]
        stored = await conn.fetch(INSERT_APPEARANCES, *columns, self.now())
        latest: dict[tuple[str, str], tuple[str, datetime]] = {}
        for r in stored:
            key = (r["site_id"], r["entity_id"])
            if key not in latest or r["seen_at"] > latest[key][1]:
                latest[key] = (r["entity_type"], r["seen_at"])
        if latest:
            keys = sorted(latest)  # a fixed order: two writers never wait on each other's rows in a circle
            await conn.execute(TOUCH_ENTITIES, [s for s, _ in keys], [e for _, e in keys],
                               [latest[k][0] for k in keys], [latest[k][1] for k in keys])
        return len(stored)

    async def _apply_update(self, conn: asyncpg.Connection, update: Mapping[str, Any]) -> None:
        site, kind = site_of(update), update.get("type", "merged")
        if kind == "erased":
            await self._erase(conn, site, update["survivor"], update.get("erased_ids") or (),
                              update.get("detections") or ())
            return
        if kind == "annotated":
            await self._annotate(conn, site, update)
            return
        key = f"merged:{update['merged']}" if kind == "merged" else f"split:{update['created']}"
        named = (update["survivor"], update["merged"]) if kind == "merged" else (update["created"],)
        if await self._erased(conn, site, named):  # a redelivery after the erasure: no applied key names them again
            return
        done = await conn.fetchval(
            "INSERT INTO archive_applied (site_id, update_key, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING "
            "RETURNING 1", site, key, self.now())
        if done is None:  # applied before: a redelivery
            return
        if kind == "merged":
            await self._merge(conn, site, update["survivor"], update["merged"], update["entity_type"])
        elif kind == "split":
            await self._split(conn, site, update["created"], update.get("detections") or [], update["entity_type"])

    async def _resolve(self, conn: asyncpg.Connection, site: str, entity_id: str) -> str:
        target = await conn.fetchval("SELECT target FROM archive_aliases WHERE site_id = $1 AND alias = $2",
                                     site, entity_id)
        return target or entity_id

    @staticmethod
    async def _erased(conn: asyncpg.Connection, site: str, entity_ids: Iterable[str]) -> bool:
        return bool(await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM archive_erased WHERE site_id = $1 AND kind = 'entity' AND id = ANY($2))",
            site, list(entity_ids)))

    async def _merge(self, conn: asyncpg.Connection, site: str, survivor: str, merged: str, etype: str) -> None:
        """The merged entity's appearances move to the survivor (as it is now: it may have been merged since),
        its id becomes an alias, and the survivor takes its name, notes, trust and watch where it has none."""
        target = await self._resolve(conn, site, survivor)
        if target == merged or await self._erased(conn, site, (target, merged)):
            return
        now = self.now()
        await conn.execute("UPDATE archive_appearances SET entity_id = $3 WHERE site_id = $1 AND entity_id = $2",
                           site, merged, target)
        await conn.execute("UPDATE archive_aliases SET target = $3 WHERE site_id = $1 AND target = $2",
                           site, merged, target)  # chains stay one hop long
        await conn.execute(
            "INSERT INTO archive_aliases (site_id, alias, target, at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (site_id, alias) DO UPDATE SET target = EXCLUDED.target, at = EXCLUDED.at",
            site, merged, target, now)
        old = await conn.fetchrow("DELETE FROM archive_entities WHERE site_id = $1 AND entity_id = $2 RETURNING *",
                                  site, merged)
        await conn.execute(
            """INSERT INTO archive_entities AS t (site_id, entity_id, entity_type, name, notes, trust, watch,
                                                  annotated_at, touched_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
               ON CONFLICT (site_id, entity_id) DO UPDATE SET
                   name = COALESCE(t.name, EXCLUDED.name), notes = COALESCE(t.notes, EXCLUDED.notes),
                   trust = COALESCE(t.trust, EXCLUDED.trust), watch = COALESCE(t.watch, EXCLUDED.watch),
                   annotated_at = GREATEST(t.annotated_at, EXCLUDED.annotated_at),
                   touched_at = GREATEST(t.touched_at, EXCLUDED.touched_at)""",
            site, target, etype, *(old[f] if old else None for f in ("name", "notes", "trust", "watch",
                                                                        "annotated_at")),
            old["touched_at"] if old else now)

    async def _split(self, conn: asyncpg.Connection, site: str, created: str, detections: list[str],
                     etype: str) -> None:
        """The detections move to the new entity; those whose match events are not archived yet get a placeholder
        row that keeps the new owner when the event fills it."""
        target = await self._resolve(conn, site, created)
        if await self._erased(conn, site, (target, created)):
            return
        now = self.now()
        await conn.execute(
            "INSERT INTO archive_entities (site_id, entity_id, entity_type, touched_at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT DO NOTHING", site, target, etype, now)
        await conn.execute(
            """INSERT INTO archive_appearances AS t (site_id, detection_id, entity_id, archived_at)
               SELECT $1, d, $3, $4 FROM unnest($2::text[]) AS d
               WHERE NOT EXISTS (SELECT 1 FROM archive_erased e WHERE e.site_id = $1 AND e.kind = 'detection'
                                 AND e.id = d)
               ON CONFLICT (site_id, detection_id) DO UPDATE SET entity_id = EXCLUDED.entity_id""",
            site, sorted(set(detections)), target, now)

    async def _annotate(self, conn: asyncpg.Connection, site: str, update: Mapping[str, Any]) -> None:
        """The operator fields as they are after the change; an older annotation than the stored one is ignored,
        and one of an entity merged away since or erased is dropped."""
        eid, at = update["survivor"], _time(update["at"])
        if await self._resolve(conn, site, eid) != eid or await self._erased(conn, site, (eid,)):
            return
        a = update.get("annotation") or {}
        trust = a.get("trust") if a.get("trust") != "unknown" else None
        await conn.execute(
            """INSERT INTO archive_entities AS t (site_id, entity_id, entity_type, name, notes, trust, watch,
                                                  annotated_at, touched_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
               ON CONFLICT (site_id, entity_id) DO UPDATE SET
                   name = EXCLUDED.name, notes = EXCLUDED.notes, trust = EXCLUDED.trust, watch = EXCLUDED.watch,
                   annotated_at = EXCLUDED.annotated_at, touched_at = GREATEST(t.touched_at, EXCLUDED.touched_at)
               WHERE t.annotated_at IS NULL OR t.annotated_at <= EXCLUDED.annotated_at""",
            site, eid, update["entity_type"], a.get("name"), a.get("notes"), trust, a.get("watch"), at)

    # --- erasure -----------------------------------------------------------------------------------------

    async def erase(self, site: str, entity_id: str, also: Sequence[str] = (),
                    detections: Sequence[str] = ()) -> dict[str, Any] | None:
        """Erase an entity (an alias erases what it became), the ids merged into it and `also`, and their
        appearances plus `detections`; tombstones keep redelivered events from bringing any of them back.
        Returns what the archive held, or None when it held nothing (the tombstones are written anyway, unless
        the id is all that was given and nobody knows it)."""
        pool = await self._connection_pool()
        async with pool.acquire() as conn, conn.transaction():
            return await self._erase(conn, site, entity_id, also, detections)

    async def erase_after_redis(self, site: str, asked: str, purged: dict[str, Any] | None,
                                timeout: float | None = None) -> dict[str, Any] | None:
        """The archive's half of an erasure, after Redis's (`purged`: what Redis erased for the id `asked`, None
        if it held nothing). The answer adds `archive: erased`, or `pending` when the archive is unavailable:
        Redis's erasure queued an `erased` update that erases it there once it is back. When Redis held nothing,
        what only the archive holds is erased (`source: archive`), and an unavailable archive raises
        (ARCHIVE_ERRORS): nothing was erased anywhere."""
        try:
            if purged is not None:
                await asyncio.wait_for(self.erase(site, purged["entity_id"], also=[asked, *purged["merged_ids"]],
                                                  detections=purged["detections"]), timeout)
                return {**purged, "archive": "erased"}
            archived = await asyncio.wait_for(self.erase(site, asked), timeout)
        except ARCHIVE_ERRORS as exc:
            log.warning("erasing %s from the archive: unavailable (%r)", asked, exc)
            if purged is None:
                raise
            return {**purged, "archive": "pending"}
        return None if archived is None else {**archived, "archive": "erased", "source": "archive"}

    async def _erase(self, conn: asyncpg.Connection, site: str, entity_id: str, also: Sequence[str],
                     detections: Sequence[str]) -> dict[str, Any] | None:
        target = await self._resolve(conn, site, entity_id)
        ids = {entity_id, target, *also}
        ids |= {r["alias"] for r in await conn.fetch(
            "SELECT alias FROM archive_aliases WHERE site_id = $1 AND target = ANY($2)", site, list(ids))}
        entity = await conn.fetchrow(
            "SELECT entity_type FROM archive_entities WHERE site_id = $1 AND entity_id = ANY($2) LIMIT 1",
            site, list(ids))
        held = await conn.fetch(
            "DELETE FROM archive_appearances WHERE site_id = $1 AND (entity_id = ANY($2) OR detection_id = ANY($3)) "
            "RETURNING detection_id, camera_id, seen_at", site, list(ids), list(set(detections)))
        await conn.execute("DELETE FROM archive_entities WHERE site_id = $1 AND entity_id = ANY($2)", site, list(ids))
        await conn.execute("DELETE FROM archive_aliases WHERE site_id = $1 AND (alias = ANY($2) OR target = ANY($2))",
                           site, list(ids))
        # Which of its merges and splits were applied names its ids too; the tombstones alone now keep a redelivered
        # update from applying again (_merge and _split check them first).
        await conn.execute("DELETE FROM archive_applied WHERE site_id = $1 AND update_key = ANY($2)", site,
                           [f"{kind}:{i}" for i in sorted(ids) for kind in ("merged", "split")])
        dets = {r["detection_id"] for r in held} | set(detections)
        if entity is None and not dets and ids == {entity_id}:  # an id nobody knows: nothing to keep out
            return None
        tombstones = [("entity", i) for i in sorted(ids)] + [("detection", d) for d in sorted(dets)]
        await conn.execute(
            """INSERT INTO archive_erased (site_id, kind, id, erased_at)
               SELECT $1, k, i, $4 FROM unnest($2::text[], $3::text[]) AS x(k, i)
               ON CONFLICT (site_id, kind, id) DO UPDATE SET erased_at = EXCLUDED.erased_at""",
            site, [k for k, _ in tombstones], [i for _, i in tombstones], self.now())
        if entity is None and not held:
            return None
        return {"entity_id": target, "entity_type": entity["entity_type"] if entity else None,
                "detections": sorted(r["detection_id"] for r in held if r["seen_at"] is not None),
                "cameras": sorted({r["camera_id"] for r in held if r["camera_id"]}),
                "merged_ids": sorted(ids - {target}),
                "resolved_from": entity_id if entity_id != target else None}

    # --- retention ---------------------------------------------------------------------------------------

    async def expire(self) -> dict[str, int]:
        """Delete what is older than the retention: appearances by detection time (placeholders by when they
        were made), entities with nothing left and no change since, aliases of entities gone, tombstones."""
        pool = await self._connection_pool()
        cutoff = self.now() - self.retention
        counts: dict[str, int] = {}
        async with pool.acquire() as conn, conn.transaction():
            for name, sql in (
                ("appearances", "DELETE FROM archive_appearances WHERE COALESCE(seen_at, archived_at) < $1"),
                ("entities", "DELETE FROM archive_entities e WHERE touched_at < $1 AND NOT EXISTS (SELECT 1 FROM "
                             "archive_appearances a WHERE a.site_id = e.site_id AND a.entity_id = e.entity_id)"),
                ("aliases", "DELETE FROM archive_aliases a WHERE at < $1 AND NOT EXISTS (SELECT 1 FROM "
                            "archive_entities e WHERE e.site_id = a.site_id AND e.entity_id = a.target)"),
                ("applied", "DELETE FROM archive_applied WHERE at < $1"),
                ("tombstones", "DELETE FROM archive_erased WHERE erased_at < $1"),
            ):
                counts[name] = int((await conn.execute(sql, cutoff)).rsplit(" ", 1)[-1])
        return counts

    # --- reads: the views' fallback ----------------------------------------------------------------------

    async def get_entity(self, site: str, entity_id: str) -> EntityDetail | None:
        """The archived entity (an alias answers with what it became, resolved_from naming the id asked for), or
        None when the archive holds no appearance of it."""
        pool = await self._connection_pool()
        async with pool.acquire() as conn:
            target = await self._resolve(conn, site, entity_id)
            row = await conn.fetchrow("SELECT * FROM archive_entities WHERE site_id = $1 AND entity_id = $2",
                                      site, target)
            if row is None:
                return None
            apps = await conn.fetch(
                "SELECT detection_id, camera_id, camera_name, seen_at, similarity, plate FROM archive_appearances "
                "WHERE site_id = $1 AND entity_id = $2 AND seen_at IS NOT NULL ORDER BY seen_at, detection_id",
                site, target)
            merged = await conn.fetch("SELECT alias FROM archive_aliases WHERE site_id = $1 AND target = $2 "
                                      "ORDER BY alias", site, target)
        if not apps:
            return None
        return self._detail(row, apps, [m["alias"] for m in merged], entity_id)

    async def list_entities(self, site: str, entity_type: str | None, camera_id: str | None, since: float | None,
                            limit: int, offset: int) -> tuple[list[EntitySummary], int]:
        """The archived entities of a site, most recently seen first, filtered like the live list (a camera:
        entities it saw; since: last seen at or after), and how many match."""
        when = None if since is None else datetime.fromtimestamp(since, UTC)
        pool = await self._connection_pool()
        async with pool.acquire() as conn:
            found = await conn.fetch(LIST_ENTITIES, site, entity_type, camera_id, when, limit, offset)
            total = found[0]["total"] if found else await conn.fetchval(COUNT_ENTITIES, site, entity_type,
                                                                        camera_id, when)
            aliases = await conn.fetch("SELECT target, alias FROM archive_aliases WHERE site_id = $1 AND "
                                       "target = ANY($2::text[]) ORDER BY alias", site,
                                       [r["entity_id"] for r in found])
        merged: dict[str, list[str]] = {}
        for a in aliases:
            merged.setdefault(a["target"], []).append(a["alias"])
        return [self._summary(r, merged.get(r["entity_id"], [])) for r in found], int(total or 0)

    def _summary(self, row: asyncpg.Record, merged: list[str]) -> EntitySummary:
        s, eid = self.settings, row["entity_id"]
        return EntitySummary(
            id=eid, entity_id=eid, entity_type=row["entity_type"], site_id=row["site_id"],
            first_seen=row["first_seen"], last_seen=row["last_seen"], appearance_count=row["appearances"],
            cameras_seen=sorted(row["cameras"]),
            thumbnail_url=s.thumbnail_url(row["last_camera"], row["last_detection"], row["site_id"]),
            merged_ids=merged, name=row["name"], notes=row["notes"], trust=row["trust"] or "unknown",
            watch=row["watch"], retained_until=max(row["touched_at"], row["last_seen"]) + self.retention,
            source="archive")

    def _detail(self, row: asyncpg.Record, apps: list[asyncpg.Record], merged: list[str],
                asked: str) -> EntityDetail:
        s, eid, etype = self.settings, row["entity_id"], row["entity_type"]
        appearances = [EntityAppearance(
            detection_id=a["detection_id"], camera_id=a["camera_id"], camera_name=a["camera_name"] or a["camera_id"],
            timestamp=a["seen_at"], similarity_score=a["similarity"] if a["similarity"] is not None else 1.0,
            # Only the plate of the detection's attributes is archived (it travels on the match event).
            attributes={"plate": a["plate"]} if a["plate"] else None,
            thumbnail_url=s.thumbnail_url(a["camera_id"], a["detection_id"], row["site_id"])) for a in apps]
        latest = max(apps, key=lambda a: (a["seen_at"], a["detection_id"]))
        return EntityDetail(
            id=eid, entity_id=eid, entity_type=etype, site_id=row["site_id"], first_seen=apps[0]["seen_at"],
            last_seen=latest["seen_at"],
            appearance_count=len(apps), cameras_seen=sorted({a["camera_id"] for a in apps}),
            thumbnail_url=s.thumbnail_url(latest["camera_id"], latest["detection_id"], row["site_id"]),
            merged_ids=merged,
            name=row["name"], notes=row["notes"], trust=row["trust"] or "unknown", watch=row["watch"],
            retained_until=max(row["touched_at"], latest["seen_at"]) + self.retention, appearances=appearances,
            plates=entity_plates(etype, appearances),
            resolved_from=asked if asked != eid else None, source="archive")


def parse_records(values: Iterable[tuple[str, bytes | None]], matches_topic: str,
                  updates_topic: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(topic, value) pairs as (match events, entity updates, unreadable count). A record that is not a JSON
    object with the fields the archive needs is skipped: it was not written by a worker, and must not stall the
    archive."""
    matches: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    bad = 0
    for topic, value in values:
        try:
            doc = json.loads(value or b"")
            if topic == matches_topic:
                for f in ("detection_id", "entity_id", "entity_type", "camera_id", "timestamp"):
                    if not isinstance(doc.get(f), str):
                        raise ValueError(f"no {f}")
                _time(doc["timestamp"])
                matches.append(doc)
            elif topic == updates_topic:
                kind = doc.get("type", "merged")
                needs = {"merged": "merged", "split": "created"}.get(kind, "survivor")
                if kind not in UPDATE_TYPES or not all(isinstance(doc.get(f), str)
                                                       for f in ("survivor", "entity_type", "at", needs)):
                    raise ValueError("not an entity update")
                updates.append(doc)
        except (ValueError, TypeError, AttributeError):
            bad += 1
    return matches, updates, bad


@dataclass
class ArchiveHealth:
    """How the archiver's latest batch went: what /ready and /metrics say of the long-term memory."""

    ok: bool | None = None  # None: no batch yet
    error_code: str | None = None
    since: float = 0.0  # when ok last changed (epoch s)
    archived: int = 0  # appearances stored new since start

    def report(self, ok: bool, error_code: str | None = None) -> None:
        if ok != self.ok:
            self.since = time.time()
        self.ok, self.error_code = ok, error_code
