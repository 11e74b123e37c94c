"""The query parameters the list and search views share: one set of rules, one set of messages."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from reid_stream.events import DEFAULT_SITE, ENTITY_TYPES, SITE_PATTERN

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
MAX_OFFSET = 10_000_000
MAX_ID = 256


class ParamError(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


def int_param(query: Mapping[str, Any], name: str, default: int, lo: int, hi: int | None) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    # ASCII digits only: int() also takes "１０", "1_0", " 5" and "+5", which no client means and a cache or a
    # log would read differently.
    if not re.fullmatch(r"[0-9]{1,12}", raw):
        raise ParamError(name, f"{name} must be an integer written in the digits 0-9")
    value = int(raw)
    if value < lo or (hi is not None and value > hi):
        raise ParamError(name, f"{name} must be between {lo} and {hi}" if hi else f"{name} must be >= {lo}")
    return value


def time_param(query: Mapping[str, Any], name: str) -> float | None:
    """An ISO 8601 date-time with a time zone, as epoch seconds; None when absent."""
    if not query.get(name):
        return None
    try:
        when = datetime.fromisoformat(query[name])
    except ValueError:
        raise ParamError(name, f"{name} must be an ISO 8601 date-time") from None
    if when.tzinfo is None:
        raise ParamError(name, f"{name} must carry a time zone, e.g. 2026-01-01T00:00:00Z")
    return when.timestamp()


def site_param(query: Mapping[str, Any]) -> str:
    """The site a request is about (`site_id`, default `default`): entities never cross sites."""
    site = query.get("site_id") or DEFAULT_SITE
    if not re.fullmatch(SITE_PATTERN, site):
        raise ParamError("site_id", "site_id has 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
                         "or digit")
    return site


def source_param(query: Mapping[str, Any]) -> str:
    """Where GET /api/entities lists from: `live` (Redis, the default) or `archive` (PostgreSQL)."""
    source = query.get("source") or "live"
    if source not in ("live", "archive"):
        raise ParamError("source", "source must be live or archive")
    return source


def parse_list_params(query: Mapping[str, Any]) -> dict[str, Any]:
    """Validated filters and paging of GET /api/entities; ParamError names the bad one."""
    entity_type = query.get("entity_type") or None
    if entity_type is not None and entity_type not in ENTITY_TYPES:
        raise ParamError("entity_type", f"entity_type must be one of {', '.join(ENTITY_TYPES)}")
    camera_id = query.get("camera_id") or None
    if camera_id is not None and len(camera_id) > MAX_ID:
        raise ParamError("camera_id", f"camera_id is longer than {MAX_ID} characters")
    return {
        "entity_type": entity_type,
        "camera_id": camera_id,
        "since": time_param(query, "since"),
        "limit": int_param(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        "offset": int_param(query, "offset", 0, 0, MAX_OFFSET),
    }
