"""The terminal's market-data pages in real Chromium against a real ``astra serve``:
markets (search, venue and type filters, SMART rows, live quotes), market (the live ladder
from ``WS /ws`` agrees with ``GET /orderbook``, changes, trades arrive, the depth chart draws),
the SMART book's venue colours and legend, venues (``GET /feeds`` rows), and the local-book
logic of ``lib/book.js`` run in the browser on crafted messages."""

from __future__ import annotations

import json
import math
import os
import signal
import urllib.parse
import urllib.request
from pathlib import Path

from tests.web.browser import shot, sign_in

SPOT = "SIM-SPOT-BTC-USDT"
SMART_SPOT = "SMART-SPOT-BTC-USDT"
DRIFT = 0.01  # the simulator's price may move this much (1%) between two reads


def _rest(served, path: str, **query):
    url = served.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
    request = urllib.request.Request(url, headers=served.headers())
    with urllib.request.urlopen(request, timeout=15) as resp:
        return json.loads(resp.read())


def _route(page, route: str) -> None:
    page.evaluate("route => { location.hash = route; }", route)


def _visible_markets(page) -> list[str]:
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid=markets-row]')]
        .filter(r => !r.hidden).map(r => r.dataset.market)""")


def _ladder(page) -> dict:
    return page.evaluate("""() => {
        const read = (id) => [...document.querySelectorAll(`[data-testid=${id}]`)]
            .filter(r => r.dataset.price !== undefined)
            .map(r => [Number(r.dataset.price), Number(r.children[3].textContent)]);
        // Asks are listed worst first (the best right above the spread): best first here.
        return {bids: read('ladder-bid-row'), asks: read('ladder-ask-row').reverse(),
                updateId: Number(document.querySelector('[data-testid=market-update-id]')
                    .dataset.updateId)};
    }""")


def _wait_synced(page, timeout: float = 20_000) -> None:
    page.wait_for_function("""() => {
        const s = document.querySelector('[data-testid=market-state]');
        return s && s.textContent === 'synced' &&
            document.querySelectorAll('[data-testid=ladder-bid-row][data-price]').length > 0 &&
            document.querySelectorAll('[data-testid=ladder-ask-row][data-price]').length > 0;
    }""", timeout=timeout)


def _on_tick(price: float, tick: float) -> bool:
    return math.isclose(round(price / tick) * tick, price, abs_tol=tick * 1e-6)


def test_markets_lists_every_venue_and_smart_and_filters_as_you_type(page, served):
    sign_in(page, served)
    page.get_by_test_id("markets-row").first.wait_for()
    listed = {venue: [m["symbol"] for m in _rest(served, "/markets", exchange=venue)]
              for venue in ("SIM", "SIM2", "SIM3", "SMART")}
    every = sorted(s for symbols in listed.values() for s in symbols)
    assert sorted(_visible_markets(page)) == every
    for symbol in (SPOT, "SIM2-SPOT-BTC-USDT", "SIM3-SPOT-BTC-USDT", SMART_SPOT):
        assert symbol in every
    # A live quote shows for the visible rows (GET /bbo).
    page.wait_for_function(f"""() => {{
        const row = document.querySelector('[data-testid=markets-row][data-market="{SPOT}"]');
        const bid = Number(row.querySelector('[data-testid=markets-bid]').textContent
            .replace(/,/g, ''));
        const ask = Number(row.querySelector('[data-testid=markets-ask]').textContent
            .replace(/,/g, ''));
        return bid > 0 && ask > bid;
    }}""")
    page.wait_for_function("""() => [...document.querySelectorAll(
        '[data-testid=markets-bid]')].every(c => c.textContent !== '…')""",
        timeout=60_000)  # the first round starts every market's feed: slow on a busy machine
    shot(page, "markets")

    search = page.get_by_test_id("markets-search")
    search.press_sequentially("sim2 btc")
    expected = sorted(s for s in listed["SIM2"] if "-BTC-" in s)
    page.wait_for_function("n => [...document.querySelectorAll('[data-testid=markets-row]')]"
                           ".filter(r => !r.hidden).length === n", arg=len(expected))
    assert sorted(_visible_markets(page)) == expected == ["SIM2-PERP-BTC-USDT",
                                                          "SIM2-SPOT-BTC-USDT"]
    assert page.get_by_test_id("markets-count").text_content() == \
        f"2 of {len(every)} markets"
    assert "q=sim2+btc" in page.evaluate("location.hash")  # the filter survives a reload

    page.get_by_test_id("markets-type-PERP").click()
    assert _visible_markets(page) == ["SIM2-PERP-BTC-USDT"]
    page.get_by_test_id("markets-type-PERP").click()  # again: every type

    search.fill("")
    search.press_sequentially("zzz")
    page.get_by_test_id("markets-empty").wait_for(state="visible")
    assert _visible_markets(page) == []

    search.fill("")
    page.get_by_test_id("markets-venue-SMART").click()
    assert sorted(_visible_markets(page)) == sorted(listed["SMART"])
    search.press_sequentially("spot btc")
    assert _visible_markets(page) == [SMART_SPOT]
    page.locator(f'[data-testid=markets-row][data-market="{SMART_SPOT}"]').click()
    page.wait_for_function(f"() => location.hash === '#/market?market={SMART_SPOT}'")
    assert page.get_by_test_id("market-title").text_content() == SMART_SPOT


def test_market_ladder_is_live_agrees_with_the_rest_book_and_trades_arrive(page, served):
    sign_in(page, served)
    _route(page, f"#/market?market={SPOT}")
    _wait_synced(page)
    tick = next(m for m in _rest(served, "/markets", exchange="SIM")
                if m["symbol"] == SPOT)["tickSize"]

    first = _ladder(page)
    rest = _rest(served, "/orderbook", market=SPOT, depth=20)
    bids, asks = [p for p, _ in first["bids"]], [p for p, _ in first["asks"]]
    assert len(bids) >= 3 and len(asks) >= 3 and max(len(bids), len(asks)) <= 16
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
    assert bids[0] < asks[0]
    assert all(_on_tick(p, tick) for p in bids + asks)
    assert all(q > 0 for _, q in first["bids"] + first["asks"])
    rest_mid = (rest["bids"][0]["price"] + rest["asks"][0]["price"]) / 2
    assert abs(bids[0] - rest["bids"][0]["price"]) / rest_mid < DRIFT
    assert abs(asks[0] - rest["asks"][0]["price"]) / rest_mid < DRIFT
    assert abs(first["updateId"] - rest["updateId"]) < 10_000  # the same venue sequence

    # The book moves: a later updateId, and the top of the ladder changes.
    page.wait_for_function("""([id, top]) => {
        const el = document.querySelector('[data-testid=market-update-id]');
        const rows = [...document.querySelectorAll('[data-testid=ladder-bid-row][data-price]')]
            .slice(0, 5).map(r => r.dataset.price + ':' + r.children[3].textContent).join();
        return Number(el.dataset.updateId) > id && rows !== top;
    }""", arg=[first["updateId"], ",".join(
        f"{p}:{q}" for p, q in first["bids"][:5])])
    later = _ladder(page)
    assert later["updateId"] > first["updateId"]
    assert later["bids"][0][0] < later["asks"][0][0]
    assert page.get_by_test_id("market-resyncs").text_content().split(" · ")[1] == "0"  # no gap

    # Trades: live rows from WS TRADE, near the book's prices.
    page.wait_for_function("() => Number(document.querySelector('[data-testid=trades-count]')"
                           ".textContent) > 0")
    live = page.evaluate("""() => [...document.querySelectorAll(
        '[data-testid=trades-row][data-live="1"]')].map(r => Number(r.dataset.price))""")
    mid = (later["bids"][0][0] + later["asks"][0][0]) / 2
    assert live and all(abs(p - mid) / mid < DRIFT for p in live)
    page.wait_for_function("() => Number(document.querySelector('[data-testid=market-rate]')"
                           ".textContent) > 0")
    # The depth chart drew both sides (green and red pixels on the canvas).
    colours = page.evaluate("""() => {
        const c = document.querySelector('[data-testid=depth-chart]');
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let green = 0, red = 0;
        for (let i = 0; i < data.length; i += 4) {
            if (data[i + 1] > 150 && data[i] < 80) green++;
            if (data[i] > 200 && data[i + 1] < 100) red++;
        }
        return {green, red};
    }""")
    assert colours["green"] > 50 and colours["red"] > 50, colours
    shot(page, "market")

    page.get_by_test_id("market-trade-button").click()
    page.wait_for_function(f"() => location.hash === '#/trade?market={SPOT}'")


def test_smart_market_colours_levels_by_venue_with_a_legend(page, served):
    sign_in(page, served)
    _route(page, f"#/market?market={SMART_SPOT}")
    _wait_synced(page)
    legend = page.evaluate("""() => [...document.querySelectorAll(
        '[data-testid=venue-legend-item]')].map(i => [i.dataset.venue,
        getComputedStyle(i.querySelector('.mk-swatch')).backgroundColor])""")
    assert [venue for venue, _ in legend] == ["SIM", "SIM2", "SIM3"]
    swatch = dict(legend)
    assert len(set(swatch.values())) == 3  # three different colours
    # Levels carry their venues' colours: at least two venues show in the ladder's segments.
    page.wait_for_function("""() => new Set([...document.querySelectorAll(
        '[data-testid=ladder-venue-segment]')].map(s => s.dataset.venue)).size >= 2""")
    segments = page.evaluate("""() => [...document.querySelectorAll(
        '[data-testid=ladder-venue-segment]')].map(s => [s.dataset.venue,
        getComputedStyle(s).backgroundColor, s.closest('[data-venues]').dataset.venues])""")
    assert segments
    for venue, colour, row_venues in segments:
        assert venue in swatch and colour == swatch[venue]
        assert venue in row_venues.split(",")
    # The ladder's levels sum their venues' split (checked against the REST consolidated book).
    rest = _rest(served, "/orderbook", market=SMART_SPOT, depth=5)
    for level in rest["bids"] + rest["asks"]:
        assert math.isclose(sum(level["venues"].values()), level["quantity"], rel_tol=1e-9)
    ladder = _ladder(page)
    rest_mid = (rest["bids"][0]["price"] + rest["asks"][0]["price"]) / 2
    assert abs(ladder["bids"][0][0] - rest["bids"][0]["price"]) / rest_mid < DRIFT
    members = page.evaluate("""() => [...document.querySelectorAll(
        '[data-testid=smart-member-row]')].map(r => [r.dataset.venue,
        r.querySelector('.state').textContent])""")
    assert members == [["SIM", "synced"], ["SIM2", "synced"], ["SIM3", "synced"]]
    # The tape merges the member venues' trades, each tagged by its venue.
    page.wait_for_function("() => Number(document.querySelector('[data-testid=trades-count]')"
                           ".textContent) > 0")
    tags = set(page.locator("[data-testid=trades-row] .venue-tag").all_text_contents())
    assert tags and tags <= {"SIM", "SIM2", "SIM3"}
    shot(page, "market-smart")


def test_venues_lists_the_live_feeds_with_their_state(page, served):
    viewer = page.context.new_page()  # a second tab streams the market: its feeds run
    sign_in(viewer, served)
    _route(viewer, f"#/market?market={SPOT}")
    _wait_synced(viewer)
    sign_in(page, served)
    _route(page, "#/venues")
    row = page.locator(f'[data-testid=venues-feed-row][data-market="{SPOT}"]'
                       '[data-type="ORDERBOOK"]')
    row.wait_for()
    feeds = _rest(served, "/feeds")
    assert any(f["market"] == SPOT and f["dataType"] == "ORDERBOOK" for f in feeds)
    page.wait_for_function(f"""() => {{
        const r = document.querySelector(
            '[data-testid=venues-feed-row][data-market="{SPOT}"][data-type="ORDERBOOK"]');
        return r && r.dataset.state === 'synced' &&
            Number(r.querySelector('[data-testid=venues-feed-latency]').textContent) >= 0 &&
            r.querySelector('[data-testid=venues-feed-latency]').textContent !== '—';
    }}""")
    assert row.get_by_test_id("venues-feed-state").text_content() == "synced"
    updates = int(row.get_by_test_id("venues-feed-updates").text_content().replace(",", ""))
    assert updates > 0
    assert int(row.get_by_test_id("venues-feed-clients").text_content()) >= 1  # the viewer
    # Refreshed every 2 s: the update count grows.
    page.wait_for_function(f"""n => Number(document.querySelector(
        '[data-testid=venues-feed-row][data-market="{SPOT}"][data-type="ORDERBOOK"] '
        + '[data-testid=venues-feed-updates]').textContent.replace(/,/g, '')) > n""",
        arg=updates)
    panels = page.evaluate("""() => [...document.querySelectorAll(
        '[data-testid=venues-panel]')].map(p => p.dataset.venue)""")
    assert panels[:3] == ["SIM", "SIM2", "SIM3"]
    assert page.get_by_test_id("venues-capabilities").count() == 3
    shown = page.evaluate("""() => [...document.querySelectorAll(
        '[data-testid=venues-feed-row]')].map(r => r.dataset.market + '|' + r.dataset.type)""")
    listed = {f"{f['market']}|{f['dataType']}" for f in _rest(served, "/feeds")}
    assert f"{SPOT}|ORDERBOOK" in shown and set(shown) & listed
    shot(page, "venues")


def test_an_unknown_market_says_so(page, served):
    sign_in(page, served)
    _route(page, "#/market?market=SIM-SPOT-NOPE-USDT")
    error = page.locator("#page .error")
    error.wait_for()
    assert error.text_content().startswith("INVALID_MARKET: SIM-SPOT-NOPE-USDT is not a market")
    assert page.get_by_test_id("ladder").count() == 0  # nothing opened for it


BOOK_CASES = """async () => {
    const { LocalBook } = await import('/terminal/lib/book.js');
    const view = (b) => ({bids: b.bids().map(l => [l.price, l.quantity, l.total]),
                          asks: b.asks().map(l => [l.price, l.quantity, l.total]),
                          updateId: b.updateId, state: b.state});
    const out = {};
    const b = new LocalBook('SIM-SPOT-BTC-USDT');
    out.early = b.apply({type: 'update', updateId: 5, bids: [{price: 1, quantity: 1}], asks: []});
    out.snapshot = b.apply({type: 'snapshot', updateId: 10,
        bids: [{price: 100, quantity: 1}, {price: 99, quantity: 2}],
        asks: [{price: 102, quantity: 3}, {price: 101, quantity: 1.5}]});
    out.jump = b.apply({type: 'update', updateId: 13,
        bids: [{price: 100, quantity: 0}, {price: 99.5, quantity: 4}], asks: []});
    out.afterJump = view(b);
    out.stale = b.apply({type: 'update', updateId: 13, bids: [{price: 98, quantity: 1}],
        asks: []});
    out.afterStale = view(b);
    out.resync = b.apply({type: 'resync', market: 'SIM-SPOT-BTC-USDT', reason: 'gap',
        state: 'resyncing', since: 1});
    out.afterResync = view(b);
    out.whileResyncing = b.apply({type: 'update', updateId: 14, bids: [], asks: []});
    out.restart = b.apply({type: 'snapshot', updateId: 3, bids: [{price: 50, quantity: 1}],
        asks: [{price: 51, quantity: 1}]});
    out.afterRestart = view(b);
    out.counters = [b.snapshots, b.updates, b.gaps];

    const s = new LocalBook('SMART-SPOT-BTC-USDT');
    s.apply({type: 'snapshot', updateId: 7,
        bids: [{price: 100, quantity: 3, venues: {SIM: 1, SIM2: 2}}],
        asks: [{price: 101, quantity: 1, venues: {SIM3: 1}}]});
    out.smartSkip = s.apply({type: 'update', updateId: 9, bids: [], asks: []});
    out.smartNext = s.apply({type: 'update', updateId: 8,
        bids: [{price: 100, quantity: 2, venues: {SIM2: 2}}], asks: []});
    out.smartLevel = s.bids()[0];
    out.smartVenues = s.venues();
    out.spread = s.spread;
    return out;
}"""


def test_local_book_logic_in_the_browser(page, served):
    page.goto(served.base + "/")
    out = page.evaluate(BOOK_CASES)
    assert out["early"] == "ignored"  # nothing to apply to before a snapshot
    assert out["snapshot"] == "ok"
    assert out["jump"] == "ok"  # a venue's id may advance by more than one
    assert out["afterJump"] == {"bids": [[99.5, 4, 4], [99, 2, 6]],
                                "asks": [[101, 1.5, 1.5], [102, 3, 4.5]],
                                "updateId": 13, "state": "synced"}
    assert out["stale"] == "gap"  # not above the last id: the book is left untouched
    assert out["afterStale"] == out["afterJump"]
    assert out["resync"] == "resync"
    assert out["afterResync"] == {"bids": [], "asks": [], "updateId": 13, "state": "resyncing"}
    assert out["whileResyncing"] == "ignored"
    assert out["restart"] == "ok"  # a lower id after a restart: the snapshot replaces all
    assert out["afterRestart"] == {"bids": [[50, 1, 1]], "asks": [[51, 1, 1]], "updateId": 3,
                                   "state": "synced"}
    assert out["counters"] == [2, 1, 1]
    assert out["smartSkip"] == "gap"  # SMART ids are +1 each
    assert out["smartNext"] == "ok"
    assert out["smartLevel"] == {"price": 100, "quantity": 2, "total": 2,
                                 "venues": {"SIM2": 2}}
    assert out["smartVenues"] == ["SIM2", "SIM3"]
    assert out["spread"] == 1


def _simulator_pid(served) -> int:
    """The pid of ``astra serve``'s simulator child (started by the fixture's serve)."""
    pid = served.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if b"sim" in cmdline and b"astra" in cmdline:
            return int(child)
    raise AssertionError(f"no simulator child under {pid}: {children}")


def test_a_silent_then_dead_venue_shows_stale_then_disconnected(page, served):
    """Last in this file (the module's server loses its simulator): a paused simulator turns
    the feeds stale; a killed one sends the ladder a resync (emptied, "disconnected")."""
    sign_in(page, served)
    _route(page, f"#/market?market={SPOT}")
    _wait_synced(page)
    _route(page, "#/venues")
    row = f'[data-testid=venues-feed-row][data-market="{SPOT}"][data-type="ORDERBOOK"]'
    page.locator(row).wait_for()
    sim = _simulator_pid(served)
    os.kill(sim, signal.SIGSTOP)
    try:  # no update for 10 s on a synced feed: "stale"
        page.locator(f"{row} [data-testid=venues-feed-stale]").wait_for(timeout=40_000)
        assert page.locator(row).get_attribute("data-state") == "synced"
        shot(page, "venues-stale")
    finally:
        os.kill(sim, signal.SIGCONT)
    _route(page, f"#/market?market={SMART_SPOT}")
    _wait_synced(page, timeout=40_000)  # the paused feeds may resync first
    os.kill(sim, signal.SIGKILL)
    page.wait_for_function("""() =>
        document.querySelector('[data-testid=market-state]').textContent === 'disconnected'""",
        timeout=40_000)
    assert page.locator("[data-testid=ladder-bid-row][data-price]").count() == 0
    assert page.locator("[data-testid=ladder-ask-row][data-price]").count() == 0
    assert page.get_by_test_id("ladder-status").text_content() == "disconnected"
    resyncs = page.get_by_test_id("market-resyncs").text_content().split(" · ")
    assert int(resyncs[2]) >= 1 and resyncs[1] == "0"  # told by the server, not a gap
    page.wait_for_function("""() => [...document.querySelectorAll(
        '[data-testid=smart-member-row] .state')].every(s => s.textContent === 'disconnected')""",
        timeout=40_000)
    _route(page, "#/venues")
    page.wait_for_function(f"""() => {{
        const r = document.querySelector('{row}');
        return r && r.dataset.state === 'disconnected' &&
            r.querySelector('[data-testid=venues-feed-reasons]') !== null;
    }}""", timeout=40_000)
    reasons = page.locator(f"{row} [data-testid=venues-feed-reasons]")
    reasons.locator("summary").click()
    assert reasons.evaluate("d => d.open") is True
    assert reasons.locator("li").count() >= 1
    assert reasons.locator("li").first.text_content().strip()
    stamp = page.get_by_test_id("venues-updated").text_content()
    page.wait_for_function("s => document.querySelector('[data-testid=venues-updated]')"
                           ".textContent !== s", arg=stamp)  # a refresh later: still open
    assert page.locator(f"{row} [data-testid=venues-feed-reasons]").evaluate("d => d.open")
    shot(page, "venues-disconnected")
