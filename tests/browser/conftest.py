"""Headless Chromium from Debian's packages, driven by Selenium through Debian's chromedriver, against real
workers (real Kafka, real Redis). Selenium Manager is never asked for anything: the driver's path is given."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from reid_stream.infra.services import ensure_browser
from tests.browser.site import BOOTSTRAP, message, site
from tests.conftest import _TAGS
from tests.e2e.harness import TEST_TOKEN, Worker, produce, worker_env

T = TypeVar("T")
DOCS = Path(__file__).resolve().parents[2] / "docs"


def wait_for(check: Callable[[], T], what: str, timeout: float = 20.0) -> T:
    """Poll until check() gives something true; its last exception, if any, explains a timeout."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the page is still changing under Selenium
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f": {last!r}" if last else ""))


def api(base: str, path: str, token: str | None = TEST_TOKEN, method: str = "GET") -> tuple[int, Any, dict]:
    req = urllib.request.Request(base + path, method=method,
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
            status, headers = resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        body, status, headers = err.read(), err.code, dict(err.headers)
    ctype = headers.get("Content-Type", "")
    return status, (json.loads(body) if "json" in ctype else body.decode(errors="replace")), headers


def start_worker(tmp: Path, **extra: str) -> tuple[Worker, str, Path]:
    tag = uuid.uuid4().hex[:10]
    _TAGS.add(tag)  # its topics are deleted at the session's end, as the `unique` fixture's are
    root = tmp / "images"
    root.mkdir(parents=True)
    # The random-weight test model scores distinct patterns close to each other, so the default ambiguity margin
    # (0.02, calibrated on real weights) could call the same crop on a second camera ambiguous whenever another
    # entity was stored first, and make it a new entity: the site's joins depended on the partitions' order.
    env = worker_env(tag, REID_IMAGE_ROOTS=str(root), REID_MATCH_MARGIN="0.0002", **extra)
    worker = Worker(env, tmp / "worker.log").start()
    asyncio.run(worker.wait_ready())
    return worker, tag, root


def send(worker: Worker, *detections: dict[str, Any]) -> None:
    asyncio.run(produce(BOOTSTRAP, worker.env["REID_TOPIC_DETECTIONS"], [message(d) for d in detections]))


def stop_worker(worker: Worker) -> None:
    code = worker.stop()
    assert code == 0, f"worker did not stop cleanly ({code}):\n{worker.log_tail()}"


@pytest.fixture(scope="module")
def demo(infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A worker that has processed the test site: {worker, tag, root, dets, entities}."""
    worker, tag, root = start_worker(tmp_path_factory.mktemp("browser-site"))
    try:
        dets = site(root, tag)
        send(worker, *dets.values())
        listing = wait_for(lambda: (b := api(worker.base, "/api/entities")[1]) and sum(
            e["appearance_count"] for e in b["entities"]) == len(dets) and b, "the site's detections stored", 120)
        yield {"worker": worker, "tag": tag, "root": root, "dets": dets, "entities": listing["entities"]}
    finally:
        stop_worker(worker)


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager, should it ever be asked: no look-up, no download
    return ensure_browser()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


FAILED = pytest.StashKey[bool]()
PAGE_STATE = """return {url: location.href,
  views: [...document.querySelectorAll('main > section')].filter(s => !s.hidden)
  .map(s => s.id), banner: document.getElementById('banner').textContent, texts: [...document.querySelectorAll(
  '.status, .error, #notice')].map(e => e.id + ': ' + e.textContent).filter(t => !t.endsWith(': '))}"""


def _explain(driver: WebDriver, item: pytest.Item, tmp: Path) -> None:
    """After a failure: what the page showed, its console, and a screenshot, in the test's output."""
    try:
        state = driver.execute_script(PAGE_STATE)
        console = [f"{e['level']} {e['message']}" for e in driver.get_log("browser")]
        driver.save_screenshot(str(tmp / "failure.png"))
    except Exception as exc:  # the browser itself may be what failed
        print(f"page state unavailable: {exc!r}")
        return
    print(f"\n{item.nodeid}: page {json.dumps(state)}\nconsole:\n  " + "\n  ".join(console[-30:])
          + f"\nscreenshot: {tmp / 'failure.png'}")


@pytest.fixture
def browser(chromium: tuple[str, str], request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WebDriver]:
    binary, driver_path = chromium
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--lang=en-GB", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    driver.set_script_timeout(20)
    try:
        yield driver
        if request.node.stash.get(FAILED, False):
            _explain(driver, request.node, tmp_path)
    finally:
        driver.quit()
