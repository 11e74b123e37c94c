"""Licence plates in the pure identity core: a plate decides before likeness, another plate refuses, and a
vehicle without a plate is decided exactly as before."""

from __future__ import annotations

import numpy as np

from reid_stream.identity.decide import PLATE_REFUSAL, Decider, Incoming, Policy, track_key
from reid_stream.identity.gallery import Gallery, Row, plates_conflict, unit

DIM = 16
POLICY = Policy(threshold=0.8, margin=0.02, ambiguous_policy="new_entity", merge_threshold=0.95)


def look(base: int, seed: int = 0, noise: float = 0.05) -> np.ndarray:
    """A vehicle's look: the base direction, slightly different in each frame."""
    v = np.random.default_rng(base).normal(size=DIM) + noise * np.random.default_rng(1000 + seed).normal(size=DIM)
    return unit(v).astype(np.float32)


def vehicle(g: Gallery, entity: str, cam: str, track: str, t0: float, base: int, plate: str | None,
            frames: int = 3) -> None:
    for i in range(frames):
        g.add(Row(f"{entity}-{cam}-{track}-{i}", entity, f"{cam}|{track}", cam, t0 + i, look(base, i), 1.0, plate))


def incoming(det: str, cam: str, ts: float, v: np.ndarray, plate: str | None = None,
             track: str | None = None) -> Incoming:
    key, has = track_key(cam, track, det)
    return Incoming(det, cam, ts, v, key, 1.0, has, plate)


def test_the_conflict_rule():
    assert plates_conflict({"A1"}, {"B2"}) and plates_conflict({"A1", "C3"}, {"B2"})
    assert not plates_conflict({"A1"}, {"A1", "B2"})  # one shared: a misread on one side, not two vehicles
    assert not plates_conflict(set(), {"B2"}) and not plates_conflict({"A1"}, set())  # no plate: no conflict


def test_a_plate_decides_the_vehicle_whatever_its_look():
    g = Gallery(DIM)
    vehicle(g, "V", "cam1", "1", 0.0, base=1, plate="AB123CD")
    other_look = look(2)
    assert float(other_look @ g.entities["V"].agg.mean()) < POLICY.threshold - POLICY.margin  # nobody by look
    d = Decider(g, POLICY).decide(incoming("x", "cam2", 100.0, other_look, "AB123CD"))
    assert (d.kind, d.entity_id) == ("plate", "V")
    assert d.candidates[0].entity_id == "V" and d.candidates[0].refused is None
    assert d.candidates[0].similarity < POLICY.threshold  # reported as it is: the plate decided, not the likeness
    # Without the plate, the same detection is a stranger, exactly as before plates.
    d = Decider(g, POLICY).decide(incoming("x", "cam2", 100.0, other_look))
    assert (d.kind, d.entity_id) == ("new", "x")


def test_another_plate_refuses_a_lookalike_and_no_plate_joins_it_as_before():
    g = Gallery(DIM)
    vehicle(g, "V", "cam1", "1", 0.0, base=1, plate="AB123CD")
    twin = look(1, seed=7)
    d = Decider(g, POLICY).decide(incoming("y", "cam2", 100.0, twin, "XY987ZT"))
    assert (d.kind, d.entity_id) == ("new", "y")
    assert [(c.entity_id, c.refused) for c in d.candidates] == [("V", PLATE_REFUSAL)]
    assert "AB123CD" not in PLATE_REFUSAL  # a plate never shows in another vehicle's event
    d = Decider(g, POLICY).decide(incoming("y", "cam2", 100.0, twin))
    assert (d.kind, d.entity_id) == ("joined", "V") and d.candidates[0].refused is None


def test_a_vehicle_without_a_plate_yet_is_joined_by_look_and_then_carries_the_plate():
    g = Gallery(DIM)
    vehicle(g, "V", "cam1", "1", 0.0, base=1, plate=None)
    d = Decider(g, POLICY).decide(incoming("z", "cam2", 100.0, look(1, seed=8), "AB123CD"))
    assert (d.kind, d.entity_id) == ("joined", "V")
    g.add(Row("z", "V", "det|z", "cam2", 100.0, look(1, seed=8), 1.0, "AB123CD"))
    assert g.holders == {"AB123CD": {"V"}} and g.plates_of("V") == {"AB123CD"}


def test_the_space_time_gate_still_applies_to_a_plate():
    """A plate at two cameras at once is a cloned plate or a misread: the plate does not decide."""
    g = Gallery(DIM)
    vehicle(g, "V", "cam1", "1", 0.0, base=1, plate="AB123CD")
    d = Decider(g, POLICY).decide(incoming("c", "cam2", 1.0, look(2), "AB123CD"))
    assert d.kind == "new" and d.candidates[0].entity_id == "V" and d.candidates[0].refused.startswith("space_time")


