// One market: the live book ladder, the depth chart, the trades tape and the feed's health.
// Invariants:
// - The book is the LocalBook of `WS /ws?dataType=ORDERBOOK` (lib/book.js): shown only while
//   synced; a "resync" message shows "resyncing" until the next snapshot; an update that
//   does not continue the updateId reopens the stream (a fresh snapshot follows).
// - Rendering is decoupled from messages: messages mark the view dirty, a 100 ms timer
//   redraws the ladder (the chart at most every 300 ms), so a busy feed cannot starve the tab.
// - SMART books: each level's bar is split by venue in venueColor; there is no SMART trade
//   stream, so the tape merges the member venues' TRADE streams, each row tagged by venue.
// - Cleanup closes every WebSocket and timer this page opened.

import { ApiError, get, stream } from "../lib/api.js";
import { LocalBook, SMART_PREFIX } from "../lib/book.js";
import { drawDepth } from "../lib/depth.js";
import { h, num, time, venueColor, venueTag } from "../lib/dom.js";
import { Ladder, decimalsOf, fixed } from "../lib/ladder.js";

const LADDER_ROWS = 16;
const CHART_LEVELS = 80;
const TAPE_ROWS = 60;
const RATE_WINDOW_MS = 5000;
const DEFAULT_MARKET = "SMART-SPOT-BTC-USDT";

/** The market's metadata, its SMART members' (on SMART) and its sibling markets. */
async function describe(market) {
  const venue = market.split("-")[0];
  const listed = await get("/markets", { exchange: venue });
  const meta = listed.find((m) => m.symbol === market);
  if (!meta) {
    throw new ApiError(404, { code: "INVALID_MARKET", parameter: "market",
      message: `${market} is not a market of ${venue} (see the Markets page)` });
  }
  let members = [];
  let smart = null;
  if (meta.members) {
    smart = meta;
    const venues = [...new Set(meta.members.map((s) => s.split("-")[0]))];
    const lists = await Promise.all(venues.map((v) => get("/markets", { exchange: v })
      .catch(() => [])));
    const all = lists.flat();
    members = meta.members.map((s) => all.find((m) => m.symbol === s) || { symbol: s });
  } else {
    const smartList = await get("/markets", { exchange: "SMART" }).catch(() => []);
    smart = smartList.find((m) => (m.members || []).includes(market)) || null;
  }
  return { meta, members, smart };
}

function maxDecimals(markets, field, fallback) {
  const steps = markets.map((m) => m[field]).filter((x) => x > 0);
  return steps.length ? Math.max(...steps.map((x) => decimalsOf(x))) : fallback;
}

