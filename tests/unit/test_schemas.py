import json
from pathlib import Path

from reid_stream.config import Settings
from reid_stream.events import json_schemas
from reid_stream.stream.topics import TOPICS_DIR, topic_specs


def test_topic_schemas_match_the_code():
    for role, schema in json_schemas().items():
        path = TOPICS_DIR / f"{role}.schema.json"
        assert json.loads(path.read_text()) == schema, f"{path} is stale: run `make schemas`"


def test_every_topic_has_settings():
    specs = {s["role"]: s for s in topic_specs(Settings.from_env({}))}
    assert set(specs) == {"detections", "entity-matches", "detections-dlq", "reid-embedded", "entity-updates",
                          "entity-alerts"}
    assert all(s["partitions"] >= 1 and "cleanup.policy" in s["config"] for s in specs.values())


def test_topics_dir_is_the_repos():
    assert Path(__file__).resolve().parents[2] / "topics" == TOPICS_DIR


def test_appearances_stored_by_earlier_versions_read_in_the_current_shape():
    from reid_stream.events import EntityAppearance

    old = EntityAppearance.model_validate_json(
        '{"detection_id": "d", "camera_id": "c", "camera_name": null, "timestamp": "2026-01-01T00:00:00Z",'
        ' "similarity_score": null, "attributes": {}, "thumbnail_url": null}')
    assert (old.similarity_score, old.camera_name, old.attributes, old.thumbnail_url) == (1.0, "c", None, "")
