"""``[otc]`` in ``astra serve``'s config: every value checked (type and range), a bad one a
``ValueError`` naming the setting, so ``astra serve`` exits 2 before anything starts (no
database file) with a one-line message; a signing secret is never part of a message."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from astra.otc import OtcConfig, QuoteSigner

SECRET = "c0ffee" * 11  # 66 hex digits: a good signing secret
SHORT = "5ec2e7" * 10  # 60 hex digits: too short, and must not be echoed either
SECRETS = (SECRET, SHORT)


def test_the_defaults_and_a_full_section():
    assert OtcConfig.from_config(None) == OtcConfig()
    assert OtcConfig.from_config({}) == OtcConfig()
    config = OtcConfig.from_config({
        "home": "USDC", "spread_bps": 12.5, "max_notional": "250000", "daily_volume": 1e6,
        "quote_ttl": 3, "stream_interval": 0.5, "bridges": ["USDT"], "usd": "USDC",
        "usd_rate": "market", "venues": ["sim", "SIM2"], "hedge": "off", "hedge_key": "desk",
        "hedge_slippage_bps": 20, "hedge_attempts": 5, "max_skew_bps": "2.5",
        "inventory_limits": {"BTC": 50, "ETH": "500.5"}, "precision": {"BTC": 6},
        "signing_key_id": "k1", "signing_keys": {"k1": SECRET}})
    assert (config.home, config.spread_bps, config.max_notional, config.daily_volume) == (
        "USDC", Decimal("12.5"), Decimal(250000), Decimal(1000000))
    assert (config.quote_ttl, config.stream_interval, config.bridges, config.usd) == (
        3.0, 0.5, ("USDT",), "USDC")
    assert config.usd_rate is None and config.venues == ("SIM", "SIM2")
    assert (config.hedge, config.hedge_key, config.hedge_slippage_bps, config.hedge_attempts,
            config.max_skew_bps) == ("off", "desk", 20.0, 5, Decimal("2.5"))
    assert config.inventory_limits == {"BTC": Decimal(50), "ETH": Decimal("500.5")}
    assert config.precision == {"BTC": 6}
    assert SECRET not in repr(config)  # the section (with the keys) is not in its repr
    signer = QuoteSigner.from_config(config.section, environ={})
    assert signer.current_key_id == "k1" and not signer.ephemeral


@pytest.mark.parametrize(("section", "named"), [
    (5, "[otc] must be a table"),  # otc = 5
    (["home"], "[otc] must be a table"),
    ({"bogus": 1}, "unknown setting 'bogus'"),
    ({"spread_bps": "abc"}, "spread_bps must be a number"),
    ({"spread_bps": "1_0"}, "spread_bps must be a number"),  # Decimal() would take it
    ({"spread_bps": " 10"}, "spread_bps must be a number"),
    ({"spread_bps": "\u0661\u0660"}, "spread_bps must be a number"),  # Arabic-Indic 10
    ({"spread_bps": "NaN"}, "spread_bps must be a number"),
    ({"spread_bps": float("nan")}, "spread_bps must be between 0 and 5000"),
    ({"spread_bps": float("inf")}, "spread_bps must be between 0 and 5000"),
    ({"spread_bps": -1}, "spread_bps must be between 0 and 5000"),
    ({"spread_bps": True}, "spread_bps must be a number"),
    ({"spread_bps": [1]}, "spread_bps must be a number"),
    ({"max_notional": 0}, "max_notional must be greater than 0"),  # would refuse every quote
    ({"max_notional": "1e999999999"}, "max_notional must be between"),
    ({"daily_volume": 0}, "daily_volume must be greater than 0"),
    ({"quote_ttl": 0}, "quote_ttl must be between 0.1 and 3600"),
    ({"quote_ttl": 1e400}, "quote_ttl must be between"),
    ({"stream_interval": 0.01}, "stream_interval must be between 0.05 and 3600"),
    ({"bridges": "USDT"}, "bridges must be a list"),
    ({"bridges": ["usdt"]}, "bridges must be an asset"),
    ({"usd": "usd"}, "usd must be an asset"),
    ({"usd_rate": "Market"}, 'usd_rate must be a number or "market"'),
    ({"usd_rate": 0}, "usd_rate must be between"),
    ({"venues": []}, "venues must be a non-empty list"),
    ({"venues": "SIM"}, "venues must be a non-empty list"),
    ({"hedge": "SOR"}, "hedge must be"),
    ({"hedge_key": ""}, "hedge_key must be"),
    ({"hedge_attempts": 0}, "hedge_attempts must be an integer 1 to 20"),
    ({"hedge_attempts": 2.0}, "hedge_attempts must be an integer 1 to 20"),
    ({"max_skew_bps": 1001}, "max_skew_bps must be between"),
    ({"inventory_limits": [1]}, "inventory_limits and precision are tables"),
    ({"inventory_limits": {"btc": 1}}, "inventory_limits must be an asset"),
    ({"inventory_limits": {"BTC": -1}}, "inventory_limits.BTC must be between"),
    ({"inventory_limits": {"BTC": "x"}}, "inventory_limits.BTC must be a number"),
    ({"precision": {"BTC": 19}}, "precision.BTC must be an integer 0 to 18"),
    ({"precision": {"BTC": True}}, "precision.BTC must be an integer 0 to 18"),
    ({"home": "usdt"}, "home must be an asset"),
])
def test_a_bad_value_names_its_setting(section, named):
    with pytest.raises(ValueError) as refused:
        OtcConfig.from_config(section)
    assert named in str(refused.value)
    assert str(refused.value).startswith("[otc]")


@pytest.mark.parametrize(("section", "named"), [
    ({"signing_key_id": "k1", "signing_keys": {"k1": SHORT}}, "otc.signing_keys.k1"),
    ({"signing_key_id": "k1", "signing_keys": {"k1": SECRET + "zz"}}, "otc.signing_keys.k1"),
    ({"signing_key_id": "k1", "signing_keys": {"k1": SECRET + "0"}}, "otc.signing_keys.k1"),
    ({"signing_key_id": "k1", "signing_keys": {"k1": SECRET, "k0": SHORT}},
     "otc.signing_keys.k0"),
    ({"signing_key_id": SECRET, "signing_keys": {"k1": SECRET}}, "otc.signing_key_id"),
    ({"signing_key_id": "k1", "signing_keys": {SECRET + "x" * 10: SECRET}},
     "otc.signing_keys"),
    ({"signing_key_id": "k1", "signing_keys": SECRET}, "otc.signing_keys"),
    ({"signing_keys": {"k1": SECRET}}, "otc.signing_key_id"),
])
def test_a_bad_signing_key_names_its_setting_never_the_secret(section, named):
    config = OtcConfig.from_config(section)  # the signer's settings are the signer's to check
    with pytest.raises(ValueError) as refused:
        QuoteSigner.from_config(config.section, environ={})
    assert named in str(refused.value)
    assert not any(s in str(refused.value) for s in SECRETS), refused.value


@pytest.mark.parametrize(("toml", "named"), [
    ('[otc]\nmax_notional = 0', "max_notional"),
    ('[otc]\nspread_bps = "1_0"', "spread_bps"),
    ("[otc]\nquote_ttl = -5", "quote_ttl"),
    ('[otc]\nhedge = "maybe"', "hedge"),
    ("[otc.inventory_limits]\nBTC = -1", "inventory_limits.BTC"),
    ("[otc.precision]\nBTC = 30", "precision.BTC"),
    ("otc = 5", "[otc] must be a table"),
    ("x = [", "Invalid value"),  # not TOML at all
    (f'[otc]\nsigning_key_id = "k1"\nsigning_keys = {{ k1 = "{SHORT}" }}',
     "otc.signing_keys.k1"),
    (f'[otc]\nsigning_key_id = "k2"\nsigning_keys = {{ k1 = "{SECRET}" }}',
     "otc.signing_key_id"),
    (f'[otc]\nsigning_key_id = "k1"\nsigning_keys = {{ k1 = "{SECRET}", k0 = "{SHORT}" }}',
     "otc.signing_keys.k0"),
])
async def test_astra_serve_exits_2_naming_the_setting(tmp_path, capsys, toml, named):
    from astra.cli import _parser
    from astra.server.serve import serve

    path = tmp_path / "astra.toml"
    path.write_text(toml + "\n")
    args = _parser().parse_args(["serve", "--config", str(path), "--data-dir", str(tmp_path)])
    async with asyncio.timeout(60):
        assert await serve(args) == 2
    out = capsys.readouterr()
    assert named in out.err and str(path) in out.err
    assert len(out.err.strip().splitlines()) == 1  # one line, no traceback
    assert not any(s in out.err + out.out for s in SECRETS)
    assert not (tmp_path / "astra.db").exists()  # nothing started


async def test_a_missing_config_file_is_exit_2_not_a_traceback(tmp_path, capsys):
    from astra.cli import _parser
    from astra.server.serve import serve

    path = tmp_path / "nowhere.toml"
    args = _parser().parse_args(["serve", "--config", str(path), "--data-dir", str(tmp_path)])
    assert await serve(args) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "No such file" in err and len(err.strip().splitlines()) == 1


async def test_otc_venues_naming_a_venue_not_served_is_exit_2(tmp_path, capsys):
    from astra.cli import _parser
    from astra.server.serve import serve

    path = tmp_path / "astra.toml"
    path.write_text('[otc]\nvenues = ["SIM", "BINANCE"]\n')  # the default serves SIM..SIM3
    args = _parser().parse_args(["serve", "--config", str(path), "--data-dir", str(tmp_path)])
    async with asyncio.timeout(60):
        assert await serve(args) == 2
    err = capsys.readouterr().err
    assert "[otc] venues: BINANCE is not a served venue (served: SIM, SIM2, SIM3)" in err
