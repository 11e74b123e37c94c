"""The synthetic ReID benchmark: layout, determinism, exact crops, the time model, twins, and that it is hard."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid_stream.eval import synth
from reid_stream.eval.datasets import load_dataset, parse_market_name
from reid_stream.eval.replay import read_stream
from reid_stream.eval.synth import writer
from reid_stream.eval.synth.cameras import _cameras
from reid_stream.eval.synth.checks import CROP_RE
from reid_stream.eval.synth.randomness import _rng, _session_seed
from reid_stream.events import Detection

IDS, CAMERAS = 8, 3
MARKET = re.compile(r"([-\d]+)_c(\d)")  # torchreid's Market-1501 pattern
NAME = re.compile(r"^(\d{4})_c(\d)s1_(\d{6})_(\d{2})\.jpg$")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, synth.SynthSummary]:
    out = tmp_path_factory.mktemp("synth") / "site"
    return out, synth.generate(out, ids=IDS, cameras=CAMERAS, seed=0)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "stream.jsonl").read_text().splitlines()]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def all_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_market_layout_and_names(site):
    out, summary = site
    assert (out / "bounding_box_train").is_dir()
    query = sorted(p.name for p in (out / "query").iterdir())
    gallery = sorted(p.name for p in (out / "bounding_box_test").iterdir())
    assert len(query) == summary.query and len(gallery) == summary.gallery
    assert not set(query) & set(gallery)
    seen: dict[tuple[int, int], int] = defaultdict(int)
    for name in query + gallery:
        assert NAME.match(name), name
        m = MARKET.search(name)
        pid, cam = int(m.group(1)), int(m.group(2))
        assert 0 <= pid <= IDS and 1 <= cam <= CAMERAS
        if name in query:
            assert pid > 0
            seen[(pid, cam)] += 1
    assert set(seen.values()) == {1}  # exactly one query per (identity, camera) ...
    shown = {(int(n[:4]), int(n[6])) for n in gallery + query if not n.startswith("0000")}
    assert set(seen) == shown  # ... for every camera the identity was seen on
    assert sum(n.startswith("0000_") for n in gallery) == summary.distractors >= 2
    data = load_dataset(out)  # the evaluation harness reads it as Market-1501
    assert data.name == "market1501" and data.skipped == 0
    assert len(data.query) == summary.query and len(data.gallery) == summary.gallery


def test_stream_is_a_valid_time_ordered_detection_stream(site):
    out, summary = site
    recs = records(out)
    assert len(recs) == summary.detections == summary.query + summary.gallery
    assert len({r["detection_id"] for r in recs}) == len(recs)
    assert recs[0]["timestamp"].startswith("2026-01-01T08:") and all(r["timestamp"].endswith("Z") for r in recs)
    times = [synth.parse_timestamp(r["timestamp"]) for r in recs]
    assert times == sorted(times)
    by_track: dict[str, set] = defaultdict(set)
    for r in recs:
        Detection.model_validate(r)  # the worker's own schema accepts every line
        assert r["entity_type"] == "person" and (out / r["image_path"]).is_file() and (out / r["crop"]).is_file()
        assert re.fullmatch(r"frames/c(\d)/\d{6}\.jpg", r["image_path"]).group(1) == r["camera_id"][-1]
        assert re.fullmatch(r"c\d-t\d+", r["track_id"]) and r["track_id"][1] == r["camera_id"][-1]
        by_track[r["track_id"]].add(r["true_id"])
    assert all(len(ids) == 1 for ids in by_track.values())  # a track is one person
    shared = defaultdict(set)
    for r in recs:
        if r["true_id"]:
            shared[r["image_path"]].add(r["true_id"])
    assert sum(len(v) > 1 for v in shared.values()) == summary.shared_frames


def test_every_crop_file_is_exactly_its_bbox_in_the_frame(site):
    """Boxes sit on the 8-pixel JPEG block grid and frames and crops share quality and 4:4:4 chroma, so the
    decoded crop equals the decoded frame cut at the box, pixel for pixel: no tolerance."""
    out, _ = site
    frames: dict[str, np.ndarray] = {}
    for r in records(out):
        b = r["bbox"]
        x1, y1, x2, y2 = (int(b[k]) for k in ("x1", "y1", "x2", "y2"))
        assert all(v % synth.GRID == 0 for v in (x1, y1)) and 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240
        frame = frames.setdefault(r["image_path"], pixels(out / r["image_path"]))
        assert frame.shape == (240, 320, 3)
        np.testing.assert_array_equal(pixels(out / r["crop"]), frame[y1:y2, x1:x2], err_msg=r["crop"])


def test_png_format_is_exact_and_lossless_too(tmp_path):
    summary = synth.generate(tmp_path, ids=3, cameras=2, seed=5, visits_per_id=2, shots_per_visit=2,
                             image_format="png")
    recs = records(tmp_path)
    assert len(recs) == summary.detections and all(r["crop"].endswith(".png") for r in recs)
    for r in recs:
        b = r["bbox"]
        frame = pixels(tmp_path / r["image_path"])
        np.testing.assert_array_equal(pixels(tmp_path / r["crop"]),
                                      frame[int(b["y1"]):int(b["y2"]), int(b["x1"]):int(b["x2"])])


def test_same_seed_same_bytes_other_seed_other_bytes(site, tmp_path):
    out, summary = site
    again = synth.generate(tmp_path / "again", ids=IDS, cameras=CAMERAS, seed=0)
    assert again == summary
    first, second = all_files(out), all_files(tmp_path / "again")
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []
    synth.generate(tmp_path / "other", ids=IDS, cameras=CAMERAS, seed=1)
    other = all_files(tmp_path / "other")
    assert other["stream.jsonl"] != first["stream.jsonl"]
    assert other["identities.json"] != first["identities.json"]
    assert sorted(k for k in other if k.startswith("frames/")) != sorted(k for k in first if k.startswith("frames/"))


def test_regenerating_into_the_same_folder_replaces_the_old_files(tmp_path):
    synth.generate(tmp_path, ids=4, cameras=2, seed=2, visits_per_id=2, shots_per_visit=2)
    (tmp_path / "keep.txt").write_text("not ours")
    summary = synth.generate(tmp_path, ids=3, cameras=2, seed=3, visits_per_id=2, shots_per_visit=2)
    crops = list((tmp_path / "query").iterdir()) + list((tmp_path / "bounding_box_test").iterdir())
    assert len(crops) == summary.detections and (tmp_path / "keep.txt").exists()


def test_visits_walk_the_camera_graph_no_faster_than_its_minimum_transit(site):
    out, _ = site
    graph = json.loads((out / "site.json").read_text())
    assert [c["camera_id"] for c in graph["cameras"]] == [f"cam-{i}" for i in range(1, CAMERAS + 1)]
    edges = {frozenset((e["a"], e["b"])): e for e in graph["adjacency"]}
    assert edges and all(0 < e["min_transit_s"] < e["typical_transit_s"] for e in edges.values())
    visits: dict[int, dict[str, list]] = defaultdict(dict)
    for r in records(out):
        if r["true_id"]:
            visits[r["true_id"]].setdefault(r["track_id"], []).append(r)
    assert len(visits) == IDS
    checked = 0
    for tracks in visits.values():
        ordered = sorted(tracks.values(), key=lambda t: t[0]["timestamp"])
        assert len(ordered) == 3 and all(len(t) == 4 for t in ordered)  # visits_per_id, shots_per_visit
        for visit in ordered:  # shots of a visit are 0.5 to 1 s apart on one camera
            gaps = np.diff([synth.parse_timestamp(r["timestamp"]).timestamp() for r in visit])
            assert all(0.45 <= g <= 1.05 for g in gaps) and len({r["camera_id"] for r in visit}) == 1
        for a, b in itertools.pairwise(ordered):
            edge = edges[frozenset((a[-1]["camera_id"], b[0]["camera_id"]))]  # KeyError: not adjacent
            transit = (synth.parse_timestamp(b[0]["timestamp"]) - synth.parse_timestamp(a[-1]["timestamp"]))
            assert transit.total_seconds() >= edge["min_transit_s"]
            checked += 1
    assert checked == IDS * 2
    # several people are on site at once: their visits interleave in the stream
    spans = sorted((t[0]["timestamp"], t[-1]["timestamp"]) for v in visits.values() for t in v.values())
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


def test_each_twin_differs_from_its_source_in_exactly_one_attribute(site):
    out, summary = site
    doc = json.loads((out / "identities.json").read_text())
    people = {p["pid"]: p for p in doc["identities"]}
    assert sorted(people) == list(range(1, IDS + 1))
    assert all(list(p["attributes"]) == doc["attribute_names"] for p in people.values())
    twins = [p for p in people.values() if p["twin_of"] is not None]
    assert len(twins) == summary.twin_pairs == round(0.25 * IDS)
    assert len({t["twin_of"] for t in twins}) == len(twins)
    for t in twins:
        source = people[t["twin_of"]]
        assert source["twin_of"] is None
        changed = {k for k in t["attributes"] if t["attributes"][k] != source["attributes"][k]}
        assert changed == {t["changed"]}, (t["pid"], changed)


def test_twin_attribute_changes_are_single_and_real_for_many_sources():
    rng = np.random.default_rng(0)
    for i in range(300):
        source = synth._sample_attributes(np.random.default_rng(i))
        twin, name = synth._twin_of(source, rng)
        assert {k for k in source if source[k] != twin[k]} == {name}


def test_contact_sheet_is_a_png_grid_with_a_twin_pair_on_adjacent_rows(site, tmp_path):
    out, _ = site
    path = synth.contact_sheet(out, tmp_path / "sheet.png", ids=5)
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == (synth.LABEL_W + CAMERAS * synth.PER_CAMERA * synth.CELL_W, synth.HEADER_H + 5 * synth.CELL_H)
    people = json.loads((out / "identities.json").read_text())["identities"]
    rows = synth.sheet_rows(people, 5)
    assert len(rows) == len(set(rows)) == 5
    twin = next(p for p in people if p["pid"] == rows[1])
    assert twin["twin_of"] == rows[0]


def test_raw_pixels_do_not_trivially_separate_identities(site):
    """Camera nuisances must be strong: two crops of one person on different cameras differ about as much as
    crops of different people on one camera (mean absolute difference of 32x64 crops, 0-255)."""
    out, _ = site
    h = synth.pixel_hardness(out)
    print(f"\nmean |pixel difference|: same id / other camera {h['same_id_other_camera']:.1f}, "
          f"other id / same camera {h['other_id_same_camera']:.1f}, "
          f"other id / other camera {h['other_id_other_camera']:.1f}")
    assert h["same_id_other_camera"] > 0.85 * h["other_id_same_camera"]
    assert h["other_id_other_camera"] > h["other_id_same_camera"]  # the camera shows in the pixels


def test_main_writes_and_prints_the_summary(tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    assert synth.main([str(tmp_path / "b"), "--ids", "3", "--cameras", "2", "--seed", "4", "--visits", "2",
                       "--shots", "2", "--twins", "0.34", "--contact-sheet", str(sheet)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ids"] == 3 and report["cameras"] == 2 and report["seed"] == 4 and report["twin_pairs"] == 1
    assert report["detections"] == report["query"] + report["gallery"] == len(records(tmp_path / "b"))
    assert sheet.is_file() and "seed=4" in (tmp_path / "b" / "README.txt").read_text()


@pytest.mark.parametrize("kwargs", [{"cameras": 1}, {"cameras": 10}, {"ids": 0}, {"twins": 0.9},
                                    {"image_format": "gif"}, {"seed": -1}, {"session": -1}])
def test_rejects_what_the_names_or_the_model_cannot_hold(tmp_path, kwargs):
    with pytest.raises(ValueError):
        synth.generate(tmp_path, **kwargs)


# --- sessions: later visits of the same site -------------------------------------------------------------------

TINY = {"ids": 5, "cameras": 3, "seed": 11, "visits_per_id": 2, "shots_per_visit": 2}
# sha256 of the pixel-free facts of the TINY site (ids, cameras, times, tracks, people, routes), recorded with the
# generator from before sessions existed: session 0 must stay that site
SESSION0_FACTS = "b275e84878fd471e"
S1_NAME = re.compile(r"^(\d{4})_c(\d)s2_(\d{6})_(\d{2})\.jpg$")


def session0_files(out: Path) -> dict[str, bytes]:
    return {k: v for k, v in all_files(out).items() if not k.startswith(("session-", "stream-s"))}


def records_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes], synth.SynthSummary]:
    """Session 0, then session 1 into the same folder; session 0's files as they were before session 1."""
    out = tmp_path_factory.mktemp("sessions") / "site"
    synth.generate(out, **TINY)
    before = session0_files(out)
    return out, before, synth.generate(out, **TINY, session=1)


