"""``/ui``: the web console, static files shipped in the gateway package (``gateway/ui/``).

No build step: plain HTML, CSS and ES modules, read once and served from memory with a strict
Content-Security-Policy (scripts, styles and API calls from this origin only). The pages are
public; everything they show comes from the REST API with the user's bearer token, which the
console keeps in the tab's ``sessionStorage``.
"""

from __future__ import annotations

import mimetypes
from functools import cache
from pathlib import Path
from typing import Final

from litestar import Controller, Response, get
from litestar.params import FromPath

from infraflow.common.errors import NotFoundError
from infraflow.gateway.auth import EXCLUDE_OPT_KEY

UI_DIR: Final = Path(__file__).resolve().parent.parent / "ui"
_TYPES: Final = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def assets() -> dict[str, tuple[bytes, str]]:
    """Every file of the console by its path under ``/ui/`` (read once)."""
    out: dict[str, tuple[bytes, str]] = {}
    for path in sorted(UI_DIR.rglob("*")):
        if path.is_file():
            media = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
            out[path.relative_to(UI_DIR).as_posix()] = (path.read_bytes(), media or "text/plain")
    return out


def _serve(name: str) -> Response[bytes]:
    found = assets().get(name)
    if found is None:
        raise NotFoundError(f"no such file in the console: {name}")
    body, media_type = found
    return Response(body, media_type=media_type, headers=SECURITY_HEADERS)


class ConsoleController(Controller):
    """The web console's files."""

    path = "/ui"
    opt = {EXCLUDE_OPT_KEY: True}
    security = [{}]
    include_in_schema = False

    @get(["/", ""], operation_id="getConsole", sync_to_thread=False)
    def index(self) -> Response[bytes]:
        return _serve("index.html")

    @get("/{asset:path}", operation_id="getConsoleAsset", sync_to_thread=False)
    def asset(self, asset: FromPath[str]) -> Response[bytes]:
        return _serve(asset.lstrip("/") or "index.html")
