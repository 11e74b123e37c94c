"""Readers for the standard re-id benchmarks' query/gallery splits, from file names and list files only.

No image is ever opened: identity and camera come from names (or MSMT17's lists), so a reader runs in
milliseconds and never fails on a corrupt file. Names that do not parse are counted in `skipped`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
LAYOUTS = ("market1501", "dukemtmc-reid", "msmt17", "veri776", "generic")

# torchreid's pattern for Market-1501/DukeMTMC-reID, `([-\d]+)_c(\d)`, with two deliberate changes: it is
# anchored at the start of the file name (torchreid searches the whole path, so a folder name could parse),
# and the camera takes all its digits (torchreid would read c12 as camera 1; the real sets have <= 8 cameras,
# where both agree).
_MARKET_NAME = re.compile(r"([-\d]+)_c(\d+)")
_MARKET_FRAME = re.compile(r"_c\d+s\d+_(\d+)")  # 0002_c1s1_000451_03 -> 451
_DUKE_FRAME = re.compile(r"_c\d+_f(\d+)")  # 0005_c2_f0046985 -> 46985
_VERI_NAME = re.compile(r"(\d+)_c(\d+)(?:_(\d+))?")  # 0002_c002_00030600_0 -> pid 2, camera 2, frame 30600
_MSMT_CAMERA = re.compile(r"_c(\d+)_")

NameParser = Callable[[str], tuple[int, int, int | None] | None]  # file name -> (pid, camid, frame) or None


@dataclass(frozen=True)
class Sample:
    path: Path
    pid: int  # -1: junk (dropped by the metrics); 0 in Market/Duke: distractor (a negative for every query)
    camid: int  # as in the file name (1-based); only equality matters
    frame: int | None = None


@dataclass(frozen=True)
class ReidDataset:
    name: str  # the layout it was read as, one of LAYOUTS
    query: list[Sample]
    gallery: list[Sample]
    skipped: int = 0  # image files whose names (or list lines) did not parse, or listed files that are missing


def labels(samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
    """(pids, camids) as int64 arrays, in the order the metrics' similarity matrix rows/columns use."""
    return (np.fromiter((s.pid for s in samples), dtype=np.int64, count=len(samples)),
            np.fromiter((s.camid for s in samples), dtype=np.int64, count=len(samples)))


