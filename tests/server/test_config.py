"""Venues from configuration: every URL overridable, unknown options refused clearly."""

from __future__ import annotations

import pytest

from astra.server.gateway import load_config, venues_from_config
from astra.venues.aster import AsterUrls


def test_no_configuration_serves_the_simulator_child():
    venues = venues_from_config({}, "http://127.0.0.1:7070")
    assert list(venues) == ["SIM"]
    assert venues["SIM"].urls == AsterUrls(
        "http://127.0.0.1:7070/api",
        "http://127.0.0.1:7070/fapi",
        "ws://127.0.0.1:7070/sstream",
        "ws://127.0.0.1:7070/fstream",
    )


def test_config_file_names_venues_and_overrides_urls(tmp_path):
    path = tmp_path / "astra.toml"
    path.write_text(
        '[venues.sim]\nurl = "http://127.0.0.1:9999"\n'
        '[venues.ASTER]\nperp_ws = "ws://127.0.0.1:1234"\n'
    )
    venues = venues_from_config(load_config(path), None)
    assert sorted(venues) == ["ASTER", "SIM"]
    assert venues["SIM"].urls.spot_rest == "http://127.0.0.1:9999/api"
    assert venues["ASTER"].urls.perp_ws == "ws://127.0.0.1:1234"
    assert venues["ASTER"].urls.spot_rest == AsterUrls().spot_rest
    assert load_config(None) == {}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"venues": {"ASTER": {"spot_rset": "x"}}}, "unknown options ['spot_rset']"),
        ({"venues": {"BITMEX": {}}}, "BITMEX is not available"),
        ({"venues": {"OKX": {"public_wss": "x"}}}, "unknown options"),
        ({"venues": {"SIM": {}}}, "SIM needs a url"),
    ],
)
def test_bad_configuration_is_refused_with_the_reason(config, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        venues_from_config(config, None)


def test_every_registered_venue_builds_from_an_empty_section():
    from astra.venues import VENUE_CODES

    config = {"venues": {code: {} for code in VENUE_CODES if code != "SIM"}}
    venues = venues_from_config(config, None)
    assert sorted(venues) == sorted(c for c in VENUE_CODES if c != "SIM")
    assert {code: venue.code for code, venue in venues.items()} == {c: c for c in venues}
    assert set(VENUE_CODES) == {
        "SIM",
        "ASTER",
        "BINANCE",
        "COINBASE",
        "OKX",
        "HUOBI",
        "KRAKEN",
        "KUCOIN",
    }
