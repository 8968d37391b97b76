"""Binance's private REST API through ccxt: one ``ccxt.binance`` instance per set of
credentials trades spot (``/api``), USD-M (``/fapi``) and COIN-M (``/dapi``) markets, and
options (``/eapi``, not exercised by the tests), each product on its configured root.

ccxt picks the endpoint family from the market (spot, linear, inverse, option), so one
instance serves every Astra market of the venue once it holds their ccxt markets
(``set_markets_from_exchange``: shared by reference, no copy, no round trip).

What this class adds to ccxt's ``binance``, all of it venue-specific:

- ccxt chooses its per-product error tables by URL, recognising only Binance's own hosts;
  here the configured roots are recognised too, so a testnet, proxy or fake venue gets the
  same error classes as the live venue.
- The gateway names conditional orders the futures way (``STOP``, ``STOP_MARKET``,
  ``TAKE_PROFIT``, ``TAKE_PROFIT_MARKET`` with ``stopPrice``); on spot those become ccxt's
  ``limit``/``market`` with ``stopLossPrice``/``takeProfitPrice``, which ccxt sends as
  ``STOP_LOSS_LIMIT``, ``STOP_LOSS``, ``TAKE_PROFIT_LIMIT``, ``TAKE_PROFIT``.
- Conditional orders on futures are refused before any request: Binance keeps them apart
  as algo orders (``/fapi/v1/algoOrder``, ``clientAlgoId``), which the gateway's
  get/cancel/open-orders calls (regular orders) would never find again.
- An HTTP 5xx that ccxt leaves as a bare ``ExchangeError`` is raised as
  ``ExchangeNotAvailable`` quoting the status: no refusal, so a placement that met it is of
  unknown outcome (reconciled), never reported as failed.
- ``postOnly``: on spot ccxt sends ``LIMIT_MAKER``, which takes no ``timeInForce``; on
  futures ccxt sets ``timeInForce=GTX`` but a ``timeInForce`` param would overwrite it. So a
  post-only order drops ``GTC`` (the only time in force a resting maker order has); ``IOC``
  or ``FOK`` with ``postOnly`` is refused as an invalid order.
- ``reduceOnly`` on a spot order is refused (Binance spot has no such flag) rather than sent.
- An error ccxt recognised by its message is raised as ``binance <message>``; here it
  carries the venue's JSON body instead (``binance {"code":-2010,"msg":...}``), the form
  ``astra.trading.errors`` reads the venue's code from.
- A spot cancel answer's ``clientOrderId`` is the cancel request's own id; the order's is
  ``origClientOrderId``, which is what the parsed order reports here.
- ``fetch_positions()`` without arguments returns USD-M and COIN-M positions (ccxt's
  default is USD-M only), for the products the venue has markets of.
"""

from __future__ import annotations

from typing import Any

import ccxt.async_support as ccxt_async
from ccxt.base.errors import (
    BaseError,
    InvalidOrder,
    NotSupported,
)

from astra.venues.ccxt_errors import ServerErrorsUnavailable

__all__ = ["BinancePrivate", "private_api_urls"]

_TRIGGERS = {
    # gateway (ccxt futures) type -> (ccxt unified type, ccxt trigger param)
    "STOP": ("limit", "stopLossPrice"),
    "STOP_MARKET": ("market", "stopLossPrice"),
    "TAKE_PROFIT": ("limit", "takeProfitPrice"),
    "TAKE_PROFIT_MARKET": ("market", "takeProfitPrice"),
}


def _root(rest: str, suffix: str) -> str:
    """The host part of a product root (``https://api.binance.com/api`` -> ``https://
    api.binance.com``); the root itself when it does not end with ``suffix``."""
    rest = rest.rstrip("/")
    return rest[: -len(suffix)] if rest.endswith(suffix) else rest