export async function mount(root, ctx) {
  const market = ctx.params.get("market") || DEFAULT_MARKET;
  const hash = location.hash;
  const { meta, members, smart } = await describe(market);
  if (location.hash !== hash) return null; // the user moved on while this page loaded
  const isSmart = market.startsWith(SMART_PREFIX);
  const venue = market.split("-")[0];
  const specs = isSmart ? members : [meta];
  const priceDigits = maxDecimals(specs, "tickSize", 2);
  const sizeDigits = Math.min(maxDecimals(specs, "lotSize", 4), 6);

  // --- layout -----------------------------------------------------------------------------
  const stat = (label, testid, cls = "") => {
    const value = h("span", { class: `mk-stat-value num ${cls}`, "data-testid": testid }, "—");
    return [h("div", { class: "mk-stat" }, h("span", { class: "mk-stat-label" }, label), value),
      value];
  };
  const [bidStat, bidValue] = stat("Bid", "market-best-bid", "bid");
  const [askStat, askValue] = stat("Ask", "market-best-ask", "ask");
  const [spreadStat, spreadValue] = stat("Spread", "market-spread");
  const [idStat, idValue] = stat("updateId", "market-update-id");
  const [rateStat, rateValue] = stat("msg/s", "market-rate");
  const [healthStat, healthValue] = stat("snapshots · gaps · resyncs", "market-resyncs");
  const stateBadge = h("span", { class: "state state-connecting", "data-testid": "market-state" },
    "connecting");
  const tradeButton = h("button", { class: "primary", type: "button",
    "data-testid": "market-trade-button", onclick: () => ctx.navigate("trade", { market }) },
    "Trade");
  const header = h("section", { class: "panel mk-head", "data-testid": "market-header" },
    h("div", { class: "mk-title" },
      h("h1", { "data-testid": "market-title" }, market),
      h("div", { class: "row mk-tags" }, isSmart ? h("span", { class: "mk-badge mk-smart" },
        "SMART") : venueTag(venue),
        h("span", { class: "mk-badge" }, meta.assetType),
        h("span", { class: "muted" }, `${meta.baseAsset} / ${meta.quoteAsset}`), stateBadge)),
    h("div", { class: "mk-stats" }, bidStat, askStat, spreadStat, idStat, rateStat, healthStat),
    tradeButton);

  const ladder = new Ladder({ rows: LADDER_ROWS, smart: isSmart });
  ladder.priceDigits = priceDigits;
  ladder.sizeDigits = sizeDigits;
  const ladderPanel = h("section", { class: "panel mk-ladder-panel" },
    h("h2", {}, isSmart ? "Consolidated book" : "Order book"), ladder.node);

  const canvas = h("canvas", { class: "mk-depth", "data-testid": "depth-chart" });
  const chartPanel = h("section", { class: "panel" }, h("h2", {}, "Depth"), canvas);

  const side = isSmart ? smartPanel(members) : infoPanel(meta, smart, ctx);

  const tapeBody = h("tbody", { "data-testid": "trades-tape" });
  const tapeNotice = h("p", { class: "warn mk-tape-notice", "data-testid": "trades-notice" });
  const tapeCount = h("span", { class: "muted num", "data-testid": "trades-count" }, "0");
  const tapePanel = h("section", { class: "panel mk-tape-panel" },
    h("div", { class: "mk-panel-head" }, h("h2", {}, "Trades"),
      h("span", { class: "muted" }, "live: ", tapeCount)),
    tapeNotice,
    h("div", { class: "mk-tape-scroll" }, h("table", { class: "data mk-tape" },
      h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", { class: "num" }, "Price"),
        h("th", { class: "num" }, "Size"), isSmart ? h("th", {}, "Venue") : null)),
      tapeBody)));

  root.append(header, h("div", { class: "mk-market" }, ladderPanel,
    h("div", { class: "mk-center stack" }, chartPanel, side.node), tapePanel));

  // --- the book -----------------------------------------------------------------------------
  const book = new LocalBook(market);
  const arrivals = [];
  let bookStream = null;
  let resyncs = 0;
  let dirty = true;
  let chartDirty = true;
  let lastChart = 0;

  function openBook() {
    bookStream = stream("/ws", { market, dataType: "ORDERBOOK" }, {
      onMessage(msg) {
        arrivals.push(performance.now());
        const before = book.updateId;
        const result = book.apply(msg);
        if (result === "gap") {
          // The server's updates must continue the book; one that does not means a message
          // was lost: start over from a fresh snapshot.
          book.reset("resyncing", `gap: updateId ${msg.updateId} after ${before}`);
          bookStream.close();
          openBook();
        } else if (result === "resync") {
          resyncs += 1;
        }
        dirty = chartDirty = true;
      },
      onState(state, detail) {
        if (state === "reconnecting") book.reset("reconnecting", detail);
        if (state === "closed") book.reset("disconnected", detail);
        dirty = chartDirty = true;
      },
    });
  }
  openBook();

  const started = performance.now();
  function render() {
    const now = performance.now();
    while (arrivals.length && arrivals[0] < now - RATE_WINDOW_MS) arrivals.shift();
    const elapsed = Math.min(RATE_WINDOW_MS, now - started);
    rateValue.textContent = elapsed > 500 ? (arrivals.length / (elapsed / 1000)).toFixed(1) : "…";
    if (!dirty) return;
    dirty = false;
    const state = book.state;
    stateBadge.textContent = state;
    stateBadge.className = `state state-${state}`;
    stateBadge.title = book.reason || "";
    ladder.render(book, book.synced ? "" : state === "connecting" ? "connecting…" : state);
    const bid = book.bestBid;
    const ask = book.bestAsk;
    bidValue.textContent = bid ? fixed(bid.price, priceDigits) : "—";
    askValue.textContent = ask ? fixed(ask.price, priceDigits) : "—";
    spreadValue.textContent = bid && ask ? fixed(ask.price - bid.price, priceDigits) : "—";
    idValue.textContent = book.updateId ?? "—";
    idValue.dataset.updateId = book.updateId ?? "";
    healthValue.textContent = `${book.snapshots} · ${book.gaps} · ${resyncs}`;
    if (isSmart) side.update(book);
    if (chartDirty && now - lastChart > 300) {
      chartDirty = false;
      lastChart = now;
      drawDepth(canvas, book.bids(CHART_LEVELS), book.asks(CHART_LEVELS),
        { decimals: priceDigits });
    }
    if (chartDirty) dirty = true; // draw the chart on a later tick
  }
  const timer = setInterval(render, 100);
  const onResize = () => { chartDirty = dirty = true; lastChart = 0; };
  window.addEventListener("resize", onResize);

  // --- the trades tape ------------------------------------------------------------------------
  const seen = new Set();
  let live = 0;
  function addTrades(trades, code, isLive) {
    const fresh = trades.filter((t) => {
      const id = `${code}:${t.tradeId ?? `${t.time}:${t.price}:${t.quantity}`}`;
      if (seen.has(id)) return false;
      seen.add(id);
      return true;
    });
    if (seen.size > 5000) seen.clear(); // ids only guard the seed/stream overlap
    for (const trade of fresh) {
      const cls = trade.side === "SELL" ? "ask" : "bid";
      const row = h("tr", { "data-testid": "trades-row", "data-live": isLive ? "1" : "0",
        "data-price": trade.price, "data-time": trade.time },
      h("td", { class: "num muted" }, time(trade.time)),
      h("td", { class: `num ${cls}` }, fixed(trade.price, priceDigits)),
      h("td", { class: "num" }, fixed(trade.quantity, sizeDigits)),
      isSmart ? h("td", {}, venueTag(code)) : null);
      // Newest on top, in time order across venues and seeds (a row goes above the first
      // one that is not newer; ties keep arrival order).
      let before = tapeBody.firstElementChild;
      while (before && Number(before.dataset.time) > trade.time) {
        before = before.nextElementSibling;
      }
      tapeBody.insertBefore(row, before);
    }
    while (tapeBody.children.length > TAPE_ROWS) tapeBody.lastChild.remove();
    if (isLive) {
      live += fresh.length;
      tapeCount.textContent = String(live);
    }
  }
  const tapeMarkets = isSmart ? members.map((m) => m.symbol) : [market];
  const tradeStreams = tapeMarkets.map((symbol) => {
    const code = symbol.split("-")[0];
    return stream("/ws", { market: symbol, dataType: "TRADE" }, {
      onMessage(msg) {
        if (msg.type === "resync") {
          tapeNotice.textContent = `${code}: trade feed dropped (${msg.reason}); trades may ` +
            "be missing";
        } else if (Array.isArray(msg.trades)) {
          tapeNotice.textContent = "";
          addTrades(msg.trades, code, true);
        }
      },
      onState(state, detail) {
        if (state !== "open") tapeNotice.textContent = `${code}: trades ${state} (${detail})`;
        else tapeNotice.textContent = "";
      },
    });
  });
  // Seed the tape with recent trades (the streams carry only new ones).
  Promise.all(tapeMarkets.map((symbol) => get("/trades", { market: symbol, limit: 30 })
    .then((body) => body.trades.map((t) => ({ ...t, venue: symbol.split("-")[0] })))
    .catch(() => [])))
    .then((lists) => {
      const merged = lists.flat().sort((a, b) => a.time - b.time);
      for (const t of merged) addTrades([t], t.venue, false);
    });

  return () => {
    clearInterval(timer);
    window.removeEventListener("resize", onResize);
    if (bookStream) bookStream.close();
    for (const s of tradeStreams) s.close();
    side.stop();
  };
}

