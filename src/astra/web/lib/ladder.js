// The book ladder: asks above (best ask at the bottom of its half), the spread in the middle,
// bids below, each row with a cumulative-size bar and a level-size bar; on a SMART book the
// level bar is split by venue, in each venue's colour (venueColor).
// Invariants: the rows are built once (``rows`` per side) and only their text and bar widths
// change on render, so a busy book costs no layout churn; an empty slot shows blank.

import { h, venueColor } from "./dom.js";

export function fixed(value, decimals) {
  return Number.isFinite(value) ? value.toFixed(decimals) : "";
}

/** The number of decimals a step such as a tick or lot size has (0.01 -> 2, 0.5 -> 1). */
export function decimalsOf(step, fallback = 2) {
  if (!(step > 0)) return fallback;
  for (let d = 0; d <= 10; d++) {
    const scaled = step * 10 ** d;
    if (Math.abs(scaled - Math.round(scaled)) < 1e-9 * Math.max(1, scaled)) return d;
  }
  return 10;
}

export class Ladder {
  /** ``rows`` levels per side; ``smart``: show per-venue bars. */
  constructor({ rows = 16, smart = false } = {}) {
    this.rows = rows;
    this.smart = smart;
    this.priceDigits = 2;
    this.sizeDigits = 4;
    this.asks = [];
    this.bids = [];
    const header = h("div", { class: "mk-ladder-head" },
      h("span", {}, "Price"), h("span", { class: "num" }, "Size"),
      h("span", { class: "num" }, "Total"));
    const askBox = h("div", { class: "mk-ladder-side mk-asks" });
    const bidBox = h("div", { class: "mk-ladder-side mk-bids" });
    for (let i = 0; i < rows; i++) {
      this.asks.push(this._row("ask"));
      this.bids.push(this._row("bid"));
    }
    // Asks are listed worst first, so the best ask sits right above the spread.
    askBox.append(...[...this.asks].reverse().map((row) => row.node));
    bidBox.append(...this.bids.map((row) => row.node));
    this.spreadPrice = h("span", { class: "mk-mid num", "data-testid": "ladder-mid" });
    this.spreadText = h("span", { class: "muted num", "data-testid": "ladder-spread" });
    this.status = h("span", { class: "mk-ladder-status warn", "data-testid": "ladder-status" });
    const spread = h("div", { class: "mk-spread-row" }, this.spreadPrice, this.status,
      this.spreadText);
    this.node = h("div", { class: "mk-ladder", "data-testid": "ladder" }, header, askBox, spread,
      bidBox);
  }

  _row(side) {
    const total = h("div", { class: `mk-bar-total mk-bar-${side}` });
    const level = h("div", { class: `mk-bar-level mk-bar-${side}` });
    const price = h("span", { class: `num ${side}` });
    const size = h("span", { class: "num" });
    const cum = h("span", { class: "num muted" });
    const node = h("div", { class: "mk-ladder-row empty", "data-testid": `ladder-${side}-row` },
      total, level, price, size, cum);
    return { node, total, level, price, size, cum, venues: "" };
  }

  /** Show ``book`` (a LocalBook); ``status``: a word over the spread while not synced. */
  render(book, status = "") {
    const bids = book.bids(this.rows);
    const asks = book.asks(this.rows);
    const maxTotal = Math.max(bids.length ? bids[bids.length - 1].total : 0,
      asks.length ? asks[asks.length - 1].total : 0);
    const maxLevel = Math.max(0, ...bids.map((l) => l.quantity), ...asks.map((l) => l.quantity));
    this._fill(this.bids, bids, maxTotal, maxLevel);
    this._fill(this.asks, asks, maxTotal, maxLevel);
    const { spread, mid } = book;
    if (spread !== null) {
      this.spreadPrice.textContent = fixed(mid, this.priceDigits + 1);
      this.spreadText.textContent =
        `spread ${fixed(spread, this.priceDigits)} · ${(spread / mid * 1e4).toFixed(2)} bps`;
    } else {
      this.spreadPrice.textContent = "—";
      this.spreadText.textContent = "";
    }
    this.status.textContent = status;
  }

  _fill(rows, levels, maxTotal, maxLevel) {
    rows.forEach((row, i) => {
      const level = levels[i];
      if (!level) {
        if (row.node.dataset.price !== undefined) {
          delete row.node.dataset.price;
          row.price.textContent = row.size.textContent = row.cum.textContent = "";
          row.total.style.width = row.level.style.width = "0%";
          row.level.replaceChildren();
          row.venues = "";
          row.node.classList.add("empty");
        }
        return;
      }
      row.node.classList.remove("empty");
      row.node.dataset.price = String(level.price);
      row.price.textContent = fixed(level.price, this.priceDigits);
      row.size.textContent = fixed(level.quantity, this.sizeDigits);
      row.cum.textContent = fixed(level.total, this.sizeDigits);
      row.total.style.width = `${maxTotal ? (level.total / maxTotal) * 100 : 0}%`;
      // At most 85% of the row: the largest level must not cover its own price.
      row.level.style.width = `${maxLevel ? (level.quantity / maxLevel) * 85 : 0}%`;
      if (this.smart) this._venues(row, level);
    });
  }

  // The level bar split by venue, largest share first; rebuilt only when the split changes.
  _venues(row, level) {
    const parts = Object.entries(level.venues || {}).filter(([, q]) => q > 0)
      .sort((a, b) => b[1] - a[1]);
    const key = parts.map(([code, q]) => `${code}:${q}`).join(",");
    if (key === row.venues) return;
    row.venues = key;
    row.node.dataset.venues = parts.map(([code]) => code).join(",");
    row.node.title = parts.map(([code, q]) => `${code} ${fixed(q, this.sizeDigits)}`)
      .join("  ·  ");
    row.level.replaceChildren(...parts.map(([code, q]) => h("div", {
      class: "mk-seg", "data-testid": "ladder-venue-segment", "data-venue": code,
      style: { "background-color": venueColor(code), width: `${(q / level.quantity) * 100}%` },
    })));
  }
}
