"""The simulator's public REST API: spot under ``/api/{v1,v3}``, perpetuals under
``/fapi/{v1,v3}``, with the Aster docs' paths, parameters, response shapes and errors.

Errors are Aster's ``{"code": <negative int>, "msg": "..."}`` with HTTP 400 for a bad
request and 404 for an unknown path; nothing a client sends produces a 500. Depth is read
from the matching engine on the event loop that runs it, so ``lastUpdateId`` is exact.

Where the docs and ccxt disagree, the docs win. Spot ``/trades`` follows the spot docs:
``qty`` is the quote quantity and ``baseQty`` the base quantity (the documented example
``price 1.01, qty 5, baseQty 4.95049505``); perpetual ``/trades`` has ``qty`` (base) and
``quoteQty``.

One documented extension: each ``exchangeInfo`` symbol carries the venue's base-tier fees,
``makerCommissionRate`` and ``takerCommissionRate`` (decimal fractions as strings, as
``commissionRate`` answers them), so a client learns every simulated venue's fees without
credentials; ccxt and Aster clients ignore keys they do not know.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal

import msgspec
from aiohttp import web

from astra.venues.aster import schemas as wire

from .feeds import Feeds
from .filters import FilterError
from .markets import format_fixed
from .orders import OrderError
from .ratelimit import RateLimitError
from .signing import AuthError
from .state import KLINE_INTERVALS, MarketState, bucket_close, now_ms
from .views import book_ticker, ticker_stats

__all__ = [
    "SimApiError", "error_middleware", "int_param", "json_response", "market_state",
    "ppm_rate", "request_weight", "rest_routes",
]

log = logging.getLogger(__name__)
DEPTH_LIMITS = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}  # limit -> weight
_encode = msgspec.json.Encoder().encode


class SimApiError(Exception):
    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def json_response(body: object, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON body encoded once with msgspec (every simulator answer)."""
    return web.Response(body=_encode(body), content_type="application/json", headers=headers)



def _error(status: int, code: int, msg: str) -> web.Response:
    """An error in the venue's format: ``{"code": <negative int>, "msg": "..."}``."""
    return web.Response(
        body=_encode({"code": code, "msg": msg}), status=status, content_type="application/json"
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
    try:
        return await handler(request)
    except (SimApiError, OrderError, FilterError, AuthError, RateLimitError) as exc:
        return _error(getattr(exc, "status", 400), exc.code, exc.msg)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
        return _error(
            exc.status, -1020, f"This operation is not supported: {request.method} {request.path}"
        )
    except (asyncio.CancelledError, web.HTTPException):
        raise
    except Exception:  # a bug, never bad input: log it, answer in the venue's format
        log.exception("simulator error on %s %s", request.method, request.path)
        return _error(500, -1000, "An unknown error occurred while processing the request.")


MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31: later timestamps are not times


def int_param(
    request: web.Request, name: str, default: int | None = None, *, maximum: int | None = None
) -> int | None:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    # isascii(): str.isdigit() also accepts digits like '²' that int() then rejects.
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise SimApiError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        )
    value = int(text)
    if name.endswith("Time"):  # epoch milliseconds: 0 is a time, year 10000 is not
        if value > MAX_TIME_MS:
            raise SimApiError(-1130, f"Data sent for parameter '{name}' is not valid.")
    elif maximum is not None and not 0 < value <= maximum:
        raise SimApiError(-1130, f"Data sent for parameter '{name}' is not valid.")
    return value


def kline_window(request: web.Request) -> tuple[str, int, int | None, int | None]:
    """``interval``, ``limit``, ``startTime``, ``endTime`` of a klines request, as documented
    (shared by klines and the perpetuals' index/mark price klines)."""
    interval = request.query.get("interval")
    if not interval:
        raise SimApiError(
            -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed."
        )
    if interval not in KLINE_INTERVALS:
        raise SimApiError(-1120, "Invalid interval.")
    limit = int_param(request, "limit", 500, maximum=1500)
    start, end = int_param(request, "startTime"), int_param(request, "endTime")
    if start is not None and end is not None and start > end:
        raise SimApiError(-1023, "Start time is greater than end time.")
    assert limit is not None  # it has a default
    return interval, limit, start, end