/** Single-venue market: its specification and the same pair elsewhere. */
function infoPanel(meta, smart, ctx) {
  const rows = [
    ["Venue symbol", meta.exchangeSymbol], ["Status", meta.status],
    ["Tick size", meta.tickSize], ["Lot size", meta.lotSize],
    ["Min quantity", meta.minQuantity], ["Min notional", meta.minNotional],
    ["Maker / taker fee", meta.makerFee !== undefined
      ? `${(meta.makerFee * 1e4).toFixed(1)} / ${(meta.takerFee * 1e4).toFixed(1)} bps` : null],
    ["Contract size", meta.contractSize], ["Margin asset", meta.marginAsset],
  ].filter(([, v]) => v !== undefined && v !== null);
  const others = smart ? [smart.symbol, ...smart.members.filter((s) => s !== meta.symbol)] : [];
  const node = h("section", { class: "panel", "data-testid": "market-info" },
    h("h2", {}, "Market"),
    h("dl", { class: "mk-spec" }, rows.map(([k, v]) => [h("dt", {}, k),
      h("dd", { class: "num" }, typeof v === "number" ? num(v, 10) : v)])),
    others.length ? h("div", { class: "mk-also" }, h("span", { class: "muted" }, "Also on"),
      others.map((symbol) => h("a", { href: `#/market?market=${symbol}`,
        "data-testid": "market-sibling", class: "mk-sibling",
        onclick: (e) => { e.preventDefault(); ctx.navigate("market", { market: symbol }); } },
      venueTag(symbol.split("-")[0])))) : null);
  return { node, update() {}, stop() {} };
}

