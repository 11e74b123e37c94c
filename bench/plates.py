"""Plate OCR (REID_PLATE_OCR): accuracy and cost per vehicle crop on rendered plates, clean and degraded.

Usage: python -m bench.plates [--n 30] [--out bench/results]

Each case renders n vehicles with random plates into 1280x720 camera frames (JPEG), then reads each through
the worker's own path (`plate_ocr.read_vehicle_plate`: decode, cut the box, scale to OCR_MAX_SIDE, PP-OCR on one
thread, the plausibility rule). A read counts as right only if it is exactly the plate; "wrong" are reads of
another plate (what could join the wrong entity), "none" are vehicles left without a plate. Vehicles without a
plate measure the cost of finding nothing and any false reads. Rendered text is far easier than real plates
(no perspective, glare, dirt or motion blur): these are upper bounds on accuracy, fair figures for cost.
Self-contained like bench/search.py: no worker, Kafka or Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reid_stream.events import BBox  # noqa: E402
from reid_stream.vision.plate_ocr import OCR_MAX_SIDE, read_vehicle_plate  # noqa: E402
from tests.plate_images import frame_jpeg  # noqa: E402

LETTERS, DIGITS = "ABCDEFGHJKLMNPRSTUVWXYZ", "0123456789"
FORMATS = ("LLDDDLL", "LLLDDD", "DLLLDDD", "LLDDDD", "LDDDLL", "LLLLDDD")
MIN_CONFIDENCE = 0.9  # REID_PLATE_MIN_CONFIDENCE's default
# (name, frame_jpeg keyword arguments)
CASES: list[tuple[str, dict[str, Any]]] = [
    ("clean, box 320x240, letters 14 px", {"box_size": (320, 240), "char_height": 14}),
    ("clean, box 480x360, letters 12 px", {"box_size": (480, 360), "char_height": 12}),
    ("clean, box 480x360, letters 20 px", {"box_size": (480, 360), "char_height": 20}),
    ("clean, box 960x720, letters 32 px (scaled to 640)", {"box_size": (960, 720), "char_height": 32}),
    ("small letters, 8 px", {"box_size": (480, 360), "char_height": 8}),
    ("blurred (Gaussian 1.5 px), letters 16 px", {"char_height": 16, "blur": 1.5}),
    ("JPEG quality 30, letters 16 px", {"char_height": 16, "quality": 30}),
    ("turned 8 degrees, letters 16 px", {"char_height": 16, "angle": 8.0}),
    ("dusk (35 % light, noise), letters 16 px", {"char_height": 16, "light": 0.35}),
]


def random_plate(rng: random.Random) -> str:
    return "".join(rng.choice(LETTERS if c == "L" else DIGITS) for c in rng.choice(FORMATS))


def run_case(kwargs: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    right = wrong = none = 0
    times, misreads = [], []
    for i in range(n):
        plate = random_plate(rng)
        data, box = frame_jpeg(plate, seed=seed * 1000 + i, **kwargs)
        t0 = time.perf_counter()
        read = read_vehicle_plate(data, BBox(**box), 10**8, MIN_CONFIDENCE)
        times.append(1000 * (time.perf_counter() - t0))
        if read is None:
            none += 1
        elif read.plate == plate:
            right += 1
        else:
            wrong += 1
            misreads.append(f"{plate} as {read.plate}")
    times.sort()
    return {"n": n, "right": right, "wrong": wrong, "none": none, "p50_ms": round(statistics.median(times), 1),
            "p90_ms": round(times[int(0.9 * (n - 1))], 1), "misreads": misreads}


def run_without_plates(n: int) -> dict[str, Any]:
    times, false_reads = [], 0
    for i in range(n):
        data, box = frame_jpeg(None, seed=i)
        t0 = time.perf_counter()
        false_reads += read_vehicle_plate(data, BBox(**box), 10**8, MIN_CONFIDENCE) is not None
        times.append(1000 * (time.perf_counter() - t0))
    return {"n": n, "false_reads": false_reads, "p50_ms": round(statistics.median(times), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="vehicles per case")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    t0 = time.perf_counter()
    data, box = frame_jpeg("AB123CD")
    read_vehicle_plate(data, BBox(**box), 10**8, MIN_CONFIDENCE)  # the engine loads at the first read
    first_ms = round(1000 * (time.perf_counter() - t0))
    results = [{"case": name, **run_case(kwargs, args.n, seed)} for seed, (name, kwargs) in enumerate(CASES)]
    empty = run_without_plates(args.n)
    info = {"cores": os.cpu_count(), "python": platform.python_version(), "when": datetime.now(UTC).isoformat(),
            "ocr_threads": 1, "ocr_max_side": OCR_MAX_SIDE, "min_confidence": MIN_CONFIDENCE}
    payload = {"machine": info, "first_read_ms": first_ms, "cases": results, "no_plate": empty}
    lines = [
        "# Plate OCR on rendered plates (PP-OCRv4 via rapidocr-onnxruntime, CPU, 1 thread)",
        "",
        f"{info['cores']} cores; {args.n} vehicles per case in 1280x720 JPEG frames; the crop is scaled to at most "
        f"{OCR_MAX_SIDE} px; a read needs confidence >= {MIN_CONFIDENCE} and a plate's shape. The first read "
        f"of a process also loads the engine: {first_ms} ms.",
        "",
        "| case | right | wrong plate | no plate read | p50 ms | p90 ms | misreads |",
        "|---|---:|---:|---:|---:|---:|---|",
        *(f"| {r['case']} | {r['right']}/{r['n']} | {r['wrong']} | {r['none']} | {r['p50_ms']} | {r['p90_ms']} | "
          f"{', '.join(r['misreads'])} |" for r in results),
        f"| vehicle without a plate (box 480x360) | - | {empty['false_reads']} false reads | - | "
        f"{empty['p50_ms']} | - | |",
        "",
        "Rendered text has no perspective, glare, dirt or motion: accuracy on real cameras will be lower.",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "plates.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / "plates.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