def test_session_0_is_the_site_without_sessions(tmp_path):
    """Its random streams are exactly the plain seed's (the generator from before sessions existed) and its files
    are those of a call without the parameter: nothing else is written, nothing is renamed."""
    def before_sessions(seed: int, *key: object) -> np.random.Generator:
        words = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, *(zlib.crc32(str(k).encode()) for k in key)]
        return np.random.default_rng(np.random.SeedSequence(words))

    for seed, key in ((0, ("route", 1)), (7, ("frame", 2, 1234)), (2**40 + 3, ("shot", 4, 1, 0))):
        expected = before_sessions(seed, *key).random(4)
        np.testing.assert_array_equal(_rng(_session_seed(seed, 0), *key).random(4), expected)
        assert not np.array_equal(_rng(_session_seed(seed, 1), *key).random(4), expected)
    plain = synth.generate(tmp_path / "plain", **TINY)
    zero = synth.generate(tmp_path / "zero", **TINY, session=0)
    assert plain == zero and zero.session == 0
    assert all_files(tmp_path / "plain") == all_files(tmp_path / "zero")
    assert not any(p.name.startswith(("session-", "stream-s")) for p in (tmp_path / "zero").iterdir())
    # the pixel-free facts of a recorded session-0 site (ids, cameras, times, people, routes) never change
    recs = records(tmp_path / "zero")
    facts = json.dumps([[r["detection_id"], r["camera_id"], r["timestamp"], r["track_id"], r["true_id"]]
                        for r in recs] + [json.loads((tmp_path / "zero" / n).read_text())
                                          for n in ("site.json", "identities.json")], sort_keys=True)
    assert hashlib.sha256(facts.encode()).hexdigest()[:16] == SESSION0_FACTS


