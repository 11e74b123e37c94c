"""`python -m reid_stream adapt`: learn a site's similarity space from its own stream now, list its versions,
or roll back to one."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from tqdm import tqdm

from reid_stream.config import Settings
from reid_stream.events import ENTITY_TYPES
from reid_stream.learn.adapt import Outcome, adapt, rollback
from reid_stream.store.reid_store import ReidStore
from reid_stream.store.spaces import STORE_ERRORS, SpaceStore


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site", default="default", help="the site to learn (default: default)")
    parser.add_argument("--type", choices=list(ENTITY_TYPES), default=None, help="one entity type (default: all)")
    parser.add_argument("--model", default=None, help="one encoder's model id (default: every model stored)")
    parser.add_argument("--force", action="store_true", help="adopt the new space even if it is not better")
    parser.add_argument("--rollback", type=int, default=None, metavar="VERSION",
                        help="make VERSION current again (0: the encoder's own space); needs --type and --model "
                             "where the site holds several")
    parser.add_argument("--list", action="store_true", help="list the versions and which one is current")
    parser.add_argument("--if-new", type=int, default=0, metavar="N",
                        help="fit only if at least N detections were stored since the last fit")
    parser.add_argument("--json", action="store_true", help="print one JSON line per (model, type)")


def _bar(quiet: bool) -> tuple[Any, Any]:
    if quiet:
        return None, None
    bar = tqdm(total=100, unit="%", bar_format="{desc:<40} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")

    def tell(what: str, done: float) -> None:
        bar.set_description_str(what[:40])
        bar.n = round(100 * done)
        bar.refresh()

    return bar, tell


def _report(o: Outcome) -> str:
    head = f"{o.site_id} {o.model}/{o.entity_type}: "
    if o.version is None or not o.after:
        return head + (o.reason or "nothing to do")
    b, a = o.before.get("cross_camera_recall"), o.after.get("cross_camera_recall")
    tb, ta = o.before.get("tar_at_far"), o.after.get("tar_at_far")
    lines = [head + ("ADOPTED" if o.adopted else "kept the current space") + f" (v{o.current} -> fitted v{o.version})",
             f"  evidence: {json.dumps(o.evidence)}",
             f"  held out: cross-camera recall {b} -> {a}; TAR at 1% of known-different pairs {tb} -> {ta}"
             + (f"; operator's labels: {o.before.get('operator_tar')} -> {o.after.get('operator_tar')}"
                if 'operator_tar' in o.after else ""),
             f"  threshold from the site's evidence: {o.threshold}", f"  why: {o.reason}", f"  took {o.seconds} s"]
    return "\n".join(lines)


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    store = ReidStore.from_settings(settings).for_site(args.site)
    spaces = SpaceStore(store)
    try:
        types = [args.type] if args.type else list(ENTITY_TYPES)
        shards = [(m, t) for t in types for m in ([args.model] if args.model else await spaces.models(t))]
        if not shards:
            print(f"reid-stream: site {args.site!r} has no stored detections", file=sys.stderr)
            return 1
        if args.rollback is not None:
            if len(shards) != 1:
                print("reid-stream: --rollback needs one (model, type): give --type and --model", file=sys.stderr)
                return 2
            await rollback(store, *shards[0], args.rollback)
            print(f"{args.site} {shards[0][0]}/{shards[0][1]}: v{args.rollback} is current")
            return 0
        for model, etype in shards:
            if args.list:
                current, _ = await spaces.current(model, etype)
                history = await spaces.history(model, etype)
                print(json.dumps({"site_id": args.site, "model": model, "entity_type": etype, "current": current,
                                  "versions": history}) if args.json else
                      f"{args.site} {model}/{etype}: current v{current}\n" + "\n".join(
                          f"  v{v}: {'adopted' if h.get('adopted') else 'not adopted'}, "
                          f"held-out {(h.get('validation') or {}).get('score')}, threshold {h.get('threshold')}"
                          f" ({h.get('reason', '')})" for v, h in sorted(history.items())))
                continue
            if args.if_new and not await _enough_new(store, model, etype, args.if_new):
                continue
            bar, tell = _bar(args.json)
            outcome = await adapt(store, model, etype, progress=tell, force=args.force)
            if bar is not None:
                bar.close()
            print(json.dumps(outcome.to_dict()) if args.json else _report(outcome))
        return 0
    finally:
        await store.close()


async def _enough_new(store: ReidStore, model: str, etype: str, n: int) -> bool:
    """At least n detections stored since the last fit (by the writer's version counter; never fitted: yes)."""
    history = await SpaceStore(store).history(model, etype)
    fitted = [h for h in history.values() if "stored_at" in h]
    if not fitted:
        return True
    last = max(fitted, key=lambda h: h.get("at", 0))
    return await store.version(model, etype) - int(last["stored_at"]) >= n


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return asyncio.run(_run(args, settings))
    except LookupError as exc:  # a rollback to a version that is not stored
        print(f"reid-stream: {exc.args[0] if exc.args else exc}; `adapt --list` shows the versions", file=sys.stderr)
        return 2
    except STORE_ERRORS as exc:
        print(f"reid-stream: Redis is unavailable ({exc}); nothing learned or changed", file=sys.stderr)
        return 3
