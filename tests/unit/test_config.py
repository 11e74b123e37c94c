from pathlib import Path

import pytest

from reid_stream.config import ConfigError, Settings, describe


def test_defaults():
    s = Settings.from_env({})
    assert (s.similarity_threshold, s.embedding_ttl_seconds, s.max_embeddings) == (0.85, 86400, 1000)
    assert s.kafka_bootstrap == "127.0.0.1:9092" and s.redis_url == "redis://127.0.0.1:6379/0"
    assert (s.clip_model, s.clip_pretrained) == ("ViT-L-14", "openai")


def test_the_archive_is_off_unless_a_postgresql_url_is_given():
    assert (Settings.from_env({}).archive_url, Settings.from_env({}).archive_retention_days) == ("", 30)
    assert Settings.from_env({"REID_ARCHIVE_URL": " "}).archive_url == ""
    url = "postgresql://reid:secret@db.internal:5433/reid"
    assert Settings.from_env({"REID_ARCHIVE_URL": url}).archive_url == url


def test_values_are_parsed():
    s = Settings.from_env({"REID_IMAGE_ROOTS": "/a,/b", "REID_BATCH_SIZE": "8", "REID_SIMILARITY_THRESHOLD": "0.9"})
    assert s.image_roots == (Path("/a"), Path("/b")) and s.batch_size == 8 and s.similarity_threshold == 0.9


@pytest.mark.parametrize(("var", "value"), [
    ("REID_SIMILARITY_THRESHOLD", "high"),
    ("REID_SIMILARITY_THRESHOLD", "1.5"),
    ("REID_SIMILARITY_THRESHOLD", "nan"),
    ("REID_EMBEDDING_TTL_SECONDS", "0"),
    ("REID_MAX_EMBEDDINGS", "-3"),
    ("REID_KAFKA_BOOTSTRAP", "localhost"),
    ("REID_REDIS_URL", "http://x"),
    ("REID_WEB_PORT", "70000"),
    ("REID_DEVICE", "tpu"),
    ("REID_BATCH_SIZE", "0"),
    ("REID_BATCH_MAX_LATENCY_MS", "soon"),
    ("REID_IMAGE_ROOTS", "relative/dir"),
    ("REID_ENCODER", "magic"),
    ("REID_ARCHIVE_URL", "mysql://db/reid"),
    ("REID_ARCHIVE_URL", "postgresql://127.0.0.1:5432"),
    ("REID_ARCHIVE_URL", "postgresql://127.0.0.1:port/reid"),
    ("REID_ARCHIVE_RETENTION_DAYS", "0"),
])
def test_an_invalid_value_names_its_variable(var, value):
    with pytest.raises(ConfigError) as err:
        Settings.from_env({var: value})
    assert var in str(err.value)


def test_model_id_separates_weights():
    ids = {
        Settings.from_env({"REID_CLIP_MODEL": "ViT-B-32"}).model_id,
        Settings.from_env({"REID_CLIP_MODEL": "ViT-B-32", "REID_CLIP_PRETRAINED": "none"}).model_id,
        Settings.from_env({"REID_CLIP_MODEL": "ViT-B-32", "REID_CLIP_PRETRAINED": "/w/ft.pt"}).model_id,
        Settings.from_env({"REID_CLIP_MODEL": "ViT-L-14"}).model_id,
    }
    assert len(ids) == 4


def test_every_setting_is_documented():
    rows = describe()
    assert all(env.startswith("REID_") and doc for env, _, doc in rows)
    assert len({env for env, _, _ in rows}) == len(rows)


def test_the_configuration_page_documents_every_setting_with_its_default():
    readme = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for env, default, _ in describe():
        assert f"| `{env}` | `{default}` |" in readme, f"docs/configuration.md lacks {env}={default}"