def test_a_later_session_leaves_session_0_alone_and_lives_beside_it(sessions):
    out, before, summary = sessions
    assert summary.session == 1
    assert session0_files(out) == before  # byte for byte
    assert (out / "stream-s1.jsonl").is_file() and (out / "session-1").is_dir()
    for name in ("site.json", "identities.json", "README.txt", "frames", "query", "bounding_box_test",
                 "bounding_box_train"):
        assert (out / "session-1" / name).exists(), name
    assert "session=1" in (out / "session-1" / "README.txt").read_text()


def test_a_later_session_has_the_same_people_and_cameras(sessions):
    out, _, _ = sessions
    site0, site1 = (json.loads((f / "site.json").read_text()) for f in (out, out / "session-1"))
    assert site1.pop("session") == 1 and site1.pop("session_start") == "2026-01-02T08:00:00.000Z"
    assert site1 == site0
    ids0, ids1 = (json.loads((f / "identities.json").read_text()) for f in (out, out / "session-1"))
    assert ids1.pop("session") == 1

    def who(doc: dict) -> list[dict]:
        return [{k: v for k, v in p.items() if k != "visits"} for p in doc["identities"]]

    assert who(ids1) == who(ids0) and ids1["attribute_names"] == ids0["attribute_names"]
    assert [p["visits"] for p in ids1["identities"]] != [p["visits"] for p in ids0["identities"]]
    # the cameras look the same; only the realisation of their sensor noise is the session's
    cams0 = _cameras(3, 11)
    cams1 = _cameras(3, 11, sensor_seed=_session_seed(11, 1))
    for c0, c1 in zip(cams0, cams1, strict=True):
        assert c0.nuisance() == c1.nuisance()
        np.testing.assert_array_equal(c0.background, c1.background)
        assert not np.array_equal(c0.noise_field, c1.noise_field)


