// Markets: every served venue's markets and the SMART consolidated markets in one table,
// searchable as you type, filtered by venue and type, with a live best bid/ask.
// Invariants:
// - The rows are built once from GET /markets?exchange=<each of GET /exchanges, and SMART>; a
//   venue whose list fails is named in a warning, the others still show. Filters only hide
//   rows (no rebuild), and the filter state lives in the URL (#/markets?q=&venue=&type=),
//   written with replaceState so typing does not remount the page.
// - Quotes: GET /bbo for the visible rows only (at most MAX_QUOTED, QUOTE_CONCURRENCY at a
//   time), one round every QUOTE_EVERY_MS after the previous one ends; a failed quote shows
//   "—" with the reason as the cell's title. Cleanup stops the rounds.

import { get } from "../lib/api.js";
import { errorText, h, venueTag } from "../lib/dom.js";
import { decimalsOf, fixed } from "../lib/ladder.js";

const MAX_QUOTED = 48;
const QUOTE_CONCURRENCY = 6;
const QUOTE_EVERY_MS = 3000;
const SMART = "SMART";

function haystack(m) {
  return [m.symbol, m.baseAsset, m.quoteAsset, m.venue, m.assetType, m.exchangeSymbol]
    .filter(Boolean).join(" ").toUpperCase();
}

/** Rows sort by pair, then type, then venue (SMART first: it is every venue at once). */
function compare(order) {
  return (a, b) => a.baseAsset.localeCompare(b.baseAsset) ||
    a.quoteAsset.localeCompare(b.quoteAsset) || a.assetType.localeCompare(b.assetType) ||
    order.indexOf(a.venue) - order.indexOf(b.venue) || a.symbol.localeCompare(b.symbol);
}

export async function mount(root, ctx) {
  const hash = location.hash;
  const exchanges = await get("/exchanges");
  const venues = [SMART, ...exchanges.map((e) => e.exchange)];
  const lists = await Promise.allSettled(venues.map((v) => get("/markets", { exchange: v })));
  const markets = [];
  const failures = [];
  lists.forEach((result, i) => {
    if (result.status === "fulfilled") {
      for (const m of result.value) markets.push({ ...m, venue: venues[i] });
    } else {
      failures.push(`${venues[i]}: ${errorText(result.reason)}`);
    }
  });
  markets.sort(compare(venues));
  if (location.hash !== hash) return null; // the user moved on while this page loaded

  const filter = {
    q: ctx.params.get("q") || "",
    venue: ctx.params.get("venue") || "",
    type: ctx.params.get("type") || "",
  };

  // --- toolbar ------------------------------------------------------------------------------
  const search = h("input", { type: "search", class: "mk-search", value: filter.q,
    placeholder: "Search symbol, base, quote or venue (e.g. btc usdt, SIM2, perp)  ·  " +
      "/ to search, Enter opens the first row",
    "data-testid": "markets-search", spellcheck: "false", autocomplete: "off" });
  const chip = (group, value, label, testid) => h("button", { type: "button",
    class: "mk-chip", "data-testid": testid, "data-value": value,
    onclick: () => { filter[group] = filter[group] === value ? "" : value; apply(); } },
  label);
  const venueChips = [chip("venue", "", "All venues", "markets-venue-all"),
    ...venues.map((v) => chip("venue", v, v === SMART ? "SMART" : venueTag(v),
      `markets-venue-${v}`))];
  const types = [...new Set(markets.map((m) => m.assetType))].sort();
  const typeChips = [chip("type", "", "All types", "markets-type-all"),
    ...types.map((t) => chip("type", t, t, `markets-type-${t}`))];
  const count = h("span", { class: "muted num", "data-testid": "markets-count" });

  // --- table --------------------------------------------------------------------------------
  const rows = markets.map((m) => marketRow(m, ctx));
  const empty = h("tr", { class: "mk-empty", "data-testid": "markets-empty", hidden: true },
    h("td", { colspan: 10, class: "muted" }, "No market matches."));
  const table = h("table", { class: "data mk-markets", "data-testid": "markets-table" },
    h("thead", {}, h("tr", {},
      h("th", {}, "Market"), h("th", {}, "Venue"), h("th", {}, "Type"), h("th", {}, "Pair"),
      h("th", { class: "num" }, "Tick"), h("th", { class: "num" }, "Lot"),
      h("th", { class: "num" }, "Bid"), h("th", { class: "num" }, "Ask"),
      h("th", { class: "num" }, "Spread"), h("th", {}, "Fees · members"))),
    h("tbody", {}, rows.map((r) => r.node), empty));

  root.append(h("section", { class: "panel mk-toolbar" },
    h("div", { class: "row" }, h("h1", {}, "Markets"), count),
    search,
    h("div", { class: "row mk-chips" }, venueChips, h("span", { class: "mk-chip-gap" }),
      typeChips),
    failures.length ? h("p", { class: "warn", "data-testid": "markets-failures" },
      "Not listed: ", failures.join("; ")) : null),
  h("section", { class: "panel mk-table-panel" }, table));

  function visible() { return rows.filter((r) => !r.node.hidden); }

  function apply() {
    const tokens = filter.q.toUpperCase().split(/[\s/,]+/).filter(Boolean);
    let shown = 0;
    for (const row of rows) {
      const m = row.market;
      const ok = (!filter.venue || m.venue === filter.venue) &&
        (!filter.type || m.assetType === filter.type) &&
        tokens.every((t) => row.text.includes(t));
      row.node.hidden = !ok;
      if (ok) shown += 1;
    }
    empty.hidden = shown > 0;
    count.textContent = `${shown} of ${rows.length} markets`;
    for (const button of [...venueChips, ...typeChips]) {
      const group = venueChips.includes(button) ? "venue" : "type";
      button.classList.toggle("active", filter[group] === button.dataset.value);
    }
    const query = new URLSearchParams(Object.entries(filter).filter(([, v]) => v)).toString();
    history.replaceState(null, "", `#/markets${query ? "?" + query : ""}`);
  }

  search.addEventListener("input", () => { filter.q = search.value; apply(); });
  search.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      const first = visible()[0];
      if (first) ctx.navigate("market", { market: first.market.symbol });
    } else if (event.key === "Escape") {
      search.value = filter.q = "";
      apply();
    }
  });
  apply();
  search.focus();
  const onKey = (event) => { // "/" jumps to the search box, as on most terminals
    if (event.key === "/" && document.activeElement !== search) {
      event.preventDefault();
      search.focus();
      search.select();
    }
  };
  document.addEventListener("keydown", onKey);

  // --- live quotes --------------------------------------------------------------------------
  let stopped = false;
  let timer = null;
  async function quoteRound() {
    const queue = visible().slice(0, MAX_QUOTED);
    const worker = async () => {
      while (queue.length && !stopped) {
        const row = queue.shift();
        try {
          row.quote(await get("/bbo", { market: row.market.symbol }));
        } catch (err) {
          row.quote(null, errorText(err));
        }
      }
    };
    await Promise.all(Array.from({ length: QUOTE_CONCURRENCY }, worker));
    if (!stopped) timer = setTimeout(quoteRound, QUOTE_EVERY_MS);
  }
  quoteRound();

  return () => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener("keydown", onKey);
  };
}

