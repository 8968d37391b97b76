"""Scrubbing locations, URL queries and whitespace from client-facing text (core/_redact.py):
the one set of patterns behind server error bodies, feed resync reasons and venue rejections."""

from __future__ import annotations

import pytest

from astra.core._redact import squeeze, without_locations, without_url_queries


@pytest.mark.parametrize(
    "text",
    [
        "aster GET http://127.0.0.1:7070/api/v3/aggTrades?symbol=BTCUSDT&limit=100 failed",
        "Cannot connect to host 127.0.0.1:7070 ssl:default [Connect call failed "
        "('127.0.0.1', 7070)]",
        "Cannot connect to host fapi.asterdex.com:443 ssl:default [Name or service not known]",
        "Cannot connect to host localhost:7070 ssl:default",
        "connect to [::1]:7070 failed: ('::1', 7070, 0, 0)",
        "wss://fstream.asterdex.com/ws/abc closed",
        "upstream 10.1.2.3 refused",
    ],
)
def test_without_locations(text):
    out = without_locations(text)
    for leak in ("127.0.0.1", "7070", "asterdex", "localhost", "::1", "10.1.2.3", "://"):
        assert leak not in out, out
    assert "[address]" in out


def test_without_locations_keeps_prices_and_words():
    text = "SIM: order price 96000.5 below 0.01 tick; quantity 1.5 BTC (code -1013)"
    assert without_locations(text) == text


def test_without_locations_takes_a_placeholder():
    assert without_locations("GET http://10.0.0.5:8080/x?k=v failed", "<url>") == (
        "GET <url> failed")


def test_without_url_queries_keeps_the_path():
    text = "POST https://fapi.example.com/fapi/v1/order?symbol=X&signature=abc#frag failed"
    assert without_url_queries(text) == "POST https://fapi.example.com/fapi/v1/order failed"
    assert without_url_queries("no url here?x=1") == "no url here?x=1"


def test_squeeze():
    assert squeeze("  a\n\n b\t c  ") == "a b c"
    assert squeeze("x" * 10, 5) == "xxxx…"
    assert squeeze("x" * 5, 5) == "xxxxx"


def test_the_three_layers_share_it():
    # A server error body, a feed's resync reason and a venue rejection drop the same
    # locations (the layers' own rules, e.g. sanitize's secret pairs, come on top).
    from astra.core import VenueUnavailable
    from astra.marketdata.channels import public_reason
    from astra.server.errors import error_response
    from astra.trading.errors import sanitize

    text = "Cannot connect to host 127.0.0.1:7070 ssl:default"
    assert public_reason(text) == without_locations(text)
    body = error_response(VenueUnavailable("SIM", text)).body
    assert b"127.0.0.1" not in body and b"[address]" in body
    assert sanitize("GET http://h.example/p?signature=abc  x") == "GET http://h.example/p x"