def test_thumbnail_urls_default_to_the_workers_route_and_the_template_overrides():
    s = Settings.from_env({})
    assert s.thumbnail_max_side == 256
    assert s.thumbnail_url("cam 1", "d/1?x") == "/api/detections/d%2F1%3Fx/image"  # one path segment, escaped
    t = Settings.from_env({"REID_THUMBNAIL_URL_TEMPLATE": "https://nvr/{camera_id}/{detection_id}.jpg",
                           "REID_THUMBNAIL_MAX_SIDE": "128"})
    assert t.thumbnail_url("c1", "d1") == "https://nvr/c1/d1.jpg" and t.thumbnail_max_side == 128
    assert s.thumbnail_url("c", "d", "home-b") == "/api/detections/d/image?site_id=home-b"
    site = Settings.from_env({"REID_THUMBNAIL_URL_TEMPLATE": "https://nvr/{site_id}/{camera_id}/{detection_id}.jpg"})
    assert site.thumbnail_url("c1", "d1", "home-b") == "https://nvr/home-b/c1/d1.jpg"
    with pytest.raises(ConfigError, match="REID_REDIS_URL"):
        Settings.from_env({"REID_REDIS_URL": "redis+cluster://127.0.0.1:7101/3"})  # a cluster has database 0 only
    assert Settings.from_env({"REID_REDIS_URL": "redis+cluster://127.0.0.1:7101"}).redis_url.endswith(":7101")
    with pytest.raises(ConfigError, match="REID_THUMBNAIL_MAX_SIDE"):
        Settings.from_env({"REID_THUMBNAIL_MAX_SIDE": "0"})


def test_the_worker_command_starts_before_numpy_is_imported():
    """cmd_worker sets OPENBLAS_NUM_THREADS=1 before numpy loads; an earlier import (say, by building the
    CLI's parsers) would leave BLAS threads spinning beside the event loop (measured: +20 % worker CPU)."""
    import subprocess
    import sys

    code = ("import sys, reid_stream.cli as c; c.cmd_worker = lambda a: print('numpy' in sys.modules) or 0; "
            "c.main(['worker'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_a_malformed_camera_topology_stops_the_worker_at_start_naming_the_file(tmp_path):
    import os
    import subprocess
    import sys

    bad = tmp_path / "site.json"
    bad.write_text('{"adjacency": [{"a": "porch", "b": "garage"}]}')
    env = {k: v for k, v in os.environ.items() if not k.startswith("REID_")}
    # Nothing listens on this port: had the worker gone on to Kafka, it would fail differently.
    env.update(REID_CAMERA_TOPOLOGY=str(bad), REID_KAFKA_BOOTSTRAP="127.0.0.1:9")
    done = subprocess.run([sys.executable, "-m", "reid_stream", "worker"], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2], env=env)
    assert done.returncode == 2, done.stderr
    assert str(bad) in done.stderr and "min_transit_s" in done.stderr


@pytest.mark.parametrize(("entry", "host", "port"), [
    ("nvr.local", "nvr.local", None), ("NVR.local:8080", "nvr.local", 8080), ("nvr:*", "nvr", 0),
    ("[::1]", "::1", None), ("[FE80::1]:9000", "fe80::1", 9000), ("::1", "::1", None)])
def test_url_allow_list_entries_name_a_host_and_maybe_a_port(entry: str, host: str, port: int | None):
    from reid_stream.config import parse_host_rule

    rule = parse_host_rule(entry)
    assert (rule.host, rule.port) == (host, port)


@pytest.mark.parametrize("entry", ["nvr:0", "nvr:65536", "nvr:x", "nvr:８０", "[::1", "[::1]x", "a/b", ":80", "u@h"])
def test_a_malformed_url_allow_list_entry_is_a_configuration_error(entry: str):
    with pytest.raises(ConfigError, match="REID_URL_ALLOWED_HOSTS"):
        Settings.from_env({"REID_URL_ALLOWED_HOSTS": f"ok.example,{entry}"})
