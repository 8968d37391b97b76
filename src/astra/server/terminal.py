"""The Astra Terminal at ``/``: the static files of ``astra.web``, served from memory.

Invariants:
- Only the files of the ``astra.web`` package directory are served (read once, at app build),
  so no request path can reach another file; anything else under ``/terminal/`` is a 404.
- The pages themselves need no API key (scope ``public`` in ``scopes.ROUTE_SCOPES``): they hold
  no data. Every call the page makes carries the key the user signs in with (kept in the
  browser's session storage; a WebSocket gets it as its subprotocol).
- Every answer has a Content-Security-Policy allowing only this origin (no inline script, no
  CDN), an ETag, and ``Cache-Control: no-cache`` (revalidate: an upgraded gateway serves its own
  files at once, a 304 otherwise).
"""

from __future__ import annotations

import hashlib
import mimetypes
from importlib import resources

from aiohttp import web

__all__ = ["terminal_routes", "web_files"]

_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html",
          ".svg": "image/svg+xml", ".json": "application/json"}
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def web_files() -> dict[str, tuple[bytes, str, str]]:
    """relative path -> (body, content type, etag) of every file of the package but Python's."""
    files: dict[str, tuple[bytes, str, str]] = {}

    def walk(node, prefix: str) -> None:
        for item in node.iterdir():
            name = prefix + item.name
            if item.is_dir():
                if item.name != "__pycache__":
                    walk(item, name + "/")
            elif not item.name.endswith((".py", ".pyc")):
                body = item.read_bytes()
                suffix = "." + item.name.rsplit(".", 1)[-1]
                kind = _TYPES.get(suffix) or mimetypes.guess_type(item.name)[0] or \
                    "application/octet-stream"
                etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
                files[name] = (body, kind, etag)

    walk(resources.files("astra.web"), "")
    return files


def terminal_routes() -> list[web.RouteDef]:
    """``GET /`` (the shell) and ``GET /terminal/{path}`` (its modules and styles)."""
    files = web_files()

    def answer(request: web.Request, name: str) -> web.Response:
        found = files.get(name)
        if found is None:
            raise web.HTTPNotFound(text=f"no terminal file {name!r}")
        body, kind, etag = found
        headers = {"ETag": etag, "Cache-Control": "no-cache",
                   "Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
                   "Referrer-Policy": "no-referrer"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        charset = "utf-8" if kind.startswith("text/") or kind.endswith(("json", "xml")) else None
        return web.Response(body=body, content_type=kind, charset=charset, headers=headers)

    async def index(request: web.Request) -> web.Response:
        return answer(request, "index.html")

    async def asset(request: web.Request) -> web.Response:
        return answer(request, request.match_info["path"])

    return [web.get("/", index), web.get("/terminal/{path:.+}", asset)]
