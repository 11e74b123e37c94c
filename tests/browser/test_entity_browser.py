"""The entity browser as an operator uses it, in headless Chromium against a real worker, Kafka and Redis."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from tests.browser.conftest import DOCS, api, send, start_worker, stop_worker, wait_for
from tests.browser.site import detection
from tests.conftest import encode_png, pattern_image
from tests.e2e.harness import TEST_TOKEN, free_port, start_redis, stop_redis

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
# The worker's operator routes (PATCH: name, trust, watch; merge, split; erase) each have their control.
ACTIONS = ("act-name", "act-trust", "act-merge", "act-split", "act-watch", "act-erase")
NO_TEXT_TOWER = "This worker's encoder cannot search by text"


def css(d: WebDriver, selector: str) -> list[WebElement]:
    return d.find_elements(By.CSS_SELECTOR, selector)


def visible(d: WebDriver, element_id: str) -> bool:
    return d.find_element(By.ID, element_id).is_displayed()


def sign_in(d: WebDriver, base: str, token: str = TEST_TOKEN) -> None:
    d.get(base + "/")
    field = wait_for(lambda: (f := d.find_element(By.ID, "token")).is_displayed() and f, "the sign-in form")
    field.send_keys(token)
    field.send_keys(Keys.ENTER)  # the keyboard submits the form


def card_ids(d: WebDriver, list_id: str = "entities") -> list[str]:
    return [li.get_attribute("data-id") for li in css(d, f"#{list_id} li.card")]


def pictures_loaded(d: WebDriver, selector: str) -> list[int]:
    """naturalWidth of each picture: > 0 once the JPEG the worker cut has really been decoded by the browser."""
    return d.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(i => i.complete && i.src ? i.naturalWidth : 0)",
        selector)


def shot(d: WebDriver, name: str) -> None:
    DOCS.mkdir(exist_ok=True)
    d.execute_script("document.activeElement && document.activeElement.blur()")
    path = DOCS / name
    size = d.get_window_size()
    # The whole page, up to a screen and a half, rather than the part that fits the window.
    height = d.execute_script("return document.documentElement.scrollHeight")
    d.set_window_size(size["width"], min(max(size["height"], height + 140), int(size["height"] * 1.5)))
    time.sleep(0.3)
    try:
        assert d.save_screenshot(str(path)) and path.stat().st_size > 10_000
    finally:
        d.set_window_size(size["width"], size["height"])


def test_page_is_static_with_a_csp_and_no_inline_code(demo: dict[str, Any]):
    base = demo["worker"].base
    status, html, headers = api(base, "/", token=None)  # the page holds no data: no token needed for it
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
    assert "img-src 'self' blob:" in csp and "frame-ancestors 'none'" in csp
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "no inline script"
    assert " style=" not in html and "<style" not in html, "no inline style"
    status, js, headers = api(base, "/ui/app.js", token=None)
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert "Content-Security-Policy" in headers
    assert "Bearer" not in html and TEST_TOKEN not in js
    assert api(base, "/ui/..%2Fui.py", token=None)[0] == 404 and api(base, "/ui/nope.js", token=None)[0] == 404
    # The API is as closed as before: the page changes nothing about who may read entities.
    assert api(base, "/api/entities", token=None)[0] == 401


def test_operator_signs_in_browses_filters_opens_searches_and_erases(browser: WebDriver, demo: dict[str, Any]):
    d, worker, dets, tag = browser, demo["worker"], demo["dets"], demo["tag"]
    ids = {k: v["detection_id"] for k, v in dets.items()}
    sign_in(d, worker.base)

    # The list: newest first (by last seen), every entity with its picture, which really loads.
    expected = [ids["car"], ids["alice1"], ids["bob"], ids["dora"]]
    wait_for(lambda: card_ids(d) == expected, f"the cards {expected}", 60)
    wait_for(lambda: all(w > 0 for w in pictures_loaded(d, "#entities li.card:not([data-id^=dora]) img")),
             "the thumbnails to load")
    alice = css(d, f"li.card[data-id='{ids['alice1']}']")[0]
    assert alice.find_element(By.CSS_SELECTOR, ".cameras").text == "cam-1, cam-2"
    assert alice.find_element(By.CSS_SELECTOR, ".count").text == "2"
    assert alice.find_element(By.CSS_SELECTOR, ".type").text == "person"
    assert len(alice.find_elements(By.TAG_NAME, "time")) == 2  # first and last seen
    # Sent inline, so no image was kept: the page says so instead of showing a broken picture.
    dora_img = css(d, f"li.card[data-id='{ids['dora']}'] img")[0]
    wait_for(lambda: "image_not_kept" in dora_img.get_attribute("alt"), "dora's missing-picture text")
    assert "1–4 of 4" in d.find_element(By.ID, "page-info").text
    assert not visible(d, "banner")
    # Which similarity space decides who is who at this site (nothing learned yet: the encoder's own).
    wait_for(lambda: "person: the encoder's own" in d.find_element(By.ID, "space-info").text, "the site's space")

    # The token lives in this tab's sessionStorage only: not in the URL, a cookie or localStorage.
    assert d.execute_script("return sessionStorage.getItem('reid-stream.token')") == TEST_TOKEN
    assert d.execute_script("return localStorage.length") == 0 and d.get_cookies() == []
    assert TEST_TOKEN not in d.current_url
    blobs = d.execute_script("return [...document.querySelectorAll('#entities img[src]')].map(i => i.src)")
    assert blobs and all(s.startswith("blob:") for s in blobs)

    # Filters (type, camera) and paging, kept in the URL's hash.
    Select(d.find_element(By.ID, "f-type")).select_by_value("vehicle")
    d.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait_for(lambda: card_ids(d) == [ids["car"]], "only the vehicle")
    assert "entity_type=vehicle" in d.current_url
    d.find_element(By.ID, "f-clear").click()
    wait_for(lambda: card_ids(d) == expected, "all four again")
    d.find_element(By.ID, "f-camera").send_keys("cam-2", Keys.ENTER)
    wait_for(lambda: card_ids(d) == [ids["alice1"], ids["dora"]], "the entities seen on cam-2")
    d.get(worker.base + "/#/?limit=2")
    wait_for(lambda: card_ids(d) == expected[:2], "the first page of two")
    assert not d.find_element(By.ID, "next").get_attribute("disabled")
    assert d.find_element(By.ID, "prev").get_attribute("disabled")
    d.find_element(By.ID, "next").click()
    wait_for(lambda: card_ids(d) == expected[2:], "the second page")
    assert "3–4 of 4" in d.find_element(By.ID, "page-info").text
    # "Seen since": alice was last seen 20 s ago, bob 30 s ago.
    since = (datetime.fromisoformat(dets["alice2"]["timestamp"]) - timedelta(seconds=1)).isoformat()
    d.get(f"{worker.base}/#/?since={quote(since)}")
    wait_for(lambda: card_ids(d) == expected[:2], "the entities seen since just before alice's last appearance")
    assert d.find_element(By.ID, "f-since").get_attribute("value")  # shown in the form, in local time

    # Live refresh: a new detection shows up at the top without reloading the page.
    d.get(worker.base + "/#/")
    wait_for(lambda: card_ids(d) == expected, "the full list")
    d.execute_script("window.__same_page = true")
    eve = detection(demo["root"], f"eve-{tag}", "cam-2", pattern_image(505), (40, 40))
    send(worker, eve)
    wait_for(lambda: card_ids(d)[:1] == [eve["detection_id"]], "eve's card to appear by itself", 60)
    assert d.execute_script("return window.__same_page") is True

    # Keyboard: tab to an entity's title link and press Enter.
    link = css(d, f"li.card[data-id='{ids['alice1']}'] a.card-link")[0]
    for _ in range(40):
        if d.switch_to.active_element == link:
            break
        d.switch_to.active_element.send_keys(Keys.TAB)
    assert d.switch_to.active_element == link, "the entity link is reachable with Tab"
    time.sleep(3.5)  # longer than the refresh period: a live refresh must leave the focus where it was
    assert d.switch_to.active_element == link, "live refresh took the keyboard focus away"
    link.send_keys(Keys.ENTER)

    # The entity page: appearances on two cameras, with pictures, camera names and similarity scores.
    wait_for(lambda: len(css(d, "#timeline li.appearance")) == 2, "alice's two appearances")
    assert ids["alice1"] in d.find_element(By.ID, "entity-title").text
    items = css(d, "#timeline li.appearance")
    assert [i.get_attribute("data-detection") for i in items] == [ids["alice1"], ids["alice2"]]  # oldest first
    assert [i.find_element(By.CSS_SELECTOR, ".camera").text for i in items] == ["Camera 1 (cam-1)",
                                                                                 "Camera 2 (cam-2)"]
    scores = [float(re.fullmatch(r"similarity (\d\.\d{3})", i.find_element(By.CSS_SELECTOR, ".similarity").text)[1])
              for i in items]
    assert scores[0] == 1.0 and scores[1] >= 0.999  # the founder, then the same crop on the other camera
    assert [x.get_attribute("data-camera") for x in css(d, "#lanes .lane")] == ["cam-1", "cam-2"]
    wait_for(lambda: (w := pictures_loaded(d, "#timeline img, #lanes img, #entity-thumb")) and len(w) == 5
             and all(x > 0 for x in w), "the entity's pictures to load")
    # The actions this worker's API has, each shown: name, trust, merge, split, watch, erase.
    assert all(visible(d, a) for a in ACTIONS)
    assert [o.text for o in Select(d.find_element(By.ID, "trust-input")).options] == ["trusted", "untrusted",
                                                                                      "unknown"]
    assert Select(d.find_element(By.ID, "trust-input")).first_selected_option.text == "unknown"
    assert len(css(d, "#timeline input[type=checkbox][name=detection_ids]")) == 2  # split picks appearances
    assert len(css(d, "#timeline a.similar-link")) == 2  # find-similar on each appearance
    assert d.find_element(By.CSS_SELECTOR, "#entity-facts dd[data-fact=trust]").text == "unknown"

    # The search box: an id opens its entity. Anything else is searched for as a text, which this worker's
    # encoder (reid-tiny-vit, no text tower) cannot do: the page says so, and that no entity has the id.
    box = d.find_element(By.ID, "search-q")
    box.send_keys(ids["bob"], Keys.ENTER)
    wait_for(lambda: len(css(d, "#timeline li.appearance")) == 1 and ids["bob"] in d.find_element(
        By.ID, "entity-title").text, "bob's page")
    box.clear()
    box.send_keys("nobody-here", Keys.ENTER)
    wait_for(lambda: visible(d, "search-view") and NO_TEXT_TOWER in d.find_element(By.ID, "search-status").text,
             "the no-text-search message")
    assert 'No entity has the id "nobody-here"' in d.find_element(By.ID, "search-note").text
    assert "text=nobody-here" in d.current_url and not css(d, "#search-results li")
    # An entity page of an unknown id says so.
    d.get(f"{worker.base}/#/entity/nobody-here")
    wait_for(lambda: "Entity with id 'nobody-here' not found" in d.find_element(By.ID, "entity-status").text,
             "the not-found message")

    # Erasure asks first: cancelling keeps the entity, confirming erases it everywhere.
    d.get(f"{worker.base}/#/entity/{ids['dora']}")
    wait_for(lambda: visible(d, "act-erase"), "dora's page")
    d.find_element(By.CSS_SELECTOR, "#act-erase button").click()
    wait_for(lambda: visible(d, "confirm"), "the confirmation dialog")
    assert ids["dora"] in d.find_element(By.ID, "confirm-text").text
    assert d.switch_to.active_element == d.find_element(By.ID, "confirm-cancel")  # the safe choice has focus
    d.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(lambda: d.find_element(By.ID, "entity-status").text == "Cancelled.", "the cancellation")
    assert api(worker.base, f"/api/entities/{ids['dora']}")[0] == 200
    d.find_element(By.CSS_SELECTOR, "#act-erase button").click()
    wait_for(lambda: visible(d, "confirm"), "the confirmation dialog again")
    d.find_element(By.ID, "confirm-ok").click()
    wait_for(lambda: visible(d, "list-view") and card_ids(d) and ids["dora"] not in card_ids(d),
             "the list without dora")
    assert d.find_element(By.ID, "notice").text == f"Erased. ({ids['dora']})"
    assert api(worker.base, f"/api/entities/{ids['dora']}")[0] == 404

    # Phone width: the same list, one column, nothing wider than the screen.
    # A reload keeps the tab signed in (sessionStorage outlives it) and clears the erase notice.
    d.set_window_size(390, 844)
    d.refresh()
    wait_for(lambda: len(card_ids(d)) == 4 and all(w > 0 for w in pictures_loaded(d, "#entities img")),
             "the list at phone width")
    assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")

    d.find_element(By.ID, "sign-out").click()
    wait_for(lambda: visible(d, "signin"), "the sign-in form after signing out")
    assert d.execute_script("return sessionStorage.getItem('reid-stream.token')") is None


def test_operator_names_trusts_finds_similar_searches_merges_and_splits(browser: WebDriver, demo: dict[str, Any],
                                                                      tmp_path: Path):
    """The operator routes, driven through the page against the real worker (after the test above: dora is
    erased, eve has joined)."""
    d, worker, dets = browser, demo["worker"], demo["dets"]
    ids = {k: v["detection_id"] for k, v in dets.items()}
    alice, bob = ids["alice1"], ids["bob"]
    sign_in(d, worker.base)
    wait_for(lambda: alice in card_ids(d) and bob in card_ids(d), "alice and bob in the list")

    # Name and notes, then trust: PATCH /api/entities/{id}, the page re-rendered from its answer.
    d.get(f"{worker.base}/#/entity/{alice}")
    wait_for(lambda: len(css(d, "#timeline li.appearance")) == 2 and visible(d, "act-name"), "alice's page")
    d.find_element(By.ID, "name-input").send_keys("Alice Example")
    d.find_element(By.ID, "notes-input").send_keys("front desk regular")
    d.find_element(By.CSS_SELECTOR, "#act-name button[type=submit]").click()
    wait_for(lambda: d.find_element(By.ID, "entity-status").text == 'Named "Alice Example".', "the name saved")
    assert d.find_element(By.ID, "entity-title").text == "Alice Example · person"
    assert d.find_element(By.CSS_SELECTOR, "#entity-facts dd[data-fact=name]").text == "Alice Example"
    assert d.find_element(By.CSS_SELECTOR, "#entity-facts dd[data-fact=notes]").text == "front desk regular"
    Select(d.find_element(By.ID, "trust-input")).select_by_visible_text("trusted")
    d.find_element(By.CSS_SELECTOR, "#act-trust button[type=submit]").click()
    wait_for(lambda: d.find_element(By.ID, "entity-status").text == "Trust set to trusted.", "the trust set")
    assert d.find_element(By.CSS_SELECTOR, "#entity-facts dd[data-fact=trust]").text == "trusted"
    body = api(worker.base, f"/api/entities/{alice}")[1]
    assert (body["name"], body["notes"], body["trust"]) == ("Alice Example", "front desk regular", "trusted")
    # The API's own refusal, with its error code: a name of control characters only is invalid.
    d.execute_script("document.getElementById('name-input').value = 'Al\\u0007ice'")  # a control character
    d.find_element(By.CSS_SELECTOR, "#act-name button[type=submit]").click()
    wait_for(lambda: "invalid_body, HTTP 422" in d.find_element(By.ID, "entity-status").text, "the 422 text")
    assert d.find_element(By.ID, "entity-status").text.startswith("Could not save the name: name: ")
    assert api(worker.base, f"/api/entities/{alice}")[1]["name"] == "Alice Example"
    # Watch her (after a confirmation): PATCH watch, shown in the facts, on her card and on the watch list.
    d.find_element(By.ID, "watch-input").send_keys("front desk")
    d.find_element(By.CSS_SELECTOR, "#act-watch button[type=submit]").click()
    wait_for(lambda: visible(d, "confirm"), "the confirmation dialog")
    assert "front desk" in d.find_element(By.ID, "confirm-text").text
    d.find_element(By.ID, "confirm-ok").click()
    wait_for(lambda: d.find_element(By.ID, "entity-status").text == 'Watched as "front desk".', "the watch set")
    assert d.find_element(By.CSS_SELECTOR, "#entity-facts dd[data-fact='watch list']").text == "front desk"
    assert d.find_element(By.ID, "watch-button").text == "Stop watching…"
    assert [e["watch_id"] for e in api(worker.base, "/api/watchlist")[1]["entries"]] == [alice]
    d.refresh()
    wait_for(lambda: (w := pictures_loaded(d, "#timeline img, #lanes img, #entity-thumb")) and len(w) == 5
             and all(x > 0 for x in w), "alice's pictures")
    assert d.find_element(By.ID, "name-input").get_attribute("value") == "Alice Example"
    shot(d, "browser-entity.png")

    # Find similar, from an appearance: the same crop on the other camera comes first, at ~1.
    css(d, f"#timeline li[data-detection='{alice}'] a.similar-link")[0].click()
    wait_for(lambda: visible(d, "search-view") and css(d, "#search-results li.hit"), "the similar appearances")
    hits = css(d, "#search-results li.hit")
    assert hits[0].get_attribute("data-detection") == ids["alice2"] and hits[0].get_attribute("data-entity") == alice
    assert float(hits[0].find_element(By.CSS_SELECTOR, ".score").text) >= 0.999
    assert hits[0].find_element(By.CSS_SELECTOR, "a.card-link").text == "Alice Example"  # her name, as it is now
    assert alice not in [x.get_attribute("data-detection") for x in hits]  # itself left out
    assert {x.find_element(By.CSS_SELECTOR, ".type").text for x in hits} == {"person"}  # its own type only
    assert f"/#/similar/{alice}" in d.current_url
    wait_for(lambda: all(w > 0 for w in pictures_loaded(d, "#search-results img")), "the results' pictures")
    shot(d, "browser-similar.png")
    hits[0].find_element(By.CSS_SELECTOR, "a.card-link").click()  # to the entity the appearance belongs to
    wait_for(lambda: d.find_element(By.ID, "entity-title").text == "Alice Example · person", "alice's page again")

    # The list shows the name (as the title, the id below it) and the trust.
    d.get(worker.base + "/#/")
    in_card = f"li.card[data-id='{alice}']"
    wait_for(lambda: css(d, f"{in_card} a.card-link")[0].text == "Alice Example", "the name in the list")
    texts = d.execute_script("const c = document.querySelector(arguments[0]); return ['.trust-value', '.badge', "
                             "'.id'].map(s => c.querySelector(s).textContent)", in_card)
    assert texts == ["trusted", "trusted", alice]
    wait_for(lambda: all(w > 0 for w in pictures_loaded(d, "#entities li.card img")), "the list's pictures")
    shot(d, "browser-list.png")

    # Search by image: alice's crop, uploaded as the raw body, finds her appearances at ~1.
    crop = tmp_path / "alice.png"
    crop.write_bytes(encode_png(pattern_image(101)))
    d.find_element(By.ID, "image-file").send_keys(str(crop))
    wait_for(lambda: visible(d, "search-view") and len(css(d, "#search-results li.hit")) >= 2, "the image results")
    hits = css(d, "#search-results li.hit")
    assert [x.get_attribute("data-entity") for x in hits[:2]] == [alice, alice]
    assert {x.get_attribute("data-detection") for x in hits[:2]} == {alice, ids["alice2"]}
    assert all(float(x.find_element(By.CSS_SELECTOR, ".score").text) >= 0.999 for x in hits[:2])
    assert "alice.png" in d.find_element(By.ID, "search-title").text and d.current_url.endswith("/#/image")

    # Merge bob into alice (after a confirmation): one entity, with bob's appearance; bob's id opens alice.
    d.get(f"{worker.base}/#/entity/{alice}")
    wait_for(lambda: len(css(d, "#timeline li.appearance")) == 2 and visible(d, "act-merge"), "alice's page")
    d.find_element(By.ID, "merge-input").send_keys(bob)
    d.find_element(By.CSS_SELECTOR, "#act-merge button[type=submit]").click()
    wait_for(lambda: visible(d, "confirm"), "the confirmation dialog")
    assert bob in d.find_element(By.ID, "confirm-text").text
    d.find_element(By.ID, "confirm-ok").click()
    wait_for(lambda: d.find_element(By.ID, "entity-status").text == f"Merged {bob} into this entity.", "the merge")
    wait_for(lambda: len(css(d, "#timeline li.appearance")) == 3, "alice's three appearances")
    assert card_ids(d, "outcome") == [alice]
    assert css(d, "#outcome .count")[0].text == "3"
    assert d.find_element(By.CSS_SELECTOR, "#entity-facts dd[data-fact='merged ids']").text == bob
    merged = api(worker.base, f"/api/entities/{bob}")[1]
    assert merged["id"] == alice and merged["resolved_from"] == bob
    d.get(worker.base + "/#/")
    wait_for(lambda: alice in card_ids(d) and bob not in card_ids(d), "the list without bob")
    assert css(d, f"li.card[data-id='{alice}'] .count")[0].text == "3"
    # Merging it again is refused with the API's reason.
    d.get(f"{worker.base}/#/entity/{alice}")
    wait_for(lambda: len(css(d, "#timeline li.appearance")) == 3, "alice's page")
    d.find_element(By.ID, "merge-input").send_keys(bob)
    d.find_element(By.CSS_SELECTOR, "#act-merge button[type=submit]").click()
    wait_for(lambda: visible(d, "confirm"), "the confirmation dialog")
    d.find_element(By.ID, "confirm-ok").click()
    wait_for(lambda: "(same_entity, HTTP 409)" in d.find_element(By.ID, "entity-status").text, "the 409 text")
    assert d.find_element(By.ID, "entity-status").text.startswith("Could not merge: ")

    # Split bob's appearance off again: two entities, the new one with a new id.
    css(d, f"#timeline input[type=checkbox][value='{bob}']")[0].click()
    d.find_element(By.CSS_SELECTOR, "#act-split button[type=submit]").click()
    wait_for(lambda: visible(d, "confirm"), "the confirmation dialog")
    d.find_element(By.ID, "confirm-ok").click()
    wait_for(lambda: "New entity: split-" in d.find_element(By.ID, "entity-status").text, "the split")
    wait_for(lambda: len(css(d, "#timeline li.appearance")) == 2, "alice's two appearances")
    outcome = card_ids(d, "outcome")
    assert len(outcome) == 2 and outcome[0] == alice and outcome[1].startswith("split-")
    created = outcome[1]
    assert [x.text for x in css(d, "#outcome .count")] == ["2", "1"]
    assert [x.get_attribute("data-detection") for x in css(d, "#timeline li.appearance")] == [alice, ids["alice2"]]
    d.get(worker.base + "/#/")
    wait_for(lambda: {alice, created} <= set(card_ids(d)), "the list with both entities")
    assert css(d, f"li.card[data-id='{created}'] .count")[0].text == "1"
    assert api(worker.base, f"/api/entities/{created}")[1]["appearances"][0]["detection_id"] == bob

    # Phone width: names, trust and all, one column, nothing wider than the screen.
    d.set_window_size(390, 844)
    d.refresh()
    wait_for(lambda: alice in card_ids(d) and all(w > 0 for w in pictures_loaded(d, "#entities img")),
             "the list at phone width")
    assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    shot(d, "browser-phone.png")


def test_a_wrong_token_is_refused_with_a_clear_message(browser: WebDriver, demo: dict[str, Any]):
    d, base = browser, demo["worker"].base
    sign_in(d, base, token="not-the-token-0123456789")
    error = wait_for(lambda: (e := d.find_element(By.ID, "signin-error")).is_displayed() and e, "the 401 message")
    assert "401" in error.text and "refused the token" in error.text
    assert error.get_attribute("role") == "alert"
    assert not visible(d, "list-view") and not card_ids(d)
    assert d.execute_script("return sessionStorage.getItem('reid-stream.token')") is None
    # A token that stops working mid-session (revoked, or the worker restarted with others) lands here too.
    sign_in(d, base)
    wait_for(lambda: len(card_ids(d)) >= 3, "the list with the right token")
    d.execute_script("sessionStorage.setItem('reid-stream.token', 'revoked-token-0123456789')")
    wait_for(lambda: visible(d, "signin") and "401" in d.find_element(By.ID, "signin-error").text,
             "live refresh meeting the 401", 30)


def test_feature_detection_follows_the_workers_openapi_document(browser: WebDriver, demo: dict[str, Any]):
    """The page shows a control only where the worker's /api/openapi.json has its route: checked in the browser
    against the worker's real document and an empty one."""
    d = browser
    sign_in(d, demo["worker"].base)
    wait_for(lambda: card_ids(d), "the list")
    spec = api(demo["worker"].base, "/api/openapi.json")[1]
    out = d.execute_async_script("""
        const [spec, done] = arguments;
        Promise.all([import('/ui/api.js'), import('/ui/entity.js')]).then(([api, ent]) => {
          const none = api.features({paths: {}});
          const real = api.features(spec);
          const f = real;
          const e = {id: 'e/1', entity_type: 'person', appearance_count: 2, cameras_seen: ['a'], trust: 'unknown',
            appearances: [{detection_id: 'd1', camera_id: 'a', camera_name: 'A', timestamp: '2026-01-01T00:00:00Z',
             similarity_score: 1}, {detection_id: 'd2', camera_id: 'a', timestamp: '2026-01-01T00:01:00Z'}]};
          ent.renderEntity(e, real);
          const shownReal = [...document.querySelectorAll('#actions .act')].filter(x => !x.hidden).map(x => x.id);
          ent.renderEntity(e, f);
          document.getElementById('merge-input').value = 'other-7';
          document.getElementById('name-input').value = 'Front door courier';
          document.getElementById('notes-input').value = '';
          document.getElementById('trust-input').value = '1';
          document.getElementById('watch-input').value = ' van driver ';
          document.querySelector('#timeline input[value=d2]').checked = true;
          const act = (id) => ent.actionFor(document.getElementById(id), e, f);
          const shown = [...document.querySelectorAll('#actions .act')].filter(x => !x.hidden).map(x => x.id);
          const name = act('act-name');
          document.getElementById('name-input').value = '';
          done({none, real, shownReal, shown, merge: act('act-merge'), split: act('act-split'), name,
                cleared: act('act-name'), trust: act('act-trust'), watch: act('act-watch'),
                unwatch: ent.actionFor(document.getElementById('act-watch'), {...e, watch: 'van driver'}, f)});
        }, (err) => done({error: String(err)}));
    """, spec)
    assert "error" not in out, out
    keys = ("erase", "patch", "notes", "trust", "merge", "split", "watch", "similar", "search", "image")
    assert not any(out["none"][k] for k in keys)
    real = out["real"]
    assert all(real[k] for k in keys)
    assert real["trust"] == [{"label": t, "value": t} for t in ("trusted", "untrusted", "unknown")]
    assert real["similar"] == "/api/detections/{detection_id}/similar"
    assert real["search"] == {"path": "/api/search", "param": "text"}
    assert sorted(out["shownReal"]) == sorted(ACTIONS)
    assert sorted(out["shown"]) == sorted(ACTIONS)
    assert {k: out["merge"][k] for k in ("method", "path", "body")} == {
        "method": "POST", "path": "/api/entities/e%2F1/merge", "body": {"other_id": "other-7"}}
    assert "ask" in out["merge"] and "ask" in out["split"]  # both after a confirmation
    assert {k: out["split"][k] for k in ("method", "path", "body")} == {
        "method": "POST", "path": "/api/entities/e%2F1/split", "body": {"detection_ids": ["d2"]}}
    assert out["name"]["method"] == "PATCH" and out["name"]["path"] == "/api/entities/e%2F1"
    assert out["name"]["body"] == {"name": "Front door courier", "notes": None}  # empty clears (null)
    assert out["cleared"]["body"] == {"name": None, "notes": None}
    assert out["trust"]["body"] == {"trust": "untrusted"}
    assert {k: out["watch"][k] for k in ("method", "body")} == {"method": "PATCH", "body": {"watch": "van driver"}}
    assert out["unwatch"]["body"] == {"watch": None} and "ask" in out["watch"] and "ask" in out["unwatch"]


