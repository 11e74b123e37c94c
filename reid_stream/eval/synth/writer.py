"""`generate`: plans, renders and writes a whole benchmark folder, byte-identical for the same arguments.

It writes:

- a Market-1501 layout: ``query/`` (one crop per identity and camera), ``bounding_box_test/`` (the other
  crops, plus junk detections with pid 0000: background-only or half-body boxes), an empty
  ``bounding_box_train/``; crop names ``{pid:04d}_c{cam}s1_{frame:06d}_{n:02d}.jpg`` where frame is the 25 fps
  tick (one clock for all cameras) and n the detection's number inside that frame;
- the full frames ``frames/c{cam}/{frame:06d}.jpg`` and ``stream.jsonl``, one detection per line in time order
  (a `reid_stream.events.Detection` plus ``true_id``, 0 for junk, and ``crop``, its crop file);
- ``site.json`` (cameras with their nuisances, the camera graph with min/typical transit seconds),
  ``identities.json`` (attributes, twins, visits) and ``README.txt``.

That is session 0. Session N > 0 is a later visit of the same site: the same people (pids, attributes, twins) and
cameras (looks, nuisances, graph), with everything else drawn anew from (seed, N): routes, arrival times, poses,
shots, occluders, junk boxes, sensor noise; its clock starts N days after session 0's, so no two sessions overlap.
It goes beside session 0, whose files it leaves alone: ``stream-sN.jsonl`` next to ``stream.jsonl`` (paths in it
relative to that folder, so one image root serves every session) and a folder ``session-N/`` with the session's
own Market folders, ``frames/``, ``site.json`` (session 0's plus ``session`` and ``session_start``),
``identities.json`` (the same people, this session's visits) and ``README.txt``. Its ids carry the session:
detections ``sN-det-000001``, tracks ``sN-c2-t3``, crops ``..._c2s{N+1}_...`` (Market's sequence number).

Crops are exact: every bbox is aligned to the 8-pixel JPEG block grid, and frames and crops are saved with the
same quality and 4:4:4 chroma, so decoding a crop file gives exactly the pixels of decoding its frame and
cutting the bbox. With ``image_format="png"`` the camera's JPEG artefacts are baked in and all is lossless.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

from reid_stream.eval.synth.cameras import FRAME_H, FRAME_W, _Camera, _cameras, _site_edges
from reid_stream.eval.synth.frames import _camera_pipeline, _distractor_box, _loose, _occlude, _paste_person, _snap
from reid_stream.eval.synth.identities import ATTRIBUTES, _identities
from reid_stream.eval.synth.randomness import Seed, _pick, _rng, _session_seed
from reid_stream.eval.synth.schedule import FPS, _plan_shots, _schedule, _Shot, _Visit
from reid_stream.vision.images import ALLOWED_FORMATS

GENERATOR_VERSION = 1
START = datetime(2026, 1, 1, 8, 0, 0, tzinfo=UTC)
SESSION_TICKS = 24 * 3600 * FPS  # session N starts N days after session 0 and must end within its day


@dataclass(frozen=True)
class SynthSummary:
    """What `generate` wrote: how many crops, detections, frames and near-twins."""

    ids: int
    cameras: int
    seed: int
    query: int
    gallery: int
    distractors: int
    detections: int
    frames: int
    twin_pairs: int
    shared_frames: int  # frames that hold more than one labelled person
    session: int = 0


def _encode(arr: np.ndarray, image_format: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if image_format == "jpg":
        Image.fromarray(arr).save(buf, "JPEG", quality=quality, subsampling=0, optimize=False, progressive=False)
    else:
        Image.fromarray(arr).save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def _timestamp(tick: int, session: int = 0) -> str:
    t = START + timedelta(days=session, milliseconds=tick * 1000 // FPS)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    """The inverse of the stream's timestamps (ISO 8601 UTC ending in Z)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


_OUTPUTS = ("bounding_box_train", "bounding_box_test", "query", "frames", "stream.jsonl", "site.json",
            "identities.json", "README.txt")
_PERSON_KEYS = ("pid", "attributes", "twin_of", "changed")  # who a person is: the same in every session


def session_folder(out: Path, session: int = 0) -> Path:
    """The folder of one session of the site in `out`: its images, site.json, identities.json and README.txt."""
    return Path(out) / f"session-{session}" if session else Path(out)


