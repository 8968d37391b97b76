// The order ticket: any venue's market or a SMART (routed) market.
// Invariants:
// - One clientOrderId per ticket: a double click or a retry after a network error sends the
//   same id, so the gateway's journal places the order at most once. Any change to the
//   order's fields, and every definitive answer, starts a new ticket (a new id).
// - SMART: "Send routed order" is enabled only by a dry-run preview of exactly the fields on
//   the ticket; any change invalidates that preview.
// - The best bid/ask comes from GET /bbo, then the BBO stream; the stream closes on unmount.
//   A resync (the venue's feed went down) blanks it until the next quote: never stale prices
//   shown as live.

import { post, get, stream } from "../lib/api.js";
import { clear, errorText, h, num, time, toast, venueTag } from "../lib/dom.js";

const TYPES = ["LIMIT", "MARKET", "STOP_LIMIT", "STOP_MARKET", "TAKE_PROFIT_LIMIT",
  "TAKE_PROFIT_MARKET"];
const SMART_TYPES = ["LIMIT", "MARKET"];

const isSmart = (market) => market.startsWith("SMART-");
const hasPrice = (type) => type === "LIMIT" || type.endsWith("_LIMIT");
const hasStop = (type) => type.startsWith("STOP") || type.startsWith("TAKE_PROFIT");

function newClientOrderId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  return "web-" + Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

