"""Binance's documented public REST request weights (IP weight) and budgets, per product
(``VenueMarket.kind``: spot, usdm, coinm, option); Binance counts each product apart.

Sources: spot, binance-spot-api-docs ``rest-api.md`` (depth 5/25/50/250 by limit, aggTrades
4, exchangeInfo 20) and ``enums.md`` (REQUEST_WEIGHT 6000 a minute); USD-M and COIN-M, the
futures docs and ccxt's ``fapi``/``dapi`` costs (depth 2/5/10/20 by limit, aggTrades 20,
exchangeInfo 1; 2400 a minute); options, depth as futures, trades 5, exchangeInfo 1 and 2400
a minute (REQUEST_WEIGHT of the options docs' exchangeInfo sample,
``tests/venues/binance/data/eapi_exchangeInfo.json``).

Most rows one recent-trades request may ask for (``TRADES_MAX_LIMITS``): aggTrades "Default
500; max 1000" on spot, USD-M and COIN-M; options ``/eapi/v1/trades`` "Default:100 Max:500"
(Binance's Recent-Trades-List page); a larger ``limit`` is refused by the venue.
"""

from __future__ import annotations

__all__ = [
    "BUDGETS",
    "DEPTH_WEIGHTS",
    "EXCHANGE_INFO_WEIGHTS",
    "TRADES_MAX_LIMITS",
    "TRADES_WEIGHTS",
]

_FUTURES_DEPTH = {50: 2, 100: 5, 500: 10, 1000: 20}  # max limit -> weight
DEPTH_WEIGHTS: dict[str, dict[int, float]] = {
    "spot": {100: 5, 500: 25, 1000: 50, 5000: 250},
    "usdm": _FUTURES_DEPTH,
    "coinm": _FUTURES_DEPTH,
    "option": _FUTURES_DEPTH,
}
TRADES_WEIGHTS = {"spot": 4, "usdm": 20, "coinm": 20, "option": 5}  # aggTrades; eapi trades
TRADES_MAX_LIMITS = {"spot": 1000, "usdm": 1000, "coinm": 1000, "option": 500}
EXCHANGE_INFO_WEIGHTS = {"spot": 20, "usdm": 1, "coinm": 1, "option": 1}
BUDGETS = {"spot": 6000, "usdm": 2400, "coinm": 2400, "option": 2400}  # weight a minute
