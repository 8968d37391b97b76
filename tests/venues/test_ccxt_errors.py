"""Every venue's private ccxt client reports a server error ccxt cannot classify as the venue
being unavailable (the request may have executed), never as a refusal; a client error with
the same body stays what ccxt says."""

from __future__ import annotations

import json

import pytest
from ccxt.base.errors import BaseError, ExchangeError, ExchangeNotAvailable

from astra.venues.aster import AsterPrivate
from astra.venues.binance.private import BinancePrivate
from astra.venues.coinbase.private import CoinbasePrivate
from astra.venues.htx.private import HtxPrivate
from astra.venues.kraken.private import KrakenFuturesPrivate, KrakenSpotPrivate
from astra.venues.kucoin.private import KucoinPrivate
from astra.venues.okx.private import OkxPrivate

# Error bodies in each venue's documented shape, with codes ccxt has no mapping for.
UNCLASSIFIED = [
    (AsterPrivate, {"code": -9999, "msg": "something broke"}),
    (BinancePrivate, {"code": -9999, "msg": "something broke"}),
    (CoinbasePrivate, {"error": "WEIRD", "message": "something broke"}),
    (HtxPrivate, {"status": "error", "err-code": "weird-code", "err-msg": "something broke"}),
    (KrakenSpotPrivate, {"error": ["EGeneral:Something broke"]}),
    (KrakenFuturesPrivate, {"result": "error", "error": "somethingBroke"}),
    (KucoinPrivate, {"code": "999999", "msg": "something broke"}),
    (OkxPrivate, {"code": "99999", "msg": "something broke", "data": []}),
]


def _answer(cls, status: int, body: dict) -> BaseException:
    client = cls({})
    with pytest.raises(BaseError) as raised:
        client.handle_errors(status, "Internal Server Error" if status >= 500 else "Bad Request",
                             "https://127.0.0.1/x", "POST", {}, json.dumps(body), body, {}, None)
    return raised.value


@pytest.mark.parametrize(("cls", "body"), UNCLASSIFIED, ids=lambda v: getattr(v, "__name__", ""))
def test_an_unclassified_server_error_is_unavailability(cls, body):
    assert type(_answer(cls, 500, body)) is ExchangeNotAvailable
    assert isinstance(_answer(cls, 400, body), ExchangeError)  # a refusal, as ccxt reads it
