"""What the views say of a site's learned similarity spaces: the current version per entity type, with the
figures it was adopted on (read from the store's history; never the arrays themselves)."""

from __future__ import annotations

from datetime import UTC, datetime

from reid_stream.events import ENTITY_TYPES, SpaceInfo, SpaceList
from reid_stream.store.spaces import SpaceStore


class SpaceViews:
    def __init__(self, spaces: SpaceStore) -> None:
        self.spaces = spaces

    async def version(self, model: str, etype: str) -> int:
        version, _ = await self.spaces.current_version(model, etype)
        return version

    async def describe(self, model: str) -> SpaceList:
        out = []
        for etype in ENTITY_TYPES:
            version, _ = await self.spaces.current_version(model, etype)
            history = await self.spaces.history(model, etype)
            entry = history.get(version, {}) if version else {}
            validation = entry.get("validation") or {}
            before = entry.get("before") or {}
            at = entry.get("at")
            out.append(SpaceInfo(
                entity_type=etype, model=model, version=version, threshold=entry.get("threshold"),
                validation=validation.get("score"), validation_before=before.get("score"),
                evidence=entry.get("evidence") or {}, versions=len([v for v in history if v]),
                adopted_at=datetime.fromtimestamp(at, UTC) if at else None))
        return SpaceList(spaces=out)
