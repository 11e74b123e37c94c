"""The entity browser's files as shipped: each reference resolves to a shipped file, and none runs inline code."""

from __future__ import annotations

import re

from reid_stream.api.ui import CSP, HEADERS, UI_ROUTES, assets


def test_every_file_the_page_references_is_shipped_with_its_type():
    files = assets()
    assert {"index.html", "app.js", "api.js", "dom.js", "list.js", "entity.js", "search.js", "app.css"} <= set(files)
    html = files["index.html"][0].decode()
    refs = re.findall(r'(?:src|href)="/ui/([^"]+)"', html)
    refs += [m for name, (body, _) in files.items() if name.endswith(".js")
             for m in re.findall(r'from "\./([^"]+)"', body.decode())]
    assert refs and all(r in files for r in refs), sorted(set(refs) - set(files))
    assert files["app.js"][1].startswith("text/javascript") and files["index.html"][1].startswith("text/html")


def test_no_inline_script_or_style_and_a_strict_policy():
    html = assets()["index.html"][0].decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html) and "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers either
    assert "default-src 'self'" in CSP and "unsafe" not in CSP and HEADERS["Content-Security-Policy"] == CSP
    for name, (body, _) in assets().items():
        if name.endswith(".js"):
            text = body.decode()
            assert "innerHTML" not in text and "eval(" not in text, name  # API text goes in as text only
            assert "localStorage" not in text and "document.cookie" not in text, name  # the token: session only
    assert set(UI_ROUTES) == {"/", "/ui/{name}"}
