"""The Astra Terminal's files through the real gateway: served with no key (they hold no data),
exactly the package's files (no path reaches anything else), a Content-Security-Policy that
allows only this origin, and revalidation by ETag; the API beside them still needs its key."""

from __future__ import annotations

import asyncio
import re

import aiohttp

from astra.server.scopes import PUBLIC, ROUTE_SCOPES
from astra.server.terminal import web_files

TIMEOUT = 20
_JS_IMPORTS = re.compile(r'^\s*(?:import|export)\s[^;]*?\bfrom\s+["\']([^"\']+)["\']'
                         r'|\bimport\(\s*["`\']([^"`\'$]+)["`\']', re.MULTILINE)
_HTML_REFS = re.compile(r'\b(?:href|src)="([^"]+)"')


def _references(name: str, text: str) -> list[str]:
    """The files a module imports (statically, or by a constant ``import(...)``) or a page
    links (``href``/``src``)."""
    if name.endswith(".html"):
        return _HTML_REFS.findall(text)
    return [a or b for a, b in _JS_IMPORTS.findall(text)]


async def _get(http: aiohttp.ClientSession, url: str, **kw) -> tuple[int, object, bytes]:
    async with http.get(url, **kw) as resp:
        return resp.status, resp.headers.copy(), await resp.read()  # case-insensitive


async def test_the_shell_and_every_file_are_served_without_a_key(gateway):
    gw, _ = gateway
    files = web_files()
    assert {"index.html", "app.js", "lib/api.js", "lib/dom.js", "style.css"} <= set(files)
    assert not any(name.endswith(".py") for name in files)
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as http:
        status, headers, body = await _get(http, f"{gw.base_url}/")
        assert status == 200 and body == files["index.html"][0]
        assert headers["Content-Type"].startswith("text/html")
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert "unsafe-inline" not in csp and "http" not in csp  # nothing from elsewhere
        for name, (content, kind, _) in files.items():
            status, headers, body = await _get(http, f"{gw.base_url}/terminal/{name}")
            assert (status, body) == (200, content), name
            assert headers["Content-Type"].startswith(kind), name
        # Every module the shell and pages import, and every stylesheet, is a served file.
        assert _references("app.js", files["app.js"][0].decode()) == [
            "./lib/api.js", "./lib/dom.js"]  # the page modules: by name, from PAGES
        pages = re.search(r"const PAGES = \[([^\]]*)\]", files["app.js"][0].decode())[1]
        names = re.findall(r'"([a-z]+)"', pages)
        assert len(names) == 7 and all(f"pages/{n}.js" in files for n in names), names
        for name, (content, _, _) in files.items():
            if name.endswith((".js", ".html")):
                text = content.decode()
                for ref in _references(name, text):
                    if ref.startswith(("data:", "#", "http")):
                        assert not ref.startswith("http"), (name, ref)  # no CDN
                        continue
                    path = ref.removeprefix("/terminal/")
                    if ref.startswith("./") or ref.startswith("../"):
                        base = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
                        parts: list[str] = []
                        for part in (base + ref).split("/"):
                            if part == "..":
                                parts.pop()
                            elif part not in (".", ""):
                                parts.append(part)
                        path = "/".join(parts)
                    assert path in files, (name, ref)


async def test_revalidation_answers_304_and_other_paths_404(gateway):
    gw, token = gateway
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as http:
        status, headers, _ = await _get(http, f"{gw.base_url}/terminal/app.js")
        etag = headers["ETag"]
        assert headers["Cache-Control"] == "no-cache"
        status, _, body = await _get(http, f"{gw.base_url}/terminal/app.js",
                                     headers={"If-None-Match": etag})
        assert (status, body) == (304, b"")
        for path in ("/terminal/__init__.py", "/terminal/../server/terminal.py",
                     "/terminal/%2e%2e/server/terminal.py", "/terminal/nope.js",
                     "/terminal/lib/../../cli.py"):
            status, _, body = await _get(http, gw.base_url + path)
            # 404 under /terminal/; a path normalized out of it matches no route: 401 first.
            assert status in (401, 404), (path, status, body)
            assert b"import" not in body
        # The API beside the terminal still needs its key.
        status, _, _ = await _get(http, f"{gw.base_url}/exchanges")
        assert status == 401
        status, _, _ = await _get(http, f"{gw.base_url}/exchanges",
                                  headers={"x-astra-api-key": f"Bearer {token}"})
        assert status == 200


def test_only_the_terminal_routes_are_public():
    public = sorted(route for route, scope in ROUTE_SCOPES.items() if scope == PUBLIC)
    assert public == [("GET", "/"), ("GET", "/terminal/{path}")]