export async function mount(root, ctx) {
  const here = location.hash; // navigated away during an await: open nothing more
  const stale = () => location.hash !== here;
  const state = {
    side: "BUY", clientOrderId: newClientOrderId(), preview: null, previewKey: null,
    markets: new Map(), inFlight: false, bbo: null,
  };
  let bboStream = null;

  // --- the form -------------------------------------------------------------------------
  const field = (name, input, hint) => h("div", { class: "tt-field", "data-field": name },
    h("label", { for: input.id }, hint), input,
    h("div", { class: "tt-field-error", "data-testid": `trade-error-${name}` }));

  const marketInput = h("input", { id: "tt-market", list: "tt-market-list",
    "data-testid": "trade-market", spellcheck: "false", autocomplete: "off",
    placeholder: "SIM-SPOT-BTC-USDT or SMART-SPOT-BTC-USDT",
    value: ctx.params.get("market") || "SIM-SPOT-BTC-USDT" });
  const marketList = h("datalist", { id: "tt-market-list" });
  const buyBtn = h("button", { type: "button", class: "tt-side buy active",
    "data-testid": "trade-side-buy", onclick: () => setSide("BUY") }, "Buy");
  const sellBtn = h("button", { type: "button", class: "tt-side sell",
    "data-testid": "trade-side-sell", onclick: () => setSide("SELL") }, "Sell");
  const typeSelect = h("select", { id: "tt-type", "data-testid": "trade-type" },
    TYPES.map((t) => h("option", { value: t }, t.replaceAll("_", " "))));
  const quantityInput = h("input", { id: "tt-quantity", "data-testid": "trade-quantity",
    inputmode: "decimal", placeholder: "0.001", autocomplete: "off" });
  const priceInput = h("input", { id: "tt-price", "data-testid": "trade-price",
    inputmode: "decimal", autocomplete: "off" });
  const stopInput = h("input", { id: "tt-stop", "data-testid": "trade-stop-price",
    inputmode: "decimal", autocomplete: "off" });
  const tifSelect = h("select", { id: "tt-tif", "data-testid": "trade-tif" },
    h("option", { value: "" }, "Default"), ["GTC", "IOC", "FOK"].map(
      (t) => h("option", { value: t }, t)));
  const postOnly = h("input", { type: "checkbox", id: "tt-post-only",
    "data-testid": "trade-post-only" });
  const reduceOnly = h("input", { type: "checkbox", id: "tt-reduce-only",
    "data-testid": "trade-reduce-only" });
  const slippageInput = h("input", { id: "tt-slippage", "data-testid": "trade-max-slippage",
    inputmode: "decimal", placeholder: "100 (MARKET default)", autocomplete: "off" });
  const venueBoxes = h("div", { class: "tt-venues", "data-testid": "trade-venues" });
  const cidLabel = h("code", { "data-testid": "trade-client-order-id" }, state.clientOrderId);
  const notional = h("div", { class: "tt-notional muted", "data-testid": "trade-notional" });

  const submitBtn = h("button", { type: "submit", class: "buy tt-submit",
    "data-testid": "trade-submit" }, "Buy");
  const previewBtn = h("button", { type: "button", class: "primary",
    "data-testid": "trade-preview", onclick: () => previewRoute() }, "Preview route");
  const sendRoutedBtn = h("button", { type: "button", class: "buy tt-submit",
    "data-testid": "trade-send-routed", disabled: true, onclick: () => sendRouted() },
  "Send routed order");
  const formError = h("div", { class: "error tt-form-error", role: "alert",
    "data-testid": "trade-error" });

  const smartRows = h("div", { class: "tt-smart", "data-testid": "trade-smart-options" },
    field("maxSlippageBps", slippageInput, "Max slippage (bps vs arrival mid)"),
    h("label", {}, "Route to venues"), venueBoxes);
  const form = h("form", { class: "panel tt-ticket", "data-testid": "trade-ticket",
    autocomplete: "off" },
  h("div", { class: "tt-head" }, h("h2", {}, "Order ticket"),
    h("span", { class: "muted tt-cid" }, "clientOrderId ", cidLabel)),
  field("market", marketInput, "Market"), marketList,
  h("div", { class: "tt-sides" }, buyBtn, sellBtn),
  h("div", { class: "tt-pair" }, field("type", typeSelect, "Type"),
    field("timeInForce", tifSelect, "Time in force")),
  field("quantity", quantityInput, "Quantity (base)"),
  h("div", { class: "tt-pair" }, field("price", priceInput, "Limit price"),
    field("stopPrice", stopInput, "Stop / trigger price")),
  h("div", { class: "row tt-flags" },
    h("label", { class: "tt-check" }, postOnly, " Post only"),
    h("label", { class: "tt-check" }, reduceOnly, " Reduce only")),
  smartRows, notional,
  h("div", { class: "row tt-actions" }, submitBtn, previewBtn, sendRoutedBtn),
  formError);

  // --- market panel, preview and result -----------------------------------------------
  const bidCell = h("button", { type: "button", class: "tt-quote bid",
    "data-testid": "trade-best-bid", title: "use as price", onclick: () => usePrice("bid") });
  const askCell = h("button", { type: "button", class: "tt-quote ask",
    "data-testid": "trade-best-ask", title: "use as price", onclick: () => usePrice("ask") });
  const spreadCell = h("div", { class: "tt-spread muted", "data-testid": "trade-spread" });
  const streamState = h("span", { class: "state", "data-testid": "trade-bbo-state" }, "—");
  const marketInfo = h("div", { class: "tt-market-info muted", "data-testid": "trade-market-info" });
  const quotePanel = h("section", { class: "panel", "data-testid": "trade-bbo" },
    h("div", { class: "tt-head" }, h("h2", {}, "Best bid / ask"), streamState),
    h("div", { class: "tt-bbo" }, bidCell, spreadCell, askCell), marketInfo);
  const previewPanel = h("section", { class: "panel", "data-testid": "trade-preview-panel",
    hidden: true });
  const resultPanel = h("section", { class: "panel", "data-testid": "trade-result",
    hidden: true });

  root.append(h("div", { class: "tt-layout" }, form,
    h("div", { class: "stack" }, quotePanel, previewPanel, resultPanel)));

  // --- behaviour ------------------------------------------------------------------------
  function setSide(side) {
    if (state.side === side) return;
    state.side = side;
    changed();
  }

  function fields() {
    const market = marketInput.value.trim();
    const type = typeSelect.value;
    const body = { market, side: state.side, type };
    const qty = quantityInput.value.trim();
    if (qty !== "") body.quantity = Number(qty);
    if (hasPrice(type) && priceInput.value.trim() !== "") body.price = Number(priceInput.value);
    if (hasStop(type) && stopInput.value.trim() !== "") body.stopPrice = Number(stopInput.value);
    if (tifSelect.value) body.timeInForce = tifSelect.value;
    if (postOnly.checked && !isSmart(market)) body.postOnly = true;
    if (reduceOnly.checked && !isSmart(market)) body.reduceOnly = true;
    if (isSmart(market)) {
      if (slippageInput.value.trim() !== "") body.maxSlippageBps = Number(slippageInput.value);
      const chosen = [...venueBoxes.querySelectorAll("input:checked")].map((b) => b.value);
      const all = venueBoxes.querySelectorAll("input");
      if (all.length && chosen.length !== all.length) body.venues = chosen;
    }
    return body;
  }

  function layout() {
    const market = marketInput.value.trim();
    const smart = isSmart(market);
    for (const option of typeSelect.options) {
      option.hidden = smart && !SMART_TYPES.includes(option.value);
    }
    if (smart && !SMART_TYPES.includes(typeSelect.value)) typeSelect.value = "LIMIT";
    const type = typeSelect.value;
    priceInput.disabled = !hasPrice(type);
    stopInput.disabled = !hasStop(type);
    form.querySelector('[data-field="price"]').classList.toggle("tt-off", !hasPrice(type));
    form.querySelector('[data-field="stopPrice"]').classList.toggle("tt-off", !hasStop(type));
    postOnly.disabled = smart || type !== "LIMIT";
    const meta = state.markets.get(market);
    reduceOnly.disabled = smart || !meta || meta.assetType === "SPOT";
    smartRows.hidden = !smart;
    previewBtn.hidden = !smart;
    sendRoutedBtn.hidden = !smart;
    submitBtn.hidden = smart;
    buyBtn.classList.toggle("active", state.side === "BUY");
    sellBtn.classList.toggle("active", state.side === "SELL");
    const verb = state.side === "BUY" ? "Buy" : "Sell";
    submitBtn.textContent = `${verb} ${market.split("-").slice(2, 3).join("") || ""}`.trim();
    submitBtn.className = `${state.side === "BUY" ? "buy" : "sell"} tt-submit`;
    sendRoutedBtn.className = `${state.side === "BUY" ? "buy" : "sell"} tt-submit`;
    const q = Number(quantityInput.value);
    const p = hasPrice(type) ? Number(priceInput.value) : refPrice();
    notional.textContent = q > 0 && p > 0
      ? `≈ ${num(q * p, 2)} ${meta ? meta.quoteAsset : ""} notional` : "";
    sendRoutedBtn.disabled = state.inFlight || !validPreview();
  }

  function refPrice() {
    const b = state.bbo;
    if (!b) return 0;
    const side = state.side === "BUY" ? b.ask : b.bid;
    return side ? side.price : 0;
  }

  const previewKey = () => JSON.stringify(fields());
  const validPreview = () => state.preview !== null && state.previewKey === previewKey();

  // A changed order is a new order: a new clientOrderId, and any preview is void.
  function changed() {
    state.clientOrderId = newClientOrderId();
    cidLabel.textContent = state.clientOrderId;
    if (state.preview) {
      previewPanel.classList.add("tt-stale");
      previewPanel.querySelector(".tt-preview-note").textContent =
        "The ticket changed: preview again before sending.";
      state.preview = null;
    }
    clearErrors();
    layout();
  }

  function clearErrors() {
    formError.textContent = "";
    for (const node of form.querySelectorAll(".tt-field")) node.classList.remove("invalid");
    for (const node of form.querySelectorAll(".tt-field-error")) node.textContent = "";
  }

  function showError(err) {
    clearErrors();
    const param = err.parameter ? String(err.parameter).split(".")[0] : null;
    const box = param && form.querySelector(`.tt-field[data-field="${CSS.escape(param)}"]`);
    if (box) { // said once, next to the field it names; the code goes in its tooltip
      box.classList.add("invalid");
      box.querySelector(".tt-field-error").textContent = err.message;
      box.title = err.code || "";
    } else {
      formError.textContent = errorText(err);
    }
    resultPanel.hidden = true; // the last order's answer is not this one's
  }

  function usePrice(which) {
    const level = state.bbo && state.bbo[which];
    if (!level || !hasPrice(typeSelect.value)) return;
    priceInput.value = String(level.price);
    changed();
  }

  function renderBbo(msg) {
    state.bbo = msg;
    quotePanel.dataset.updateId = msg.updateId ?? "";
    const cell = (node, level, label) => {
      clear(node).append(h("span", { class: "tt-quote-label" }, label),
        h("span", { class: "tt-quote-price num" }, level ? num(level.price, 8) : "—"),
        h("span", { class: "tt-quote-qty num muted" }, level ? num(level.quantity, 8) : ""),
        level && level.venue ? venueTag(level.venue) : "");
    };
    cell(bidCell, msg.bid, "Bid");
    cell(askCell, msg.ask, "Ask");
    if (msg.bid && msg.ask) {
      const spread = msg.ask.price - msg.bid.price;
      const mid = (msg.ask.price + msg.bid.price) / 2;
      // A consolidated (SMART) book may be crossed: one venue bids above another's ask.
      spreadCell.textContent = `${spread < 0 ? "crossed" : "spread"} ${num(spread, 8)} · ` +
        `${num(spread / mid * 1e4, 2)} bp`;
    } else {
      spreadCell.textContent = "";
    }
    layout();
  }

  function showStreamState(s, detail) {
    streamState.textContent = s === "open" ? "live" : s;
    streamState.className = `state state-${s}`;
    streamState.title = detail || "";
  }

  async function watchMarket() {
    const market = marketInput.value.trim();
    if (bboStream) bboStream.close();
    bboStream = null;
    state.bbo = null;
    renderBbo({});
    streamState.textContent = "—";
    streamState.className = "state";
    const meta = state.markets.get(market);
    clear(marketInfo);
    clear(venueBoxes);
    if (meta) {
      if (meta.members) {
        marketInfo.append(`Routed across ${meta.members.length} venues:`,
          ...meta.members.map((m) => venueTag(m.split("-")[0])));
      } else {
        marketInfo.append(`${meta.assetType} · tick ${num(meta.tickSize, 10)} · lot ` +
          `${num(meta.lotSize, 10)} · min notional ${num(meta.minNotional)} · maker/taker ` +
          `${num(meta.makerFee * 1e4, 2)}/${num(meta.takerFee * 1e4, 2)} bp`);
      }
      for (const member of meta.members || []) {
        const venue = member.split("-")[0];
        venueBoxes.append(h("label", { class: "tt-check" },
          h("input", { type: "checkbox", value: venue, checked: true,
            "data-testid": `trade-venue-${venue}`, onchange: changed }), " ", venueTag(venue)));
      }
    }
    layout();
    if (!market) return;
    try {
      renderBbo(await get("/bbo", { market }));
    } catch (err) {
      marketInfo.append(h("div", { class: "error" }, errorText(err)));
      return;
    }
    bboStream = stream("/ws", { market, dataType: "BBO" }, {
      onMessage: (msg) => {
        if (msg.type === "resync") {
          // The venue's feed is down or resyncing: its last prices are stale, not "live".
          renderBbo({});
          showStreamState(msg.state || "resyncing", msg.reason);
        } else if (msg.type === "bbo" && msg.market === market) {
          if (streamState.textContent !== "live") showStreamState("open");
          renderBbo(msg);
        }
      },
      onState: (s, detail) => showStreamState(s, detail),
    });
  }

  async function submit(event) {
    event.preventDefault();
    if (isSmart(marketInput.value.trim()) || state.inFlight) return;
    await send({ ...fields(), clientOrderId: state.clientOrderId });
  }

  async function send(body) {
    state.inFlight = true;
    submitBtn.disabled = sendRoutedBtn.disabled = true;
    clearErrors();
    try {
      const order = await post("/orders", body);
      renderResult(order);
      // A definitive answer ends this ticket; an UNKNOWN keeps its id, so a retry is the
      // same order (the gateway reconciles it by clientOrderId).
      if (order.status !== "UNKNOWN") {
        state.clientOrderId = newClientOrderId();
        cidLabel.textContent = state.clientOrderId;
      }
      toast(`${order.side} ${num(order.quantity)} ${order.market}: ${order.status}`,
        order.status === "REJECTED" ? "error" : "ok");
    } catch (err) {
      showError(err);
    } finally {
      state.inFlight = false;
      submitBtn.disabled = false;
      if (state.preview) { // sent: the next routed order needs its own preview
        state.preview = null;
        previewPanel.classList.add("tt-stale");
        previewPanel.querySelector(".tt-preview-note").textContent =
          "Sent: preview again for another order.";
      }
      layout();
    }
  }

  async function previewRoute() {
    clearErrors();
    const body = fields();
    const key = JSON.stringify(body);
    previewBtn.disabled = true;
    try {
      const plan = await post("/orders", { ...body, dryRun: true });
      if (previewKey() !== key) return; // the ticket changed while the plan was computed
      state.preview = plan;
      state.previewKey = key;
      renderPreview(plan);
    } catch (err) {
      showError(err);
    } finally {
      previewBtn.disabled = false;
      layout();
    }
  }

  async function sendRouted() {
    if (!validPreview() || state.inFlight) return;
    await send({ ...fields(), clientOrderId: state.clientOrderId });
  }

  function kv(label, value, testid, cls = "") {
    return h("div", { class: "tt-kv" }, h("span", { class: "muted" }, label),
      h("span", { class: `num ${cls}`, "data-testid": testid }, value));
  }

  const bps = (x) => (x === undefined || x === null ? "—"
    : `${(Math.abs(x) < 0.005 ? 0 : x).toFixed(2)} bp`);

  function renderPreview(plan) {
    previewPanel.hidden = false;
    previewPanel.classList.remove("tt-stale");
    clear(previewPanel).append(
      h("div", { class: "tt-head" }, h("h2", {}, "Route preview"),
        h("span", { class: "muted tt-preview-note", "data-testid": "trade-preview-note" },
          `dry run · nothing sent · ${time(Date.now())}`)),
      h("table", { class: "data", "data-testid": "trade-plan-legs" },
        h("thead", {}, h("tr", {}, h("th", {}, "Venue"), h("th", {}, "Market"),
          h("th", { class: "num" }, "Quantity"), h("th", { class: "num" }, "Limit price"),
          h("th", { class: "num" }, "Avg price"), h("th", { class: "num" }, "Notional"),
          h("th", { class: "num" }, "Fee"))),
        h("tbody", {}, plan.legs.length ? plan.legs.map((leg) => h("tr",
          { "data-testid": "trade-plan-leg" },
          h("td", {}, venueTag(leg.venue)), h("td", { class: "mono" }, leg.market),
          h("td", { class: "num" }, num(leg.quantity)), h("td", { class: "num" },
            num(leg.limitPrice)), h("td", { class: "num" }, num(leg.averagePrice, 4)),
          h("td", { class: "num" }, num(leg.notional, 2)), h("td", { class: "num" },
            num(leg.fee, 4)))) : h("tr", {}, h("td", { colspan: 7, class: "muted" },
          "No leg: nothing would be sent")))),
      h("div", { class: "tt-totals" },
        kv("Quantity", `${num(plan.quantity)} / ${num(plan.requested)}`, "trade-plan-quantity"),
        kv("Unfilled", num(plan.unfilled) + (plan.limitedBy ? ` (${plan.limitedBy})` : ""),
          "trade-plan-unfilled", plan.unfilled > 0 ? "warn" : ""),
        kv("Avg price", num(plan.averagePrice, 4), "trade-plan-average"),
        kv("Net avg (fees in)", num(plan.netAveragePrice, 4), "trade-plan-net-average"),
        kv("Fees", num(plan.fees, 4), "trade-plan-fees"),
        kv("Arrival mid", num(plan.arrivalMid, 4), "trade-plan-mid"),
        kv("Slippage vs mid", bps(plan.slippageBps), "trade-plan-slippage"),
        kv("Best single venue", plan.bestSingleVenue
          ? `${plan.bestSingleVenue} @ ${num(plan.bestSingleNetPrice, 4)}` : "—",
        "trade-plan-best-single"),
        kv("Routing gain", bps(plan.vsBestSingleBps), "trade-plan-vs-best",
          plan.vsBestSingleBps > 0 ? "ok" : ""),
        kv("Price bound", num(plan.priceBound, 4), "trade-plan-bound")),
      h("div", { class: "tt-members" }, (plan.members || []).map((m) => h("span",
        { class: "tt-member", title: m.reason || "" }, venueTag(m.venue), " ",
        h("span", { class: `state state-${m.state}` }, m.state),
        m.capacity !== undefined ? h("span", { class: "muted num" },
          ` ${num(m.capacity, 2)} ${m.capacityAsset || ""}`) : ""))));
  }

  function renderResult(order) {
    resultPanel.hidden = false;
    const status = h("span", { class: `state state-${order.status}`,
      "data-testid": "trade-result-status" }, order.status);
    const children = order.children || [];
    clear(resultPanel).append(
      h("div", { class: "tt-head" }, h("h2", {}, isSmart(order.market) ? "Routed order"
        : "Order"), status),
      h("div", { class: "tt-totals" },
        kv("Order id", order.orderId || "— (pending)", "trade-result-order-id"),
        kv("Client id", order.clientOrderId, "trade-result-client-id"),
        kv("Market", order.market, "trade-result-market"),
        kv("Side / type", `${order.side} ${order.type}`, "trade-result-side",
          order.side === "BUY" ? "bid" : "ask"),
        kv("Filled", `${num(order.filledQuantity)} / ${num(order.quantity)}`,
          "trade-result-filled"),
        kv("Avg price", num(order.averagePrice, 4) || "—", "trade-result-average"),
        order.price !== undefined ? kv("Limit", num(order.price), "trade-result-price") : ""),
      order.status === "UNKNOWN" ? h("p", { class: "warn" }, "The venue did not answer in " +
        "time: the gateway reconciles it by clientOrderId. Sending again is safe.") : "",
      children.length ? h("table", { class: "data", "data-testid": "trade-result-children" },
        h("thead", {}, h("tr", {}, h("th", {}, "Venue"), h("th", {}, "Round"), h("th", {}, "Leg"),
          h("th", {}, "TIF"), h("th", { class: "num" }, "Quantity"),
          h("th", { class: "num" }, "Price"), h("th", {}, "Status"),
          h("th", { class: "num" }, "Filled"), h("th", { class: "num" }, "Avg"),
          h("th", { class: "num" }, "Fee"), h("th", { class: "num" }, "Latency"))),
        h("tbody", {}, children.map((c) => h("tr", { "data-testid": "trade-result-child" },
          h("td", {}, venueTag(c.venue)), h("td", {}, `${c.round}`),
          h("td", { class: "muted" }, `${c.leg}`), // the API's leg number (from 0)
          h("td", {}, c.timeInForce), h("td", { class: "num" }, num(c.quantity)),
          h("td", { class: "num" }, num(c.price)),
          h("td", {}, h("span", { class: `state state-${c.status}` }, c.status),
            c.error ? h("span", { class: "error" }, ` ${c.error}`) : ""),
          h("td", { class: "num" }, num(c.filledQuantity)),
          h("td", { class: "num" }, num(c.averagePrice, 4)),
          h("td", { class: "num" }, num(c.fee, 4)),
          h("td", { class: "num" }, c.latencyMs !== undefined ? `${num(c.latencyMs, 1)} ms`
            : ""))))) : "",
      order.report ? h("div", { class: "tt-totals", "data-testid": "trade-result-report" },
        kv("Rounds", order.report.rounds, "trade-report-rounds"),
        kv("Fees", num(order.report.fees, 4), "trade-report-fees"),
        kv("Net avg", num(order.report.netAveragePrice, 4), "trade-report-net"),
        kv("Slippage vs mid", bps(order.report.slippageBps), "trade-report-slippage"),
        kv("vs best single", bps(order.report.vsBestSingleBps), "trade-report-vs-best"))
        : "",
      h("div", { class: "row tt-result-actions" },
        h("button", { type: "button", class: "small", "data-testid": "trade-open-orders",
          onclick: () => ctx.navigate("orders", { exchange: isSmart(order.market) ? "SMART"
            : order.market.split("-")[0] }) }, "Open orders →")));
  }

  // --- wiring -----------------------------------------------------------------------------
  form.addEventListener("submit", submit);
  let lastMarket = marketInput.value.trim();
  marketInput.addEventListener("change", () => {
    const market = marketInput.value.trim();
    if (market === lastMarket) return;
    lastMarket = market;
    changed();
    watchMarket();
  });
  for (const input of [quantityInput, priceInput, stopInput, slippageInput]) {
    input.addEventListener("input", changed);
  }
  for (const input of [typeSelect, tifSelect, postOnly, reduceOnly]) {
    input.addEventListener("change", changed);
  }
  if (ctx.params.get("side") === "SELL") state.side = "SELL";
  layout();

  // The market suggestions: every venue's markets and the SMART ones.
  try {
    const exchanges = (await get("/exchanges")).map((e) => e.exchange);
    const lists = await Promise.all([...exchanges, "SMART"].map(
      (code) => get("/markets", { exchange: code }).catch(() => [])));
    for (const m of lists.flat()) {
      state.markets.set(m.symbol, m);
      marketList.append(h("option", { value: m.symbol }));
    }
  } catch (err) {
    formError.textContent = errorText(err);
  }
  if (stale()) return null;
  await watchMarket();

  return () => { if (bboStream) bboStream.close(); };
}
