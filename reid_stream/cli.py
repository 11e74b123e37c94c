"""The entry points: worker, demo producer, and admin (topics, config, purge, adapt)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from pathlib import Path

from reid_stream.config import ConfigError, Settings, describe

GC_YOUNG_THRESHOLD = 7000  # allocations between young-generation collections in the worker (Python's default: 700)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        print(f"reid-stream: {exc}", file=sys.stderr)
        sys.exit(2)


def cmd_worker(_: argparse.Namespace) -> int:
    # numpy's BLAS serves small per-batch products here; its thread pool only fights the encoder for cores.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    settings = _settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from reid_stream.api.auth import Authenticator
    from reid_stream.encoders import EncoderLoadError, load_encoder
    from reid_stream.identity.topology import Topology, TopologyError

    try:
        Authenticator.from_settings(settings)  # token problems are configuration errors: say so before anything
        if settings.camera_topology:
            Topology.load(settings.camera_topology)
    except (ConfigError, TopologyError) as exc:
        print(f"reid-stream: {exc}", file=sys.stderr)
        return 2
    # Load the model before touching Kafka: a worker without weights must exit at once, saying why.
    try:
        encoder = load_encoder(settings)
    except EncoderLoadError as exc:
        print(f"reid-stream: cannot start: {exc}", file=sys.stderr)
        return 3
    import faust

    from reid_stream.stream.topics import ensure_topics
    from reid_stream.worker.app import create_app
    from reid_stream.worker.runtime import build_runtime

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if settings.create_topics:
        try:
            loop.run_until_complete(asyncio.wait_for(ensure_topics(settings), timeout=60))
        except Exception as exc:
            print(f"reid-stream: cannot create topics on {settings.kafka_bootstrap}: {exc!r}", file=sys.stderr)
            return 4
    app, _ = create_app(settings, lambda: build_runtime(settings, encoder))
    worker = faust.Worker(app, loglevel=settings.log_level, loop=loop, override_logging=False)
    # What startup built (modules, the model, the app) lives as long as the process: out of the cyclic
    # collector's sight, its full collections no longer walk it again and again (about half of their CPU).
    gc.collect()
    gc.freeze()
    # A batch allocates tens of thousands of short-lived containers (records, events, Kafka's structures): at the
    # default 700 a young collection ran every few hundred of them and re-walked the survivors each time. Memory
    # is freed by reference counts as before; only cycles wait for at most this many new objects.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    worker.execute_from_commandline()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from reid_stream.demo import run_demo

    if not (args.site / "stream.jsonl").is_file():
        print(f"reid-stream: {args.site} holds no stream.jsonl; write one with `reid-stream synth {args.site}`",
              file=sys.stderr)
        return 2
    return asyncio.run(run_demo(_settings(), args.site, args.seconds, adapt=not args.no_adapt))


def cmd_topics(args: argparse.Namespace) -> int:
    from reid_stream.stream.topics import ensure_topics, write_schemas

    if args.action == "schemas":
        for path in write_schemas():
            print(path)
        return 0
    created = asyncio.run(ensure_topics(_settings()))
    print("created: " + (", ".join(created) if created else "nothing (all exist)"))
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    import json

    from reid_stream.store.reid_store import ReidStore

    async def purge() -> dict | None:
        settings = _settings()
        store = ReidStore.from_settings(settings)
        try:
            purged = await store.for_site(args.site).purge_entity(args.entity)
        finally:
            await store.close()
        if not settings.archive_url:
            return purged
        from reid_stream.memory.archive import ARCHIVE_ERRORS, Archive

        archive = Archive(settings)  # at once: the queued `erased` update waits for a worker's next batch
        try:
            return await archive.erase_after_redis(args.site, args.entity, purged)
        except ARCHIVE_ERRORS as exc:
            raise SystemExit(f"reid-stream: the archive is unavailable ({exc!r}); nothing erased") from None
        finally:
            await archive.close()

    result = asyncio.run(purge())
    if result is None:
        print(f"reid-stream: entity {args.entity!r} not found (already erased or expired)", file=sys.stderr)
        return 1
    print(json.dumps({"purged": result}))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Retrieval and verification metrics of the configured encoder (REID_* settings) on a dataset, the
    threshold that reaches a target precision, and a replay of its stream through the assign stage."""
    from reid_stream.encoders import EncoderLoadError
    from reid_stream.eval.run import run

    try:
        return run(args, _settings())
    except EncoderLoadError as exc:
        print(f"reid-stream: cannot evaluate: {exc}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as exc:
        print(f"reid-stream: {exc}", file=sys.stderr)
        return 2


def cmd_config(_: argparse.Namespace) -> int:
    print("| variable | default | meaning |\n|---|---|---|")
    for env, default, doc in describe():
        print(f"| `{env}` | `{default}` | {doc} |")
    try:
        Settings.from_env()
    except ConfigError as exc:
        print(f"\ncurrent environment: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reid-stream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run one worker in the foreground").set_defaults(func=cmd_worker)
    demo = sub.add_parser("demo", help="stream a synthetic site's detections and print what comes back")
    demo.add_argument("--site", type=Path, required=True,
                      help="a folder written by `synth` (its frames must lie under REID_IMAGE_ROOTS)")
    demo.add_argument("--seconds", type=float, default=60.0, help="how long to wait for match events")
    demo.add_argument("--no-adapt", action="store_true",
                      help="stream the first visit only: no site adaptation, no second visit")
    demo.set_defaults(func=cmd_demo)
    topics = sub.add_parser("topics", help="create the topics, or regenerate topics/*.schema.json")
    topics.add_argument("action", choices=["create", "schemas"])
    topics.set_defaults(func=cmd_topics)
    sub.add_parser("config", help="print the configuration table").set_defaults(func=cmd_config)
    # eval and synth bring their own parsers (`eval --help`), imported only when used: importing numpy here,
    # before the worker sets OPENBLAS_NUM_THREADS, would leave BLAS threads spinning beside the event loop.
    sub.add_parser("eval", help="identity metrics of the configured encoder on a dataset (`eval --help`)")
    sub.add_parser("synth", help="write the synthetic multi-camera benchmark (`synth --help` for its options)")
    sub.add_parser("adapt", help="learn a site's similarity space from its own stream now, list or roll back "
                                 "its versions (`adapt --help`)")
    purge = sub.add_parser("purge", help="erase an entity: appearances, embeddings, markers (and its archived rows)")
    purge.add_argument("--entity", required=True, help="the entity id")
    purge.add_argument("--site", default="default", help="the entity's site (default: default)")
    purge.set_defaults(func=cmd_purge)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["synth"]:  # its own argument parser, shared with `python -m reid_stream.eval.synth`
        from reid_stream.eval.synth import main as synth_main

        return int(synth_main(argv[1:]))
    if argv[:1] == ["adapt"]:
        from reid_stream.learn.command import add_arguments as adapt_arguments
        from reid_stream.learn.command import run as run_adapt

        ad = argparse.ArgumentParser(prog="reid-stream adapt",
                                     description="Learn a site's similarity space from its own stream (site "
                                                 "adaptation), list its versions, or roll back to one.")
        adapt_arguments(ad)
        return run_adapt(ad.parse_args(argv[1:]), _settings())
    if argv[:1] == ["eval"]:
        from reid_stream.eval.run import add_arguments

        ev = argparse.ArgumentParser(prog="reid-stream eval", description=cmd_eval.__doc__)
        add_arguments(ev)
        return cmd_eval(ev.parse_args(argv[1:]))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
