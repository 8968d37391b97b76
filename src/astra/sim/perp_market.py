"""The perpetual public endpoints that read the trading side's record: funding rate history
(``fundingRate``), funding configuration (``fundingInfo``) and the index / mark price klines
(``indexPriceKlines`` with ``pair``, ``markPriceKlines`` with ``symbol``), under ``/fapi/v1``
and ``/fapi/v3`` as the futures docs list them, unsigned (MARKET_DATA).

Invariants: a funding row is written by ``PerpTrading`` at every funding settlement with the
rate that was applied; the kline record is sampled (once a simulated second) from the same
figures ``premiumIndex`` serves (see ``price_history``), and once more as a request is served:
sampled only once a second, the newest candle would otherwise close up to a second behind
``premiumIndex``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from .perp import PerpTrading
from .price_history import kline_rows
from .records import window
from .rest import SimApiError, int_param, json_response, kline_window, market_state
from .state import now_ms
from .views import FUNDING_CLAMP, INTEREST_RATE

__all__ = ["market_routes"]

class _Market:
    def __init__(self, trading: PerpTrading) -> None:
        self.trading = trading

    def _symbol(self, request: web.Request, name: str = "symbol", required: bool = False
                ) -> str | None:
        state = market_state(request, self.trading.states, name, required)
        return state.market.symbol if state is not None else None

    async def funding_rate(self, request: web.Request) -> web.Response:
        symbol = self._symbol(request)
        limit = int_param(request, "limit", 100, maximum=1000)
        start, end = int_param(request, "startTime"), int_param(request, "endTime")
        if start is not None and end is not None and start > end:
            raise SimApiError(-1023, "Start time is greater than end time.")
        rows = [r for r in self.trading.funding_history
                if (symbol is None or r["symbol"] == symbol)
                and (start is None or r["fundingTime"] >= start)
                and (end is None or r["fundingTime"] <= end)]
        # The docs: ascending; from startTime the first `limit`, otherwise the latest `limit`.
        return json_response(window(rows, limit, start is not None))

    async def funding_info(self, request: web.Request) -> web.Response:
        symbol = self._symbol(request)
        interval = self.trading.funding_interval_ms
        hours = interval // 3_600_000 if interval % 3_600_000 == 0 else interval / 3_600_000
        now = now_ms()
        return json_response([
            {
                "symbol": s,
                "interestRate": f"{INTEREST_RATE:.8f}",
                "time": now,
                "fundingIntervalHours": hours,
                # The rate is clamp(premium, +-FUNDING_CLAMP) + interest: these are its bounds.
                "fundingFeeCap": round(FUNDING_CLAMP + INTEREST_RATE, 8),
                "fundingFeeFloor": round(-FUNDING_CLAMP + INTEREST_RATE, 8),
            }
            for s in self.trading.states if symbol is None or s == symbol
        ])

    def _klines(self, kind: str, param: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            symbol = self._symbol(request, param, required=True)
            interval, limit, start, end = kline_window(request)
            self.trading.sample_prices()  # the newest candle closes at premiumIndex's figures
            candles = self.trading.price_history.klines(symbol, kind, interval, start, end, limit)
            return json_response(kline_rows(candles, interval))

        return handler


def market_routes(trading: PerpTrading) -> list[web.RouteDef]:
    m = _Market(trading)
    endpoints = {
        "fundingRate": m.funding_rate,
        "fundingInfo": m.funding_info,
        "indexPriceKlines": m._klines("index", "pair"),
        "markPriceKlines": m._klines("mark", "symbol"),
    }
    return [web.get(f"/fapi/{v}/{path}", h) for v in ("v1", "v3") for path, h in endpoints.items()]
