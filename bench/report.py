"""Joins the benchmarks' Markdown summaries into bench/results/SUMMARY.md, below its hand-written part.

SUMMARY.md starts with a part written by hand and kept as it is: one table of the current figures, each naming
the commit and the day it was measured, what limits them, and the superseded figures under "History". It is
the source of the README's short performance table. Everything after MARKER is regenerated from the results;
after a new run, update the current table by hand and move the rows it replaces to the history, dated.
"""

from __future__ import annotations

from bench.common import RESULTS

ORDER = ["encoder_efficiency", "pipeline_overhead", "pipeline_gpu", "scale", "search", "memory", "restart",
         "batch_curve", "ab_overhead", "identity", "assignment", "adaptation", "adaptation_cost", "plates"]
MARKER = "<!-- Everything below this line is written by `python -m bench.report`"


def main() -> None:
    summary = RESULTS / "SUMMARY.md"
    old = summary.read_text() if summary.exists() else ""
    kept = old[: old.index(MARKER)] if MARKER in old else "# Performance\n\nReproduce with `make bench`.\n\n"
    parts = [(RESULTS / f"{name}.md").read_text() for name in ORDER if (RESULTS / f"{name}.md").exists()]
    summary.write_text(kept + MARKER + " (the last step of `make bench`); the text above it is kept. -->\n\n"
                       "## Detailed results\n\n" + "\n".join(parts))
    print(summary)


if __name__ == "__main__":
    main()
