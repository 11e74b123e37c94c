"""The site's cameras in space and time: which views overlap, and how long it takes to walk between them."""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class TopologyError(ValueError):
    """The camera topology file is missing or malformed; the message says where."""


@dataclass(frozen=True)
class Topology:
    """Minimum transit seconds between cameras, and the pairs whose views overlap (no limit between them).

    Listed transits are walkways: an unlisted pair takes the shortest path through them. Cameras that no
    walkway joins take `default_min_transit_s` (0 when no file is given: an entity still cannot be at two
    cameras at the same moment).
    """

    transit: dict[tuple[str, str], float] = field(default_factory=dict)
    overlapping: frozenset[frozenset[str]] = frozenset()
    default_min_transit_s: float = 0.0
    # The walkways themselves (both directions), and their typical transit where the file gives one: site
    # adaptation looks for a person leaving one camera and entering the next along them.
    walkways: dict[tuple[str, str], float] = field(default_factory=dict)
    typical: dict[tuple[str, str], float] = field(default_factory=dict)

    def min_transit(self, a: str, b: str) -> float | None:
        """Seconds an entity needs from camera a to camera b; None when their views overlap (no limit)."""
        if a == b or frozenset((a, b)) in self.overlapping:
            return None
        return self.transit.get((a, b), self.default_min_transit_s)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "topology") -> Topology:
        """`{"adjacency": [{"a", "b", "min_transit_s"}], "overlapping": [[a, b]], "default_min_transit_s"}`.

        The `adjacency` entries are the shape `reid-stream synth` writes in site.json, so that file works as is.
        """
        try:
            adjacency = data.get("adjacency", [])
            edges = [(str(e["a"]), str(e["b"]), float(e["min_transit_s"])) for e in adjacency]
            typical = [(str(e["a"]), str(e["b"]), float(e["typical_transit_s"])) for e in adjacency
                       if e.get("typical_transit_s") is not None]
            overlapping = frozenset(frozenset((str(a), str(b))) for a, b in data.get("overlapping", []))
            default = float(data.get("default_min_transit_s", 0.0))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TopologyError(f"{source}: {exc!r}; expected adjacency entries {{a, b, min_transit_s}} and "
                                "overlapping pairs [a, b]") from None
        if any(s < 0 for _, _, s in edges + typical) or default < 0:
            raise TopologyError(f"{source}: transit seconds must be >= 0")
        return cls(_shortest_paths(edges), overlapping, default, _both_ways(edges), _both_ways(typical))

    @classmethod
    def load(cls, path: str | Path) -> Topology:
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise TopologyError(f"REID_CAMERA_TOPOLOGY {p}: {exc}") from None
        if not isinstance(data, dict):
            raise TopologyError(f"REID_CAMERA_TOPOLOGY {p}: expected a JSON object")
        return cls.from_dict(data, f"REID_CAMERA_TOPOLOGY {p}")


def _both_ways(edges: list[tuple[str, str, float]]) -> dict[tuple[str, str], float]:
    return {**{(a, b): s for a, b, s in edges}, **{(b, a): s for a, b, s in edges}}


def _shortest_paths(edges: list[tuple[str, str, float]]) -> dict[tuple[str, str], float]:
    """All-pairs shortest transit through the walkways (Dijkstra from each camera; sites are small)."""
    graph: dict[str, list[tuple[str, float]]] = {}
    for a, b, s in edges:
        graph.setdefault(a, []).append((b, s))
        graph.setdefault(b, []).append((a, s))
    out: dict[tuple[str, str], float] = {}
    for src in graph:
        dist = {src: 0.0}
        heap = [(0.0, src)]
        while heap:
            d, cam = heapq.heappop(heap)
            if d > dist[cam]:
                continue
            for nxt, s in graph[cam]:
                if d + s < dist.get(nxt, float("inf")):
                    dist[nxt] = d + s
                    heapq.heappush(heap, (d + s, nxt))
        out.update(((src, dst), d) for dst, d in dist.items() if dst != src)
    return out


def impossible(topology: Topology, cam_a: str, cam_b: str, gap: np.ndarray) -> np.ndarray | None:
    """Which gaps (seconds between two sightings; negative when they overlap) one entity cannot have between
    camera a and camera b; None when the cameras' views overlap (any gap is possible)."""
    if cam_a == cam_b:
        return gap < 0  # two tracks at one camera at overlapping times are two entities
    need = topology.min_transit(cam_a, cam_b)
    if need is None:
        return None
    return (gap < need) | (gap <= 0)  # no walkway known: at least not the same moment


def gap_conflict(topology: Topology, cam_a: str, a0: float, a1: float, cam_b: str, b0: float,
                 b1: float) -> str | None:
    """Why one entity cannot be both sightings (camera, first..last epoch seconds), or None if it can.

    Two tracks at one camera at overlapping times are two entities; two cameras need their transit time
    between the sightings (and, with no topology, at least not the same moment).
    """
    gap = max(a0 - b1, b0 - a1)  # negative when the intervals overlap
    bad = impossible(topology, cam_a, cam_b, np.array([gap]))
    if bad is None or not bad[0]:
        return None
    if cam_a == cam_b:
        return "same camera, overlapping tracks"
    return f"seen at {cam_b} {max(gap, 0.0):.1f} s apart; needs {topology.min_transit(cam_a, cam_b) or 0.0:.1f} s"