def stream_file(out: Path, session: int = 0) -> Path:
    """One session's detection stream: ``stream.jsonl`` or ``stream-sN.jsonl``, in `out` (the site's folder)."""
    return Path(out) / (f"stream-s{session}.jsonl" if session else "stream.jsonl")


def generate(out: Path, ids: int = 40, cameras: int = 4, seed: int = 0, visits_per_id: int = 3,
             shots_per_visit: int = 4, twins: float = 0.25, image_format: str = "jpg",
             nuisance: float = 1.0, session: int = 0) -> SynthSummary:
    """Write the benchmark into `out` (its previous outputs there are replaced); see the module docstring.

    `nuisance` scales the cameras' photometric differences (gain, white balance, contrast, saturation, gamma,
    noise, blur, JPEG quality): 0 makes them all neutral, 1 is the calibrated default, above 1 is harsher.
    Scale, background, pose, view, occlusion and twins are not affected by it.

    `session` N > 0 writes a later visit of the same site beside session 0 in `out` (``stream-sN.jsonl`` and
    ``session-N/``, replacing only a previous session N), leaving session 0's files alone; give it session 0's
    `ids`, `cameras`, `seed`, `twins` and `nuisance` (a site.json or identities.json in `out` that another site
    wrote is a ValueError). `visits_per_id`, `shots_per_visit` and `image_format` may differ between sessions.
    Regenerating session 0 leaves the later sessions in place: regenerate them too if its arguments changed.
    """
    if not 1 <= ids <= 9999:
        raise ValueError("ids must be in 1..9999 (Market-1501 pids have four digits)")
    if not 2 <= cameras <= 9:
        raise ValueError("cameras must be in 2..9 (Market-1501 names have one camera digit)")
    if visits_per_id < 1 or shots_per_visit < 1 or not 0 <= twins <= 0.5 or seed < 0 or not 0 <= nuisance <= 3:
        raise ValueError("need visits_per_id >= 1, shots_per_visit >= 1, 0 <= twins <= 0.5, seed >= 0, "
                         "0 <= nuisance <= 3")
    if session < 0:
        raise ValueError("session must be >= 0")
    image_format = {"jpeg": "jpg"}.get(image_format.lower(), image_format.lower())
    if image_format not in ("jpg", "png"):
        raise ValueError("image_format must be 'jpg' or 'png'")
    out = Path(out)
    base = session_folder(out, session)
    run = _session_seed(seed, session)  # what happens during this session; who and what cameras come from seed

    cams = _cameras(cameras, seed, nuisance, sensor_seed=run)
    edges = _site_edges(cameras, seed)
    people = _identities(ids, twins, seed)
    attrs = {p["pid"]: p["attributes"] for p in people}
    site = {
        "generator": f"reid_stream.eval.synth v{GENERATOR_VERSION}", "seed": seed, "nuisance": nuisance,
        "frame_size": [FRAME_W, FRAME_H], "fps": FPS, "start": _timestamp(0),
        "cameras": [{"camera_id": f"cam-{c.index}", "index": c.index, "name": c.name, "view_axis": c.axis,
                     "nuisance": c.nuisance()} for c in cams],
        "adjacency": [{"a": f"cam-{a}", "b": f"cam-{b}", "min_transit_s": lo, "typical_transit_s": typ}
                      for (a, b), (lo, typ) in sorted(edges.items())],
        "transit_note": "seconds from the last detection of a visit to the first detection of the next visit",
    }
    if session:
        _check_same_site(out, site, people)
        keys = list(site)
        at = keys.index("start") + 1
        extra = {"session": session, "session_start": _timestamp(0, session)}
        site = {k: site[k] for k in keys[:at]} | extra | {k: site[k] for k in keys[at:]}
    visits = _schedule(people, cams, edges, visits_per_id, shots_per_visit, run)
    shots = _plan_shots(visits, attrs, cams, run)
    last = max(s.tick for s in shots)
    if last >= SESSION_TICKS:
        raise ValueError(f"these arguments keep people walking for {last / FPS / 3600:.1f} hours: a session must "
                         "end within a day of its start (fewer ids or visits per id)")

    out.mkdir(parents=True, exist_ok=True)
    base.mkdir(exist_ok=True)
    for target in [base / name for name in _OUTPUTS] + [stream_file(out, session)]:
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    for sub in ("bounding_box_train", "bounding_box_test", "query"):
        (base / sub).mkdir()

    frames: dict[tuple[int, int], list[_Shot]] = {}  # (camera, tick) -> the people in that frame
    for s in shots:
        frames.setdefault((s.cam, s.tick), []).append(s)
    junk = _choose_junk(frames, len(shots), run)
    junk_tracks = _assign_tracks(visits, junk, cameras, session)
    tracks = {(v.pid, v.index): v.track for v in visits}
    for s in shots:
        s.track = tracks[(s.pid, s.visit)]
    queries = _choose_queries(shots, run)
    records = _render(out, cams, attrs, frames, junk, junk_tracks, queries, image_format, run, session)
    stream_file(out, session).write_text("".join(json.dumps(r) + "\n" for r in records))
    (base / "site.json").write_text(json.dumps(site, indent=2) + "\n")
    by_pid: dict[int, list[dict]] = {}
    for v in visits:
        by_pid.setdefault(v.pid, []).append({"camera_id": f"cam-{v.cam}", "track_id": v.track,
                                             "first": _timestamp(v.ticks[0], session),
                                             "last": _timestamp(v.ticks[-1], session),
                                             "with": v.leader[0] if v.leader else None})
    for p in people:
        p["visits"] = by_pid.get(p["pid"], [])
    doc = {"seed": seed} | ({"session": session} if session else {})
    doc |= {"attribute_names": list(ATTRIBUTES), "identities": people}
    (base / "identities.json").write_text(json.dumps(doc, indent=1) + "\n")
    n_twins = sum(p["twin_of"] is not None for p in people)
    shared = sum(len(v) > 1 for v in frames.values())
    n_query = sum(r["crop"].startswith(f"{_folder_prefix(session)}query/") for r in records)
    summary = SynthSummary(ids=ids, cameras=cameras, seed=seed, query=n_query, gallery=len(records) - n_query,
                           distractors=len(junk), detections=len(records), frames=len(frames), twin_pairs=n_twins,
                           shared_frames=shared, session=session)
    (base / "README.txt").write_text(_readme(summary, visits_per_id, shots_per_visit, twins, image_format, nuisance))
    return summary