def market_state(request: web.Request, states: dict[str, MarketState], name: str = "symbol",
                 required: bool = True) -> MarketState | None:
    """The market a public request names in ``name`` (``pair`` for index klines): -1102 when
    it is required and absent or empty, -1121 when no market has that symbol."""
    symbol = request.query.get(name)
    if not symbol:
        if not required:
            return None
        raise SimApiError(
            -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
        )
    state = states.get(symbol)
    if state is None:
        raise SimApiError(-1121, "Invalid symbol.")
    return state


class _Side:
    """The REST handlers of one side (spot or perpetual)."""

    def __init__(
        self,
        kind: str,
        states: dict[str, MarketState],
        feeds: Feeds,
        rate_limits: list[dict],
        fees: tuple[int, int] | None = None,
    ) -> None:
        self.rate_limits = rate_limits
        # (maker, taker) ppm -> the exchangeInfo extension's strings
        self.fees = None if fees is None else {
            "makerCommissionRate": ppm_rate(fees[0]), "takerCommissionRate": ppm_rate(fees[1])
        }
        self.kind = kind
        self.states = states  # by venue symbol, e.g. "BTCUSDT"
        self.feeds = feeds

    def _each(self, request: web.Request, build: Callable[[MarketState], object]) -> web.Response:
        state = market_state(request, self.states, required=False)
        if state is not None:
            return json_response(build(state))
        return json_response([build(s) for s in self.states.values()])

    async def ping(self, request: web.Request) -> web.Response:
        return json_response({})

    async def time(self, request: web.Request) -> web.Response:
        return json_response({"serverTime": now_ms()})

    async def exchange_info(self, request: web.Request) -> web.Response:
        info: dict = {"timezone": "UTC", "serverTime": now_ms()}
        if self.kind == "perp":
            info["futuresType"] = "U_MARGINED"
        info["rateLimits"] = self.rate_limits
        info["exchangeFilters"] = []
        assets = dict.fromkeys(
            a for s in self.states.values() for a in (s.market.quote, s.market.base)
        )
        if self.kind == "perp":
            info["assets"] = [
                {"asset": a, "marginAvailable": True, "autoAssetExchange": "0"} for a in assets
            ]
        else:
            info["assets"] = [{"asset": a} for a in assets]
        info["symbols"] = [s.market.exchange_info_symbol() for s in self.states.values()]
        if self.fees is not None:
            for entry in info["symbols"]:
                entry.update(self.fees)
        return json_response(info)

    async def depth(self, request: web.Request) -> web.Response:
        state = market_state(request, self.states)
        limit = int_param(request, "limit", 500 if self.kind == "perp" else 100)
        if limit not in DEPTH_LIMITS:
            raise SimApiError(-4021, f"{limit} is not a valid depth limit.")
        bids, asks = state.engine.depth(limit)
        fmt_p, fmt_q = state.market.format_price, state.market.format_qty
        return json_response(
            wire.DepthSnapshot(
                lastUpdateId=state.engine.update_id,
                E=now_ms(),
                T=state.last_change_ms,
                bids=[(fmt_p(p), fmt_q(q)) for p, q in bids],
                asks=[(fmt_p(p), fmt_q(q)) for p, q in asks],
            )
        )

    def _trade_rows(self, state: MarketState, records: list) -> list[dict]:
        m = state.market
        qdp = m.price_dp + m.qty_dp
        rows = []
        for t in records:
            quote = format_fixed(t.price * t.qty, qdp)
            if self.kind == "perp":
                rows.append(
                    {
                        "id": t.id,
                        "price": m.format_price(t.price),
                        "qty": m.format_qty(t.qty),
                        "quoteQty": quote,
                        "time": t.time,
                        "isBuyerMaker": t.buyer_maker,
                    }
                )
            else:
                rows.append(
                    {
                        "id": t.id,
                        "price": m.format_price(t.price),
                        "qty": quote,
                        "baseQty": m.format_qty(t.qty),
                        "time": t.time,
                        "isBuyerMaker": t.buyer_maker,
                    }
                )
        return rows

    async def trades(self, request: web.Request) -> web.Response:
        state = market_state(request, self.states)
        limit = int_param(request, "limit", 500, maximum=1000)
        records = list(state.trades)[-limit:]
        return json_response(self._trade_rows(state, records))

    async def historical_trades(self, request: web.Request) -> web.Response:
        state = market_state(request, self.states)
        limit = int_param(request, "limit", 500, maximum=1000)
        from_id = int_param(request, "fromId")
        records = list(state.trades)
        if from_id is None:
            records = records[-limit:]
        else:
            records = [t for t in records if t.id >= from_id][:limit]
        return json_response(self._trade_rows(state, records))

    async def agg_trades(self, request: web.Request) -> web.Response:
        state = market_state(request, self.states)
        limit = int_param(request, "limit", 500, maximum=1000)
        from_id = int_param(request, "fromId")
        start, end = int_param(request, "startTime"), int_param(request, "endTime")
        if start is not None and end is not None:
            if start > end:
                raise SimApiError(-1023, "Start time is greater than end time.")
            if end - start > 3_600_000:
                raise SimApiError(-1127, "More than 1 hours between startTime and endTime.")
        rows = list(state.aggs)
        if from_id is not None:
            rows = [a for a in rows if a.id >= from_id][:limit]
        elif start is not None or end is not None:
            rows = [
                a
                for a in rows
                if (start is None or a.time >= start) and (end is None or a.time <= end)
            ][:limit]
        else:
            rows = rows[-limit:]
        m = state.market
        return json_response(
            [
                {
                    "a": a.id,
                    "p": m.format_price(a.price),
                    "q": m.format_qty(a.qty),
                    "f": a.first,
                    "l": a.last,
                    "T": a.time,
                    "m": a.buyer_maker,
                }
                for a in rows
            ]
        )

    async def klines(self, request: web.Request) -> web.Response:
        state = market_state(request, self.states)
        interval, limit, start, end = kline_window(request)
        m = state.market
        qdp = m.price_dp + m.qty_dp
        rows = []
        for c in state.klines(interval, start, end, limit):
            row = [
                c.open_time,
                m.format_price(c.open),
                m.format_price(c.high),
                m.format_price(c.low),
                m.format_price(c.close),
                m.format_qty(c.volume),
                bucket_close(interval, c.open_time),
                format_fixed(c.quote, qdp),
                c.trades,
                m.format_qty(c.taker_buy),
                format_fixed(c.taker_buy_quote, qdp),
            ]
            if self.kind == "perp":
                row.append("0")  # the futures docs' trailing "Ignore" field
            rows.append(row)
        return json_response(rows)

    def _ticker(self, state: MarketState) -> dict:
        s = ticker_stats(state)
        book = book_ticker(state, self.kind)
        row = {
            "symbol": state.market.symbol,
            "priceChange": s["change"],
            "priceChangePercent": s["change_pct"],
            "weightedAvgPrice": s["wavg"],
            "prevClosePrice": s["open"],
            "lastPrice": s["last"],
            "lastQty": s["last_qty"],
        }
        if self.kind == "spot":
            row.update(
                bidPrice=book.b if book else "0",
                bidQty=book.B if book else "0",
                askPrice=book.a if book else "0",
                askQty=book.A if book else "0",
            )
        row.update(
            openPrice=s["open"],
            highPrice=s["high"],
            lowPrice=s["low"],
            volume=s["volume"],
            quoteVolume=s["quote"],
            openTime=s["open_time"],
            closeTime=s["close_time"],
            firstId=s["first"],
            lastId=s["last_id"],
            count=s["count"],
        )
        if self.kind == "spot":
            row.update(baseAsset=state.market.base, quoteAsset=state.market.quote)
        return row

    async def ticker_24hr(self, request: web.Request) -> web.Response:
        return self._each(request, self._ticker)

    async def ticker_price(self, request: web.Request) -> web.Response:
        def price(state: MarketState) -> dict:
            last = state.last_trade()
            return {
                "symbol": state.market.symbol,
                "price": state.market.format_price(last.price if last else 0),
                "time": last.time if last else now_ms(),
            }

        return self._each(request, price)

    async def book_ticker(self, request: web.Request) -> web.Response:
        def top(state: MarketState) -> dict:
            t = book_ticker(state, self.kind)
            zero_p, zero_q = state.market.format_price(0), state.market.format_qty(0)
            return {
                "symbol": state.market.symbol,
                "bidPrice": t.b if t else zero_p,
                "bidQty": t.B if t else zero_q,
                "askPrice": t.a if t else zero_p,
                "askQty": t.A if t else zero_q,
                "time": state.last_change_ms,
            }

        return self._each(request, top)

    async def premium_index(self, request: web.Request) -> web.Response:
        def index(state: MarketState) -> dict:
            mp = self.feeds.mark_price_of(state)
            return {
                "symbol": mp.s,
                "markPrice": mp.p,
                "indexPrice": mp.i,
                "estimatedSettlePrice": mp.P,
                "lastFundingRate": mp.r,
                "nextFundingTime": mp.T,
                "interestRate": "0.00010000",
                "time": mp.E,
            }

        return self._each(request, index)


