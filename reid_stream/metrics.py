"""The worker's Prometheus metrics (prometheus-client), one registry per worker process."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 1, 2, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.processed = Counter("reid_processed", "Detections processed (a match event published).", registry=r)
        self.matched = Counter("reid_matched", "Detections that joined an existing entity.", registry=r)
        self.new_entities = Counter("reid_new_entities", "Detections that started a new entity.", registry=r)
        self.merges = Counter("reid_entity_merges", "Entities merged into another (published on entity-updates).",
                              registry=r)
        self.ambiguous = Counter("reid_ambiguous", "Detections whose best two candidate entities were within "
                                 "REID_MATCH_MARGIN.", registry=r)
        self.refused = Counter("reid_refused_candidates", "Candidate entities refused by the space-time gate or "
                               "for carrying another licence plate.",
                               registry=r)
        self.dead_lettered = Counter("reid_dead_lettered", "Events sent to the dead-letter topic.",
                                     ["error_code"], registry=r)
        self.batch_size = Histogram("reid_batch_size", "Crops per encoder batch.", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.encode_seconds = Histogram("reid_encode_seconds", "Encoder time per batch.",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.latency = Histogram("reid_end_to_end_latency_seconds",
                                 "From the detection's Kafka timestamp to its match event's acknowledgement.",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.lag = Gauge("reid_consumer_lag", "Messages behind the log end, per assigned partition.",
                         ["topic", "partition"], registry=r)
        self.stage_seconds = Counter("reid_stage_seconds", "Time spent per pipeline stage (parse, decode_crop, "
                                     "plate_ocr, encode, match, store, publish, archive); parse, decode_crop and "
                                     "plate_ocr add up across the decode processes.",
                                     ["stage"], registry=r)
        self.alerts = Counter("reid_watch_alerts", "Watch list matches: `raised` (published on entity-alerts) or "
                              "`limited` (held back by REID_ALERT_COOLDOWN_SECONDS).", ["outcome"], registry=r)
        self.retries = Counter("reid_infra_retries", "Retried infrastructure steps (Redis, Kafka or the archive's "
                               "PostgreSQL down).", ["step"], registry=r)
        self.archive_up = Gauge("reid_archive_up", "1 while the archive (PostgreSQL) takes the archiver's batches, "
                                "0 while a batch waits for it (REID_ARCHIVE_URL).", registry=r)
        self.archived = Counter("reid_archived", "Appearances stored new in the archive (redeliveries not counted).",
                                registry=r)

        self.space_version = Gauge("reid_space_version", "The similarity space the writer uses, per site and type "
                                   "(site adaptation; 0: the encoder's own).", ["site", "entity_type"], registry=r)
        self.space_validation = Gauge("reid_space_validation", "The held-out score the current space was adopted "
                                      "on (cross-camera recall at 1 % of known-different pairs, or TAR there).",
                                      ["site", "entity_type"], registry=r)
        self.space_evidence = Gauge("reid_space_evidence", "What the current space was learned from, by kind "
                                    "(detections, tracklets, apart, successions, operator_same).",
                                    ["site", "entity_type", "kind"], registry=r)
        self.space_adoptions = Counter("reid_space_adoptions", "New space versions this writer took up (an "
                                       "adoption or a rollback at its site).", ["site", "entity_type"], registry=r)

    def stage(self, name: str, seconds: float) -> None:
        self.stage_seconds.labels(name).inc(seconds)

    async def update_lag(self, consumers: Iterable[Any]) -> None:
        """Refresh the lag gauge from the stages' consumers (see kafka_io.BatchConsumer.lag)."""
        self.lag.clear()
        for consumer in consumers:
            for tp, behind in (await consumer.lag()).items():
                self.lag.labels(tp.topic, str(tp.partition)).set(behind)

    def render(self) -> bytes:
        return generate_latest(self.registry)
