"""The pure identity core: tracklets, prototypes, the space-time gate, ambiguity and merges."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reid_stream.identity.decide import Decider, Incoming, Policy, quality, track_key
from reid_stream.identity.gallery import Gallery, Row, unit
from reid_stream.identity.topology import Topology, TopologyError, gap_conflict

DIM = 16


def vec(seed: int, noise: float = 0.0, base: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=DIM) if base is None else np.random.default_rng(base).normal(size=DIM)
    return unit(v + noise * rng.normal(size=DIM)).astype(np.float32)


def row(det: str, ent: str, key: str, cam: str, ts: float, v: np.ndarray, q: float = 1.0) -> Row:
    return Row(det, ent, key, cam, ts, v, q)


def incoming(det: str, cam: str, ts: float, v: np.ndarray, track: str | None = None) -> Incoming:
    key, has = track_key(cam, track, det)
    return Incoming(det, cam, ts, v, key, 1.0, has)


# The stage's merge threshold is REID_SIMILARITY_THRESHOLD + REID_MERGE_MARGIN.
POLICY = Policy(threshold=0.8, margin=0.02, ambiguous_policy="join_best", merge_threshold=0.95)


def test_topology_shortest_paths_overlaps_and_file_errors(tmp_path):
    topo = Topology.from_dict({"adjacency": [{"a": "A", "b": "B", "min_transit_s": 10},
                                             {"a": "B", "b": "C", "min_transit_s": 5}],
                               "overlapping": [["A", "D"]]})
    assert topo.min_transit("A", "C") == 15 and topo.min_transit("C", "A") == 15
    assert topo.min_transit("A", "D") is None and topo.min_transit("A", "A") is None
    assert topo.min_transit("A", "E") == 0.0  # no walkway known: only "not at the same moment"
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps({"adjacency": [{"a": "A"}]}))
    with pytest.raises(TopologyError, match="min_transit_s"):
        Topology.load(bad)
    with pytest.raises(TopologyError, match="no-such"):
        Topology.load(tmp_path / "no-such.json")


def test_gap_conflict():
    topo = Topology.from_dict({"adjacency": [{"a": "A", "b": "B", "min_transit_s": 10}]})
    assert gap_conflict(topo, "A", 100, 105, "B", 0, 95) == "seen at B 5.0 s apart; needs 10.0 s"
    assert gap_conflict(topo, "A", 100, 105, "B", 0, 80) is None
    assert gap_conflict(topo, "B", 0, 80, "A", 100, 105) is None  # either order
    assert gap_conflict(Topology(), "A", 5, 5, "B", 5, 5)  # two cameras at the same moment
    assert gap_conflict(Topology(), "A", 5, 5, "B", 6, 6) is None
    assert gap_conflict(Topology(), "A", 0, 10, "A", 5, 15)  # two overlapping tracks on one camera
    assert gap_conflict(Topology(), "A", 0, 10, "A", 11, 15) is None


def test_gallery_aggregates_are_quality_weighted_and_survive_removal():
    g = Gallery(DIM, capacity=1)
    a, b = vec(1), vec(2)
    g.add(row("d1", "E", "c|t", "c", 1.0, a, 1.0))
    g.add(row("d2", "E", "c|t", "c", 2.0, b, 0.25))
    assert np.allclose(g.tracks["c|t"].agg.mean(), unit(a + 0.25 * b), atol=1e-6)
    g.add(row("d3", "F", "c|u", "c", 3.0, vec(3)))  # grows the matrix past its capacity
    scores = g.scores(a[None, :])
    assert g.owner[int(np.argmax(scores[0]))] == "E"
    g.remove(["d2"])
    assert np.allclose(g.entities["E"].agg.mean(), a, atol=1e-6)
    g.remove(["d1"])
    assert "E" not in g.entities and "c|t" not in g.tracks
    scores = g.scores(a[None, :])
    assert [o for o, s in zip(g.owner, scores[0], strict=True) if np.isfinite(s)] == ["F"]


def test_a_new_tracklet_joins_the_entity_whose_prototype_it_matches():
    g = Gallery(DIM)
    for i in range(3):
        g.add(row(f"p{i}", "P", "c1|1", "c1", float(i), vec(100 + i, 0.2, base=7)))
    d = Decider(g, POLICY).decide(incoming("x", "c1", 500.0, vec(200, 0.2, base=7), "9"))
    assert (d.entity_id, d.kind, d.ambiguous) == ("P", "joined", False)
    stranger = Decider(g, POLICY).decide(incoming("y", "c1", 500.0, vec(300), "10"))
    assert (stranger.entity_id, stranger.kind) == ("y", "new")


def test_the_space_time_gate_refuses_an_entity_seen_elsewhere_at_the_same_moment():
    topo = Topology.from_dict({"adjacency": [{"a": "c1", "b": "c2", "min_transit_s": 30}]})
    g = Gallery(DIM)
    g.add(row("p0", "P", "c1|1", "c1", 100.0, vec(1, base=7)))
    decider = Decider(g, Policy(0.8, 0.02, "join_best", 0.95, topo))
    twin = decider.decide(incoming("x", "c2", 110.0, vec(2, 0.1, base=7), "5"))
    assert twin.kind == "new" and twin.candidates[0].entity_id == "P"
    assert twin.candidates[0].refused and twin.candidates[0].refused.startswith("space_time")
    later = decider.decide(incoming("z", "c2", 140.0, vec(3, 0.1, base=7), "6"))
    assert (later.entity_id, later.kind) == ("P", "joined")


def test_ambiguity_is_flagged_and_the_policy_decides():
    g = Gallery(DIM)
    base = vec(1)
    g.add(row("a", "A", "c|1", "c", 0.0, base))
    g.add(row("b", "B", "c|2", "c", 0.0, unit(base + 0.01 * vec(9)).astype(np.float32)))
    query = unit(base + 0.3 * vec(5)).astype(np.float32)
    joined = Decider(g, POLICY).decide(incoming("q", "c", 100.0, query))
    assert joined.ambiguous and joined.kind == "joined" and {c.entity_id for c in joined.candidates} == {"A", "B"}
    cautious = Decider(g, Policy(0.8, 0.02, "new_entity", 0.95)).decide(incoming("q", "c", 100.0, query))
    assert cautious.ambiguous and (cautious.kind, cautious.entity_id) == ("new", "q")


def test_a_tracklet_follows_its_entity_and_its_aggregate_decides():
    g = Gallery(DIM)
    g.add(row("p0", "P", "c1|1", "c1", 0.0, vec(1, base=7)))
    g.add(row("t0", "P", "c2|4", "c2", 100.0, vec(2, 0.1, base=7)))
    d = Decider(g, POLICY).decide(incoming("t1", "c2", 101.0, vec(3, 0.1, base=7), "4"))
    assert (d.entity_id, d.kind, d.track_rows) == ("P", "tracklet", 2)


def test_a_tracklet_that_contradicts_its_entity_is_decided_again():
    g = Gallery(DIM)
    for i in range(3):
        g.add(row(f"p{i}", "P", "c1|1", "c1", float(i), vec(i, 0.05, base=7)))
    g.add(row("t0", "P", "c2|4", "c2", 100.0, vec(40, 0.05, base=7)))  # one frame that looked like P…
    g.add(row("t1", "P", "c2|4", "c2", 101.0, vec(41, 0.05, base=8)))  # …then the track shows someone else
    d = Decider(g, POLICY).decide(incoming("t2", "c2", 102.0, vec(42, 0.05, base=8), "4"))
    assert d.redecided_from == "P" and (d.kind, d.entity_id) == ("new", "t2")
    # Unless an operator merged it into P: then it stays, whatever it looks like.
    g.pinned = {"c2|4"}
    d = Decider(g, POLICY).decide(incoming("t2", "c2", 102.0, vec(42, 0.05, base=8), "4"))
    assert d.redecided_from is None and (d.kind, d.entity_id) == ("tracklet", "P")


def test_a_lone_tracklet_that_turns_out_to_be_somebody_known_is_merged_into_them():
    g = Gallery(DIM)
    for i in range(3):
        g.add(row(f"p{i}", "P", "c1|1", "c1", float(i), vec(i, 0.1, base=7)))
    g.add(row("t0", "T", "c2|4", "c2", 100.0, vec(50)))  # a poor first frame founded T
    g.add(row("t1", "T", "c2|4", "c2", 101.0, vec(51, 0.05, base=7)))
    d = Decider(g, POLICY).decide(incoming("t2", "c2", 102.0, vec(52, 0.05, base=7), "4"))
    assert (d.kind, d.entity_id) == ("merged", "P") and d.merge and (d.merge.survivor, d.merge.merged) == ("P", "T")
    g.add(row("t2", "P", "c2|4", "c2", 102.0, vec(52, 0.05, base=7)))
    g.merge("P", "T")
    assert "T" not in g.entities and set(g.entities["P"].agg.rows) == {"p0", "p1", "p2", "t0", "t1", "t2"}
    assert g.tracks["c2|4"].entity_id == "P"


def test_left_behind_entity_is_merged_on_the_tracklets_next_detection():
    # A crash between storing a detection and its merge leaves the tracklet's first entity behind.
    g = Gallery(DIM)
    g.add(row("p0", "P", "c1|1", "c1", 0.0, vec(0, base=7)))
    g.add(row("t0", "T", "c2|4", "c2", 100.0, vec(1, 0.05, base=7)))
    g.add(row("t1", "P", "c2|4", "c2", 101.0, vec(2, 0.05, base=7)))
    d = Decider(g, POLICY).decide(incoming("t2", "c2", 102.0, vec(3, 0.05, base=7), "4"))
    assert d.kind == "tracklet" and d.merge and (d.merge.survivor, d.merge.merged) == ("P", "T")


def test_convergent_entities_merge_unless_the_gate_forbids_it():
    g = Gallery(DIM)
    g.add(row("a", "A", "c1|1", "c1", 0.0, vec(1, 0.01, base=7)))
    g.add(row("b", "B", "c2|1", "c2", 100.0, vec(2, 0.01, base=7)))
    assert Decider(g, POLICY).convergent({"B"}) == []  # one detection: its own decision already compared it
    g.add(row("b2", "B", "c2|1", "c2", 101.0, vec(4, 0.01, base=7)))
    assert [(m.survivor, m.merged) for m in Decider(g, POLICY).convergent({"B"})] == [("A", "B")]  # the older
    g = Gallery(DIM)
    g.add(row("a", "A", "c1|1", "c1", 0.0, vec(1, 0.01, base=7)))
    g.add(row("c", "C", "c3|1", "c3", 0.0, vec(3, 0.01, base=7)))  # same look, other camera, same moment
    g.add(row("c2", "C", "c3|1", "c3", 1.0, vec(5, 0.01, base=7)))
    assert Decider(g, POLICY).convergent({"C"}) == []


def test_quality_and_track_keys():
    assert quality((0, 0, 10, 128)) == 1.0 and quality((0, 0, 10, 32)) == 0.25 and quality((0, 0, 10, 64)) == 0.5
    assert track_key("c", "7", "d") == ("c|7", True)
    assert track_key("c", None, "d") == ("det|d", False)


def test_an_entity_converging_with_two_others_at_once_is_not_merged():
    g = Gallery(DIM)
    g.add(row("a", "A", "c1|1", "c1", 0.0, vec(1, 0.0, base=7)))
    g.add(row("b", "B", "c2|1", "c2", 0.0, vec(2, 0.0, base=7)))  # A's twin, elsewhere at the same moment
    g.add(row("m", "M", "c3|1", "c3", 500.0, vec(3, 0.0, base=7)))  # could be either
    g.add(row("m2", "M", "c3|1", "c3", 501.0, vec(3, 0.0, base=7)))
    assert Decider(g, POLICY).convergent({"M"}) == []


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_a_primed_batch_decides_exactly_as_one_search_per_detection(seed):
    """The batch is scored once and kept exact where decisions look as its own decisions change entities (new
    ones, joins, merges, a slot freed and reused): the outcome must equal searching afresh before each one."""
    rng = np.random.default_rng(seed)
    looks = [vec(100 + i) for i in range(6)]
    stream, person = [], 0
    for n in range(120):
        if n % 4 == 0:  # a new tracklet, of somebody
            person = int(rng.integers(0, 6))
        track = f"t{n // 4}" if rng.random() < 0.8 else None
        noisy = unit(looks[person] + 0.1 * rng.normal(size=DIM)).astype(np.float32)
        stream.append(incoming(f"d{n}", f"c{n // 4 % 3}", float(n * 20), noisy if n % 4 else vec(900 + n), track))
    policy = Policy(0.8, 0.02, "join_best", 0.85)
    outcomes = []
    for primed in (False, True):
        g = Gallery(DIM, capacity=2)
        d = Decider(g, policy)
        got = []
        for start in range(0, len(stream), 8):
            batch = stream[start:start + 8]
            if primed:
                d.prime(np.stack([it.vector for it in batch]), [it.detection_id for it in batch])
            for n, it in enumerate(batch):
                dec = d.decide(it, primed=n if primed else None)
                g.add(row(it.detection_id, dec.entity_id, it.track_key, it.camera_id, it.ts, it.vector))
                if dec.merge:
                    g.merge(dec.merge.survivor, dec.merge.merged)
                got.append((dec.entity_id, dec.kind, dec.ambiguous,
                            tuple((c.entity_id, c.refused) for c in dec.candidates),
                            tuple(c.similarity for c in dec.candidates)))
            for m in d.convergent({e for e, *_ in got[-len(batch):]}):
                g.merge(m.survivor, m.merged)
                got.append(("merge", m.survivor, m.merged, (), ()))
        outcomes.append(got)
    # The same decisions; similarities equal up to float32 rounding (a matrix product against a vector
    # product can differ in the 7th digit).
    assert [o[:4] for o in outcomes[0]] == [o[:4] for o in outcomes[1]]
    assert np.allclose(np.concatenate([o[4] for o in outcomes[0]] or [np.zeros(0)]),
                       np.concatenate([o[4] for o in outcomes[1]] or [np.zeros(0)]), atol=2e-6)
    kinds = {k for _, k, *_ in outcomes[0]}
    assert {"new", "joined", "tracklet"} <= kinds and any(k == "merged" or e == "merge" for e, k, *_ in outcomes[0])


def test_sightings_follow_rows_in_and_out():
    g = Gallery(DIM)
    for n, (key, cam, ts) in enumerate([("c1|1", "c1", 10.0), ("c1|1", "c1", 12.0), ("c1|2", "c1", 30.0),
                                        ("c2|1", "c2", 50.0)]):
        g.add(row(f"d{n}", "E", key, cam, ts, vec(n)))
    spans = {cam: dict(zip(s.keys, zip(s.first.tolist(), s.last.tolist(), strict=True), strict=True))
             for cam, s in g.sightings("E").items()}
    assert spans == {"c1": {"c1|1": (10.0, 12.0), "c1|2": (30.0, 30.0)}, "c2": {"c2|1": (50.0, 50.0)}}
    g.remove(["d0", "d2", "d3"])  # a span shrinks, a segment and a camera go
    (cam, seen), = g.sightings("E").items()
    assert cam == "c1" and seen.keys == ["c1|1"] and seen.first.tolist() == [12.0] == seen.last.tolist()


def test_the_stage_gives_the_gallery_vectors_that_evictions_in_the_index_cannot_change():
    from datetime import UTC, datetime

    from reid_stream.identity.matching import EntityEmbedding, VectorIndex
    from reid_stream.stream.assign import _row

    index, g = VectorIndex(DIM, capacity=4), Gallery(DIM)
    items = [EntityEmbedding(f"d{n}", "c", "person", datetime.now(UTC), vec(n), entity_id="E") for n in range(3)]
    for it in items:
        index.add(it)
        g.add(_row(it))
    index.remove(["d0"])  # swap-remove: d2's vector moves into d0's row of the matrix
    g.remove(["d0"])
    assert np.allclose(g.entities["E"].agg.mean(), unit(vec(1) + vec(2)), atol=1e-6)


def test_entities_an_operator_split_apart_are_never_joined_again():
    """Each automatic way of joining two entities, refused for a cannot-link pair (and taken without it)."""
    def lone_tracklet(apart: bool) -> Gallery:
        g = Gallery(DIM)
        for i in range(3):
            g.add(row(f"p{i}", "P", "c1|1", "c1", float(i), vec(i, 0.1, base=7)))
        g.add(row("t1", "T", "c2|4", "c2", 101.0, vec(51, 0.05, base=7)))
        g.apart = {frozenset(("P", "T"))} if apart else set()
        return g

    nxt = incoming("t2", "c2", 102.0, vec(52, 0.05, base=7), "4")
    assert Decider(lone_tracklet(False), POLICY).decide(nxt).kind == "merged"
    d = Decider(lone_tracklet(True), POLICY).decide(nxt)
    assert (d.kind, d.entity_id, d.merge) == ("tracklet", "T", None)

    def left_behind(apart: bool) -> Gallery:
        g = Gallery(DIM)
        g.add(row("p0", "P", "c1|1", "c1", 0.0, vec(0, base=7)))
        g.add(row("t0", "T", "c2|4", "c2", 100.0, vec(1, 0.05, base=7)))
        g.add(row("t1", "P", "c2|4", "c2", 101.0, vec(2, 0.05, base=7)))  # split off T, onto P
        g.apart = {frozenset(("P", "T"))} if apart else set()
        return g

    nxt = incoming("t2", "c2", 102.0, vec(3, 0.05, base=7), "4")
    assert Decider(left_behind(False), POLICY).decide(nxt).merge is not None
    d = Decider(left_behind(True), POLICY).decide(nxt)
    assert (d.kind, d.entity_id, d.merge) == ("tracklet", "P", None)

    g = Gallery(DIM)
    g.add(row("a", "A", "c1|1", "c1", 0.0, vec(1, 0.01, base=7)))
    g.add(row("b", "B", "c2|1", "c2", 100.0, vec(2, 0.01, base=7)))
    g.add(row("b2", "B", "c2|1", "c2", 101.0, vec(4, 0.01, base=7)))
    assert Decider(g, POLICY).convergent({"B"})
    g.apart = {frozenset(("A", "B"))}
    assert Decider(g, POLICY).convergent({"B"}) == []
    # A local merge of one side into a third entity carries the pair over to the survivor.
    g.add(row("z", "Z", "c9|1", "c9", -500.0, vec(9)))
    g.merge("Z", "A")
    assert g.apart == {frozenset(("Z", "B"))} and g.apart_from("B") == {"Z"}


def test_candidates_that_are_one_person_are_no_ambiguity():
    """Two entities of one person (what a new similarity space shows the old one had split): their means agree
    past the merge threshold, nothing conflicts, so a detection near both joins the best; twins stay ambiguous."""
    g = Gallery(DIM)
    base = vec(1)
    for eid, cam, t in (("A", "c1", 0.0), ("B", "c2", 100.0)):
        for k in range(2):
            g.add(row(f"{eid}{k}", eid, f"{cam}|{eid}", cam, t + k, unit(base + 0.01 * vec(20 + k)).astype(np.float32)))
    query = unit(base + 0.05 * vec(5)).astype(np.float32)
    cautious = Policy(0.8, 0.02, "new_entity", 0.95)
    d = Decider(g, cautious).decide(incoming("q", "c3", 500.0, query))
    assert (d.kind, d.ambiguous) == ("joined", False) and d.entity_id in {"A", "B"}
    g.apart.add(frozenset(("A", "B")))  # an operator split them: two people after all
    assert Decider(g, cautious).decide(incoming("r", "c3", 600.0, query)).kind == "new"
