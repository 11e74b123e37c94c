import json
from pathlib import Path

import pytest

from reid_stream.api.auth import Auditor, Authenticator, parse_tokens
from reid_stream.api.openapi import build_openapi
from reid_stream.config import ConfigError, Settings

SECRET = "s3cret-token-0123456789"


def test_named_and_bare_tokens_are_identified_by_name():
    auth = Authenticator(parse_tokens([f"ops:{SECRET}", "x" * 20], "REID_API_TOKENS"), required=True)
    assert auth.identify(f"Bearer {SECRET}") == "ops"
    assert auth.identify("Bearer " + "x" * 20) == "REID_API_TOKENS-2"
    for header in (None, "", SECRET, f"Basic {SECRET}", f"Bearer {SECRET}x", "Bearer "):
        assert auth.identify(header) is None


def test_short_tokens_are_a_configuration_error():
    with pytest.raises(ConfigError):
        parse_tokens(["ops:short"], "REID_API_TOKENS")


def test_token_file(tmp_path: Path):
    f = tmp_path / "tokens"
    f.write_text(f"# operators\nalice:{SECRET}\n\n")
    auth = Authenticator.from_settings(Settings.from_env({"REID_API_TOKEN_FILE": str(f)}))
    assert auth.identify(f"Bearer {SECRET}") == "alice"
    with pytest.raises(ConfigError) as err:
        Authenticator.from_settings(Settings.from_env({"REID_API_TOKEN_FILE": str(tmp_path / "missing")}))
    assert "REID_API_TOKEN_FILE" in str(err.value)


def test_audit_lines_name_the_token_never_the_secret(tmp_path: Path):
    path = tmp_path / "audit.log"
    Auditor(True, str(path)).record("alice", "GET", "/api/entities", {"limit": "5"}, 200)
    Auditor(False, str(path)).record("bob", "GET", "/api/entities", {}, 200)
    (line,) = path.read_text().splitlines()
    entry = json.loads(line)
    assert entry["token"] == "alice" and entry["route"] == "/api/entities" and entry["params"] == {"limit": "5"}
    assert entry["time"] and SECRET not in line


def test_openapi_document_describes_every_route():
    doc = build_openapi()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {"/api/entities", "/api/entities/{entity_id}", "/api/entities/{entity_id}/history",
                                 "/api/entities/{entity_id}/merge", "/api/entities/{entity_id}/split",
                                 "/api/detections/{detection_id}/image", "/api/detections/{detection_id}/similar",
                                 "/api/search", "/api/search/image", "/api/watchlist", "/api/watchlist/{watch_id}",
                                 "/api/spaces"}
    assert {"EntityList", "EntityDetail", "EntityHistory", "EntitySummary", "EntityAppearance", "EntityPatch",
            "MergeRequest", "SplitRequest", "Correction", "SearchResults", "SearchHit", "WatchList", "WatchEntry",
            "WatchRequest"} <= set(
        doc["components"]["schemas"])
    # Every method of every /api view is documented (and so reached by schemathesis), and nothing more.
    from reid_stream.api.views import ROUTES

    served = {(path, m) for path, view in ROUTES.items() if path.startswith("/api/") and path != "/api/openapi.json"
              for m in ("get", "post", "patch", "put", "delete") if m in vars(view)}
    documented = {(path, m) for path, ops in doc["paths"].items() for m in ops}
    assert served == documented
    json.dumps(doc)  # serialisable as served


def test_the_list_takes_source_only_where_the_worker_has_the_archive():
    """The entity browser shows its archive switch from the document: it is listed only where it works."""
    def names(doc: dict) -> list[str]:
        return [p["name"] for p in doc["paths"]["/api/entities"]["get"]["parameters"]]

    assert "source" not in names(build_openapi())
    assert "source" in names(build_openapi(archive=True))
