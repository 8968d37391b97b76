"""Venues from configuration: every URL overridable, unknown options refused clearly."""

from __future__ import annotations

import asyncio

import pytest

from astra.core import SIM_CODES
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

    config = {"venues": {code: {} for code in VENUE_CODES if code not in SIM_CODES}}
    venues = venues_from_config(config, None)
    assert sorted(venues) == sorted(c for c in VENUE_CODES if c not in SIM_CODES)
    assert {code: venue.code for code, venue in venues.items()} == {c: c for c in venues}
    assert set(VENUE_CODES) == {
        *SIM_CODES,
        "ASTER",
        "BINANCE",
        "COINBASE",
        "OKX",
        "HUOBI",
        "KRAKEN",
        "KUCOIN",
    }


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ('header_timeout = "10"', "header_timeout must be a number"),
        ("header_timeout = 0", "header_timeout must be between"),
        ('ws_connections_per_key = "50"', "ws_connections_per_key must be an integer"),
        ("ws_connections_per_key = 0", "ws_connections_per_key must be between"),
        ("ws_connections_per_key = -3", "ws_connections_per_key must be between"),
        ("ws_connections_per_key = 2.5", "ws_connections_per_key must be an integer"),
        ("session_revalidate_seconds = -1", "session_revalidate_seconds must be between"),
        ("keepalive_timeout = true", "keepalive_timeout must be a number"),
        ("body_timeout = 0", "body_timeout must be between"),
        ("port = 70000", "port must be between"),
        ('metrics_port = "9090"', "metrics_port must be an integer"),
    ],
)
async def test_astra_serve_refuses_a_bad_setting_naming_it(tmp_path, capsys, toml, named):
    from astra.cli import _parser
    from astra.server.serve import serve

    path = tmp_path / "astra.toml"
    path.write_text(toml + "\n")
    args = _parser().parse_args(["serve", "--config", str(path), "--data-dir", str(tmp_path)])
    async with asyncio.timeout(60):  # a bound: a setting let through would serve until killed
        assert await serve(args) == 2  # before any database, simulator or socket is opened
    err = capsys.readouterr().err
    assert named in err and str(path) in err
    assert not (tmp_path / "astra.db").exists()


def test_good_settings_pass_as_numbers_of_their_type():
    from astra.server.serve import check_settings

    assert check_settings({"header_timeout": 5, "ws_connections_per_key": 10,
                           "session_revalidate_seconds": 0.5, "port": 0, "host": "::1",
                           "venues": {}}) == {
        "header_timeout": 5.0, "ws_connections_per_key": 10, "session_revalidate_seconds": 0.5}
