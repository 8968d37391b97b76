"""Samples written from Binance's current docs: every product's depth diff and trade decode
with the shared Structs, and each product's REST and stream routes (USD-M, COIN-M, options)
reach the right paths of a small local server speaking the documented shapes."""

from __future__ import annotations

import asyncio
import contextlib
import json

import msgspec
import pytest
from aiohttp import web

from astra.core import Side
from astra.venues.aster.feed import DiffSync, SequenceGap
from astra.venues.binance import BinanceUrls, BinanceVenue
from astra.venues.binance.schemas import AggTrade, DepthUpdate, OptionRecentTrade, OptionTrade

SPOT_DIFF = {
    "e": "depthUpdate", "E": 1672515782136, "s": "BNBBTC", "U": 157, "u": 160,
    "b": [["0.0024", "10"]], "a": [["0.0026", "100"]],
}  # fmt: skip
USDM_DIFF = {
    "e": "depthUpdate", "E": 123456789, "T": 123456788, "s": "BTCUSDT", "U": 157, "u": 160,
    "pu": 149, "b": [["0.0024", "10"]], "a": [["0.0026", "100"]],
}  # fmt: skip
COINM_DIFF = {
    "e": "depthUpdate", "E": 1591270260907, "T": 1591270260891, "s": "BTCUSD_200626",
    "ps": "BTCUSD", "U": 17285681, "u": 17285702, "pu": 17285675,
    "b": [["9517.6", "10"]], "a": [["9518.5", "45"]],
}  # fmt: skip
OPTION_DIFF = {
    "e": "depthUpdate", "E": 1762866729459, "T": 1762866729358, "s": "BTC-251123-126000-C",
    "U": 465, "u": 465, "pu": 464, "b": [["1100.000", "0.6000"]], "a": [["1300.000", "0.6000"]],
}  # fmt: skip
OPTION_TRADE = {
    "e": "trade", "E": 1762856064204, "T": 1762856064203, "s": "BTC-251123-126000-C", "t": 4,
    "p": "1300.000", "q": "0.1000", "X": "MARKET", "S": "BUY", "m": False,
}  # fmt: skip
FUTURES_AGG_TRADE = {
    "e": "aggTrade", "E": 123456789, "s": "BTCUSDT", "a": 5933014, "p": "0.001", "q": "100",
    "f": 100, "l": 105, "T": 123456785, "m": True,
}  # fmt: skip


@pytest.mark.parametrize("sample", [SPOT_DIFF, USDM_DIFF, COINM_DIFF, OPTION_DIFF])
def test_every_products_depth_diff_decodes(sample):
    event = msgspec.json.decode(json.dumps(sample).encode(), type=DepthUpdate)
    assert (event.U, event.u) == (sample["U"], sample["u"])
    assert event.pu == sample.get("pu", msgspec.UNSET)
    bids, asks = event.to_changes()
    assert bids == [(float(p), float(q)) for p, q in sample["b"]]
    assert asks == [(float(p), float(q)) for p, q in sample["a"]]


def test_option_diffs_chain_by_pu():
    sync = DiffSync(use_pu=True)
    step = msgspec.convert(OPTION_DIFF, DepthUpdate)
    sync.push(step)
    # Futures-style bridge, U <= lastUpdateId <= u (a snapshot at 464 would be refused: the
    # rule is the documented one, although pu == 464 shows it would continue).
    assert [e.u for e in sync.start(465)] == [465]
    nxt = msgspec.structs.replace(step, U=466, u=468, pu=465)
    assert sync.push(nxt)
    with pytest.raises(SequenceGap):
        sync.push(msgspec.structs.replace(step, U=470, u=471, pu=469))


def test_trades_decode_with_the_taker_side():
    option = msgspec.convert(OPTION_TRADE, OptionTrade).to_trade()
    assert (option.price, option.quantity, option.side, option.trade_id) == (
        1300.0,
        0.1,
        Side.BUY,
        "4",
    )
    agg = msgspec.convert(FUTURES_AGG_TRADE, AggTrade).to_trade()
    assert (agg.side, agg.time, agg.trade_id) == (Side.SELL, 123456785, "5933014")
    rest = {"id": 1, "symbol": "ETH-230216-1500-C", "price": "35.5", "qty": "0.03",
            "quoteQty": "1.065", "side": -1, "time": 1676366446072}  # fmt: skip
    row = msgspec.convert(rest, OptionRecentTrade).to_trade()
    assert (row.price, row.quantity, row.side, row.time) == (35.5, 0.03, Side.SELL, 1676366446072)


