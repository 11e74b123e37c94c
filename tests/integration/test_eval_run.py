"""`reid-stream eval` end to end on a tiny synthetic benchmark: embeddings through the worker's encoder code,
metrics, plots, and a stream replay through the assign stage against the real Redis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from reid_stream.encoders.null import NullEncoder
from reid_stream.eval.replay import read_stream, scored_id
from reid_stream.eval.run import evaluate
from reid_stream.eval.synth import generate
from tests.conftest import make_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, ids=5, cameras=2, seed=3, visits_per_id=2, shots_per_visit=2)
    return out


async def test_eval_writes_metrics_plots_and_replays_the_stream(bench: Path, tmp_path: Path, unique, redis_client):
    # Threshold -1 with the nearest-detection rule: every detection joins the first entity of its type, so the
    # replay must say "one entity" (the entity rule's space-time gate would still keep simultaneous people apart).
    settings = make_settings(unique, assignment="nearest")
    payload = await _evaluate(bench, settings, tmp_path, threshold=-1.0)
    items = read_stream(bench / "stream.jsonl")
    replay = payload["replay"]
    assert replay["num_items"] == len(items) and replay["threshold"] == -1.0 and replay["threshold_source"] == "given"
    assert replay["num_predicted"] == 1 and replay["pairwise_recall"] == 1.0
    # Junk boxes (true id 0) count as one person each.
    assert replay["num_true_ids"] == len({scored_id(i.true_id, i.detection.detection_id) for i in items})
    junk = sum(i.true_id == 0 for i in items)
    assert junk and replay["num_true_ids"] == len({i.true_id for i in items} - {0}) + junk
    r, v = payload["retrieval"], payload["verification"]
    assert 0 <= r["rank1"] <= r["rank5"] <= r["rank10"] <= 1 and 0 <= r["mAP"] <= 1
    assert v["num_genuine"] > 0 and v["num_impostor"] > 0 and 0 <= v["eer"] <= 1
    for name in ("cmc.png", "roc.png", "scores.png"):
        assert Image.open(tmp_path / name).size[0] > 100
    assert json.loads((tmp_path / "eval.json").read_text())["model"] == "null"
    assert "Rank-1" in (tmp_path / "eval.md").read_text()
    sweep = payload["replay_sweep"]
    assert len(sweep) >= 3 and [r["threshold"] for r in sweep] == sorted(r["threshold"] for r in sweep)
    assert all(r["num_items"] == len(items) for r in sweep) and payload["best_replay"] in sweep
    assert "best F1" in (tmp_path / "eval.md").read_text()
    assert [k async for k in redis_client.scan_iter(match="reid-eval:*")] == []  # the replay cleans up


async def test_replay_at_the_strictest_threshold_splits_every_detection(bench: Path, tmp_path: Path, unique):
    # The null encoder gives unrelated crops unrelated vectors: at 1.0 the nearest-detection rule joins nothing
    # (the entity rule would still keep each tracklet together).
    payload = await _evaluate(bench, make_settings(unique, assignment="nearest"), tmp_path, threshold=1.0)
    replay = payload["replay"]
    assert replay["num_predicted"] == replay["num_items"] and replay["pairwise_precision"] == 1.0
    assert replay["pairwise_recall"] == 0.0 and replay["fragmentation"] > 1


async def _evaluate(bench: Path, settings, out: Path, threshold: float) -> dict:
    import asyncio

    # evaluate() runs its own event loop for the replay, as the CLI does: keep it off the test's loop.
    return await asyncio.to_thread(evaluate, bench, settings, NullEncoder(dim=64), out, threshold=threshold)