def _folder_prefix(session: int) -> str:
    """Where a session's files are, relative to the site's folder (and to its stream file)."""
    return f"session-{session}/" if session else ""


def _id_prefix(session: int) -> str:
    """What a session's detection and track ids start with: none for session 0, so its ids are as they were."""
    return f"s{session}-" if session else ""


def _check_same_site(out: Path, site: dict, people: list[dict]) -> None:
    """A later session goes beside its session 0: the site.json and identities.json there must be this site's."""
    want = {"site.json": json.loads(json.dumps(site)),
            "identities.json": [{k: p[k] for k in _PERSON_KEYS} for p in json.loads(json.dumps(people))]}
    for name, expected in want.items():
        path = out / name
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
            found = doc if name == "site.json" else [{k: p[k] for k in _PERSON_KEYS} for p in doc["identities"]]
        except (ValueError, KeyError, TypeError):
            found = None
        if found != expected:
            raise ValueError(f"{path} is another site's (seed, ids, cameras, twins or nuisance differ): a later "
                             "session takes the arguments of the session 0 in its folder")


def _choose_junk(frames: dict[tuple[int, int], list[_Shot]], n_shots: int, seed: Seed) -> dict[tuple[int, int], str]:
    """About 5% extra junk detections (pid 0): a background-only or a half-body box, each in some frame."""
    keys = sorted(frames, key=lambda k: (k[1], k[0]))
    rng = _rng(seed, "distractors")
    n = min(len(keys), max(2, round(0.05 * n_shots)))
    return {keys[int(i)]: _pick(rng, ("background", "half_body")) for i in sorted(rng.choice(len(keys), n, False))}


