// Orders, fills, balances and positions for one exchange (or routed SMART parents).
// Invariants:
// - A venue's view is live: the private streams (ORDERS, FILLS, BALANCES on /ws) are opened
//   first, then REST fills the tables; a stream's {"type":"resync"} (it restarted and may have
//   missed events) re-reads that table over REST. Positions have no stream: REST every 5 s.
// - An order leaves "Open orders" as soon as any answer or event says it is done; an id seen
//   done is never shown open again by a slower REST answer.
// - SMART has no private stream: its open parent orders are re-read every 3 s.
// - Every stream and timer is closed by the returned cleanup.

import { del, get, stream } from "../lib/api.js";
import { clear, errorText, h, num, time, toast, venueTag } from "../lib/dom.js";

const DONE = new Set(["FILLED", "CANCELED", "REJECTED", "EXPIRED"]);
const MAX_FILLS = 200;
const MAX_RECENT = 30;

export async function mount(root, ctx) {
  const here = location.hash; // navigated away during an await: open nothing more
  const stale = () => location.hash !== here;
  const exchanges = (await get("/exchanges")).map((e) => e.exchange);
  const codes = [...exchanges, "SMART"];
  const exchange = codes.includes(ctx.params.get("exchange")) ? ctx.params.get("exchange")
    : exchanges[0];
  const smart = exchange === "SMART";
  const markets = await get("/markets", { exchange });
  const symbols = markets.map((m) => m.symbol);
  if (stale()) return null;

  const open = new Map(); // orderId -> Order (open only)
  const done = new Set(); // ids seen done: a slower REST answer must not reopen them
  const recent = []; // orders that ended while this page was open, newest first
  let fills = [];
  const balances = new Map(); // "asset|account" -> Balance
  let positions = [];
  const streams = [];
  const timers = [];

  // --- layout ---------------------------------------------------------------------------
  const tabs = h("div", { class: "tr-tabs", "data-testid": "orders-exchanges" }, codes.map(
    (code) => h("button", { type: "button", class: code === exchange ? "active" : "",
      "data-testid": `orders-exchange-${code}`,
      onclick: () => ctx.navigate("orders", { exchange: code }) }, code)));
  const streamStates = h("div", { class: "row tr-streams", "data-testid": "orders-streams" });
  const openBody = h("tbody", { "data-testid": "orders-open" });
  const cancelAllBar = h("div", { class: "row tr-cancel-all" });
  const recentBody = h("tbody", { "data-testid": "orders-recent" });
  const fillsBody = h("tbody", { "data-testid": "orders-fills" });
  const balancesBody = h("tbody", { "data-testid": "orders-balances" });
  const positionsBody = h("tbody", { "data-testid": "orders-positions" });
  const errorLine = h("p", { class: "error", role: "alert", "data-testid": "orders-error" });

  const head = (...cols) => h("thead", {}, h("tr", {}, cols.map((c) => c.startsWith("#")
    ? h("th", { class: "num" }, c.slice(1)) : h("th", {}, c))));
  const openCount = h("span", { class: "tr-count", "data-testid": "orders-open-count" }, "0");

  root.append(
    h("div", { class: "tr-toolbar" }, h("h1", {}, "Orders & positions"), tabs, streamStates),
    errorLine,
    h("section", { class: "panel" },
      h("div", { class: "tt-head" }, h("h2", {}, smart ? "Open routed orders " : "Open orders ",
        openCount), cancelAllBar),
      h("table", { class: "data" }, head("Market", "Side", "Type", "#Price", "#Quantity",
        "#Filled", "Status", "TIF", smart ? "Resting on" : "Created", "Order id", ""),
      openBody)),
    smart ? h("p", { class: "muted" }, "Routed orders are parents over the member venues: " +
      "their fills, balances and positions are on each venue's tab.") : h("div",
      { class: "grid-2 tr-lower" },
      h("section", { class: "panel" }, h("h2", {}, "Fills"),
        h("div", { class: "tr-scroll" }, h("table", { class: "data" },
          head("Time", "Market", "Side", "#Price", "#Quantity", "#Fee", "M/T", "Order id"),
          fillsBody))),
      h("div", { class: "stack" },
        h("section", { class: "panel" }, h("h2", {}, `Balances · ${exchange}`),
          h("table", { class: "data" }, head("Asset", "Account", "#Free", "#Locked", "#Total"),
            balancesBody)),
        h("section", { class: "panel" }, h("h2", {}, "Positions"),
          h("table", { class: "data" }, head("Market", "Side", "#Quantity", "#Entry", "#Mark",
            "#uPnL", "#Lev.", "#Liq. price", "Margin"), positionsBody)))),
    h("section", { class: "panel" }, h("h2", {}, "Ended this session"),
      h("table", { class: "data" }, head("Time", "Market", "Side", "Type", "#Price",
        "#Filled", "#Avg price", "Status", "Order id"), recentBody)));

  // --- state changes --------------------------------------------------------------------
  function upsert(order) {
    const id = order.orderId || order.clientOrderId;
    if (DONE.has(order.status)) {
      const wasKnown = open.delete(id) || !done.has(id);
      done.add(id);
      if (wasKnown && !recent.some((o) => (o.orderId || o.clientOrderId) === id)) {
        recent.unshift(order);
        recent.length = Math.min(recent.length, MAX_RECENT);
      }
    } else if (!done.has(id)) {
      const known = open.get(id);
      if (!known || (order.updatedAt || 0) >= (known.updatedAt || 0)) open.set(id, order);
    }
  }

  async function cancel(order) {
    try {
      const answer = await del("/orders", { market: order.market, orderId: order.orderId });
      upsert(answer);
      toast(`${order.market} ${order.orderId}: ${answer.status}`, "ok");
    } catch (err) {
      toast(errorText(err), "error");
    }
    renderOrders();
  }

  // Cancel all asks once more (the button turns into "Confirm", for 4 s): one stray click
  // must not cancel a market's every order. Armed per market, not per button: the bar is
  // redrawn on every order update.
  const armed = new Map(); // market -> time the confirmation expires
  const isArmed = (market) => (armed.get(market) || 0) > Date.now();
  function confirmCancelAll(market) {
    if (isArmed(market)) {
      armed.delete(market);
      renderOrders();
      return cancelAll(market);
    }
    armed.set(market, Date.now() + 4000);
    renderOrders();
    setTimeout(() => { if (!isArmed(market)) renderOrders(); }, 4100);
  }

  async function cancelAll(market) {
    try {
      const answer = await del("/orders", { market });
      toast(`${market}: ${Array.isArray(answer.canceled) ? answer.canceled.length
        : answer.canceled} canceled`, "ok");
    } catch (err) {
      toast(errorText(err), "error");
    }
    await loadOpen();
  }

  // --- rendering ------------------------------------------------------------------------
  const sideCell = (side) => h("td", { class: side === "BUY" ? "bid" : "ask" }, side);
  const stateCell = (status) => h("td", {}, h("span", { class: `state state-${status}` },
    status));

  function renderOrders() {
    const rows = [...open.values()].sort((a, b) => (b.createdAt || 0) - (a.createdAt || 0));
    openCount.textContent = String(rows.length);
    clear(openBody).append(...(rows.length ? rows.map((o) => h("tr", {
      "data-testid": "orders-open-row", "data-order-id": o.orderId || "",
      "data-client-order-id": o.clientOrderId },
    h("td", { class: "mono" }, o.market), sideCell(o.side), h("td", {}, o.type),
    h("td", { class: "num" }, num(o.price)), h("td", { class: "num" }, num(o.quantity)),
    h("td", { class: "num" }, num(o.filledQuantity)), stateCell(o.status),
    h("td", {}, o.timeInForce || ""),
    smart ? h("td", { class: "tr-children" }, (o.children || []).filter((c) => !DONE.has(
      c.status)).map((c) => h("span", { title: `${c.clientOrderId} ${c.status}` },
      venueTag(c.venue), " ", num(c.quantity - (c.filledQuantity || 0)))))
      : h("td", { class: "mono muted" }, time(o.createdAt)),
    h("td", { class: "mono muted" }, o.orderId || ""),
    h("td", {}, h("button", { type: "button", class: "small danger",
      "data-testid": "orders-cancel", disabled: !o.orderId,
      onclick: (ev) => { ev.target.disabled = true; cancel(o); } }, "Cancel"))))
      : [h("tr", {}, h("td", { colspan: 11, class: "muted tr-empty" }, "No open orders"))]));
    const perMarket = new Map();
    for (const o of rows) perMarket.set(o.market, (perMarket.get(o.market) || 0) + 1);
    clear(cancelAllBar).append(...[...perMarket].map(([market, n]) => h("button", {
      type: "button", class: "small danger", "data-testid": "orders-cancel-all",
      "data-market": market, onclick: () => confirmCancelAll(market) },
    isArmed(market) ? `Confirm: cancel all ${market} (${n})` : `Cancel all ${market} (${n})`)));
    clear(recentBody).append(...(recent.length ? recent.map((o) => h("tr",
      { "data-testid": "orders-recent-row", "data-order-id": o.orderId || "" },
      h("td", { class: "mono muted" }, time(o.updatedAt || o.createdAt)),
      h("td", { class: "mono" }, o.market), sideCell(o.side), h("td", {}, o.type),
      h("td", { class: "num" }, num(o.price)), h("td", { class: "num" },
        `${num(o.filledQuantity)} / ${num(o.quantity)}`),
      h("td", { class: "num" }, num(o.averagePrice, 4)), stateCell(o.status),
      h("td", { class: "mono muted" }, o.orderId || "")))
      : [h("tr", {}, h("td", { colspan: 9, class: "muted tr-empty" },
        "Orders that fill, cancel or expire while this page is open show here"))]));
  }

  function renderFills() {
    clear(fillsBody).append(...(fills.length ? fills.map((f) => h("tr",
      { "data-testid": "orders-fill-row", "data-order-id": f.orderId },
      h("td", { class: "mono muted" }, time(f.time)), h("td", { class: "mono" }, f.market),
      sideCell(f.side), h("td", { class: "num" }, num(f.price)),
      h("td", { class: "num" }, num(f.quantity)),
      h("td", { class: "num" }, f.fee !== undefined ? `${num(f.fee, 6)} ${f.feeAsset || ""}`
        : ""),
      h("td", { class: "muted", title: f.liquidity || "" }, f.liquidity
        ? f.liquidity[0] : ""), h("td", { class: "mono muted" },
        f.orderId)))
      : [h("tr", {}, h("td", { colspan: 8, class: "muted tr-empty" }, "No fills"))]));
  }

  function renderBalances(changedKeys = new Set()) {
    const rows = [...balances.entries()].filter(([, b]) => b.total !== 0 || b.locked !== 0)
      .sort(([a], [b]) => a.localeCompare(b));
    clear(balancesBody).append(...(rows.length ? rows.map(([key, b]) => h("tr", {
      "data-testid": "orders-balance-row", "data-asset": b.asset,
      "data-account": b.account || "", class: changedKeys.has(key) ? "tr-flash" : "" },
    h("td", { class: "tr-asset" }, b.asset), h("td", { class: "muted" }, b.account || ""),
    h("td", { class: "num", "data-testid": "orders-balance-free" }, num(b.free)),
    h("td", { class: "num" }, num(b.locked)),
    h("td", { class: "num", "data-testid": "orders-balance-total" }, num(b.total))))
      : [h("tr", {}, h("td", { colspan: 5, class: "muted tr-empty" }, "No balances"))]));
  }

  function pnlCell(value) {
    const cents = Math.round((value || 0) * 100) / 100 || 0; // never "-0"
    return h("td", { class: `num ${cents > 0 ? "bid" : cents < 0 ? "ask" : "muted"}` },
      num(cents, 2));
  }

  function renderPositions() {
    clear(positionsBody).append(...(positions.length ? positions.map((p) => h("tr",
      { "data-testid": "orders-position-row" },
      h("td", { class: "mono" }, p.market),
      h("td", { class: p.side === "LONG" ? "bid" : "ask" }, p.side),
      h("td", { class: "num" }, num(p.quantity)), h("td", { class: "num" }, num(p.entryPrice)),
      h("td", { class: "num" }, num(p.markPrice)),
      pnlCell(p.unrealizedPnl),
      h("td", { class: "num" }, p.leverage ? `${num(p.leverage)}×` : ""),
      h("td", { class: "num" }, num(p.liquidationPrice)),
      h("td", { class: "muted" }, p.marginType || "")))
      : [h("tr", {}, h("td", { colspan: 9, class: "muted tr-empty" }, "No positions"))]));
  }

  // --- loading --------------------------------------------------------------------------
  function failed(err) { errorLine.textContent = errorText(err); }

  async function loadOpen() {
    const started = Date.now();
    const lists = await Promise.all(symbols.map((market) => get("/orders", { market })
      .catch((err) => { failed(err); return []; })));
    const ids = new Set();
    for (const order of lists.flat()) {
      ids.add(order.orderId || order.clientOrderId);
      upsert(order);
    }
    // Gone from the venue's open list without an event seen here: ended elsewhere (an order
    // placed while the lists were read is not judged by them).
    for (const [id, o] of [...open]) {
      if (!ids.has(id) && (o.createdAt || 0) < started - 2000) open.delete(id);
    }
    renderOrders();
  }

  async function loadFills() {
    const lists = await Promise.all(symbols.map((market) => get("/fills", { market })
      .catch((err) => { failed(err); return []; })));
    fills = lists.flat().sort((a, b) => b.time - a.time).slice(0, MAX_FILLS);
    renderFills();
  }

  async function loadBalances() {
    const accounts = ["spot"];
    if (markets.some((m) => m.assetType !== "SPOT")) accounts.push("swap");
    const lists = await Promise.all(accounts.map((account) => get("/balances",
      { exchange, account }).catch((err) => { failed(err); return []; })));
    balances.clear();
    for (const b of lists.flat()) balances.set(`${b.asset}|${b.account || ""}`, b);
    renderBalances();
  }

  async function loadPositions() {
    try {
      positions = await get("/positions", { exchange });
    } catch (err) {
      failed(err);
    }
    renderPositions();
  }

  function onEvent(msg) {
    if (msg.type === "orders") {
      msg.orders.forEach(upsert);
      renderOrders();
      if (msg.orders.some((o) => o.filledQuantity > 0)) loadPositions();
    } else if (msg.type === "fills") {
      const seen = new Set(fills.map((f) => `${f.market}|${f.fillId}`));
      const fresh = msg.fills.filter((f) => !seen.has(`${f.market}|${f.fillId}`));
      fills = [...fresh, ...fills].sort((a, b) => b.time - a.time).slice(0, MAX_FILLS);
      renderFills();
    } else if (msg.type === "balances") {
      const changedKeys = new Set();
      for (const b of msg.balances) {
        const key = `${b.asset}|${b.account || ""}`;
        balances.set(key, b);
        changedKeys.add(key);
      }
      renderBalances(changedKeys);
    }
  }

  function openStream(dataType, reload) {
    const badge = h("span", { class: "state", "data-testid": `orders-stream-${dataType}` },
      `${dataType} …`);
    streamStates.append(badge);
    streams.push(stream("/ws", { exchange, dataType }, {
      onMessage: (msg) => {
        if (msg.type === "resync") reload(); // events may have been missed: re-read
        else onEvent(msg);
      },
      onState: (s, detail) => {
        badge.textContent = `${dataType} ${s === "open" ? "live" : s}`;
        badge.className = `state state-${s}`;
        badge.title = detail || "";
      },
    }));
  }

  renderOrders();
  if (smart) {
    await loadOpen();
    const poll = setInterval(() => loadOpen().catch(failed), 3000);
    timers.push(() => clearInterval(poll));
  } else {
    renderFills();
    renderBalances();
    renderPositions();
    openStream("ORDERS", loadOpen);
    openStream("FILLS", loadFills);
    openStream("BALANCES", loadBalances);
    await Promise.all([loadOpen(), loadFills(), loadBalances(), loadPositions()]);
    const poll = setInterval(loadPositions, 5000);
    timers.push(() => clearInterval(poll));
  }

  const close = () => {
    for (const s of streams) s.close();
    for (const stop of timers) stop();
  };
  if (stale()) { close(); return null; }
  return close;
}