class DocServer:
    """Answers every product's depth and trades routes with the documented shapes, logs
    each request path, and streams OPTION_DIFF-shaped events on any ``/stream`` connection."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.requests: list[dict] = []

    async def depth(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        body = {"lastUpdateId": 465, "bids": [["1000.0", "0.1000"]], "asks": [["1900.0", "0.1"]]}
        if not request.path.startswith("/api/"):
            body |= {"E": 1762780909677, "T": 1762780909676}
        return web.json_response(body)

    async def trades(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        if request.path.startswith("/eapi/"):
            row = {"id": 7, "symbol": "X", "price": "35.5", "qty": "0.03", "quoteQty": "1.065"}
            return web.json_response([row | {"side": 1, "time": 1676366446072}])
        agg = {k: v for k, v in FUTURES_AGG_TRADE.items() if k not in ("e", "E", "s")}
        return web.json_response([agg | {"nq": "100"}])  # a field added later is ignored

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        """A combined-stream endpoint: each SUBSCRIBE is answered, then its streams get
        OPTION_DIFF-shaped events, wrapped as ``{"stream", "data"}``."""
        self.paths.append(request.path)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            req = json.loads(msg.data)
            self.requests.append(req)
            await ws.send_str(json.dumps({"result": None, "id": req["id"]}))
            for name in req["params"] if req["method"] == "SUBSCRIBE" else ():
                for u in (465, 466, 467):
                    data = OPTION_DIFF | {"U": u, "u": u, "pu": u - 1}
                    await ws.send_str(json.dumps({"stream": name, "data": data}))
        return ws


@pytest.fixture
async def doc_server():
    server = DocServer()
    app = web.Application()
    for prefix in ("/api/v3", "/fapi/v1", "/dapi/v1", "/eapi/v1"):
        app.router.add_get(f"{prefix}/depth", server.depth)
    for prefix in ("/api/v3", "/fapi/v1", "/dapi/v1"):
        app.router.add_get(f"{prefix}/aggTrades", server.trades)
    app.router.add_get("/eapi/v1/trades", server.trades)
    app.router.add_get("/{root:.*}/stream", server.stream)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.base_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    yield server
    await runner.cleanup()


async def test_rest_routes_per_product(doc_server, exchange_info):
    venue = BinanceVenue(urls=BinanceUrls.at(doc_server.base_url), exchange_info=exchange_info)
    try:
        markets = await venue.load_markets()
        await asyncio.wait_for(_check_routes(venue, markets, doc_server), 10)
    finally:
        await venue.close()


async def _check_routes(venue, markets, doc_server) -> None:
    for symbol, prefix, trades in (
        ("BINANCE-SPOT-NKN-USDT", "/api/v3", "aggTrades"),
        ("BINANCE-FUT-BTC-USDT-210924", "/fapi/v1", "aggTrades"),
        ("BINANCE-FUT-BTC-USD-211231-COINM", "/dapi/v1", "aggTrades"),
        ("BINANCE-OPT-BTC-USDT-260327-100000-C", "/eapi/v1", "trades"),
    ):
        doc_server.paths.clear()
        snap = await venue.snapshot(markets[symbol])
        (trade,) = await venue.recent_trades(markets[symbol], 10)
        assert doc_server.paths == [f"{prefix}/depth", f"{prefix}/{trades}"]
        assert snap.last_update_id == 465
        assert (snap.bids, snap.asks) == ([(1000.0, 0.1)], [(1900.0, 0.1)])
        assert snap.timestamp > 1762780909675  # E/T when sent, else arrival time
        assert trade.trade_id in ("5933014", "7")


async def test_option_book_feed_over_the_public_route(doc_server, exchange_info, book_sink):
    venue = BinanceVenue(urls=BinanceUrls.at(doc_server.base_url), exchange_info=exchange_info)
    market = (await venue.load_markets())["BINANCE-OPT-BTC-USDT-260327-100000-C"]
    sink = book_sink()
    task = asyncio.create_task(venue.run_book_feed(market, sink))
    try:
        await sink.until(lambda: sink.book is not None and sink.book.update_id == 467)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await venue.close()
    assert "/eoptions/stream" in doc_server.paths
    assert doc_server.requests[0] | {"id": 0} == {
        "method": "SUBSCRIBE", "params": ["btc-260327-100000-c@depth@100ms"], "id": 0
    }  # fmt: skip
    assert sink.kinds()[0] == "snapshot" and "resync" not in sink.kinds()
    assert sink.book.bids == {1000.0: 0.1, 1100.0: 0.6} and sink.book.asks[1300.0] == 0.6
