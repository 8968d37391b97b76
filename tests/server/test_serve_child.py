"""``astra serve``'s simulator child with several venues, and the venues it serves."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from astra.server.gateway import SimChild, venues_from_config
from astra.venues.aster import AsterUrls


def test_no_configuration_serves_every_venue_of_the_child():
    urls = {"SIM": "http://127.0.0.1:1", "SIM2": "http://127.0.0.1:2", "SIM3": "http://127.0.0.1:3"}
    venues = venues_from_config({}, urls)
    assert list(venues) == ["SIM", "SIM2", "SIM3"]
    assert {code: v.code for code, v in venues.items()} == {c: c for c in urls}
    assert venues["SIM2"].urls == AsterUrls(
        "http://127.0.0.1:2/api", "http://127.0.0.1:2/fapi",
        "ws://127.0.0.1:2/sstream", "ws://127.0.0.1:2/fstream",
    )


def test_configured_simulator_venues_without_a_url_come_from_the_child():
    urls = {"SIM": "http://127.0.0.1:1", "SIM2": "http://127.0.0.1:2", "SIM3": "http://127.0.0.1:3"}
    config = {"venues": {"SIM": {"url": "http://127.0.0.1:9"}, "sim3": {}}}
    venues = venues_from_config(config, urls)
    assert list(venues) == ["SIM", "SIM3"]  # only what the config names
    assert venues["SIM"].urls.spot_rest == "http://127.0.0.1:9/api"  # its own url wins
    assert venues["SIM3"].urls.spot_rest == "http://127.0.0.1:3/api"
    with pytest.raises(ValueError, match="SIM2 needs a url"):
        venues_from_config({"venues": {"SIM2": {}}}, {"SIM": "http://127.0.0.1:1"})


def test_the_child_line_is_read_in_either_format():
    new = b"Astra simulator venue SIM2 (seed 0) listening on http://127.0.0.1:7071\n"
    old = b"Astra simulator (venue SIM, seed 0) listening on http://127.0.0.1:7070\n"
    assert SimChild._LISTENING.search(new).groups() == (b"SIM2", b"http://127.0.0.1:7071")
    assert SimChild._LISTENING.search(old).groups() == (b"SIM", b"http://127.0.0.1:7070")
    assert SimChild._LISTENING.search(b"  spot REST       http://127.0.0.1:7071/api") is None


async def test_a_child_with_two_venues_serves_both_and_stops():
    child = SimChild(seed=4, venues=2)
    try:
        async with asyncio.timeout(30):
            urls = await child.start()
            assert list(urls) == ["SIM", "SIM2"] and child.url == urls["SIM"]
            async with aiohttp.ClientSession() as http:
                for url in urls.values():
                    async with http.get(f"{url}/fapi/v1/depth?symbol=ETHUSDT") as resp:
                        book = await resp.json()
                        assert resp.status == 200 and book["bids"] and book["asks"]
    finally:
        await child.stop()
    assert child.proc.returncode is not None
