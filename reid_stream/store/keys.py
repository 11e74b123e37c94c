"""Every Redis key name of a site, and the few conventions the keys share (the day a row belongs to)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from reid_stream.events import DEFAULT_SITE

PAIR_SEP = "\x1f"
KEPT_DAY = "kept"  # the pseudo-day of retained entities' rows (see corrections.py), in place of the date


@dataclass(frozen=True)
class Keys:
    """Every key name of one site in one place. Embedding keys carry the model id, so vector spaces never mix.

    Every key of a site carries the hash tag `{site}`: in a Redis Cluster a site's keys share one slot, so the
    scripts and the erasure's transaction, which touch an entity with its markers, indexes and outboxes at
    once, work unchanged, and sites spread over the cluster's primaries.
    """

    prefix: str  # the site's: "{REID_REDIS_PREFIX}:{{site}}"

    @classmethod
    def of(cls, prefix: str, site: str = DEFAULT_SITE) -> Keys:
        return cls(f"{prefix}:{{{site}}}")

    def version(self, model: str, etype: str) -> str:
        return f"{self.prefix}:ver:{model}:{etype}"

    def index(self, model: str, etype: str) -> str:
        return f"{self.prefix}:idx:{model}:{etype}"

    def vec_prefix(self, model: str, etype: str) -> str:
        # One hash of vectors per day (entity_embeddings:{date}), split by model and type.
        return f"{self.prefix}:entity_embeddings:{model}:{etype}:"

    def meta_prefix(self, model: str, etype: str) -> str:
        return f"{self.prefix}:entity_meta:{model}:{etype}:"

    def marker(self, detection_id: str) -> str:
        return f"{self.prefix}:det:{detection_id}"

    def entity(self, entity_id: str) -> str:
        return f"{self.prefix}:ent:{entity_id}"

    def cameras(self, entity_id: str) -> str:
        return f"{self.prefix}:ent:{entity_id}:cams"

    def appearances(self, entity_id: str) -> str:
        return f"{self.prefix}:ent:{entity_id}:apps"

    def order(self, entity_id: str) -> str:
        return f"{self.prefix}:ent:{entity_id}:order"

    def by_type(self, etype: str) -> str:
        return f"{self.prefix}:entities:{etype}"

    def camera_prefix(self, etype: str) -> str:
        return f"{self.prefix}:cam:{etype}:"

    def by_camera(self, etype: str, camera_id: str) -> str:
        return self.camera_prefix(etype) + camera_id

    def merged_ids(self, entity_id: str) -> str:
        """The ids merged into a live entity (chains flattened)."""
        return f"{self.prefix}:ent:{entity_id}:merged"

    def alias_prefix(self) -> str:
        return f"{self.prefix}:alias:"

    def alias(self, merged_id: str) -> str:
        """A merged id -> the entity it now is; what the views follow."""
        return self.alias_prefix() + merged_id

    def aliases(self, model: str, etype: str) -> str:
        """All aliases of one (model, type) in one hash: what load_index reads to name only live entities."""
        return f"{self.prefix}:aliases:{model}:{etype}"

    def outbox(self, etype: str) -> str:
        """Entity updates not yet published to Kafka, oldest first."""
        return f"{self.prefix}:outbox:{etype}"

    def apart(self, model: str, etype: str) -> str:
        """Cannot-link pairs an operator's split made: pair_member(a, b) -> until (epoch s)."""
        return f"{self.prefix}:apart:{model}:{etype}"

    def pinned(self, model: str, etype: str) -> str:
        """Tracklet keys an operator's merge confirmed -> until: never decided again for contradicting the
        entity's other tracklets."""
        return f"{self.prefix}:pinned:{model}:{etype}"

    def named(self, etype: str) -> str:
        """Entities of a type that have a name, a trust or a watch label -> {name, trust, watch}: what the assign
        stage reads to put them in match events, and to raise alerts, without reading every entity."""
        return f"{self.prefix}:named:{etype}"

    def enrolments(self, model: str, etype: str) -> str:
        """Images enrolled on the watch list: enrolment id -> {label, by, at, until} (see watch.py)."""
        return f"{self.prefix}:enrol:{model}:{etype}"

    def enrolment_vectors(self, model: str, etype: str) -> str:
        """Enrolment id -> its vector (float32 bytes); the image itself is never kept."""
        return f"{self.prefix}:enrolvec:{model}:{etype}"

    def alerts(self, etype: str) -> str:
        """Watch list alerts not yet published to Kafka, oldest first (written with their detection)."""
        return f"{self.prefix}:alerts:{etype}"

    def alert_last(self, etype: str) -> str:
        """(watch id, camera id), joined by PAIR_SEP -> detection time of its latest alert: the rate limit."""
        return f"{self.prefix}:alertlast:{etype}"

    def space(self, model: str, etype: str, version: int) -> str:
        """One learned similarity space of the site (see reid_stream.learn): its arrays, as bytes."""
        return f"{self.prefix}:space:{model}:{etype}:v{version}"

    def space_current(self, model: str, etype: str) -> str:
        """The version the writer and the views use (absent: 0, the encoder's own space)."""
        return f"{self.prefix}:space:{model}:{etype}:current"

    def space_log(self, model: str, etype: str) -> str:
        """Version -> its summary (JSON: when, validation, evidence, adopted or not): the history to roll back to."""
        return f"{self.prefix}:space:{model}:{etype}:log"

    def space_next(self, model: str, etype: str) -> str:
        return f"{self.prefix}:space:{model}:{etype}:next"

    def refs_prefix(self) -> str:
        return f"{self.prefix}:refs:"

    def refs(self, entity_id: str) -> str:
        """The detections of other entities whose stored event names this entity: erasure rewrites them."""
        return self.refs_prefix() + entity_id


def day_of(ts: datetime) -> str:
    """The UTC day a detection belongs to, which names its embedding keys."""
    return ts.astimezone(UTC).date().isoformat()