def _assign_tracks(visits: list[_Visit], junk: dict[tuple[int, int], str], cameras: int,
                   session: int = 0) -> dict[tuple[int, int], str]:
    """Track ids c{cam}-t{n} (sN-c{cam}-t{n} in session N), per camera in order of first appearance: one per visit
    (set on the visit) and one per junk detection (returned, by frame)."""
    starts = sorted([(v.ticks[0], v.cam, 0, v.pid, v) for v in visits] + [(k[1], k[0], 1, 0, k) for k in junk],
                    key=lambda t: t[:4])
    counters = dict.fromkeys(range(1, cameras + 1), 0)
    junk_tracks: dict[tuple[int, int], str] = {}
    for _, cam, is_junk, _, ref in starts:
        counters[cam] += 1
        if is_junk:
            junk_tracks[ref] = f"{_id_prefix(session)}c{cam}-t{counters[cam]}"
        else:
            ref.track = f"{_id_prefix(session)}c{cam}-t{counters[cam]}"
    return junk_tracks


def _choose_queries(shots: list[_Shot], seed: Seed) -> set[tuple[int, int, int]]:
    """One random shot per (identity, camera): the query crops, as (pid, visit, shot)."""
    rng = _rng(seed, "query")
    per_pid_cam: dict[tuple[int, int], list[_Shot]] = {}
    for s in shots:
        per_pid_cam.setdefault((s.pid, s.cam), []).append(s)
    chosen = (per_pid_cam[k][int(rng.integers(len(per_pid_cam[k])))] for k in sorted(per_pid_cam))
    return {(s.pid, s.visit, s.shot) for s in chosen}


def _render(out: Path, cams: list[_Camera], attrs: dict[int, dict], frames: dict[tuple[int, int], list[_Shot]],
            junk: dict[tuple[int, int], str], junk_tracks: dict[tuple[int, int], str],
            queries: set[tuple[int, int, int]], image_format: str, seed: Seed, session: int = 0) -> list[dict]:
    """Draw, photograph and save every frame and its crops; the stream records, in time order. Paths are relative
    to `out`, the site's folder (where the stream file is)."""
    records: list[dict] = []
    ext = image_format
    where, ids, seq = _folder_prefix(session), _id_prefix(session), session + 1
    for cam_i, tick in sorted(frames, key=lambda k: (k[1], k[0])):
        cam = cams[cam_i - 1]
        frng = _rng(seed, "frame", cam_i, tick)
        exposure = 1 + cam.exposure_jitter * (frng.uniform(-1, 1) + frng.uniform(-0.3, 0.3, 3))
        scene = cam.background.copy()
        placed: list[tuple[_Shot, tuple[float, float, float, float]]] = []
        for s in sorted(frames[(cam_i, tick)], key=lambda s: (s.fy, s.pid)):  # farther people first
            tight = _paste_person(scene, s, attrs[s.pid])
            if tight is None:  # outside the frame: the paths prevent it, but never write an empty box
                tight = _snap((s.fx - 0.15 * s.height_px, s.fy - s.height_px, s.fx + 0.15 * s.height_px, s.fy))
            placed.append((s, tight))
        for s, tight in placed:
            if s.occluder is not None:
                _occlude(scene, tight, s.occluder, s.fy)
        pixels = _camera_pipeline(scene, cam, exposure, frng)
        if image_format == "png":  # keep this camera's compression artefacts, then store losslessly
            jpeg = io.BytesIO(_encode(pixels, "jpg", cam.jpeg_quality))
            pixels = np.asarray(Image.open(jpeg, formats=ALLOWED_FORMATS).convert("RGB"))
        frame_rel = f"{where}frames/c{cam_i}/{tick:06d}.{ext}"
        (out / frame_rel).parent.mkdir(parents=True, exist_ok=True)
        (out / frame_rel).write_bytes(_encode(pixels, image_format, cam.jpeg_quality))
        dets: list[tuple[int, tuple[int, int, int, int], str, str]] = []
        for s, tight in sorted(placed, key=lambda p: (p[1][0], p[0].pid)):  # numbered left to right
            folder = "query" if (s.pid, s.visit, s.shot) in queries else "bounding_box_test"
            dets.append((s.pid, _loose(tight, s.jitter), s.track, folder))
        if (cam_i, tick) in junk:
            box = _distractor_box(junk[(cam_i, tick)], cam, [t for _, t in placed], frng)
            dets.append((0, box, junk_tracks[(cam_i, tick)], "bounding_box_test"))
        for n, (pid, (x1, y1, x2, y2), track, folder) in enumerate(dets, start=1):
            crop_rel = f"{where}{folder}/{pid:04d}_c{cam_i}s{seq}_{tick:06d}_{n:02d}.{ext}"
            crop = np.ascontiguousarray(pixels[y1:y2, x1:x2])
            (out / crop_rel).write_bytes(_encode(crop, image_format, cam.jpeg_quality))
            records.append({"detection_id": f"{ids}det-{len(records) + 1:06d}", "camera_id": f"cam-{cam_i}",
                            "entity_type": "person", "timestamp": _timestamp(tick, session),
                            "bbox": {"x1": float(x1), "y1": float(y1), "x2": float(x2), "y2": float(y2)},
                            "image_path": frame_rel, "track_id": track, "true_id": pid, "crop": crop_rel})
    return records


