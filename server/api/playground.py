"""The browser playground: one static page and its assets (``server/playground/``), served at ``/``.

The page is a client like any other: it calls only ``/v1/models`` and ``/v1/chat/completions`` (with the API key the user
types in, when auth is on). The page and its assets are open paths (no key needed to load them) and carry a strict
Content-Security-Policy: scripts, styles and fetches from this origin only, no inline script or style, images and videos
only from this origin or the page's own ``blob:``/``data:`` URLs, so attached media cannot leave the browser except to
this server's API. Not listed in the OpenAPI document.
"""

from __future__ import annotations

import functools
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "media-src 'self' blob: data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}

# URL path -> (file in server/playground/, media type). Exact paths: nothing else under /playground/ is served.
ASSETS: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/playground/playground.js": ("playground.js", "text/javascript; charset=utf-8"),
    "/playground/api.js": ("api.js", "text/javascript; charset=utf-8"),
    "/playground/grounding.js": ("grounding.js", "text/javascript; charset=utf-8"),
    "/playground/playground.css": ("playground.css", "text/css; charset=utf-8"),
    "/playground/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
PATHS = frozenset(ASSETS)
"""The playground's paths, which the guard leaves open when the playground is on."""


@functools.cache
def _read(name: str) -> bytes:
    return resources.files("server").joinpath("playground", name).read_bytes()


def _route(path: str, name: str, media_type: str) -> None:
    async def asset() -> Response:
        return Response(_read(name), media_type=media_type, headers=SECURITY_HEADERS)

    router.add_api_route(path, asset, methods=["GET"], name=f"playground:{name}")


router = APIRouter(include_in_schema=False)
for _path, (_name, _media_type) in ASSETS.items():
    _route(_path, _name, _media_type)