def private_api_urls(spot: str, usdm: str, coinm: str, option: str) -> dict[str, str]:
    """ccxt ``urls['api']`` entries for every REST family a trading client may call, on the
    configured product roots (``BinanceUrls.*_rest``)."""
    spot, usdm, coinm, option = (u.rstrip("/") for u in (spot, usdm, coinm, option))
    spot_host = _root(spot, "/api")
    urls = {
        "public": f"{spot}/v3",
        "private": f"{spot}/v3",
        "v1": f"{spot}/v1",
        "sapi": f"{spot_host}/sapi/v1",
        "sapiV2": f"{spot_host}/sapi/v2",
        "sapiV3": f"{spot_host}/sapi/v3",
        "sapiV4": f"{spot_host}/sapi/v4",
        "fapiData": f"{_root(usdm, '/fapi')}/futures/data",
        "dapiData": f"{_root(coinm, '/dapi')}/futures/data",
        "eapiPublic": f"{option}/v1",
        "eapiPrivate": f"{option}/v1",
    }
    for name, root in (("fapi", usdm), ("dapi", coinm)):
        for kind in ("Public", "Private"):
            urls[f"{name}{kind}"] = f"{root}/v1"
            for version in (2, 3):
                urls[f"{name}{kind}V{version}"] = f"{root}/v{version}"
    return urls


class BinancePrivate(ServerErrorsUnavailable, ccxt_async.binance):
    """ccxt's binance for one set of credentials (see the module docstring)."""

    # (URL prefix, ccxt exceptions table), most specific first; set by the venue.
    astra_families: tuple[tuple[str, str], ...] = ()
    # Binance products the venue has markets of: "linear", "inverse".
    astra_position_kinds: tuple[str, ...] = ("linear",)

    def get_exceptions_by_url(self, url, exactOrBroad):
        if url:
            for prefix, family in self.astra_families:
                if url.startswith(prefix):
                    table = self.safe_dict(self.exceptions, family, {})
                    return self.safe_dict(table, exactOrBroad, {})
        return super().get_exceptions_by_url(url, exactOrBroad)

    def handle_errors(self, code, reason, url, method, headers, body, response, *request):
        try:
            return super().handle_errors(
                code, reason, url, method, headers, body, response, *request
            )
        except BaseError as exc:
            text = (body or "").strip()
            if text[:1] in ("{", "[") and text not in str(exc):
                raise type(exc)(f"{self.id} {text}") from None
            raise

    def parse_order(self, order, market=None):
        parsed = super().parse_order(order, market)
        original = order.get("origClientOrderId") if isinstance(order, dict) else None
        if original:  # a cancel's answer: clientOrderId names the cancel request
            parsed["clientOrderId"] = original
        return parsed

    async def create_order(self, symbol, type, side, amount, price=None, params=None):
        params = dict(params or {})
        market = self.market(symbol)
        if params.get("postOnly"):
            tif = params.pop("timeInForce", None)
            if tif is not None and str(tif).upper() not in ("GTC", "GTX", "PO"):
                raise InvalidOrder(f"{self.id} postOnly orders rest on the book: timeInForce "
                                   f"{tif} is not allowed with postOnly")
        if market["contract"] and str(type).upper() in _TRIGGERS:
            raise NotSupported(f"{self.id} conditional futures orders ({type}) are Binance algo "
                               "orders, which the gateway does not place yet")
        if market["spot"]:
            if params.pop("reduceOnly", False):
                raise InvalidOrder(f"{self.id} reduceOnly applies to futures, not to spot "
                                   f"{symbol}")
            trigger = _TRIGGERS.get(str(type).upper())
            if trigger is not None:
                type, name = trigger
                stop = params.pop("stopPrice", None)
                if stop is None:
                    stop = params.pop("triggerPrice", None)
                params[name] = stop
        return await super().create_order(symbol, type, side, amount, price, params)

    async def fetch_positions(self, symbols=None, params=None):
        if symbols is not None or params:
            return await super().fetch_positions(symbols, params or {})
        out: list[dict[str, Any]] = []
        default = self.options.get("defaultSubType")
        try:
            for kind in self.astra_position_kinds:
                # As an option, not a param: ccxt would send a subType param to the venue.
                self.options["defaultSubType"] = kind
                out += await super().fetch_positions(None, {})
        finally:
            self.options["defaultSubType"] = default
        return out
