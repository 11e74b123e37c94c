"""Schemas of the topics' messages and of the HTTP views; topics/*.schema.json are generated from these."""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from reid_stream.errors import DetectionError

EntityType = Literal["person", "vehicle"]
Trust = Literal["trusted", "untrusted", "unknown"]
TRUSTS: tuple[str, ...] = ("trusted", "untrusted", "unknown")
Source = Literal["live", "archive"]
ENTITY_TYPES: tuple[str, ...] = ("person", "vehicle")
MAX_ATTRIBUTES_BYTES = 16384  # attributes travel on every match event and appearance: keep them small
# Deeper JSON is refused at decode: the stored appearance (pydantic reads at most 200 levels back) and the
# parser's own recursion limit would otherwise fail later, as an internal error, or not at all.
MAX_JSON_DEPTH = 64
Ident = Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")
DEFAULT_SITE = "default"
# A site names a Redis Cluster hash tag ({site}) and a Kafka key: no braces, no separators, short.
SITE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SiteId = Field(default=DEFAULT_SITE, pattern=SITE_PATTERN, description="The site (a household, a building) whose "
               "cameras can see the same people; entities never cross sites. Letters, digits, `.`, `_` and `-`, "
               "at most 64; `default` when not given.")


class BBox(BaseModel):
    """A box in pixels on the source image; x2 > x1 and y2 > y1."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    # strict: JSON numbers only, no "12" strings or booleans sneaking in as coordinates
    x1: float = Field(ge=0, strict=True)
    y1: float = Field(ge=0, strict=True)
    x2: float = Field(ge=0, strict=True)
    y2: float = Field(ge=0, strict=True)

    @model_validator(mode="after")
    def _positive_area(self) -> BBox:
        if not (self.x2 > self.x1 and self.y2 > self.y1):
            raise ValueError("bbox needs x2 > x1 and y2 > y1 (a positive area)")
        return self


class Detection(BaseModel):
    """One object seen by one camera in one frame (topic `detections`, keyed by camera_id)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    detection_id: str = Ident
    camera_id: str = Ident
    entity_type: EntityType
    site_id: str = SiteId
    timestamp: AwareDatetime
    bbox: BBox
    image_path: str | None = Field(default=None, min_length=1, max_length=4096)
    image_b64: str | None = Field(default=None, min_length=1)
    image_url: str | None = Field(default=None, min_length=1, max_length=4096)
    track_id: str | None = Field(default=None, max_length=256)
    camera_name: str | None = Field(default=None, max_length=256)
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp_is_iso_text(cls, value: Any) -> Any:
        # pydantic would read a bare number as epoch seconds; the contract is ISO 8601 text with a zone.
        if not isinstance(value, str):
            raise ValueError("timestamp must be an ISO 8601 string with a time zone")
        return value

    @field_validator("track_id", mode="before")
    @classmethod
    def _track_id_as_text(cls, value: Any) -> Any:
        # NVRs commonly number their tracks; keep them as text.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _one_image_reference(self) -> Detection:
        given = [n for n in ("image_path", "image_b64", "image_url") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of image_path, image_b64, image_url is required, got {given or 'none'}")
        return self


class MatchRef(BaseModel):
    detection_id: str
    entity_id: str
    camera_id: str
    timestamp: datetime
    similarity: float


class Candidate(BaseModel):
    """An entity the detection (or its tracklet) was compared with, and why it was not taken if refused."""

    entity_id: str
    similarity: float = Field(description="Cosine similarity to the entity's prototype.")
    refused: str | None = Field(default=None, description="Why this entity could not be joined, e.g. "
                                "`space_time`: it was seen elsewhere too recently to be here; `plate`: it "
                                "carries another licence plate.")


class TrackletRef(BaseModel):
    """The tracklet (camera_id, track_id) a detection belongs to, as the assign stage sees it."""

    key: str = Field(description="`camera_id|track_id`.")
    detections: int = Field(description="Detections of the tracklet so far, this one included.")
    redecided_from: str | None = Field(
        default=None, description="Set when the tracklet's aggregate contradicted this entity and the tracklet "
        "was decided again: its earlier detections stay with the entity named here.")


class MatchEvent(BaseModel):
    """The outcome for one detection (topic `entity-matches`, keyed by entity_id)."""

    detection_id: str
    entity_id: str
    is_new_entity: bool
    entity_type: EntityType
    site_id: str = DEFAULT_SITE
    camera_id: str
    camera_name: str | None = None
    track_id: str | None = None
    timestamp: datetime
    model: str
    matches: list[MatchRef] = Field(description="Best matches, highest similarity first.")
    processed_at: datetime
    decision: Literal["new", "joined", "tracklet", "merged", "plate"] = Field(
        default="joined", description="`new`: founded an entity; `joined`: matched an entity's prototype; "
        "`tracklet`: followed the entity of its tracklet; `merged`: its tracklet's entity was merged into the "
        "entity named here; `plate`: a vehicle whose licence plate an entity already carries, joined to it "
        "before any likeness was weighed.")
    ambiguous: bool = Field(default=False, description="The best two candidate entities were within "
                            "REID_MATCH_MARGIN of each other; `candidates` lists them.")
    candidates: list[Candidate] = Field(default_factory=list,
                                        description="Candidate entities, best first, refused ones included.")
    tracklet: TrackletRef | None = None
    entity_name: str | None = Field(default=None, description="The entity's name, as an operator set it "
                                    "(PATCH /api/entities/{id}) before this detection was decided; null if none.")
    trust: Trust | None = Field(default=None, description="The entity's trust as an operator set it; null if "
                                "never set.")
    plate: str | None = Field(default=None, description="Vehicles: the licence plate, normalised (A-Z and "
                              "digits), as given in `attributes.plate` or read off the crop (REID_PLATE_OCR); "
                              "null when none.")
    space_version: int = Field(default=0, description="The site's similarity space the decision was made in "
                               "(site adaptation, `reid-stream adapt`): 0 is the encoder's own space; the "
                               "similarities above are in this space.")


class Annotation(BaseModel):
    """An entity's operator fields after a PATCH (or a watch list change): all four, as they now are."""

    name: str | None = None
    notes: str | None = None
    trust: Trust | None = Field(default=None, description="null: unknown.")
    watch: str | None = Field(default=None, description="The watch list label; null: not watched.")


class EntityUpdate(BaseModel):
    """A change to entities after the fact (topic `entity-updates`, keyed by the survivor's id)."""

    type: Literal["merged", "split", "annotated", "erased"] = Field(
        description="`merged`: `merged` joined `survivor`; `split`: `detections` left `survivor` for the new "
        "entity `created`; `annotated`: an operator set `survivor`'s name, notes, trust or watch label "
        "(`annotation`); `erased`: `survivor`, the ids in `erased_ids` and its `detections` were erased.")
    survivor: str = Field(description="The entity that remains: for a merge, the merged one's appearances now "
                          "belong to it; for a split, the entity the detections were taken from.")
    merged: str | None = Field(default=None, description="Merges: the entity that no longer exists; the views "
                               "answer its id with the survivor.")
    entity_type: EntityType
    site_id: str = DEFAULT_SITE
    similarity: float | None = Field(default=None, description="Automatic merges: cosine similarity of the two "
                                     "prototypes when they were merged; null for an operator's correction.")
    at: datetime
    created: str | None = Field(default=None, description="Splits: the new entity the detections now belong to.")
    detections: list[str] | None = Field(default=None, description="Splits: the detections moved.")
    by: str | None = Field(default=None, description="The API token name of the operator who made the "
                           "correction; null for the assign stage's own merges.")
    annotation: Annotation | None = Field(default=None, description="Annotations: the entity's operator fields "
                                          "as they now are.")
    erased_ids: list[str] | None = Field(default=None, description="Erasures: the ids merged into the erased "
                                         "entity, erased with it.")


class DeadLetter(BaseModel):
    """An event that could not be processed (topic `detections-dlq`)."""

    error_code: str
    message: str
    stage: str
    time: datetime
    original_b64: str = Field(description="The original message value, base64 (cut if original_truncated).")
    original_size: int = Field(description="Size of the original message value in bytes.")
    original_truncated: bool = False
    original_key_b64: str | None = None
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    detection_id: str | None = None
    details: list[dict[str, Any]] | None = None


class EntityAppearance(BaseModel):
    detection_id: str
    camera_id: str
    camera_name: str = Field(description="The camera's name as the detection gave it; its id when none was given.")
    timestamp: datetime
    similarity_score: float = Field(
        description="Cosine similarity to the entity it joined, as its match event's candidates give it "
        "(`matches[0]` with REID_ASSIGNMENT=nearest); 1.0 for the founder.")
    attributes: dict[str, Any] | None = None
    thumbnail_url: str = Field(default="", description="The detection's crop (a JPEG).")

    @model_validator(mode="before")
    @classmethod
    def _stored_before_these_fields(cls, data: Any) -> Any:
        # Appearances stored by earlier versions (within the TTL) had a null score for the founder,
        # no name fallback and {} for no attributes.
        if isinstance(data, dict):
            if data.get("similarity_score") is None:
                data["similarity_score"] = 1.0
            if not data.get("camera_name"):
                data["camera_name"] = data.get("camera_id")
            if data.get("attributes") == {}:
                data["attributes"] = None
            if data.get("thumbnail_url") is None:
                data["thumbnail_url"] = ""
        return data


class EntitySummary(BaseModel):
    id: str
    entity_id: str = Field(description="The same as id (kept for earlier clients).")
    entity_type: EntityType
    site_id: str = DEFAULT_SITE
    first_seen: datetime
    last_seen: datetime
    appearance_count: int
    cameras_seen: list[str]
    thumbnail_url: str = Field(description="The crop of the entity's latest appearance (a JPEG).")
    merged_ids: list[str] = Field(default_factory=list,
                                  description="Entities merged into this one; their ids resolve to it.")
    name: str | None = Field(default=None, description="Set by an operator (PATCH); null if none.")
    notes: str | None = Field(default=None, description="Set by an operator (PATCH); null if none.")
    trust: Trust = Field(default="unknown", description="Set by an operator (PATCH).")
    watch: str | None = Field(default=None, description="The watch list label when the entity is watched: its "
                              "next appearances raise alerts on `entity-alerts`; null if not watched.")
    retained_until: datetime | None = Field(
        default=None, description="A named, trusted/untrusted or watched entity is kept (with its embeddings) until "
        "this time, REID_NAMED_RETENTION_SECONDS after its latest change or appearance; null: the embedding TTL.")
    source: Source = Field(default="live", description="`live`: from Redis, the worker's working memory; "
                           "`archive`: from the long-term memory (PostgreSQL, REID_ARCHIVE_URL), as Redis no "
                           "longer holds the entity, or as asked (GET /api/entities?source=archive).")


class EntityDetail(EntitySummary):
    appearances: list[EntityAppearance]
    space_version: int = Field(default=0, description="The similarity space its type is decided in at its site now "
                               "(site adaptation; 0: the encoder's own space). See GET /api/spaces.")
    plates: list[str] = Field(default_factory=list, description="Vehicles: the licence plates its appearances "
                              "carry (attributes.plate), most often seen first.")
    resolved_from: str | None = Field(default=None, description="The id asked for, when it named an entity "
                                      "since merged into this one.")


FreeText = Field(default=None, max_length=4096, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")  # newlines and tabs allowed
Label = Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")
# Text an operator writes that others read (the browser, Frigate, Home Assistant): no character that is invisible
# or reorders what follows it. By Unicode category: Cf (format: bidi embeddings, overrides and isolates, zero-width
# joiners and spaces, soft hyphen, BOM), Cs (lone surrogates), Zl and Zp (line and paragraph separators); and any
# other character whose bidi class is an explicit control.
HIDING_CATEGORIES = frozenset({"Cf", "Cs", "Zl", "Zp"})
BIDI_CONTROLS = frozenset({"LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI"})


def hidden_character(text: str) -> str | None:
    """The first character of text that could disguise it, as `U+XXXX NAME`; None when there is none."""
    for c in text:
        if unicodedata.category(c) in HIDING_CATEGORIES or unicodedata.bidirectional(c) in BIDI_CONTROLS:
            return f"U+{ord(c):04X} {unicodedata.name(c, 'unnamed')}"
    return None


def _visible(text: str | None) -> str | None:
    found = hidden_character(text) if text is not None else None
    if found is not None:
        raise PydanticCustomError("disallowed_character", "{character} is not allowed: invisible and bidi control "
                                  "characters can make a text show as something else", {"character": found})
    return text


Visible = AfterValidator(_visible)


class EntityPatch(BaseModel):
    """PATCH /api/entities/{id}: the fields given are set (null clears one); the others are left as they are."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str | None, Visible] = Field(default=None, min_length=1, max_length=256,
                                                 pattern=r"^[^\x00-\x1f\x7f]+$")
    notes: Annotated[str | None, Visible] = FreeText
    trust: Trust | None = Field(default=None, description="null sets it back to unknown.")
    watch: Annotated[str | None, Visible] = Field(
        default=None, min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$",
        description="A watch list label: watched (alerts on entity-alerts); null: unwatched.")

    @model_validator(mode="after")
    def _something(self) -> EntityPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one of name, notes, trust, watch")
        return self


class MergeRequest(BaseModel):
    """POST /api/entities/{id}/merge: the other entity is merged into this one, which keeps its id."""

    model_config = ConfigDict(extra="forbid")
    other_id: str = Ident


class SplitRequest(BaseModel):
    """POST /api/entities/{id}/split: these appearances leave it for a new entity (at least one must stay)."""

    model_config = ConfigDict(extra="forbid")
    detection_ids: list[str] = Field(min_length=1, max_length=1000)

    @field_validator("detection_ids")
    @classmethod
    def _idents(cls, ids: list[str]) -> list[str]:
        for d in ids:
            if not 0 < len(d) <= 256 or any(ord(c) < 0x20 for c in d):
                raise ValueError("each detection id has 1 to 256 characters and no control characters")
        return ids


class WatchRequest(BaseModel):
    """POST /api/watchlist with a JSON body: watch an existing entity (an image is enrolled with its raw body)."""

    model_config = ConfigDict(extra="forbid")
    entity_id: str = Ident
    label: Annotated[str, Visible] = Label


class WatchEntry(BaseModel):
    """One watch list entry: a watched entity, or an image enrolled as a look to watch for."""

    watch_id: str = Field(description="The entity's id (`kind` entity), or the enrolment's id (`kind` image); "
                          "DELETE /api/watchlist/{watch_id} removes it.")
    kind: Literal["entity", "image"]
    label: str
    entity_type: EntityType
    site_id: str = DEFAULT_SITE
    entity_id: str | None = Field(default=None, description="The watched entity (`kind` entity).")
    model: str | None = Field(default=None, description="Enrolments: the model whose vector space the image was "
                              "embedded in; only detections embedded by it are compared.")
    created_at: datetime | None = None
    by: str | None = Field(default=None, description="The API token name of the operator who added it.")
    retained_until: datetime | None = Field(default=None, description="When the entry ends unless renewed.")


class WatchList(BaseModel):
    entries: list[WatchEntry]
    count: int


class WatchAlert(BaseModel):
    """A watched entity or an enrolled look seen again (topic `entity-alerts`, keyed by entity_id)."""

    alert_id: str = Field(description="`{detection_id}/{watch_id}`: stable, so a consumer can drop a repeat.")
    watch_id: str
    kind: Literal["entity", "image"] = Field(description="`entity`: the detection joined a watched entity; "
                                             "`image`: it looks like an enrolled image.")
    label: str
    entity_id: str = Field(description="The entity the detection was assigned to.")
    entity_type: EntityType
    site_id: str = DEFAULT_SITE
    entity_name: str | None = None
    detection_id: str
    camera_id: str
    camera_name: str | None = None
    timestamp: datetime = Field(description="When the detection was seen.")
    similarity: float = Field(description="`entity`: to the entity, as its match event reports it; `image`: "
                              "cosine similarity to the enrolled image. 6 decimals.")
    model: str
    raised_at: datetime


class Correction(BaseModel):
    """The answer to a merge or split: the update (as published on entity-updates) and the entities now."""

    update: EntityUpdate
    entities: list[EntitySummary]


class SpaceInfo(BaseModel):
    """One (model, entity type)'s learned similarity space at a site (site adaptation, `reid-stream adapt`)."""

    entity_type: EntityType
    model: str
    version: int = Field(description="The current version; 0: the encoder's own space, nothing adopted.")
    threshold: float | None = Field(default=None, description="The similarity threshold calibrated on the site's "
                                    "own evidence for this version; null: REID_SIMILARITY_THRESHOLD.")
    validation: float | None = Field(default=None, description="Its held-out score when it was adopted "
                                     "(cross-camera recall at 1 % of known-different pairs, or TAR there).")
    validation_before: float | None = Field(default=None, description="The space it replaced, on the same "
                                            "held-out evidence.")
    evidence: dict[str, int] = Field(default_factory=dict, description="What it was learned from: detections, "
                                     "tracklets, known-different pairs, space-time successions, operator labels.")
    adopted_at: datetime | None = None
    versions: int = Field(default=0, description="Versions fitted so far (kept for rollback).")


class SpaceList(BaseModel):
    spaces: list[SpaceInfo]


class EntityList(BaseModel):
    entities: list[EntitySummary]
    count: int
    limit: int
    offset: int


class EntityHistory(BaseModel):
    id: str
    entity_id: str
    entity_type: EntityType
    site_id: str = DEFAULT_SITE
    appearances: list[EntityAppearance]
    count: int
    resolved_from: str | None = None
    source: Source = Field(default="live", description="`live` (Redis) or `archive` (PostgreSQL), as in "
                           "EntityDetail.")

    @classmethod
    def of(cls, detail: EntityDetail) -> EntityHistory:
        return cls(id=detail.id, entity_id=detail.entity_id, entity_type=detail.entity_type, site_id=detail.site_id,
                   appearances=detail.appearances, count=len(detail.appearances),
                   resolved_from=detail.resolved_from, source=detail.source)


ModelT = TypeVar("ModelT", bound=BaseModel)


def complete(cls: type[ModelT], **values: Any) -> ModelT:
    """What `cls.model_construct(**values)` builds, for values that give every field and are already valid,
    without its per-field alias and default handling: the single writer builds several per detection.
    `tests/unit/test_events.py` holds it equal to `model_construct` for each model it builds."""
    obj = _new(cls)
    _setattr(obj, "__dict__", values)
    _set_fields_set(obj, set(values))
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


# `complete`'s steps, looked up once: BaseModel's slots set straight through their descriptors (what
# object.__setattr__ finds for them, a third of `complete`'s cost), and object.__new__ (no model here has a
# __new__ of its own; BaseModel.__new__ is object's).
_new = object.__new__
_setattr = object.__setattr__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def parse_detection(raw: bytes, *, now: datetime | None = None, max_future_skew_seconds: int = 3600,
                    max_event_bytes: int | None = None) -> Detection:
    """Bytes from Kafka to a valid Detection, or a DetectionError saying exactly why not."""
    if max_event_bytes is not None and len(raw) > max_event_bytes:
        # Refused before parsing: a 50 MB JSON document would cost several times its size in memory.
        raise DetectionError("event_too_large", f"event has {len(raw)} bytes, limit {max_event_bytes}", "decode")
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DetectionError("invalid_json", f"value is not JSON: {exc}", "decode") from None
    except RecursionError:
        raise DetectionError("invalid_json", f"value is nested too deep (at most {MAX_JSON_DEPTH} levels)",
                             "decode") from None
    if not isinstance(payload, dict):
        raise DetectionError("invalid_json", "value must be a JSON object", "decode")
    if nested_deeper_than(payload, MAX_JSON_DEPTH):
        raise DetectionError("invalid_json", f"value is nested too deep (at most {MAX_JSON_DEPTH} levels)", "decode")
    try:
        det = Detection.model_validate(payload)
    except ValidationError as exc:
        details = [
            {"field": ".".join(map(str, e["loc"])) or "(root)", "type": e["type"], "message": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        code = "unknown_entity_type" if any(d["field"] == "entity_type" for d in details) else "schema_invalid"
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
        raise DetectionError(code, summary, "validate", details=details) from None
    if len(json.dumps(det.attributes, default=str)) > MAX_ATTRIBUTES_BYTES:
        raise DetectionError("attributes_too_large", f"attributes exceed {MAX_ATTRIBUTES_BYTES} bytes as JSON",
                             "validate")
    now = now or datetime.now(UTC)
    skew = (det.timestamp - now).total_seconds()
    if skew > max_future_skew_seconds or not math.isfinite(skew):
        raise DetectionError(
            "timestamp_out_of_range", f"timestamp {det.timestamp.isoformat()} is in the future", "validate")
    return det


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON-decoded value nests more than `limit` objects and arrays; iterative, so any depth is safe."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def fingerprint(det: Detection) -> str:
    """Identifies a detection's content: a redelivery matches it, a different event reusing the id does not."""
    return hashlib.blake2b(det.model_dump_json().encode(), digest_size=16).hexdigest()


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schemas kept in topics/, by topic role."""
    return {
        "detections": Detection.model_json_schema(),
        "entity-matches": MatchEvent.model_json_schema(),
        "detections-dlq": DeadLetter.model_json_schema(),
        "entity-updates": EntityUpdate.model_json_schema(),
        "entity-alerts": WatchAlert.model_json_schema(),
    }
