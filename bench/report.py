"""Joins the benchmarks' Markdown summaries into bench/results/SUMMARY.md, the source of the README table."""

from __future__ import annotations

from bench.common import RESULTS

ORDER = ["encoder_efficiency", "pipeline_overhead", "search", "memory", "restart", "batch_curve"]


def main() -> None:
    parts = [(RESULTS / f"{name}.md").read_text() for name in ORDER if (RESULTS / f"{name}.md").exists()]
    (RESULTS / "SUMMARY.md").write_text("# Benchmark results\n\nReproduce with `make bench`.\n\n" + "\n".join(parts))
    print(RESULTS / "SUMMARY.md")


if __name__ == "__main__":
    main()
