"""The OpenAPI 3.1 document of the HTTP views, built from the same pydantic models the views return."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from reid_stream import __version__
from reid_stream.api.search import MAX_TEXT_CHARS, UPLOAD_TYPES, SearchResults
from reid_stream.events import (
    DEFAULT_SITE,
    ENTITY_TYPES,
    SITE_PATTERN,
    Correction,
    EntityDetail,
    EntityHistory,
    EntityList,
    EntityPatch,
    MergeRequest,
    SpaceList,
    SplitRequest,
    WatchEntry,
    WatchList,
    WatchRequest,
)

REF = "#/components/schemas/{model}"
MERGED_ID = ("The id of an entity since merged into another answers with that entity; `resolved_from` names the "
             "id asked for.")
ARCHIVED = (" With the long-term memory on (REID_ARCHIVE_URL), an entity Redis no longer holds answers from the "
            "archive, with `source: archive`.")


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": REF.format(
        model="Error")}}}}


def _ok(model: str) -> dict[str, Any]:
    return {"description": "OK", "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}}}


def _body(model: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}}}


CORRECTION_ERRORS = {
    "409": _error("the correction contradicts another: same_entity, entity_type_mismatch, entities_split_apart, "
                  "plate_conflict"),
    "413": _error("the body is over 256 KiB (body_too_large)"),
    "422": _error("the body is invalid (invalid_body; a name, notes or label holding an invisible or bidi control "
                  "character, Unicode category Cf, Cs, Zl or Zp, is a `disallowed_character` field error), or a "
                  "detection is not the entity's (detection_not_in_entity), or a split would take every appearance "
                  "(split_takes_everything)"),
}


def build_openapi(archive: bool = False) -> dict[str, Any]:
    """The worker's API; `archive`: it has the long-term memory, so GET /api/entities takes `source`."""
    models = [(m, "serialization") for m in (EntityList, EntityDetail, EntityHistory, Correction, SearchResults,
                                             WatchList, WatchEntry, SpaceList)]
    models += [(m, "validation") for m in (EntityPatch, MergeRequest, SplitRequest, WatchRequest)]
    _, defs = models_json_schema(models, ref_template=REF)
    schemas = defs["$defs"]
    schemas["Error"] = {"type": "object", "required": ["detail"],
                        "properties": {"detail": {}, "error_code": {"type": "string"}}}
    entity_id = {"name": "entity_id", "in": "path", "required": True,
                 "description": "Percent-encoded: any id the stream accepts, \"{\", \"}\" and \"/\" (%2F) included.",
                 "schema": {"type": "string", "minLength": 1, "maxLength": 256}}
    detection_id = {**entity_id, "name": "detection_id"}
    common = {"401": _error("missing or wrong bearer token"),
              "503": _error("storage unavailable (Redis; or archive_unavailable: the archive, for an entity Redis "
                            "no longer holds)")}
    busy = {"503": _error("storage unavailable, or the stream kept changing the entities (correction_conflict): "
                          "retry")}
    search = _search_parameters()
    found = {"200": _ok("SearchResults"), "422": _error("a filter or paging parameter is invalid (invalid_parameter)"),
             "409": _error("vectors stored under this worker's model id have another dimension than its model "
                           "gives (dimension_mismatch): they cannot be compared")}
    return _with_site({
        "openapi": "3.1.0",
        "info": {"title": "reid-stream", "version": __version__,
                 "description": "Entities re-identified across cameras. Every /api route needs a bearer token."},
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": {
            "/api/entities": {"get": {
                "summary": "List entities, most recently seen first",
                "parameters": [
                    {"name": "entity_type", "in": "query", "schema": {"type": "string", "enum": list(ENTITY_TYPES)}},
                    {"name": "camera_id", "in": "query", "schema": {"type": "string", "maxLength": 256}},
                    {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                    {"name": "limit", "in": "query", "description": "ASCII digits 0-9 only.",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
                    {"name": "offset", "in": "query", "description": "ASCII digits 0-9 only.",
                     "schema": {"type": "integer", "minimum": 0, "maximum": 10_000_000, "default": 0}},
                    *([{"name": "source", "in": "query",
                        "schema": {"type": "string", "enum": ["live", "archive"], "default": "live"},
                        "description": "`archive`: the long-term memory's entities (REID_ARCHIVE_URL), also those "
                                       "Redis no longer holds; a camera filter lists the entities it saw."}]
                      if archive else []),
                ],
                "responses": {"200": _ok("EntityList"), "422": _error("a parameter is invalid"), **common},
            }},
            "/api/entities/{entity_id}": {
                "get": {"summary": "One entity with its appearances", "description": MERGED_ID + ARCHIVED,
                        "parameters": [entity_id],
                        "responses": {"200": _ok("EntityDetail"), "404": _error("unknown entity"), **common}},
                "delete": {"summary": "Erase an entity, its appearances and embeddings",
                           "description": "A merged id erases the entity it became. Also erased: its markers, "
                           "merged ids and aliases, and every mention of it in other detections' stored match "
                           "events; with the archive on, its rows there too (`purged.archive`: erased, or pending "
                           "while PostgreSQL is down), or there alone once Redis forgot it (`purged.source`: "
                           "archive).", "parameters": [entity_id],
                           "responses": {"200": {"description": "erased"}, "404": _error("unknown entity"),
                                         **common}},
                "patch": {"summary": "Set an entity's name, notes, trust and watch label",
                          "description": "Fields given are set, null clears one, others stay. A named, watched, "
                          "trusted or untrusted entity and its embeddings are kept for REID_NAMED_RETENTION_SECONDS "
                          "from its latest change or appearance. " + MERGED_ID, "parameters": [entity_id],
                          "requestBody": _body("EntityPatch"),
                          "responses": {"200": _ok("EntityDetail"), "404": _error("unknown entity"),
                                        **CORRECTION_ERRORS, **common, **busy}},
            },
            "/api/entities/{entity_id}/merge": {"post": {
                "summary": "Merge another entity into this one (this one keeps its id)",
                "description": "Atomic with the assign stage; published on entity-updates (type merged, by).",
                "parameters": [entity_id], "requestBody": _body("MergeRequest"),
                "responses": {"200": _ok("Correction"), "404": _error("unknown entity"), **CORRECTION_ERRORS,
                              **common, **busy},
            }},
            "/api/entities/{entity_id}/split": {"post": {
                "summary": "Move some of an entity's appearances into a new entity",
                "description": "Atomic with the assign stage; published on entity-updates (type split, created, "
                "detections, by). The two are kept apart: no automatic merge or tracklet joins them again.",
                "parameters": [entity_id], "requestBody": _body("SplitRequest"),
                "responses": {"200": _ok("Correction"), "404": _error("unknown entity"), **CORRECTION_ERRORS,
                              **common, **busy},
            }},
            "/api/entities/{entity_id}/history": {"get": {
                "summary": "An entity's appearances, oldest first", "description": MERGED_ID + ARCHIVED,
                "parameters": [entity_id],
                "responses": {"200": _ok("EntityHistory"), "404": _error("unknown entity"), **common},
            }},
            "/api/detections/{detection_id}/image": {"get": {
                "summary": "The detection's crop as a JPEG, cut on demand from its original image",
                "parameters": [detection_id],
                "responses": {
                    "200": {"description": "the crop, longer side at most REID_THUMBNAIL_MAX_SIDE",
                            "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
                    "403": _error("the image reference is no longer allowed (roots or URL allow-list changed)"),
                    "404": _error("unknown, expired or erased detection (detection_not_found), or an inline "
                                  "image, which is not kept (image_not_kept)"),
                    "410": _error("the source image is gone (image_gone)"),
                    "422": _error("the source image can no longer be decoded or cropped (image_unusable)"),
                    "502": _error("the source image URL could not be fetched (image_fetch_failed)"),
                    **common},
            }},
            "/api/detections/{detection_id}/similar": {"get": {
                "summary": "Stored appearances most like a stored detection (itself left out)",
                "description": "Of the detection's own type unless entity_type names another. " + SEARCH_NOTE,
                "parameters": [detection_id, *search],
                "responses": {**found,
                              "404": _error("unknown, expired or erased detection (detection_not_found)"),
                              "409": _error("embedded by another model than the worker's (other_model)"),
                              "410": _error("its embedding was evicted by REID_MAX_EMBEDDINGS (embedding_evicted)"),
                              **common},
            }},
            "/api/search": {"get": {
                "summary": "Stored appearances most like a text, through the CLIP text tower",
                "description": "Only where the encoder has a text tower (open_clip models with one). " + SEARCH_NOTE,
                "parameters": [{"name": "text", "in": "query", "required": True,
                                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS}},
                               *search],
                "responses": {**found,
                              "400": _error("no text (text_required), too long (text_too_long), control characters "
                                            "(text_invalid), or an encoder without a text tower "
                                            "(text_search_unavailable)"),
                              **common},
            }},
            "/api/search/image": {"post": {
                "summary": "Stored appearances most like an uploaded image (the whole image is the crop)",
                "description": "The body is the raw image; it is never stored. " + SEARCH_NOTE,
                "parameters": search,
                "requestBody": {"required": True, "content": {
                    t: {"schema": {"type": "string", "format": "binary"}} for t in UPLOAD_TYPES}},
                "responses": {**found,
                              "400": _error("empty body (empty_image) or bytes that do not decode "
                                            "(image_decode_failed)"),
                              "413": _error("over REID_MAX_IMAGE_BYTES (image_too_large) or REID_MAX_IMAGE_PIXELS "
                                            "(image_too_many_pixels)"),
                              "415": _error("a Content-Type other than image/jpeg or image/png "
                                            "(unsupported_media_type), or bytes of another format "
                                            "(unsupported_image_format)"),
                              **common},
            }},
            "/api/watchlist": {
                "get": {"summary": "The watch list: watched entities and enrolled images",
                        "responses": {"200": _ok("WatchList"), **common}},
                "post": {
                    "summary": "Watch an entity (JSON body), or enrol an image (raw body) as a look to watch for",
                    "description": "Alerts go to entity-alerts, at most one per detection, rate-limited per entry "
                    "and camera (REID_ALERT_COOLDOWN_SECONDS). An enrolled image is embedded by the worker's model "
                    "and never stored; it is kept REID_NAMED_RETENTION_SECONDS.",
                    "parameters": [
                        {"name": "label", "in": "query",
                         "description": "Images: what the alerts will say (no invisible or bidi control "
                         "characters: invalid_label).",
                         "schema": {"type": "string", "minLength": 1, "maxLength": 256}},
                        {"name": "entity_type", "in": "query", "description": "Images: person (default) or vehicle.",
                         "schema": {"type": "string", "enum": list(ENTITY_TYPES)}}],
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": {"$ref": REF.format(model="WatchRequest")}},
                        **{t: {"schema": {"type": "string", "format": "binary"}} for t in UPLOAD_TYPES}}},
                    "responses": {
                        "201": {"description": "added", "content": {"application/json": {
                            "schema": {"$ref": REF.format(model="WatchEntry")}}}},
                        "400": _error("empty image (empty_image) or bytes that do not decode (image_decode_failed)"),
                        "404": _error("unknown entity (entity_not_found)"),
                        "413": _error("over REID_MAX_IMAGE_BYTES or REID_MAX_IMAGE_PIXELS, or a JSON body over "
                                      "256 KiB"),
                        "415": _error("another Content-Type (unsupported_media_type) or image format "
                                      "(unsupported_image_format)"),
                        "422": _error("invalid JSON body (invalid_body), label (invalid_label) or entity_type "
                                      "(invalid_entity_type)"),
                        **common, **busy}},
            },
            "/api/spaces": {"get": {
                "summary": "The site's learned similarity spaces: the current version per entity type for the "
                           "worker's model, its threshold and the held-out figures it was adopted on",
                "responses": {"200": _ok("SpaceList"), **common},
            }},
            "/api/watchlist/{watch_id}": {"delete": {
                "summary": "Remove a watch list entry: delete an enrolment, or unwatch an entity (which stays)",
                "parameters": [{**entity_id, "name": "watch_id"}],
                "responses": {"200": {"description": "removed"},
                              "404": _error("neither an enrolment nor a watched entity (watch_not_found)"),
                              **common},
            }},
        },
    })


