"""The evidence a site's stream gives for free, and the operator's labels, as constraints between tracklets.

- One tracklet is one person (its detections are positives of each other).
- Two tracklets seen at once (one camera, or two cameras too far apart for the gap) are two people.
- A tracklet leaving a camera and one entering an adjacent camera within the walkway's transit window may be
  one person: a *succession*, only a candidate (the fit decides by appearance, never for certain).
- The operator's merges and names say two detections are one person, their splits that they are two: these
  always win over what the stream suggests.

Pure numpy: the learner feeds it the stored rows' metadata, never images.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from reid_stream.identity.topology import Topology

# A walkway's transit window, where the topology gives only its minimum: min .. min * SLACK + PAD seconds.
WINDOW_SLACK = 3.0
WINDOW_PAD_S = 60.0


@dataclass(frozen=True)
class Sighting:
    """One stored detection as the learner sees it."""

    detection_id: str
    camera_id: str
    track: str  # the tracklet key (a detection without a track id is a tracklet of its own)
    ts: float  # epoch seconds


@dataclass(frozen=True)
class Labels:
    """The operator's word, by detection id: pairs known to be one person, and pairs known to be two."""

    same: tuple[tuple[str, str], ...] = ()
    apart: tuple[tuple[str, str], ...] = ()

    @property
    def count(self) -> int:
        return len(self.same) + len(self.apart)


@dataclass
class Evidence:
    """Tracklets (indices into the sightings) and what is known or suspected between them."""

    track_of: np.ndarray  # (n,) each sighting's tracklet index
    cameras: list[str]  # per tracklet
    start: np.ndarray  # per tracklet, epoch seconds
    end: np.ndarray
    cannot: set[tuple[int, int]] = field(default_factory=set)  # (i < j): two people, from the stream or operator
    successions: list[tuple[int, int]] = field(default_factory=list)  # (leaves, enters): maybe one person
    same: list[tuple[int, int]] = field(default_factory=list)  # the operator's: one person

    @property
    def tracklets(self) -> int:
        return len(self.cameras)

    def members(self) -> list[np.ndarray]:
        order = np.argsort(self.track_of, kind="stable")
        bounds = np.searchsorted(self.track_of[order], np.arange(self.tracklets + 1))
        return [order[bounds[i]:bounds[i + 1]] for i in range(self.tracklets)]

    def counts(self) -> dict[str, int]:
        return {"detections": len(self.track_of), "tracklets": self.tracklets, "apart": len(self.cannot),
                "successions": len(self.successions), "operator_same": len(self.same)}


def transit_window(topology: Topology, a: str, b: str) -> tuple[float, float] | None:
    """Seconds between leaving camera a and entering camera b for one person walking a direct walkway, or
    None where no walkway joins them (or their views overlap: that is one sighting, not a succession)."""
    lo = topology.walkways.get((a, b))
    if lo is None:
        return None
    typical = topology.typical.get((a, b))
    hi = lo + WINDOW_SLACK * (typical - lo) + 10.0 if typical is not None and typical > lo \
        else lo * WINDOW_SLACK + WINDOW_PAD_S
    return lo, hi


def gather(sightings: Sequence[Sighting], topology: Topology | None = None, labels: Labels | None = None) -> Evidence:
    topology = topology or Topology()
    index: dict[str, int] = {}
    track_of = np.empty(len(sightings), dtype=np.int64)
    cameras: list[str] = []
    starts: list[float] = []
    ends: list[float] = []
    for n, s in enumerate(sightings):
        key = f"{s.camera_id}\x00{s.track}"  # a tracker's ids are per camera
        i = index.get(key)
        if i is None:
            i = index[key] = len(cameras)
            cameras.append(s.camera_id)
            starts.append(s.ts)
            ends.append(s.ts)
        else:
            starts[i], ends[i] = min(starts[i], s.ts), max(ends[i], s.ts)
        track_of[n] = i
    ev = Evidence(track_of, cameras, np.array(starts), np.array(ends))
    ev.cannot = _apart_in_time(ev, topology)
    ev.successions = _successions(ev, topology)
    if labels is not None:
        _apply_labels(ev, sightings, labels)
    return ev


def _apart_in_time(ev: Evidence, topology: Topology) -> set[tuple[int, int]]:
    """Tracklet pairs one person cannot be: overlapping at one camera, or closer in time than the transit
    between two cameras whose views do not overlap. A sweep over start times: only near pairs are compared."""
    order = np.argsort(ev.start, kind="stable")
    longest = max((topology.min_transit(a, b) or 0.0 for a in set(ev.cameras) for b in set(ev.cameras)),
                  default=0.0)
    out: set[tuple[int, int]] = set()
    active: list[int] = []
    for i in order:
        active = [j for j in active if ev.end[j] + longest >= ev.start[i]]
        for j in active:
            gap = max(ev.start[i] - ev.end[j], ev.start[j] - ev.end[i])
            a, b = ev.cameras[i], ev.cameras[j]
            need = topology.min_transit(a, b) if a != b else 0.0
            if (a == b and gap < 0) or (a != b and need is not None and (gap < need or gap <= 0)):
                out.add((min(i, j), max(i, j)))
        active.append(int(i))
    return out


def _successions(ev: Evidence, topology: Topology) -> list[tuple[int, int]]:
    by_camera: dict[str, tuple[list[float], list[int]]] = {}
    for i in np.argsort(ev.start, kind="stable"):
        starts, ids = by_camera.setdefault(ev.cameras[i], ([], []))
        starts.append(float(ev.start[i]))
        ids.append(int(i))
    out = []
    for i in range(ev.tracklets):
        for cam, (starts, ids) in by_camera.items():
            window = transit_window(topology, ev.cameras[i], cam)
            if window is None:
                continue
            lo = bisect.bisect_left(starts, ev.end[i] + window[0])
            hi = bisect.bisect_right(starts, ev.end[i] + window[1])
            out.extend((i, ids[k]) for k in range(lo, hi))
    return out


def _apply_labels(ev: Evidence, sightings: Sequence[Sighting], labels: Labels) -> None:
    at = {s.detection_id: int(ev.track_of[n]) for n, s in enumerate(sightings)}

    def pairs(given: Iterable[tuple[str, str]]) -> list[tuple[int, int]]:
        found = ((at.get(a), at.get(b)) for a, b in given)
        return [(min(i, j), max(i, j)) for i, j in found if i is not None and j is not None and i != j]

    apart = pairs(labels.apart)
    ev.cannot.update(apart)
    ev.same = [p for p in set(pairs(labels.same)) if p not in ev.cannot]