/** One market's row: {node, market, text, quote(bbo | null, why)}. */
function marketRow(m, ctx) {
  const digits = decimalsOf(m.tickSize, 2);
  const bid = h("td", { class: "num bid", "data-testid": "markets-bid" }, "…");
  const ask = h("td", { class: "num ask", "data-testid": "markets-ask" }, "…");
  const spread = h("td", { class: "num muted", "data-testid": "markets-spread" }, "");
  const extra = m.members
    ? h("span", { class: "mk-members-tags" }, m.members.map((s) => venueTag(s.split("-")[0])))
    : h("span", { class: "muted" }, m.makerFee !== undefined
      ? `${(m.makerFee * 1e4).toFixed(1)} / ${(m.takerFee * 1e4).toFixed(1)} bps` : "");
  const node = h("tr", { class: "clickable", "data-testid": "markets-row",
    "data-market": m.symbol, "data-venue": m.venue,
    onclick: () => ctx.navigate("market", { market: m.symbol }) },
  h("td", { class: "mono mk-symbol" }, m.symbol),
  h("td", {}, m.venue === SMART ? h("span", { class: "mk-badge mk-smart" }, "SMART")
    : venueTag(m.venue)),
  h("td", {}, h("span", { class: "mk-badge" }, m.assetType)),
  h("td", {}, h("b", {}, m.baseAsset), h("span", { class: "muted" }, " / ", m.quoteAsset)),
  h("td", { class: "num muted" }, m.tickSize ?? (m.members ? "per venue" : "")),
  h("td", { class: "num muted" }, m.lotSize ?? ""),
  bid, ask, spread, h("td", {}, extra));
  let last = null;
  function quote(bbo, why = "") {
    if (!bbo) {
      bid.textContent = ask.textContent = "—";
      bid.title = ask.title = why;
      spread.textContent = "";
      return;
    }
    // SMART levels come from venues with different ticks: show the finer of the two.
    const d = m.members ? Math.max(decimalsOf(bbo.bid?.price, 1), decimalsOf(bbo.ask?.price, 1),
      2) : digits;
    flash(bid, last?.bid?.price, bbo.bid?.price);
    flash(ask, last?.ask?.price, bbo.ask?.price);
    bid.textContent = bbo.bid ? fixed(bbo.bid.price, d) : "—";
    ask.textContent = bbo.ask ? fixed(bbo.ask.price, d) : "—";
    bid.title = bbo.bid?.venue && m.members ? `best at ${bbo.bid.venue}` : "";
    ask.title = bbo.ask?.venue && m.members ? `best at ${bbo.ask.venue}` : "";
    if (bbo.bid && bbo.ask) {
      const mid = (bbo.bid.price + bbo.ask.price) / 2;
      spread.textContent = `${(((bbo.ask.price - bbo.bid.price) / mid) * 1e4).toFixed(2)} bps`;
    } else {
      spread.textContent = "";
    }
    last = bbo;
  }
  return { node, market: m, text: haystack(m), quote };
}

function flash(cell, before, after) {
  if (before === undefined || after === undefined || before === after) return;
  cell.classList.remove("mk-up", "mk-down");
  void cell.offsetWidth; // restart the animation
  cell.classList.add(after > before ? "mk-up" : "mk-down");
}