SITE = {"name": "site_id", "in": "query", "description": "The site (default `default`): entities never cross "
        "sites. A malformed one is 422 invalid_parameter.",
        "schema": {"type": "string", "pattern": SITE_PATTERN, "default": DEFAULT_SITE}}


def _with_site(doc: dict[str, Any]) -> dict[str, Any]:
    """Every entity, detection, search and watch list route reads and writes one site's entities."""
    for path, ops in doc["paths"].items():
        if path.startswith("/api/") and path != "/api/openapi.json":
            for op in ops.values():
                op["parameters"] = [*op.get("parameters", []), SITE]
    return doc


SEARCH_NOTE = ("Only vectors of the worker's model are compared. Results are appearances, best first, filtered and "
               "paged like GET /api/entities, plus `until`; stored vectors are re-read at most every 2 s.")


def _search_parameters() -> list[dict[str, Any]]:
    return [
        {"name": "entity_type", "in": "query", "schema": {"type": "string", "enum": list(ENTITY_TYPES)}},
        {"name": "camera_id", "in": "query", "schema": {"type": "string", "maxLength": 256}},
        {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}},
        {"name": "until", "in": "query", "schema": {"type": "string", "format": "date-time"}},
        {"name": "limit", "in": "query", "description": "ASCII digits 0-9 only.",
         "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
        {"name": "offset", "in": "query", "description": "ASCII digits 0-9 only.",
         "schema": {"type": "integer", "minimum": 0, "maximum": 10_000_000, "default": 0}},
    ]
