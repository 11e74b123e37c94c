"""Looking at a written benchmark: a contact sheet of its crops, and model-free scores of how hard it is.

`baseline_scores` (raw pixels, colour histograms, chance) and `pixel_hardness` are reference points an encoder
worth using must beat by a wide margin; they read only the folder, so they work on any site `generate` wrote
(a later session's: its folder ``session-N``, or `contact_sheet(site, path, session=N)`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from reid_stream.eval.metrics import retrieval_metrics
from reid_stream.eval.synth.randomness import _rng
from reid_stream.eval.synth.writer import session_folder, stream_file
from reid_stream.vision.images import ALLOWED_FORMATS

# the crop file names `generate` writes: pid, camera, Market's sequence (session + 1), frame, number in the frame
CROP_RE = re.compile(r"([-\d]+)_c(\d)s(\d+)_(\d{6})_(\d{2})\.(jpg|png)$")


CELL_W, CELL_H, LABEL_W, HEADER_H, PER_CAMERA = 64, 128, 132, 18, 2


def _crops(out: Path) -> list[tuple[int, int, Path]]:
    """(pid, cam, path) of every crop in query/ and bounding_box_test/, sorted."""
    found = []
    for folder in ("query", "bounding_box_test"):
        for p in sorted((out / folder).iterdir()):
            m = CROP_RE.search(p.name)
            if m:
                found.append((int(m.group(1)), int(m.group(2)), p))
    return found


def sheet_rows(people: list[dict], n: int) -> list[int]:
    """The contact sheet's identities: near-twin pairs first (source, then twin; about half of the rows),
    then the others in pid order."""
    rows: list[int] = []
    for p in people:
        pair_fits = len(rows) + 2 <= n and len(rows) < max(2, n // 2)
        if p["twin_of"] is not None and pair_fits and p["twin_of"] not in rows:
            rows += [p["twin_of"], p["pid"]]
    rows += [p["pid"] for p in people if p["pid"] not in rows][: n - len(rows)]
    return rows


def contact_sheet(out: Path, path: Path, ids: int = 8, session: int = 0) -> Path:
    """A PNG grid to look at: one row per identity (near-twin pairs on adjacent rows, their source first), two
    crops per camera (the query, then a crop from another visit when there is one); size
    (LABEL_W + cameras * PER_CAMERA * CELL_W) x (HEADER_H + rows * CELL_H). `out` is the site's folder; `session`
    which of its sessions to show."""
    out = Path(out)
    base = session_folder(out, session)
    people = json.loads((base / "identities.json").read_text())["identities"]
    n_cams = len(json.loads((base / "site.json").read_text())["cameras"])
    by_pid = {p["pid"]: p for p in people}
    rows = sheet_rows(people, ids)
    track = {r["crop"]: r["track_id"] for r in map(json.loads, stream_file(out, session).read_text().splitlines())}
    crops: dict[tuple[int, int], list[Path]] = {}
    for pid, cam, p in _crops(base):
        crops.setdefault((pid, cam), []).append(p)
    sheet = Image.new("RGB", (LABEL_W + n_cams * PER_CAMERA * CELL_W, HEADER_H + len(rows) * CELL_H), (40, 40, 40))
    d = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for c in range(n_cams):
        d.text((LABEL_W + c * PER_CAMERA * CELL_W + 4, 3), f"cam-{c + 1}", fill=(230, 230, 230), font=font)
    for r, pid in enumerate(rows):
        y = HEADER_H + r * CELL_H
        p = by_pid[pid]
        a = p["attributes"]
        lines = [f"pid {pid:04d}"]
        if p["twin_of"] is not None:
            lines += [f"twin of {p['twin_of']:04d}", f"~ {p['changed']}"]
        lines += [a["upper_pattern"], f"{a['lower_type']}, {a['sleeves']}", a["accessory"], f"hair {a['hair_length']}"]
        d.text((4, y + 4), "\n".join(lines), fill=(230, 230, 230), font=font, spacing=2)
        if p["twin_of"] is not None:
            d.rectangle((0, y, 3, y + CELL_H - 1), fill=(230, 120, 40))
        for c in range(n_cams):
            files = crops.get((pid, c + 1), [])
            chosen = [f for f in files if f.parent.name == "query"][:1]
            seen = {track.get(f.relative_to(out).as_posix()) for f in chosen}
            others = [f for f in files if f not in chosen]
            chosen += ([f for f in others if track.get(f.relative_to(out).as_posix()) not in seen] or others)[:1]
            for j, f in enumerate(chosen[:PER_CAMERA]):
                with Image.open(f, formats=ALLOWED_FORMATS) as im:
                    crop = im.convert("RGB")
                scale = min(CELL_W / crop.width, CELL_H / crop.height)
                crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))),
                                   Image.Resampling.BILINEAR)
                x = LABEL_W + (c * PER_CAMERA + j) * CELL_W
                sheet.paste(crop, (x + (CELL_W - crop.width) // 2, y + (CELL_H - crop.height) // 2))
        d.line((0, y + CELL_H - 1, sheet.width, y + CELL_H - 1), fill=(20, 20, 20))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, "PNG")
    return path


def _load(paths: Sequence[Path], size: tuple[int, int]) -> np.ndarray:
    arrs = []
    for p in paths:
        with Image.open(p, formats=ALLOWED_FORMATS) as im:
            arrs.append(np.asarray(im.convert("RGB").resize(size, Image.Resampling.BILINEAR), np.float32))
    return np.stack(arrs)


def pixel_hardness(out: Path, size: tuple[int, int] = (32, 64), pairs: int = 3000) -> dict:
    """Mean absolute pixel difference (0-255) of crops resized to `size`: same identity on different cameras vs
    different identities on the same camera. If the first is not clearly smaller, raw pixels do not separate ids."""
    crops = [(pid, cam, p) for pid, cam, p in _crops(Path(out)) if pid > 0]
    x = _load([p for _, _, p in crops], size)
    pid = np.array([c[0] for c in crops])
    cam = np.array([c[1] for c in crops])
    rng = _rng(0, "hardness")
    i, j = rng.integers(len(crops), size=(2, pairs * 20))
    same_id = (pid[i] == pid[j]) & (cam[i] != cam[j])
    same_cam = (pid[i] != pid[j]) & (cam[i] == cam[j])
    diff_both = (pid[i] != pid[j]) & (cam[i] != cam[j])

    def mad(mask: np.ndarray) -> float:
        a, b = i[mask][:pairs], j[mask][:pairs]
        return float(np.abs(x[a] - x[b]).mean()) if len(a) else float("nan")

    return {"same_id_other_camera": mad(same_id), "other_id_same_camera": mad(same_cam),
            "other_id_other_camera": mad(diff_both), "pairs": pairs}


def _hist_features(x: np.ndarray) -> np.ndarray:
    """A classic hand-made ReID descriptor: HSV histograms in six horizontal stripes (Hellinger-normalised)."""
    n, h = x.shape[0], x.shape[1]
    rgb = x / 255.0
    mx, mn = rgb.max(-1), rgb.min(-1)
    v, s = mx, np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    d = np.maximum(mx - mn, 1e-6)
    hue = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) / 6.0
    feats = []
    for k in range(6):
        sl = slice(k * h // 6, (k + 1) * h // 6)
        for values, bins, weights in ((hue[:, sl], 12, s[:, sl]), (s[:, sl], 6, None), (v[:, sl], 6, None)):
            idx = np.minimum((values * bins).astype(int), bins - 1).reshape(n, -1)
            w = np.ones_like(idx, np.float32) if weights is None else weights.reshape(n, -1)
            hist = np.zeros((n, bins), np.float32)
            np.add.at(hist, (np.repeat(np.arange(n), idx.shape[1]), idx.ravel()), w.ravel())
            feats.append(hist / np.maximum(hist.sum(1, keepdims=True), 1e-6))
    return np.sqrt(np.concatenate(feats, axis=1))


def baseline_scores(out: Path) -> dict:
    """Model-free reference points: an encoder worth using must beat these by a wide margin."""
    out = Path(out)
    items = {"query": [], "bounding_box_test": []}
    for pid, cam, p in _crops(out):
        items[p.parent.name].append((pid, cam, p))
    result = {}
    arrays = {k: (_load([p for *_, p in v], (32, 64)), np.array([x[0] for x in v]), np.array([x[1] for x in v]))
              for k, v in items.items()}
    (qx, qp, qc), (gx, gp, gc) = arrays["query"], arrays["bounding_box_test"]

    def raw(x: np.ndarray) -> np.ndarray:
        f = x.reshape(len(x), -1)
        return f - f.mean(1, keepdims=True)

    def score(q: np.ndarray, g: np.ndarray) -> dict:
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        r = retrieval_metrics(qn @ gn.T, qp, gp, qc, gc)
        return {"rank1": round(r.rank1, 4), "rank5": round(r.rank5, 4), "mAP": round(r.mAP, 4)}

    result["raw_pixels"] = score(raw(qx), raw(gx))
    result["color_histogram"] = score(_hist_features(qx), _hist_features(gx))
    n_gallery_ids = len(set(gp.tolist()) - {0})
    result["chance_rank1"] = round(1.0 / max(1, n_gallery_ids), 4)  # about: one true identity among them
    return result