def request_weight(kind: str) -> Callable[[web.Request], int | None]:
    """The documented weight of a request to ``kind``'s REST API; None when not counted (the
    other side's paths, WebSocket upgrades, the simulator's admin endpoint)."""
    root = "/fapi/" if kind == "perp" else "/api/"
    heavy = {"allOrders": 5, "account": 5, "userTrades": 5, "historicalTrades": 20,
             "commissionRate": 20, "balance": 5, "positionRisk": 5, "income": 30,
             "asset/wallet/transfer": 5, "countdownCancelAll": 10, "adlQuantile": 5,
             "transactionHistory": 30}
    by_method = {("POST", "batchOrders"): 5, ("GET", "multiAssetsMargin"): 30,
                 ("GET", "positionSide/dual"): 30}
    per_symbol = {"openOrders": 40, "ticker/24hr": 40, "ticker/price": 2,
                  "ticker/bookTicker": 2, "forceOrders": 50}

    def weight(request: web.Request) -> int | None:
        path = request.path
        if not path.startswith(root):
            return None
        name = path.split("/", 3)[-1]
        if name == "depth":
            text = request.query.get("limit", "")
            ok = text.isascii() and text.isdigit() and len(text) < 6
            return DEPTH_LIMITS.get(int(text), 2) if ok else 2
        if name in per_symbol and not request.query.get("symbol"):
            return per_symbol[name]
        if name == "forceOrders":
            return 20
        # The futures docs' table, by limit, for every kline endpoint (spot klines weigh 1).
        if name in ("indexPriceKlines", "markPriceKlines") or (kind == "perp" and name == "klines"):
            text = request.query.get("limit", "")
            limit = int(text) if text.isascii() and text.isdigit() and len(text) < 6 else 500
            return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
        return by_method.get((request.method, name)) or heavy.get(name, 1)

    return weight


def ppm_rate(ppm: int) -> str:
    """A fee in parts per million as a decimal fraction string: 400 -> "0.0004"."""
    return f"{Decimal(ppm).scaleb(-6).normalize():f}"


def rest_routes(
    kind: str,
    states: dict[str, MarketState],
    feeds: Feeds,
    rate_limits: list[dict],
    fees: tuple[int, int] | None = None,
) -> list[web.RouteDef]:
    side = _Side(kind, states, feeds, rate_limits, fees)
    root = "/fapi" if kind == "perp" else "/api"
    endpoints: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
        "ping": side.ping,
        "time": side.time,
        "exchangeInfo": side.exchange_info,
        "depth": side.depth,
        "trades": side.trades,
        "historicalTrades": side.historical_trades,
        "aggTrades": side.agg_trades,
        "klines": side.klines,
        "ticker/24hr": side.ticker_24hr,
        "ticker/price": side.ticker_price,
        "ticker/bookTicker": side.book_ticker,
    }
    if kind == "perp":
        endpoints["premiumIndex"] = side.premium_index
    return [
        web.get(f"{root}/{version}/{path}", handler)
        for version in ("v1", "v3")
        for path, handler in endpoints.items()
    ]