def _images(folder: Path) -> list[Path]:
    """Image files directly in folder, sorted by name so datasets load in the same order everywhere."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _read_folder(folder: Path, parse: NameParser) -> tuple[list[Sample], int]:
    samples: list[Sample] = []
    skipped = 0
    for path in _images(folder):
        parsed = parse(path.name)
        if parsed is None:
            skipped += 1
        else:
            samples.append(Sample(path, *parsed))
    return samples, skipped


def _frame(pattern: re.Pattern[str], name: str) -> int | None:
    m = pattern.search(name)
    return int(m.group(1)) if m else None


def parse_market_name(name: str) -> tuple[int, int, int | None] | None:
    """(pid, camid, frame) of a Market-1501 or DukeMTMC-reID file name, None when it does not parse."""
    m = _MARKET_NAME.match(name)
    if m is None:
        return None
    try:
        pid = int(m.group(1))
    except ValueError:  # `[-\d]+` also matches "1-2" or "--"
        return None
    frame = _frame(_MARKET_FRAME, name)
    return pid, int(m.group(2)), _frame(_DUKE_FRAME, name) if frame is None else frame


def parse_veri_name(name: str) -> tuple[int, int, int | None] | None:
    """(pid, camid, frame) of a VeRi-776 file name such as 0002_c002_00030600_0.jpg."""
    m = _VERI_NAME.match(name)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3)) if m.group(3) else None


def msmt_camera(name: str) -> int | None:
    """MSMT17's camera: `_c<N>_` when present, else the third `_` field as in the official names.

    The official names are <pid>_<index>_<camera>_<scene>_<frame>_<box>.jpg (0000_000_01_0303morning_0015_0.jpg),
    which is what torchreid reads; the `_c14_` form is accepted for re-exported copies.
    """
    m = _MSMT_CAMERA.search(name)
    if m:
        return int(m.group(1))
    fields = Path(name).stem.split("_")
    return int(fields[2]) if len(fields) >= 3 and fields[2].isdigit() else None


def _require(root: Path, *names: str) -> None:
    missing = [n for n in names if not (root / n).exists()]
    if missing:
        raise ValueError(f"{root}: missing {', '.join(missing)}")


def read_market(root: Path, name: str = "market1501") -> ReidDataset:
    """Market-1501 or DukeMTMC-reID: query/ and bounding_box_test/, identity and camera in the names.

    Junk (pid -1) and distractors (pid 0) are kept, labelled: the metrics know what to do with them.
    """
    _require(root, "query", "bounding_box_test")
    query, skipped_q = _read_folder(root / "query", parse_market_name)
    gallery, skipped_g = _read_folder(root / "bounding_box_test", parse_market_name)
    return ReidDataset(name, query, gallery, skipped_q + skipped_g)


def read_veri(root: Path) -> ReidDataset:
    """VeRi-776: image_query/ and image_test/."""
    _require(root, "image_query", "image_test")
    query, skipped_q = _read_folder(root / "image_query", parse_veri_name)
    gallery, skipped_g = _read_folder(root / "image_test", parse_veri_name)
    return ReidDataset("veri776", query, gallery, skipped_q + skipped_g)


# Where MSMT17's listed paths live: V1 puts them under test/, V2 under mask_test_v2/.
_MSMT_IMAGE_DIRS = ("", "test", "mask_test_v2")


def _read_msmt_list(root: Path, list_file: Path) -> tuple[list[Sample], int]:
    samples: list[Sample] = []
    skipped = 0
    for line in list_file.read_text().splitlines():
        if not line.strip():
            continue
        sample = _msmt_sample(root, line)
        if sample is None:
            skipped += 1
        else:
            samples.append(sample)
    return samples, skipped


def _msmt_sample(root: Path, line: str) -> Sample | None:
    """One `path pid` line; None when it does not parse or the file is in none of the image folders."""
    parts = line.split()
    if len(parts) != 2 or not re.fullmatch(r"-?\d+", parts[1]):
        return None
    camid = msmt_camera(Path(parts[0]).name)
    path = next((p for d in _MSMT_IMAGE_DIRS if (p := root / d / parts[0]).is_file()), None)
    if camid is None or path is None:
        return None
    return Sample(path, int(parts[1]), camid)


def read_msmt17(root: Path) -> ReidDataset:
    """MSMT17 (V1 or V2): list_query.txt and list_gallery.txt at the root, `path pid` per line."""
    _require(root, "list_query.txt", "list_gallery.txt")
    query, skipped_q = _read_msmt_list(root, root / "list_query.txt")
    gallery, skipped_g = _read_msmt_list(root, root / "list_gallery.txt")
    return ReidDataset("msmt17", query, gallery, skipped_q + skipped_g)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_generic(root: Path) -> ReidDataset:
    """ROOT/<id>/<camera>/*.jpg|png: the first image (by name) of each (id, camera) is a query, the rest gallery.

    Ids and cameras are numbered 1, 2, ... in sorted name order, cameras across all ids (the same folder
    name is the same camera everywhere). Numbering from 1 keeps clear of Market's pid 0 (distractor) and
    -1 (junk) conventions. Images not inside a camera folder are counted as skipped.
    """
    id_dirs = _subdirs(root)
    cameras = sorted({cam.name for d in id_dirs for cam in _subdirs(d)})
    cam_of = {name: i for i, name in enumerate(cameras, start=1)}
    query: list[Sample] = []
    gallery: list[Sample] = []
    skipped = len(_images(root))
    for pid, id_dir in enumerate(id_dirs, start=1):
        skipped += len(_images(id_dir))
        for cam_dir in _subdirs(id_dir):
            images = _images(cam_dir)
            query.extend(Sample(p, pid, cam_of[cam_dir.name]) for p in images[:1])
            gallery.extend(Sample(p, pid, cam_of[cam_dir.name]) for p in images[1:])
    return ReidDataset("generic", query, gallery, skipped)


def _has_generic_images(root: Path) -> bool:
    return any(_images(cam) for d in _subdirs(root) for cam in _subdirs(d))


def _looks_like_duke(root: Path) -> bool:
    """Market and Duke share a layout and a parser; only the frame part of the names tells them apart."""
    names: Iterator[str] = (p.name for p in (root / "query").iterdir())
    return any(_DUKE_FRAME.search(n) for n in names)


def detect_layout(root: Path) -> str:
    """Which of LAYOUTS `root` holds, judged from the folders and list files present."""
    if (root / "query").is_dir() and (root / "bounding_box_test").is_dir():
        return "dukemtmc-reid" if _looks_like_duke(root) else "market1501"
    if (root / "list_query.txt").is_file() and (root / "list_gallery.txt").is_file():
        return "msmt17"
    if (root / "image_query").is_dir() and (root / "image_test").is_dir():
        return "veri776"
    if root.is_dir() and _has_generic_images(root):
        return "generic"
    raise ValueError(
        f"{root}: no known re-id layout; looked for query/ + bounding_box_test/ (Market-1501, DukeMTMC-reID), "
        "list_query.txt + list_gallery.txt (MSMT17), image_query/ + image_test/ (VeRi-776), "
        "or <id>/<camera>/*.jpg|png (generic)" + ("" if root.is_dir() else "; the folder does not exist"))


def load_dataset(root: Path | str, layout: str = "auto") -> ReidDataset:
    """Read a benchmark's query and gallery; `layout` is one of LAYOUTS or "auto" (detect from the files)."""
    root = Path(root)
    chosen = detect_layout(root) if layout == "auto" else layout
    if chosen in ("market1501", "dukemtmc-reid"):
        return read_market(root, chosen)
    if chosen == "msmt17":
        return read_msmt17(root)
    if chosen == "veri776":
        return read_veri(root)
    if chosen == "generic":
        if not root.is_dir():
            raise ValueError(f"{root}: not a folder")
        return read_generic(root)
    raise ValueError(f"unknown layout {layout!r}; expected 'auto' or one of {', '.join(LAYOUTS)}")
