"""When and how everyone is seen: visits along the camera graph, then each detection's view, stride, place and occluder.

Several people are on site at once, some walk in pairs (two people side by side in the same frames), and every
identity walks the camera graph no faster than its minimum transit times. Time is the 25 fps tick since the start,
one clock for all cameras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reid_stream.eval.synth.cameras import FRAME_H, FRAME_W, _Camera
from reid_stream.eval.synth.identities import _jitter
from reid_stream.eval.synth.randomness import Seed, _pick, _rng

FPS = 25


@dataclass
class _Shot:
    pid: int
    visit: int
    shot: int
    cam: int
    tick: int
    view: str
    phase: float
    fx: float  # feet position in the frame
    fy: float
    height_px: float
    swing: float
    motion_blur: int
    jitter: tuple[float, float, float, float]
    occluder: dict | None
    track: str = ""


@dataclass
class _Visit:
    pid: int
    index: int
    cam: int
    ticks: list[int]
    view: str
    leader: tuple[int, int] | None = None  # (pid, visit) this visit walks next to
    track: str = ""


def _visit_view(axis: str, rng: np.random.Generator) -> str:
    """How a camera sees one walk past it. A "side" camera mostly sees people cross in profile or three-quarter,
    a "frontback" one mostly sees them come or go squarely or three-quarter; every camera sees every view
    sometimes. Views: front, back, left, right, front_left, front_right, back_left, back_right."""
    way, toward = _pick(rng, ("left", "right")), _pick(rng, ("front", "back"))
    kind = _pick(rng, ("profile", "three_quarter", "square"), (4, 4, 2) if axis == "side" else (1, 4, 5))
    return {"profile": way, "three_quarter": f"{toward}_{way}", "square": toward}[kind]


def _turned(view: str, rng: np.random.Generator) -> str:
    """A glance aside: a square view turns three-quarter, a profile or three-quarter view turns square."""
    if view in ("front", "back"):
        return f"{view}_{_pick(rng, ('left', 'right'))}"
    if view in ("left", "right"):
        return f"{_pick(rng, ('front', 'back'))}_{view}"
    return view.split("_")[0]


def _schedule(people: list[dict], cams: list[_Camera], edges: dict, visits_per_id: int, shots_per_visit: int,
              seed: Seed) -> list[_Visit]:
    neighbours: dict[int, list[int]] = {c.index: [] for c in cams}
    for a, b in edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    window = max(20.0, 4.0 * len(people))  # arrivals spread over this many seconds: many on site at once
    visits: list[_Visit] = []
    firsts: list[_Visit] = []  # first visits that walk alone and nobody has joined yet
    for person in people:
        pid = person["pid"]
        rng = _rng(seed, "route", pid)
        v0: _Visit | None = None
        if firsts and rng.random() < 0.18:  # arrives together with someone: the same frames, side by side
            lead = firsts.pop(int(rng.integers(len(firsts))))
            v0 = _Visit(pid, 0, lead.cam, list(lead.ticks), lead.view, leader=(lead.pid, 0))
        cam = v0.cam if v0 else int(rng.integers(1, len(cams) + 1))
        tick = int(rng.uniform(0, window) * FPS) + FPS
        for k in range(visits_per_id):
            if k == 0 and v0 is not None:
                visit = v0
            else:
                if k > 0:
                    nxt = neighbours[cam][int(rng.integers(len(neighbours[cam])))]
                    lo, typical = edges[(min(cam, nxt), max(cam, nxt))]
                    transit = lo + 0.5 + rng.gamma(2.0, (typical - lo) / 2.0)
                    tick = visits[-1].ticks[-1] + math.ceil(transit * FPS)
                    cam = nxt
                ticks = [tick]
                for _ in range(shots_per_visit - 1):
                    ticks.append(ticks[-1] + round(rng.uniform(0.5, 1.0) * FPS))
                axis = cams[cam - 1].axis
                view = _visit_view(axis, rng)
                visit = _Visit(pid, k, cam, ticks, view)
            visits.append(visit)
            if k == 0 and visit.leader is None:
                firsts.append(visit)
    return visits


def _plan_shots(visits: list[_Visit], people: dict[int, dict], cams: list[_Camera], seed: Seed) -> list[_Shot]:
    plans: dict[tuple[int, int], list[_Shot]] = {}
    for v in sorted(visits, key=lambda v: v.leader is not None):  # leaders first: companions copy their path
        cam = cams[v.cam - 1]
        rng = _rng(seed, "visit", v.pid, v.index)
        attrs = people[v.pid]
        n = len(v.ticks)
        h0 = cam.person_px * attrs["height_m"] / 1.75
        speed = rng.uniform(1.0, 1.6) * h0 / attrs["height_m"]  # pixels per second at this camera's scale
        t = (np.array(v.ticks) - v.ticks[0]) / FPS
        band = (cam.walk_top, FRAME_H - 4)
        if v.view in ("left", "right") or (cam.axis == "side" and v.view not in ("front", "back")):
            d = 1 if v.view.endswith("right") else -1
            span = min(speed * t[-1], 0.75 * FRAME_W)
            rate = span / t[-1] if t[-1] > 0 else 0.0
            xs = FRAME_W / 2 + d * (rate * t - span / 2) + rng.uniform(-0.15, 0.15) * FRAME_W
            if rng.random() < 0.25:  # walks into or out of the frame: a box cut at the edge
                edge_shift = (FRAME_W / 2 - 0.2 * h0) - abs(xs[-1 if d > 0 else 0] - FRAME_W / 2)
                xs = xs + d * max(0.0, edge_shift + 0.12 * h0)
            fy0 = rng.uniform(*band)
            fys = fy0 + rng.normal(0, 1.5, n)
        else:
            d = 1 if v.view.startswith("front") else -1
            dy = rng.uniform(12, 28) * d
            fy0 = rng.uniform(band[0] + 10, band[1] - 10)
            fys = np.clip(fy0 + dy * (t - t[-1] / 2), band[0], band[1])
            x0 = rng.uniform(0.12, 0.88) * FRAME_W
            if rng.random() < 0.15:
                x0 = _pick(rng, (0.02, 0.98)) * FRAME_W
            xs = x0 + rng.normal(0, 3, n) + rng.uniform(-10, 10) * t
        if v.leader is not None:  # walk beside the leader, in the same frames
            lead = plans[v.leader]
            side = _pick(rng, (-1, 1))
            xs = np.array([s.fx for s in lead]) + side * rng.uniform(0.4, 0.65) * h0
            fys = np.clip(np.array([s.fy for s in lead]) + rng.uniform(-12, 12), band[0], band[1])
        xs = np.clip(xs, 0.06 * h0, FRAME_W - 0.06 * h0)  # at least about half the body stays in the frame
        shots = []
        for k in range(n):
            srng = _rng(seed, "shot", v.pid, v.index, k)
            persp = 0.9 + 0.1 * (fys[k] - band[0]) / max(1.0, band[1] - band[0])
            view = v.view
            if srng.random() < 0.12:  # turns for a moment
                view = _turned(view, srng)
            occluder = None
            if srng.random() < 0.2:
                occluder = {"kind": _pick(srng, ("pole", "box", "board")), "pos": float(srng.uniform(0.15, 0.85)),
                            "size": float(srng.uniform(0.25, 0.5)),
                            "color": _jitter(_pick(srng, [*cam.clutter_colors, [90, 90, 92], [200, 170, 40]]), srng, 6)}
            shots.append(_Shot(
                pid=v.pid, visit=v.index, shot=k, cam=v.cam, tick=v.ticks[k], view=view,
                phase=float(srng.uniform(0, 2 * math.pi)), fx=float(xs[k]), fy=float(fys[k]),
                height_px=float(h0 * persp * srng.uniform(0.95, 1.05)), swing=float(srng.uniform(0.6, 1.1)),
                motion_blur=int(srng.integers(3, 8)) if srng.random() < 0.12 else 0,
                jitter=tuple(float(j) for j in srng.uniform(-0.03, 0.07, 4)), occluder=occluder))
        plans[(v.pid, v.index)] = shots
    return [s for v in visits for s in plans[(v.pid, v.index)]]