def test_automatic_merges_never_join_different_plates():
    def two(plate_b: str | None) -> Gallery:
        g = Gallery(DIM)
        vehicle(g, "A", "cam1", "1", 0.0, base=1, plate="AB123CD")
        vehicle(g, "B", "cam2", "4", 100.0, base=1, plate=plate_b)
        return g

    assert Decider(two(None), POLICY).convergent({"B"})  # alike, one plate: merged as before
    assert Decider(two("AB123CD"), POLICY).convergent({"B"})
    assert Decider(two("XY987ZT"), POLICY).convergent({"B"}) == []


def test_a_tracklet_whose_plate_contradicts_its_entity_is_decided_again():
    g = Gallery(DIM)
    vehicle(g, "V", "cam1", "1", 0.0, base=1, plate="AB123CD")
    vehicle(g, "V", "cam3", "5", 100.0, base=1, plate=None, frames=2)  # a look-alike joined V by its look
    d = Decider(g, POLICY).decide(incoming("t", "cam3", 102.0, look(1, seed=9), "XY987ZT", track="5"))
    assert (d.kind, d.entity_id, d.redecided_from) == ("new", "t", "V")
    # If the plate is one already known, the tracklet goes to that vehicle.
    vehicle(g, "W", "cam9", "2", -500.0, base=3, plate="XY987ZT")
    d = Decider(g, POLICY).decide(incoming("t", "cam3", 102.0, look(1, seed=9), "XY987ZT", track="5"))
    assert (d.kind, d.entity_id, d.redecided_from) == ("plate", "W", "V")
    # Its own earlier frames reading another plate do not break the tracklet (one vehicle, one misread).
    g2 = Gallery(DIM)
    vehicle(g2, "V", "cam1", "1", 0.0, base=1, plate="AB123CD")
    d = Decider(g2, POLICY).decide(incoming("m", "cam1", 3.0, look(1, seed=3), "AB123C0", track="1"))
    assert (d.kind, d.entity_id) == ("tracklet", "V")
    # An operator's merge pinned the tracklet: their word stands.
    g.pinned = {"cam3|5"}
    d = Decider(g, POLICY).decide(incoming("t", "cam3", 102.0, look(1, seed=9), "XY987ZT", track="5"))
    assert (d.kind, d.entity_id) == ("tracklet", "V")


def test_a_tracklet_that_first_reads_a_known_plate_joins_that_vehicle():
    g = Gallery(DIM)
    vehicle(g, "V", "cam1", "1", 0.0, base=1, plate="AB123CD")
    vehicle(g, "T", "cam2", "8", 100.0, base=2, plate=None, frames=2)  # the plate unreadable until now
    d = Decider(g, POLICY).decide(incoming("n", "cam2", 102.0, look(2, seed=5), "AB123CD", track="8"))
    assert (d.kind, d.entity_id) == ("plate", "V") and d.merge is not None
    assert (d.merge.survivor, d.merge.merged) == ("V", "T")
    g.apart = {frozenset(("V", "T"))}  # unless an operator split them apart
    d = Decider(g, POLICY).decide(incoming("n", "cam2", 102.0, look(2, seed=5), "AB123CD", track="8"))
    assert (d.kind, d.entity_id, d.merge) == ("tracklet", "T", None)


def test_the_plate_confirms_a_tracklet_whose_look_changed():
    """Headlights on at dusk: the tracklet's aggregate drifts from its entity's other tracklets, but it reads the
    plate they carry, so it is not decided again."""
    g = Gallery(DIM)
    vehicle(g, "V", "cam1", "1", 0.0, base=1, plate="AB123CD")
    vehicle(g, "V", "cam2", "3", 100.0, base=4, plate="AB123CD", frames=3)
    d = Decider(g, POLICY).decide(incoming("k", "cam2", 103.0, look(4, seed=6), "AB123CD", track="3"))
    assert (d.kind, d.entity_id, d.redecided_from) == ("tracklet", "V", None)
    d = Decider(g, POLICY).decide(incoming("k", "cam2", 103.0, look(4, seed=6), track="3"))
    assert d.redecided_from == "V"  # without it, the look decides as before


def test_plates_follow_their_rows():
    g = Gallery(DIM)
    vehicle(g, "A", "cam1", "1", 0.0, base=1, plate="AB123CD")
    vehicle(g, "B", "cam2", "2", 50.0, base=2, plate="XY987ZT", frames=1)
    g.merge("A", "B")
    assert g.holders == {"AB123CD": {"A"}, "XY987ZT": {"A"}} and g.plates_of("A") == {"AB123CD", "XY987ZT"}
    assert g.plates_of("A", without="cam2|2") == {"AB123CD"} and g.tracks["cam2|2"].plates == {"XY987ZT": 1}
    g.remove(["B-cam2-2-0"])  # expired or erased: its plate goes with it
    assert g.holders == {"AB123CD": {"A"}} and "cam2|2" not in g.tracks
    g.remove([f"A-cam1-1-{i}" for i in range(3)])
    assert g.holders == {} and "A" not in g.entities
