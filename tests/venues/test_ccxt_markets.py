"""Fee rates read from ccxt markets (``astra.venues.ccxt_markets.fee_rate``) and the Aster
package's choice between the exchangeInfo extension and ccxt's published rates."""

from __future__ import annotations

from decimal import Decimal

import pytest

from astra.venues.aster.symbols import market_from_ccxt
from astra.venues.ccxt_markets import fee_rate


@pytest.mark.parametrize(("raw", "rate"), [
    ("0.0004", 0.0004), (0.001, 0.001), (Decimal("0.00025"), 0.00025), ("-0.0001", -0.0001),
    (0, 0.0),
    # Not a fee rate: absent, not numbers, not finite, not a fraction of the price.
    (None, None), (True, None), ("", None), ("abc", None), ([0.1], None), ("NaN", None),
    (float("nan"), None), ("inf", None), ("-Infinity", None), ("1", None), (1.5, None),
    ("-1", None), (10**400, None),
])
def test_fee_rate_is_a_finite_fraction_or_none(raw, rate):
    assert fee_rate(raw) == rate


def _ccxt_spot(info: dict, maker=0.0002, taker=0.0004) -> dict:
    return {"id": "BTCUSDT", "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT",
            "baseId": "BTC", "quoteId": "USDT", "type": "spot", "spot": True, "swap": False,
            "future": False, "option": False, "active": True, "linear": None, "inverse": None,
            "contractSize": None, "maker": maker, "taker": taker, "info": info,
            "precision": {"price": 0.01, "amount": 0.00001}, "limits": {}}


def test_aster_fees_prefer_the_exchange_info_extension_and_skip_garbage():
    meta = market_from_ccxt("SIM2", _ccxt_spot(
        {"makerCommissionRate": "0.0001", "takerCommissionRate": "0.0003"})).metadata
    assert (meta.maker_fee, meta.taker_fee) == (0.0001, 0.0003)
    meta = market_from_ccxt("SIM2", _ccxt_spot(
        {"makerCommissionRate": "NaN", "takerCommissionRate": "2"})).metadata
    assert (meta.maker_fee, meta.taker_fee) == (0.0002, 0.0004)  # ccxt's published rates
    meta = market_from_ccxt("ASTER", _ccxt_spot({}, maker=None, taker=float("nan"))).metadata
    assert (meta.maker_fee, meta.taker_fee) == (None, None)