def _readme(s: SynthSummary, visits: int, shots: int, twins: float, image_format: str, nuisance: float) -> str:
    ext, n, seq = image_format, s.session, s.session + 1
    stream = """stream.jsonl
    One detection per line, in time order: detection_id, camera_id, entity_type, timestamp, bbox (pixels of
    the frame), image_path (relative to this folder), track_id (one visit of one person to one camera),
    true_id (0 for junk), crop (its file in query/ or bounding_box_test/)."""
    title = args = about = site_more = people_more = ""
    if n:
        title, args = f": session {n}", f" session={n}"
        about = f"""

Session {n}: a later visit of the site whose session 0 belongs in the folder above (../). The same people (true
ids, attributes, near-twins) and the same cameras and camera graph; new routes, arrival times, poses, occluders,
junk boxes and sensor noise. Its clock starts {n} day(s) after session 0's, at {_timestamp(0, n)}. Its ids
carry the session, so they never collide with another session's: detection ids s{n}-det-NNNNNN, track ids
s{n}-c{{cam}}-tN, crops {{pid:04d}}_c{{cam}}s{seq}_... (Market's sequence number: the session + 1)."""
        stream = f"""../stream-s{n}.jsonl (beside session 0's stream.jsonl)
    This session's detections, one per line, in time order: detection_id, camera_id, entity_type, timestamp,
    bbox (pixels of the frame), image_path (relative to the stream file's folder: session-{n}/frames/...),
    track_id (one visit of one person to one camera), true_id (0 for junk; a person keeps it in every session),
    crop (session-{n}/query/... or session-{n}/bounding_box_test/...)."""
        site_more = f"\n    The same as session 0's but for session ({n}) and session_start; start is session 0's."
        people_more = "\n    The same identities as session 0's; the visits are this session's."
    return f"""Synthetic multi-camera person re-identification benchmark{title}
Generated by reid_stream.eval.synth v{GENERATOR_VERSION} (numpy + Pillow). Deterministic: the same arguments give
byte-identical files.

arguments: ids={s.ids} cameras={s.cameras} seed={s.seed} visits_per_id={visits} shots_per_visit={shots}
           twins={twins} image_format={image_format} nuisance={nuisance}{args}
contents:  {s.query} query crops, {s.gallery} gallery crops ({s.distractors} of them junk with pid 0000),
           {s.detections} detections in {s.frames} frames ({s.shared_frames} frames show two or more people),
           {s.twin_pairs} near-twins (identities that differ from another one in exactly one attribute){about}

query/ bounding_box_test/ bounding_box_train/ (empty)
    Market-1501 layout, names {{pid:04d}}_c{{cam}}s{seq}_{{frame:06d}}_{{n:02d}}.{ext}. Query: one crop per identity and
    camera it was seen on; gallery: every other crop, plus junk boxes (pid 0000: background only, or half a
    body). Score with the Market protocol (same identity on the same camera is not a match to be credited).
frames/c{{cam}}/{{frame:06d}}.{ext}
    The full {FRAME_W}x{FRAME_H} frames. frame = 25 fps tick since {_timestamp(0, n)}, the same clock on every camera.
{stream} A crop file holds exactly the
    bbox of the decoded frame: boxes are aligned to 8 pixels and frames and crops share the camera's JPEG
    quality with 4:4:4 chroma, so no block straddles the crop's border.
site.json
    The cameras (view axis, photometric nuisances, person height in pixels) and the camera graph: adjacent
    pairs with min and typical transit seconds (last detection of a visit to the first of the next one).{site_more}
identities.json
    Every identity's attributes and visits; a near-twin names its source (twin_of) and what changed.{people_more}
"""
