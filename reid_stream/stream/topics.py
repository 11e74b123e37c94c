"""Creates the topics described in topics/*.json (partitions and settings), and writes their JSON Schemas."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from reid_stream.config import Settings
from reid_stream.events import json_schemas

log = logging.getLogger(__name__)
TOPICS_DIR = Path(__file__).resolve().parents[2] / "topics"


def topic_specs(settings: Settings) -> list[dict[str, Any]]:
    """Topic settings from topics/*.json, with names taken from the configuration."""
    names = {
        "detections": settings.topic_detections,
        "entity-matches": settings.topic_matches,
        "detections-dlq": settings.topic_dlq,
        "reid-embedded": settings.topic_embedded,
        "entity-updates": settings.topic_updates,
        "entity-alerts": settings.topic_alerts,
    }
    specs = []
    for path in sorted(TOPICS_DIR.glob("*.json")):
        if path.name.endswith(".schema.json"):
            continue
        spec = json.loads(path.read_text())
        spec["name"] = names[spec["role"]]
        specs.append(spec)
    if {s["role"] for s in specs} != set(names):
        raise RuntimeError(f"{TOPICS_DIR} must describe exactly the topics {sorted(names)}")
    return specs


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics; existing ones are left as they are. Returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap.split(","),
                                client_id=f"{settings.app_id}-admin")
    await admin.start()
    created = []
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(spec["name"], spec["partitions"], spec["replication_factor"],
                            topic_configs=spec.get("config", {}))
                   for spec in topic_specs(settings) if spec["name"] not in existing]
        if missing:
            response = await admin.create_topics(missing)
            # aiokafka reports per-topic errors in the response instead of raising.
            for name, code, *rest in response.topic_errors:
                if code == 0:
                    created.append(name)
                elif code != TopicAlreadyExistsError.errno:
                    raise RuntimeError(f"cannot create topic {name}: error {code} {rest[0] if rest else ''}")
    finally:
        await admin.close()
    if created:
        log.info("created topics %s", ", ".join(created))
    return created


def write_schemas(directory: Path = TOPICS_DIR) -> list[Path]:
    written = []
    for role, schema in json_schemas().items():
        path = directory / f"{role}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
