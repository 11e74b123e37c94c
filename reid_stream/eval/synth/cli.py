"""The command line `reid-stream synth` (and `python -m reid_stream.eval.synth`): write a site, then look at it."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from reid_stream.eval.synth.checks import baseline_scores, contact_sheet, pixel_hardness
from reid_stream.eval.synth.writer import generate, session_folder

DESCRIPTION = "A deterministic, hard, synthetic multi-camera person re-identification benchmark (numpy + Pillow only)."


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reid-stream synth", description=DESCRIPTION)
    parser.add_argument("out", type=Path, help="folder to write (its previous benchmark files are replaced; with "
                        "--session N > 0 only that session's)")
    parser.add_argument("--ids", type=int, default=40)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--visits", type=int, default=3, help="visits per identity")
    parser.add_argument("--shots", type=int, default=4, help="detections per visit")
    parser.add_argument("--twins", type=float, default=0.25, help="fraction of identities that are near-twins")
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg")
    parser.add_argument("--nuisance", type=float, default=1.0,
                        help="scale of the cameras' photometric differences (0 none, 1 default)")
    parser.add_argument("--session", type=int, default=0, metavar="N",
                        help="0 (default): the site as it always was. N > 0: a later visit of the same site, written "
                        "beside session 0 in OUT as OUT/stream-sN.jsonl (image paths relative to OUT) and "
                        "OUT/session-N/ (crops, frames, site.json, identities.json, README.txt); session 0's files "
                        "stay. The same people and cameras (give session 0's --ids --cameras --seed --twins "
                        "--nuisance), new routes, times (from N days later), poses, occluders and sensor noise; "
                        "ids sN-det-..., sN-c1-t..., crops ..._c1s{N+1}_...")
    parser.add_argument("--contact-sheet", type=Path, default=None, help="also write this PNG")
    parser.add_argument("--baselines", action="store_true", help="also print model-free retrieval scores")
    args = parser.parse_args(argv)
    try:
        summary = generate(args.out, ids=args.ids, cameras=args.cameras, seed=args.seed, visits_per_id=args.visits,
                           shots_per_visit=args.shots, twins=args.twins, image_format=args.format,
                           nuisance=args.nuisance, session=args.session)
    except ValueError as exc:
        parser.error(str(exc))
    report: dict = asdict(summary)
    if args.contact_sheet is not None:
        report["contact_sheet"] = str(contact_sheet(args.out, args.contact_sheet, session=args.session))
    if args.baselines:
        report["baselines"] = baseline_scores(session_folder(args.out, args.session))
        report["pixel_hardness"] = pixel_hardness(session_folder(args.out, args.session))
    print(json.dumps(report, indent=2))
    return 0
