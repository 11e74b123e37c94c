"""The benchmark readers, on tiny fake dataset folders of empty files (the readers never open an image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reid_stream.eval.datasets import (
    ReidDataset,
    Sample,
    detect_layout,
    labels,
    load_dataset,
    msmt_camera,
    parse_market_name,
    parse_veri_name,
)


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")


def triples(samples: list[Sample]) -> list[tuple[str, int, int, int | None]]:
    return [(s.path.name, s.pid, s.camid, s.frame) for s in samples]


@pytest.mark.parametrize(("name", "expected"), [
    ("0002_c1s1_000451_03.jpg", (2, 1, 451)),
    ("-1_c3s2_012345_01.jpg", (-1, 3, 12345)),  # junk
    ("0000_c6s1_000001_00.jpg", (0, 6, 1)),  # distractor
    ("0005_c2_f0046985.jpg", (5, 2, 46985)),  # DukeMTMC-reID
    ("0005_c2.jpg", (5, 2, None)),
    ("0001_c1s1_000000_00.jpg", (1, 1, 0)),  # frame 0 is a frame, not a missing one
    ("0003_c12s1_000100_00.jpg", (3, 12, 100)),  # all the camera's digits (torchreid's `_c(\d)` would say 1)
    ("Thumbs_c1.jpg", None),
    ("1-2_c1s1_000001_00.jpg", None),  # matches torchreid's [-\d]+ but is no integer
    ("readme.jpg", None),
])
def test_parse_market_name(name, expected):
    assert parse_market_name(name) == expected


def test_parse_veri_and_msmt_names():
    assert parse_veri_name("0002_c002_00030600_0.jpg") == (2, 2, 30600)
    assert parse_veri_name("0776_c020.jpg") == (776, 20, None)
    assert parse_veri_name("c002_0002.jpg") is None
    assert msmt_camera("0000_c14_0030.jpg") == 14
    assert msmt_camera("0000_000_01_0303morning_0015_0.jpg") == 1  # the official MSMT17 naming
    assert msmt_camera("0000.jpg") is None


def market(root: Path, duke: bool = False) -> Path:
    if duke:
        touch(root / "query", "0005_c2_f0046985.jpg")
        touch(root / "bounding_box_test", "0005_c3_f0050000.jpg", "0007_c1_f0000100.jpg")
        return root
    touch(root / "query", "0002_c1s1_000451_03.jpg", "0007_c2s3_070952_01.jpg", "Thumbs.db")
    touch(root / "bounding_box_test", "0002_c2s1_000801_01.jpg", "-1_c1s1_000401_03.jpg", "0000_c3s1_000551_02.jpg",
          "0007_c2s3_071002_02.jpg", "garbage.jpg", "notes.txt")
    touch(root / "bounding_box_train", "0001_c1s1_001051_00.jpg")  # training split: never read
    return root


def test_market_reads_pids_cameras_frames_junk_and_distractors(tmp_path):
    ds = load_dataset(market(tmp_path / "Market-1501"))
    assert ds.name == "market1501"
    assert triples(ds.query) == [("0002_c1s1_000451_03.jpg", 2, 1, 451), ("0007_c2s3_070952_01.jpg", 7, 2, 70952)]
    assert triples(ds.gallery) == [
        ("-1_c1s1_000401_03.jpg", -1, 1, 401),  # junk is kept, labelled -1: the metrics drop it
        ("0000_c3s1_000551_02.jpg", 0, 3, 551),  # distractor stays as pid 0
        ("0002_c2s1_000801_01.jpg", 2, 2, 801),
        ("0007_c2s3_071002_02.jpg", 7, 2, 71002),
    ]
    assert ds.skipped == 1  # garbage.jpg; Thumbs.db and notes.txt are not images at all
    assert all(s.path.parent.name == "bounding_box_test" and s.path.exists() for s in ds.gallery)


def test_duke_is_told_apart_from_market_by_its_names(tmp_path):
    ds = load_dataset(market(tmp_path / "duke", duke=True))
    assert ds.name == "dukemtmc-reid" and triples(ds.query) == [("0005_c2_f0046985.jpg", 5, 2, 46985)]
    assert [(s.pid, s.camid) for s in ds.gallery] == [(5, 3), (7, 1)]
    assert load_dataset(tmp_path / "duke", layout="market1501").name == "market1501"  # an explicit layout wins


def test_labels_feed_the_metrics(tmp_path):
    ds = load_dataset(market(tmp_path))
    pids, camids = labels(ds.gallery)
    assert pids.dtype == np.int64 and pids.tolist() == [-1, 0, 2, 7] and camids.tolist() == [1, 3, 2, 2]
    assert [a.tolist() for a in labels([])] == [[], []]


def msmt(root: Path, image_dir: str = "test") -> Path:
    touch(root / image_dir, "0000/0000_000_01_0303morning_0015_0.jpg", "0000/0000_001_05_0303noon_0100_1.jpg",
          "0001/0001_c14_0030.jpg")
    (root / "list_query.txt").write_text("0000/0000_000_01_0303morning_0015_0.jpg 0\n\n")
    (root / "list_gallery.txt").write_text(
        "0000/0000_001_05_0303noon_0100_1.jpg 0\n"
        "0001/0001_c14_0030.jpg 1\n"
        "0002/0002_000_03_0303noon_0001_0.jpg 2\n"  # listed but not on disk
        "not a valid line\n"
        "0001/0001_c14_0030.jpg x\n")
    return root


@pytest.mark.parametrize("image_dir", ["test", "mask_test_v2", ""])  # MSMT17_V1, MSMT17_V2, paths from the root
def test_msmt17_reads_the_lists(tmp_path, image_dir):
    root = msmt(tmp_path / "MSMT17", image_dir)
    ds = load_dataset(root)
    assert ds.name == "msmt17"
    assert [(s.pid, s.camid, s.frame) for s in ds.query] == [(0, 1, None)]
    assert [(s.pid, s.camid) for s in ds.gallery] == [(0, 5), (1, 14)]
    assert ds.gallery[1].path == root / image_dir / "0001/0001_c14_0030.jpg" and ds.gallery[1].path.is_file()
    assert ds.skipped == 3  # the missing file, the malformed line, the non-integer pid


def test_veri776(tmp_path):
    touch(tmp_path / "image_query", "0002_c002_00030600_0.jpg")
    touch(tmp_path / "image_test", "0002_c003_00084680_0.jpg", "0010_c015_00012345_1.jpg", "bad.jpg")
    touch(tmp_path / "image_train", "0001_c001_00016450_0.jpg")
    ds = load_dataset(tmp_path)
    assert ds.name == "veri776" and triples(ds.query) == [("0002_c002_00030600_0.jpg", 2, 2, 30600)]
    assert [(s.pid, s.camid, s.frame) for s in ds.gallery] == [(2, 3, 84680), (10, 15, 12345)]
    assert ds.skipped == 1


def test_generic_layout_numbers_ids_and_cameras_in_sorted_order(tmp_path):
    touch(tmp_path / "bob" / "lobby", "b.jpg", "a.png", "c.JPG")
    touch(tmp_path / "bob" / "door", "x.jpg")
    touch(tmp_path / "alice" / "door", "1.jpg", "2.jpg")
    touch(tmp_path / "alice" / "parking", "z.jpeg")
    touch(tmp_path / "alice", "stray.jpg")  # not in a camera folder
    touch(tmp_path / "alice" / "empty")  # a camera with no images: no query, no error
    touch(tmp_path / ".cache" / "x", "ignored.jpg")  # hidden folders are not identities
    ds = load_dataset(tmp_path)
    # ids: alice 1, bob 2; cameras across all ids: door 1, empty 2, lobby 3, parking 4.
    assert ds.name == "generic" and ds.skipped == 1
    assert triples(ds.query) == [("1.jpg", 1, 1, None), ("z.jpeg", 1, 4, None), ("x.jpg", 2, 1, None),
                                 ("a.png", 2, 3, None)]
    assert triples(ds.gallery) == [("2.jpg", 1, 1, None), ("b.jpg", 2, 3, None), ("c.JPG", 2, 3, None)]


def test_auto_detection_and_its_error(tmp_path):
    assert detect_layout(market(tmp_path / "m")) == "market1501"
    assert detect_layout(msmt(tmp_path / "s")) == "msmt17"
    touch(tmp_path / "g" / "id1" / "cam1", "a.jpg")
    assert detect_layout(tmp_path / "g") == "generic"
    touch(tmp_path / "nothing" / "a" / "b", "notes.txt")
    for root in (tmp_path / "nothing", tmp_path / "missing"):
        with pytest.raises(ValueError) as err:
            load_dataset(root)
        message = str(err.value)
        assert all(looked in message for looked in
                   ("bounding_box_test", "list_query.txt", "image_query", "<id>/<camera>")), message
    assert "does not exist" in message


def test_explicit_layouts_check_their_folders(tmp_path):
    touch(tmp_path / "query", "0002_c1s1_000451_03.jpg")
    with pytest.raises(ValueError, match="bounding_box_test"):
        load_dataset(tmp_path, layout="market1501")
    with pytest.raises(ValueError, match=r"list_query\.txt"):
        load_dataset(tmp_path, layout="msmt17")
    with pytest.raises(ValueError, match="unknown layout 'cuhk03'"):
        load_dataset(tmp_path, layout="cuhk03")
    with pytest.raises(ValueError, match="not a folder"):
        load_dataset(tmp_path / "missing", layout="generic")


def test_an_empty_but_well_formed_dataset_loads(tmp_path):
    (tmp_path / "query").mkdir()
    (tmp_path / "bounding_box_test").mkdir()
    assert load_dataset(tmp_path) == ReidDataset("market1501", [], [], 0)