def test_a_later_session_has_new_walks_later_times_and_its_own_ids(sessions):
    out, _, summary = sessions
    recs0, recs1 = records(out), records_of(out / "stream-s1.jsonl")
    assert len(recs1) == summary.detections
    times0 = [synth.parse_timestamp(r["timestamp"]) for r in recs0]
    times1 = [synth.parse_timestamp(r["timestamp"]) for r in recs1]
    assert times1 == sorted(times1) and min(times1) > max(times0)
    assert recs1[0]["timestamp"].startswith("2026-01-02T08:")
    for key in ("detection_id", "track_id", "image_path", "crop"):
        assert not {r[key] for r in recs0} & {r[key] for r in recs1}, key
    assert {r["true_id"] for r in recs1} == {r["true_id"] for r in recs0} == set(range(TINY["ids"] + 1))
    routes = [[(r["true_id"], r["camera_id"]) for r in rs if r["true_id"]] for rs in (recs0, recs1)]
    assert routes[0] != routes[1]  # new arrivals and routes, not session 0 shifted by a day
    by_track: dict[str, set] = defaultdict(set)
    for r in recs1:
        Detection.model_validate(r)
        assert re.fullmatch(r"s1-det-\d{6}", r["detection_id"])
        assert re.fullmatch(r"s1-c(\d)-t\d+", r["track_id"]).group(1) == r["camera_id"][-1]
        assert re.fullmatch(r"session-1/frames/c\d/\d{6}\.jpg", r["image_path"])
        by_track[r["track_id"]].add(r["true_id"])
    assert all(len(ids) == 1 for ids in by_track.values())


