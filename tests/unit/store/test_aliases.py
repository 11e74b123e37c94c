"""The pure helpers behind merges and erasure: alias resolution and scrubbing stored match events."""

from __future__ import annotations

from reid_stream.store.erasure import named_entities, scrub_event
from reid_stream.store.reid_store import resolve_alias


def test_aliases_resolve_through_chains_and_stop_at_a_cycle():
    aliases = {"a": "b", "b": "c", "p": "q", "q": "p"}
    assert resolve_alias(aliases, "a") == "c"
    assert resolve_alias(aliases, "c") == "c" and resolve_alias(aliases, "zz") == "zz"
    assert resolve_alias(aliases, "p") in {"p", "q"}  # ends, whatever it answers
    long_chain = {str(i): str(i + 1) for i in range(1000)}
    assert resolve_alias(long_chain, "0") != "0"  # bounded, not a thousand hops


def event(**extra: object) -> dict:
    return {"detection_id": "d", "entity_id": "me", "matches": [
        {"detection_id": "x1", "entity_id": "x", "camera_id": "c", "timestamp": "t", "similarity": 0.9},
        {"detection_id": "m1", "entity_id": "me", "camera_id": "c", "timestamp": "t", "similarity": 0.8}],
        "candidates": [{"entity_id": "x", "similarity": 0.9}, {"entity_id": "y", "similarity": 0.5}], **extra}


def test_named_entities_are_the_others_in_matches_candidates_and_tracklet():
    assert named_entities(event()) == {"x", "y"}
    assert named_entities(event(tracklet={"key": "c|1", "detections": 2, "redecided_from": "z"})) == {"x", "y", "z"}
    assert named_entities({"entity_id": "me", "matches": []}) == set()  # stored before candidates existed


def test_scrub_drops_erased_entities_and_detections_only():
    ev = event(tracklet={"key": "c|1", "detections": 2, "redecided_from": "x"})
    assert scrub_event(ev, {"x"}, {"m1"})
    assert ev["matches"] == [] and ev["candidates"] == [{"entity_id": "y", "similarity": 0.5}]
    assert ev["tracklet"]["redecided_from"] is None
    untouched = event()
    assert not scrub_event(untouched, {"nobody"}, {"none"}) and untouched == event()
