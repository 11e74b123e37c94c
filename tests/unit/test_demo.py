"""The demo's verdict line: a join is right when the entity was founded by the same person, also when the
entity comes from an earlier demo run (entities outlive a run until their TTL)."""

from reid_stream.demo import _line

TRUTH = {"demoB-det-000001": 1, "demoB-det-000002": 1, "demoB-det-000003": 2, "demoB-det-000004": 0}


def event(det: str, entity: str, new: bool = False) -> dict:
    return {"detection_id": det, "entity_id": entity, "is_new_entity": new, "matches": [{"similarity": 0.9}],
            "timestamp": "2026-01-01T08:00:00Z", "camera_id": "cam-1"}


def test_joins_are_judged_by_who_founded_the_entity():
    assert _line(event("demoB-det-000001", "demoB-det-000001", new=True), TRUTH).endswith("NEW entity")
    assert _line(event("demoB-det-000002", "demoB-det-000001"), TRUTH).endswith("right")
    assert _line(event("demoB-det-000003", "demoB-det-000001"), TRUTH).endswith("WRONG: founded by person 1")
    assert "junk box" in _line(event("demoB-det-000004", "demoB-det-000003"), TRUTH)


def test_an_earlier_runs_entity_is_judged_by_the_same_site_detection():
    line = _line(event("demoB-det-000002", "demoA-det-000001"), TRUTH)
    assert line.endswith("right") and "earlier run demoA" in line
    assert _line(event("demoB-det-000003", "demoA-det-000001"), TRUTH).endswith("WRONG: founded by person 1")


def test_the_demo_prints_every_kind_of_entity_update():
    from reid_stream.demo import describe_update

    assert describe_update({"type": "merged", "survivor": "a", "merged": "b", "similarity": 0.98123, "by": None}) \
        == "b merged into a (similarity 0.981)"
    assert describe_update({"type": "merged", "survivor": "a", "merged": "b", "similarity": None, "by": "ops"}) \
        == "b merged into a by ops"
    assert describe_update({"type": "split", "survivor": "a", "created": "split-1", "detections": ["x", "y"],
                            "by": "ops"}) == "2 detections split from a into split-1 by ops"