def test_degraded_banner_while_redis_is_down(browser: WebDriver, infra, tmp_path: Path):
    d = browser
    port = free_port()
    start_redis(port, tmp_path / "redis")
    worker, tag, root = start_worker(tmp_path / "w", REID_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    try:
        seen = detection(root, f"frank-{tag}", "cam-9", pattern_image(606), (20, 20))
        send(worker, seen)
        wait_for(lambda: api(worker.base, "/api/entities")[1]["count"] == 1, "frank stored", 120)
        sign_in(d, worker.base)
        wait_for(lambda: card_ids(d) == [seen["detection_id"]], "frank's card")
        assert not visible(d, "banner")

        stop_redis(port, save=True)
        banner = wait_for(lambda: (b := d.find_element(By.ID, "banner")).is_displayed() and b, "the banner", 30)
        assert "Degraded" in banner.text and "Redis" in banner.text and banner.get_attribute("role") == "alert"
        assert card_ids(d) == [] and "unavailable" in d.find_element(By.ID, "list-status").text
        assert api(worker.base, "/api/entities")[2].get("X-Reid-Degraded") == "redis-unavailable"
        shot(d, "browser-degraded.png")
        # An entity page cannot be read meanwhile: it says why rather than "not found".
        d.get(f"{worker.base}/#/entity/{seen['detection_id']}")
        wait_for(lambda: "HTTP 503" in d.find_element(By.ID, "entity-status").text, "the 503 message")
        assert visible(d, "banner")

        start_redis(port, tmp_path / "redis")  # the same dump: the entity is back
        time.sleep(0.5)
        d.get(worker.base + "/#/")
        wait_for(lambda: card_ids(d) == [seen["detection_id"]] and not visible(d, "banner"), "recovery", 60)
    finally:
        stop_worker(worker)
        stop_redis(port)


def test_the_site_switch_shows_one_sites_entities_and_their_pictures(browser: WebDriver, demo: dict[str, Any]):
    """Entities never cross sites: the page's ?site_id= (set by the header's site form) scopes every request."""
    d, base, tag, root = browser, demo["worker"].base, demo["tag"], demo["root"]
    annex = {**detection(root, f"{tag}-annex-1", "cam-9", pattern_image(909), (20, 30)), "site_id": "annex"}
    send(demo["worker"], annex)
    listing = wait_for(lambda: (b := api(base, "/api/entities?site_id=annex")[1]) and b["count"] == 1 and b,
                       "the annex's entity stored", 60)
    annex_id = listing["entities"][0]["entity_id"]
    sign_in(d, base)
    wait_for(lambda: len(card_ids(d)) >= 3, "the default site's list")
    assert annex_id not in card_ids(d)
    field = d.find_element(By.ID, "site-id")
    assert field.get_attribute("value") == ""
    field.send_keys("annex")
    field.send_keys(Keys.ENTER)  # a plain GET form: the page reloads as /?site_id=annex, still signed in
    wait_for(lambda: "site_id=annex" in d.current_url and card_ids(d) == [annex_id], "the annex's list")
    assert d.find_element(By.ID, "site-id").get_attribute("value") == "annex"
    wait_for(lambda: all(pictures_loaded(d, "#entities img")) and pictures_loaded(d, "#entities img"),
             "the annex card's picture (its URL names the site)")
    css(d, f'#entities li.card[data-id="{annex_id}"] a.card-link')[0].click()
    wait_for(lambda: visible(d, "entity-view") and annex_id in d.find_element(By.ID, "entity-view").text,
             "the annex entity's page")
    assert "cam-9" in d.find_element(By.ID, "entity-view").text


def test_the_archive_switch_lists_what_redis_has_forgotten(browser: WebDriver, demo: dict[str, Any],
                                                           archive_url: str, tmp_path: Path):
    """With the long-term memory on, the list's Memory switch reads the archive: entities Redis no longer holds
    are listed there, marked archived, and their page says why they cannot be corrected. Without it, no switch."""
    d = browser
    sign_in(d, demo["worker"].base)
    wait_for(lambda: card_ids(d), "the demo worker's list")
    assert not visible(d, "f-source-label"), "a worker without the archive shows no switch"

    worker, tag, root = start_worker(tmp_path / "w", REID_ARCHIVE_URL=archive_url)
    site_id = f"attic-{tag}"  # the archive outlives test runs: a site of this run's own
    try:
        seen = [{**detection(root, f"{tag}-{n}", f"cam-{n}", pattern_image(710 + n), (20, 20)), "site_id": site_id}
                for n in range(2)]
        send(worker, *seen)
        query = f"/api/entities?site_id={site_id}&source=archive"
        wait_for(lambda: api(worker.base, query)[1]["count"] == 2, "both archived", 60)
        redis = __import__("redis").Redis.from_url(worker.env.get("REID_REDIS_URL", "redis://127.0.0.1:6379/0"))
        keys = list(redis.scan_iter(match=f"{worker.env['REID_REDIS_PREFIX']}:*", count=1000))
        redis.delete(*keys)  # what the TTL would do, at once
        redis.close()
        assert api(worker.base, f"/api/entities?site_id={site_id}")[1]["count"] == 0

        sign_in(d, worker.base)  # another port, another origin: its own token store
        wait_for(lambda: visible(d, "list-view"), "signed in")
        d.get(f"{worker.base}/?site_id={site_id}")
        wait_for(lambda: visible(d, "list-view") and "No entity" in d.find_element(By.ID, "list-status").text,
                 "the live list, empty")
        assert visible(d, "f-source-label")
        Select(d.find_element(By.ID, "f-source")).select_by_value("archive")
        d.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
        wait_for(lambda: sorted(card_ids(d)) == sorted(s["detection_id"] for s in seen), "the archived cards")
        assert "source=archive" in d.current_url
        badges = [b.text for b in css(d, "#entities .badge.archived")]
        assert badges == ["archived", "archived"]
        css(d, f'#entities li.card[data-id="{seen[0]["detection_id"]}"] a.card-link')[0].click()
        memory = wait_for(lambda: (m := css(d, '#entity-view dd[data-fact="memory"]')) and m[0].text,
                          "the entity page from the archive")
        assert "archive" in memory and "cam-0" in d.find_element(By.ID, "entity-view").text
    finally:
        stop_worker(worker)
