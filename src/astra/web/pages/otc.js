// The OTC desk: the key's accounts, request a quote, accept it before it expires, converts.
// Invariants:
// - A quote is sent back exactly as received (the desk signs every field); Accept is enabled
//   only while the quote's expiryTime (Unix µs) is ahead of this clock, and turns to
//   "expired" at that moment (the server's clock decides: a late accept is QUOTE_EXPIRED).
// - One quote is live at a time: a new request or a streamed quote replaces it.
// - The countdown timer and the quote stream close on unmount.

import { get, post, stream } from "../lib/api.js";
import { clear, errorText, h, num, time, toast } from "../lib/dom.js";

export async function mount(root, ctx) {
  const here = location.hash;
  const { accounts } = await get("/otc/accounts");
  if (location.hash !== here) return null; // navigated away meanwhile
  let accountId = ctx.params.get("account") || (accounts[0] && accounts[0].accountId);
  let quote = null; // the QuoteResponse on screen
  let accepted = false;
  let ticker = null;
  let quoteStream = null;

  const errorLine = h("p", { class: "error", role: "alert", "data-testid": "otc-error" });
  const accountsBody = h("tbody", { "data-testid": "otc-accounts" });
  const convertsBody = h("tbody", { "data-testid": "otc-converts" });

  const assets = () => {
    const account = accounts.find((a) => a.accountId === accountId);
    const names = new Set(Object.keys((account && account.balances) || {}));
    for (const a of ["BTC", "ETH", "USDT", "USD"]) names.add(a);
    return [...names].sort();
  };
  const assetSelect = (id, value) => h("select", { id, "data-testid": id },
    assets().map((a) => h("option", { value: a, selected: a === value }, a)));
  const buySelect = assetSelect("otc-from-asset", ctx.params.get("from") || "BTC");
  const sellSelect = assetSelect("otc-to-asset", ctx.params.get("to") || "USDT");
  const amountInput = h("input", { id: "otc-amount", "data-testid": "otc-amount",
    inputmode: "decimal", value: "0.01", autocomplete: "off" });
  const amountSide = h("select", { id: "otc-amount-side", "data-testid": "otc-amount-side" },
    h("option", { value: "fromAmount" }, "of what I buy"),
    h("option", { value: "toAmount" }, "of what I sell"));
  const requestBtn = h("button", { type: "submit", class: "primary",
    "data-testid": "otc-request" }, "Request quote");
  const liveBox = h("input", { type: "checkbox", id: "otc-live", "data-testid": "otc-live" });
  const quotePanel = h("section", { class: "panel otc-quote", "data-testid": "otc-quote",
    hidden: true });
  const resultPanel = h("section", { class: "panel", "data-testid": "otc-result", hidden: true });

  const form = h("form", { class: "panel otc-form", "data-testid": "otc-form" },
    h("h2", {}, "Request a quote"),
    h("label", { for: "otc-account" }, "Account"),
    h("select", { id: "otc-account", "data-testid": "otc-account", onchange: (ev) => {
      accountId = ev.target.value;
      stopStream();
      loadConverts();
    } }, accounts.map((a) => h("option", { value: a.accountId,
      selected: a.accountId === accountId }, `${a.name || "account"} · ${a.accountId}`))),
    h("div", { class: "tt-pair" },
      h("div", {}, h("label", { for: "otc-from-asset" }, "I buy"), buySelect),
      h("div", {}, h("label", { for: "otc-to-asset" }, "I sell"), sellSelect)),
    h("div", { class: "tt-pair" },
      h("div", {}, h("label", { for: "otc-amount" }, "Amount"), amountInput),
      h("div", {}, h("label", { for: "otc-amount-side" }, "in units"), amountSide)),
    h("div", { class: "row tt-actions" }, requestBtn,
      h("label", { class: "tt-check", for: "otc-live" }, liveBox,
        " Stream quotes (a fresh one every second)")),
    errorLine);

  root.append(
    h("div", { class: "tr-toolbar" }, h("h1", {}, "OTC desk"),
      h("span", { class: "muted" }, "Firm, signed quotes priced from the SMART books; " +
        "accept before they expire.")),
    h("div", { class: "otc-layout" }, form, h("div", { class: "stack" }, quotePanel,
      resultPanel)),
    h("section", { class: "panel" }, h("h2", {}, "Accounts"),
      h("table", { class: "data" }, h("thead", {}, h("tr", {}, h("th", {}, "Account"),
        h("th", {}, "Name"), h("th", { class: "num" }, "Spread"),
        h("th", { class: "num" }, "Max notional"), h("th", { class: "num" }, "Today / daily"),
        h("th", {}, "Balances"))), accountsBody)),
    h("section", { class: "panel" }, h("h2", {}, "Converts"),
      h("table", { class: "data" }, h("thead", {}, h("tr", {}, h("th", {}, "Time"),
        h("th", { class: "num" }, "Bought"), h("th", { class: "num" }, "Sold"), h("th", { class: "num" }, "Price"),
        h("th", {}, "Trade id"), h("th", {}, "Quote id"))), convertsBody)));

  // --- rendering ------------------------------------------------------------------------
  function renderAccounts() {
    clear(accountsBody).append(...accounts.map((a) => h("tr", {
      "data-testid": "otc-account-row", "data-account-id": a.accountId,
      class: a.accountId === accountId ? "tr-selected" : "" },
    h("td", { class: "mono" }, a.accountId), h("td", {}, a.name || ""),
    h("td", { class: "num" }, `${num(a.spreadBps)} bp`),
    h("td", { class: "num" }, num(a.maxNotional, 2)),
    h("td", { class: "num" }, `${num(a.volumeToday, 2)} / ${num(a.dailyVolume, 2)}`),
    h("td", { class: "otc-balances" }, Object.entries(a.balances || {}).map(([asset, v]) =>
      h("span", { class: "otc-balance", "data-testid": `otc-balance-${asset}` },
        h("span", { class: "muted" }, asset), " ", h("span", { class: "num" }, num(v))))))));
  }

  async function loadAccounts() {
    try {
      const fresh = (await get("/otc/accounts")).accounts;
      accounts.splice(0, accounts.length, ...fresh);
    } catch (err) {
      errorLine.textContent = errorText(err);
    }
    renderAccounts();
  }

  async function loadConverts() {
    renderAccounts();
    if (!accountId) return;
    try {
      const { converts } = await get(`/converts/${encodeURIComponent(accountId)}`,
        { limit: 50 });
      clear(convertsBody).append(...(converts.length ? converts.map((c) => h("tr", {
        "data-testid": "otc-convert-row", "data-trade-id": c.tradeId },
      h("td", { class: "mono muted" }, `${new Date(c.time).toISOString().slice(0, 10)} ` +
        time(c.time)),
      h("td", { class: "bid num" }, `${num(c.fromAssetQuantity)} ${c.fromAsset}`),
      h("td", { class: "ask num" }, `${num(c.toAssetQuantity)} ${c.toAsset}`),
      h("td", { class: "num" }, num(c.price)), h("td", { class: "mono muted" }, c.tradeId),
      h("td", { class: "mono muted" }, c.quoteId)))
        : [h("tr", {}, h("td", { colspan: 6, class: "muted tr-empty" }, "No converts yet"))]));
    } catch (err) {
      errorLine.textContent = errorText(err);
    }
  }

  const remainingMs = () => quote ? quote.quote.expiryTime / 1000 - Date.now() : 0;

  function renderQuote() {
    const q = quote.quote;
    const price = q.toAssetQuantity / q.fromAssetQuantity;
    const acceptBtn = h("button", { type: "button", class: "buy otc-accept",
      "data-testid": "otc-accept", onclick: () => accept() }, "Accept");
    const countdown = h("span", { class: "otc-countdown num", "data-testid": "otc-countdown" });
    const bar = h("div", { class: "otc-bar" }, h("div", { class: "otc-bar-fill" }));
    const total = Math.max(remainingMs(), 1);
    quotePanel.hidden = false;
    quotePanel.classList.remove("otc-expired");
    clear(quotePanel).append(
      h("div", { class: "tt-head" }, h("h2", {}, quoteStream ? "Live quote" : "Quote"),
        h("span", { class: "muted mono", "data-testid": "otc-quote-id" }, quote.quoteId)),
      h("div", { class: "otc-legs" },
        h("div", {}, h("div", { class: "muted" }, "You receive"),
          h("div", { class: "otc-amount bid num", "data-testid": "otc-quote-from" },
            `${num(q.fromAssetQuantity)} ${q.fromAsset}`)),
        h("div", { class: "otc-arrow muted" }, "⇄"),
        h("div", {}, h("div", { class: "muted" }, "You pay"),
          h("div", { class: "otc-amount ask num", "data-testid": "otc-quote-to" },
            `${num(q.toAssetQuantity)} ${q.toAsset}`))),
      h("div", { class: "otc-price muted" }, "Price ", h("span", { class: "num",
        "data-testid": "otc-quote-price" }, `${num(price, 8)} ${q.toAsset}/${q.fromAsset}`)),
      bar, h("div", { class: "row otc-actions" }, acceptBtn, countdown));
    clearInterval(ticker);
    const tick = () => {
      const left = remainingMs();
      bar.firstChild.style.setProperty("width", `${Math.max(0, left / total * 100)}%`);
      if (accepted) {
        countdown.textContent = "accepted";
        acceptBtn.disabled = true;
        bar.classList.add("otc-bar-done");
        clearInterval(ticker);
      } else if (left <= 0) {
        countdown.textContent = "expired";
        countdown.dataset.expired = "true";
        acceptBtn.disabled = true;
        quotePanel.classList.add("otc-expired");
        clearInterval(ticker);
      } else {
        countdown.textContent = `expires in ${(left / 1000).toFixed(1)} s`;
        bar.firstChild.classList.toggle("warn", left < 2000);
      }
    };
    tick();
    ticker = setInterval(tick, 100);
  }

  function showQuote(answer) {
    quote = answer;
    accepted = false;
    renderQuote();
  }

  function body() {
    const out = { accountId, fromAsset: buySelect.value, toAsset: sellSelect.value };
    out[amountSide.value] = Number(amountInput.value);
    return out;
  }

  async function request(event) {
    event.preventDefault();
    errorLine.textContent = "";
    if (liveBox.checked) return startStream();
    requestBtn.disabled = true;
    try {
      showQuote(await post("/request-quote", body()));
    } catch (err) {
      errorLine.textContent = errorText(err);
    } finally {
      requestBtn.disabled = false;
    }
  }

  async function accept() {
    if (!quote || remainingMs() <= 0) return;
    const sent = quote;
    stopStream(); // the quote on screen is the one accepted: no newer one replaces it
    quotePanel.querySelector(".otc-accept").disabled = true;
    try {
      const { trade } = await post("/accept-quote", { quote: sent.quote, quoteId: sent.quoteId });
      accepted = true;
      renderQuote();
      resultPanel.hidden = false;
      clear(resultPanel).append(
        h("div", { class: "tt-head" }, h("h2", {}, "Accepted"),
          h("span", { class: "state state-FILLED" }, "BOOKED")),
        h("p", { "data-testid": "otc-trade" }, "Bought ", h("b", { class: "bid" },
          `${num(trade.fromAssetQuantity)} ${trade.fromAsset}`), " for ",
        h("b", { class: "ask" }, `${num(trade.toAssetQuantity)} ${trade.toAsset}`), " at ",
        h("span", { class: "num" }, num(trade.price))),
        h("p", { class: "muted mono" }, "trade ", h("span", { "data-testid": "otc-trade-id" },
          trade.tradeId), ` · ${time(trade.time)}`));
      toast(`OTC trade booked: ${trade.tradeId}`, "ok");
      await Promise.all([loadAccounts(), loadConverts()]);
    } catch (err) {
      errorLine.textContent = errorText(err);
      if (err.code === "QUOTE_EXPIRED") {
        quote.quote = { ...quote.quote, expiryTime: 0 };
        renderQuote();
      }
    }
  }

  function startStream() {
    stopStream();
    const b = body();
    const query = { from: b.fromAsset, to: b.toAsset };
    if (b.fromAmount !== undefined) query.fromQty = b.fromAmount;
    else query.toQty = b.toAmount;
    const mine = stream(`/ws/stream-otc-quotes/${encodeURIComponent(accountId)}`, query, {
      onMessage: (msg) => {
        if (quoteStream !== mine) return; // stopped (an accept is on screen): keep it
        if (msg.type === "error") errorLine.textContent = errorText(msg);
        else if (msg.quote) { errorLine.textContent = ""; showQuote(msg); }
      },
      onState: (s, detail) => {
        if (s === "closed" && quoteStream === mine) {
          errorLine.textContent = `quote stream closed: ${detail || ""}`;
          quoteStream = null;
          liveBox.checked = false;
        }
      },
    });
    quoteStream = mine;
  }

  function stopStream() {
    if (quoteStream) quoteStream.close();
    quoteStream = null;
    liveBox.checked = false;
  }

  form.addEventListener("submit", request);
  liveBox.addEventListener("change", () => { if (!liveBox.checked) stopStream(); });
  if (!accounts.length) {
    errorLine.textContent = "This API key has no OTC account: an operator creates one " +
      "(astra otc accounts create --key <keyId>).";
    requestBtn.disabled = true;
  }
  await loadConverts();

  return () => {
    clearInterval(ticker);
    if (quoteStream) quoteStream.close();
  };
}
