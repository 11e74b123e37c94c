"""A deterministic, hard, synthetic multi-camera person re-identification benchmark (numpy + Pillow only).

Real ReID datasets cannot be downloaded here, so this package draws one: articulated people whose identity lives in
their clothes, hair, accessory, build and height, with near-twins (identities that differ from another one in
exactly one attribute) as hard negatives; seen walking in any view and at any point of their stride, alone or in
pairs, along a camera graph no faster than its transit times, by cameras that each distort the picture their own
way, with loose or edge-cut boxes, occluders and motion blur. `generate(out)` writes it as a Market-1501 folder plus
the full frames, a detection stream and the site's camera graph, byte-identical for the same arguments (and,
with `session=N`, a later visit of the same site beside it: same people and cameras, new walks, a later day);
`contact_sheet`, `baseline_scores` and `pixel_hardness` look at a written site; `main` is `reid-stream synth`. The
modules, each importing only those before it: randomness, identities, drawing, cameras, schedule, frames, writer,
checks, cli.
"""

from reid_stream.eval.synth.checks import (
    CELL_H,
    CELL_W,
    HEADER_H,
    LABEL_W,
    PER_CAMERA,
    baseline_scores,
    contact_sheet,
    pixel_hardness,
    sheet_rows,
)
from reid_stream.eval.synth.cli import main
from reid_stream.eval.synth.frames import GRID
from reid_stream.eval.synth.identities import _sample_attributes, _twin_of  # the unit tests sample identities
from reid_stream.eval.synth.writer import (
    GENERATOR_VERSION,
    SynthSummary,
    generate,
    parse_timestamp,
    session_folder,
    stream_file,
)

__all__ = [
    "CELL_H",
    "CELL_W",
    "GENERATOR_VERSION",
    "GRID",
    "HEADER_H",
    "LABEL_W",
    "PER_CAMERA",
    "SynthSummary",
    "_sample_attributes",
    "_twin_of",
    "baseline_scores",
    "contact_sheet",
    "generate",
    "main",
    "parse_timestamp",
    "pixel_hardness",
    "session_folder",
    "sheet_rows",
    "stream_file",
]
