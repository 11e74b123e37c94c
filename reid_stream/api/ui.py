"""The entity browser: static files shipped in api/web_ui/, served at `/` and `/ui/{name}`.

The page itself holds no data and no secret, so it is served without a token; everything it shows comes
from the /api routes, which check the bearer token the operator types in (kept in sessionStorage).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from faust.web import Request, Response, View

UI_DIR = Path(__file__).resolve().parent / "web_ui"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# No inline script or style anywhere; thumbnails are fetched with the token and shown as blob: URLs.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY",
           # A new version of the worker must not meet an old app.js in the cache.
           "Cache-Control": "no-cache"}


@cache
def assets() -> dict[str, tuple[bytes, str]]:
    """Every shipped file by name, read once: a fixed set, so no request path ever reaches the file system."""
    return {p.name: (p.read_bytes(), TYPES[p.suffix]) for p in sorted(UI_DIR.iterdir()) if p.suffix in TYPES}


class _UiView(View):
    def asset(self, name: str) -> Response:
        found = assets().get(name)
        if found is None:
            return self.text("not found", status=404, headers=dict(HEADERS))
        body, content_type = found
        return self.bytes(body, headers={**HEADERS, "Content-Type": content_type})


class IndexView(_UiView):
    async def get(self, request: Request) -> Response:
        return self.asset("index.html")


class AssetView(_UiView):
    async def get(self, request: Request, name: str) -> Response:
        return self.asset(name)


UI_ROUTES: dict[str, type[View]] = {"/": IndexView, "/ui/{name}": AssetView}