def test_a_later_session_is_readable_by_the_existing_readers(sessions):
    out, _, summary = sessions
    items = read_stream(out / "stream-s1.jsonl")  # image paths relative to the stream file's folder
    assert len(items) == summary.detections and all(i.image.is_file() for i in items)
    data = load_dataset(out / "session-1")  # a Market-1501 folder of its own
    assert data.name == "market1501" and data.skipped == 0
    assert len(data.query) == summary.query and len(data.gallery) == summary.gallery
    for sample in data.query + data.gallery:
        assert S1_NAME.match(sample.path.name) and CROP_RE.search(sample.path.name)
        assert parse_market_name(sample.path.name)[:2] == (sample.pid, sample.camid)
    for r in records_of(out / "stream-s1.jsonl"):
        b = r["bbox"]
        frame = pixels(out / r["image_path"])
        np.testing.assert_array_equal(pixels(out / r["crop"]),
                                      frame[int(b["y1"]):int(b["y2"]), int(b["x1"]):int(b["x2"])])
    assert synth.baseline_scores(out / "session-1")["chance_rank1"] > 0


def test_a_later_session_is_deterministic_and_needs_no_session_0(sessions, tmp_path):
    out, _, summary = sessions
    again = synth.generate(tmp_path, **TINY, session=1)
    assert again == summary
    mine = {k: v for k, v in all_files(out).items() if k.startswith(("session-1/", "stream-s1"))}
    assert all_files(tmp_path) == mine
    assert synth.generate(tmp_path, **TINY, session=2).detections > 0  # sessions stack beside each other
    assert (tmp_path / "stream-s1.jsonl").read_bytes() == mine["stream-s1.jsonl"]
    assert re.match(r"s2-det-000001", records_of(tmp_path / "stream-s2.jsonl")[0]["detection_id"])


@pytest.mark.parametrize("change", [{"seed": 12}, {"ids": 6}, {"cameras": 2}, {"twins": 0.5}, {"nuisance": 0.5}])
def test_a_later_session_of_another_site_is_refused_beside_session_0(sessions, change):
    out, before, _ = sessions
    with pytest.raises(ValueError, match="another site"):
        synth.generate(out, **(TINY | change), session=2)
    assert not (out / "session-2").exists() and session0_files(out) == before


def test_a_session_must_end_within_its_day(tmp_path, monkeypatch):
    """Session N starts N days after session 0: one that lasted longer would overlap the next (here a "day" of
    10 s, which two visits joined by a transit of at least 12 s always outlast)."""
    monkeypatch.setattr(writer, "SESSION_TICKS", 10 * 25)
    with pytest.raises(ValueError, match="within a day"):
        synth.generate(tmp_path / "long", **TINY, session=1)
    assert not (tmp_path / "long").exists()


def test_main_writes_a_later_session_with_its_contact_sheet(tmp_path, capsys):
    args = [str(tmp_path), "--ids", "3", "--cameras", "2", "--seed", "4", "--visits", "2", "--shots", "2"]
    assert synth.main(args) == 0
    capsys.readouterr()
    sheet = tmp_path / "sheet-s1.png"
    assert synth.main([*args, "--session", "1", "--contact-sheet", str(sheet)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["session"] == 1 and report["detections"] == len(records_of(synth.stream_file(tmp_path, 1)))
    assert synth.session_folder(tmp_path, 1) == tmp_path / "session-1" and sheet.is_file()
    assert (tmp_path / "stream.jsonl").is_file()
