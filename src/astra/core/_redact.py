"""Scrubbing where things are reached from text meant for clients: one set of patterns for
every layer that shows a venue's or a library's message (server error bodies, feed resync
reasons, venue rejections).

Invariants:
- ``without_locations`` leaves no URL (any scheme), IPv4/IPv6 address, socket address tuple
  (``('127.0.0.1', 7070)``), ``localhost`` or host name with a port, nor aiohttp's "host
  <name>"; prices, codes and words stay as they are.
- ``without_url_queries`` keeps a URL's scheme, host and path and drops its query and
  fragment (where signatures and keys travel).
- ``squeeze`` collapses whitespace and cuts to a length, marking a cut with ``…``.
- Pure functions of their text: no state, no I/O.
"""

from __future__ import annotations

import re

__all__ = ["ADDRESS", "URL", "squeeze", "without_locations", "without_url_queries"]

ADDRESS = "[address]"  # what a location is replaced with
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)  # any scheme

_LOCATIONS = re.compile(
    URL.pattern  # URLs, any scheme
    + r"|\(\s*'[^']*'(?:\s*,\s*\d+)+\s*\)"  # socket addresses: ('127.0.0.1', 7070)
    r"|\[[0-9a-f]*:[0-9a-f:.]*\](?::\d+)?"  # [::1]:7070
    r"|\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"  # 10.0.0.5[:7070]
    r"|\blocalhost(?::\d+)?\b"
    r"|\b(?:[a-z0-9-]+\.)+[a-z][a-z0-9-]*:\d+\b"  # fapi.example.com:443
    r"|(?<=\bhost )\S+",  # aiohttp's "Cannot connect to host <name>"
    re.IGNORECASE,
)
_URL_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?#\"'<>]*)[?#][^\s\"'<>]*", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def without_locations(text: str, placeholder: str = ADDRESS) -> str:
    """``text`` with every URL, host name with a port, and IP address replaced."""
    return _LOCATIONS.sub(placeholder, text)


def without_url_queries(text: str) -> str:
    """``text`` with each URL's query string and fragment dropped (the path stays)."""
    return _URL_QUERY.sub(r"\1", text)


def squeeze(text: str, limit: int | None = None) -> str:
    """``text`` on one line (runs of whitespace made one space), at most ``limit`` characters
    (the last one ``…`` when cut)."""
    text = _SPACES.sub(" ", text).strip()
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text