/** SMART market: the venue legend (share of the shown depth) and the members' states. */
function smartPanel(members) {
  const codes = members.map((m) => m.symbol.split("-")[0]);
  const shares = new Map();
  const legend = h("div", { class: "mk-legend", "data-testid": "venue-legend" },
    codes.map((code) => {
      const share = h("span", { class: "num muted" }, "");
      shares.set(code, share);
      return h("div", { class: "mk-legend-item", "data-testid": "venue-legend-item",
        "data-venue": code },
      h("span", { class: "mk-swatch", style: { "background-color": venueColor(code) } }),
      h("span", { class: "mk-legend-code" }, code), share);
    }));
  const memberBody = h("tbody");
  const node = h("section", { class: "panel", "data-testid": "smart-panel" },
    h("h2", {}, "Venues in this book"), legend,
    h("table", { class: "data mk-members", "data-testid": "smart-members" },
      h("thead", {}, h("tr", {}, h("th", {}, "Venue"), h("th", {}, "Market"),
        h("th", {}, "State"), h("th", {}, "Since"), h("th", {}, "Reason"))),
      memberBody));
  // Members' states: from each snapshot, and from GET /feeds every 2 s (a book that went
  // down sends a resync but no snapshot, so only the feeds tell how its members are).
  let membersShown = null;
  function showMembers(rows) {
    memberBody.replaceChildren(...rows.map((m) => h("tr", {
      "data-testid": "smart-member-row", "data-venue": m.venue },
    h("td", {}, venueTag(m.venue)), h("td", { class: "mono" }, m.market),
    h("td", {}, h("span", { class: `state state-${m.state}` }, m.state)),
    h("td", { class: "num muted" }, m.since ? time(m.since) : ""),
    h("td", { class: "muted" }, m.reason || ""))));
  }
  const symbols = members.map((m) => m.symbol);
  let stopped = false;
  let timer = null;
  async function poll() {
    try {
      const feeds = await get("/feeds");
      const rows = symbols.map((symbol) => feeds.find((f) => f.market === symbol &&
        f.dataType === "ORDERBOOK")).filter(Boolean);
      if (!stopped && rows.length) showMembers(rows);
    } catch {
      // No GET /feeds (an older gateway) or a blip: the snapshots' states stay shown.
    }
    if (!stopped) timer = setTimeout(poll, 2000);
  }
  timer = setTimeout(poll, 2000);
  function stop() { stopped = true; clearTimeout(timer); }
  function update(book) {
    const totals = new Map(codes.map((c) => [c, 0]));
    let all = 0;
    for (const level of [...book.bids(LADDER_ROWS), ...book.asks(LADDER_ROWS)]) {
      for (const [code, q] of Object.entries(level.venues || {})) {
        totals.set(code, (totals.get(code) || 0) + q);
        all += q;
      }
    }
    for (const [code, el] of shares) {
      el.textContent = all ? `${((totals.get(code) / all) * 100).toFixed(0)}% of depth` : "";
    }
    if (book.members && book.members !== membersShown) { // a new snapshot
      membersShown = book.members;
      showMembers(book.members);
    }
  }
  return { node, update, stop };
}
