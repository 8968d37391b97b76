// Venues: each served venue's capabilities (GET /exchanges) and the state of every live
// market-data feed (GET /feeds), refreshed every 2 s.
// Invariants:
// - One panel per venue (SMART too, when it has feeds), one row per feed keyed by market and
//   data type; rows are updated in place, so an open "reasons" disclosure stays open across
//   refreshes; a feed that is gone is removed.
// - "stale": a synced feed whose lastUpdate is older than STALE_MS (on the gateway's clock,
//   which the page's clock approximates), shown next to its state.
// - A failed refresh keeps the last rows and says why; the next tick tries again. Cleanup
//   stops the refreshes.

import { get } from "../lib/api.js";
import { errorText, h, num, time, venueTag } from "../lib/dom.js";

const REFRESH_MS = 2000;
const STALE_MS = 10_000;
const SMART = "SMART";

function age(ms, now) {
  if (!ms) return "—";
  const s = Math.max(0, (now - ms) / 1000);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

export async function mount(root, ctx) {
  const hash = location.hash;
  const exchanges = await get("/exchanges");
  if (location.hash !== hash) return null; // the user moved on while this page loaded
  const order = [...exchanges.map((e) => e.exchange), SMART];
  const summary = h("div", { class: "row mk-feed-summary", "data-testid": "venues-summary" });
  const updated = h("span", { class: "muted", "data-testid": "venues-updated" });
  const problem = h("p", { class: "error", "data-testid": "venues-error", role: "alert" });
  const panels = new Map(); // venue -> {node, body, empty, rows: Map(key -> row)}

  root.append(h("section", { class: "panel mk-toolbar" },
    h("div", { class: "row" }, h("h1", {}, "Venues and feeds"), h("span", { class: "mk-grow" }),
      updated),
    h("p", { class: "muted" }, "A feed runs while a client streams its market or a REST read ",
      "used it recently. ", h("b", {}, "stale"), ": synced but no update for 10 s."),
    summary, problem));
  const list = h("div", { class: "stack" });
  root.append(list);

  for (const e of exchanges) list.append(venuePanel(e.exchange, e.capabilities).node);

  function venuePanel(code, capabilities) {
    if (panels.has(code)) return panels.get(code);
    const body = h("tbody");
    const empty = h("p", { class: "muted mk-no-feeds" },
      "No live feed: open one of its markets to start one.");
    const caps = capabilities ? h("dl", { class: "mk-caps", "data-testid": "venues-capabilities" },
      Object.entries(capabilities).map(([k, v]) => [h("dt", {}, k),
        h("dd", {}, Array.isArray(v) ? v.join(", ") : String(v))])) : null;
    const node = h("section", { class: "panel", "data-testid": "venues-panel",
      "data-venue": code },
    h("div", { class: "mk-panel-head" }, code === SMART ? h("span", { class: "mk-badge mk-smart" },
      "SMART") : venueTag(code), h("span", { class: "muted", "data-testid": "venues-feed-count" })),
    caps,
    h("table", { class: "data mk-feeds" },
      h("thead", {}, h("tr", {},
        h("th", {}, "Market"), h("th", {}, "Data"), h("th", {}, "State"),
        h("th", { class: "num" }, "Since"), h("th", { class: "num" }, "Resyncs"),
        h("th", {}, "Last reasons"), h("th", { class: "num" }, "Latency ms"),
        h("th", { class: "num" }, "Updates"),
        h("th", { class: "num", title: "since the last update" }, "Age"),
        h("th", { class: "num" }, "Clients"))),
      body),
    empty);
    const panel = { node, body, empty, rows: new Map(),
      count: node.querySelector("[data-testid=venues-feed-count]") };
    panels.set(code, panel);
    return panel;
  }

  function feedRow(feed) {
    const cells = {
      market: h("td", {}, h("a", { class: "mono", href: `#/market?market=${feed.market}`,
        onclick: (e) => { e.preventDefault(); ctx.navigate("market", { market: feed.market }); },
      }, feed.market)),
      type: h("td", { class: "muted" }, feed.dataType),
      state: h("td", {}),
      since: h("td", { class: "num muted" }),
      resyncs: h("td", { class: "num", "data-testid": "venues-feed-resyncs" }),
      reasons: h("td", { class: "mk-reasons" }),
      latency: h("td", { class: "num", "data-testid": "venues-feed-latency" }),
      updates: h("td", { class: "num", "data-testid": "venues-feed-updates" }),
      last: h("td", { class: "num muted" }),
      clients: h("td", { class: "num", "data-testid": "venues-feed-clients" }),
    };
    const node = h("tr", { "data-testid": "venues-feed-row", "data-market": feed.market,
      "data-type": feed.dataType }, Object.values(cells));
    return { node, cells, reasonsKey: null, details: null };
  }

  function fill(row, feed, now) {
    const stale = feed.state === "synced" && feed.lastUpdate && now - feed.lastUpdate > STALE_MS;
    const { cells } = row;
    row.node.dataset.state = feed.state;
    row.node.dataset.stale = stale ? "1" : "0";
    cells.state.replaceChildren(
      h("span", { class: `state state-${feed.state}`, "data-testid": "venues-feed-state",
        title: feed.reason || "" }, feed.state),
      ...(stale ? [h("span", { class: "state state-stale mk-stale",
        "data-testid": "venues-feed-stale" }, "stale")] : []));
    cells.since.textContent = age(feed.since, now);
    cells.since.title = feed.since ? new Date(feed.since).toISOString() : "";
    cells.resyncs.textContent = num(feed.resyncs, 0);
    cells.latency.textContent = feed.latencyMs === null || feed.latencyMs === undefined
      ? "—" : Number(feed.latencyMs).toFixed(1);
    cells.updates.textContent = num(feed.updates, 0);
    cells.last.textContent = age(feed.lastUpdate, now);
    cells.clients.textContent = num(feed.clients, 0);
    const recent = feed.recentResyncs || [];
    const key = JSON.stringify([feed.reason, recent]);
    if (key !== row.reasonsKey) { // rebuilt only when they change: an open disclosure stays
      row.reasonsKey = key;
      const open = row.details ? row.details.open : false;
      if (!recent.length && !feed.reason) {
        row.details = null;
        cells.reasons.replaceChildren(h("span", { class: "muted" }, "—"));
      } else {
        const first = feed.reason || recent[0].reason;
        row.details = h("details", { "data-testid": "venues-feed-reasons", open },
          h("summary", {}, first, recent.length > 1 ? h("span", { class: "muted" },
            ` +${recent.length - 1}`) : null),
          h("ol", {}, recent.map((r) => h("li", {}, h("span", { class: "num muted" },
            time(r.at)), " ", r.reason))));
        cells.reasons.replaceChildren(row.details);
      }
    }
  }

  let stopped = false;
  let timer = null;
  async function refresh() {
    try {
      const feeds = await get("/feeds");
      if (stopped) return;
      render(feeds);
      problem.textContent = "";
      updated.textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC · every 2 s`;
    } catch (err) {
      if (stopped) return;
      problem.textContent = err.status === 404
        ? "This gateway does not serve GET /feeds (an older version): capabilities only."
        : `Refresh failed: ${errorText(err)}`;
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  function render(feeds) {
    const now = Date.now();
    const counts = { synced: 0, connecting: 0, resyncing: 0, disconnected: 0, stale: 0 };
    const byVenue = new Map();
    for (const feed of feeds) {
      if (!byVenue.has(feed.venue)) byVenue.set(feed.venue, []);
      byVenue.get(feed.venue).push(feed);
    }
    for (const code of byVenue.keys()) {
      if (!panels.has(code)) {
        const panel = venuePanel(code, null);
        // Keep the venues' order: SMART (or an unknown code) after the served venues.
        const after = order.indexOf(code) < 0 ? null : [...panels.keys()]
          .filter((c) => c !== code && order.indexOf(c) > order.indexOf(code))
          .map((c) => panels.get(c).node)[0];
        list.insertBefore(panel.node, after || null);
      }
    }
    for (const [code, panel] of panels) {
      const feedsHere = byVenue.get(code) || [];
      const keep = new Set();
      for (const feed of feedsHere) {
        const key = `${feed.market}|${feed.dataType}`;
        keep.add(key);
        let row = panel.rows.get(key);
        if (!row) {
          row = feedRow(feed);
          panel.rows.set(key, row);
        }
        fill(row, feed, now);
        panel.body.append(row.node); // in the server's order (market, data type)
        counts[feed.state] = (counts[feed.state] || 0) + 1;
        if (row.node.dataset.stale === "1") counts.stale += 1;
      }
      for (const [key, row] of panel.rows) {
        if (!keep.has(key)) { row.node.remove(); panel.rows.delete(key); }
      }
      panel.empty.hidden = feedsHere.length > 0;
      panel.count.textContent = feedsHere.length
        ? `${feedsHere.length} live feed${feedsHere.length === 1 ? "" : "s"}` : "";
    }
    summary.replaceChildren(h("span", { class: "mk-summary-total" }, `${feeds.length} feeds`),
      ...Object.entries(counts).filter(([, n]) => n).map(([state, n]) => h("span", {
        class: `state state-${state}`, "data-testid": `venues-count-${state}` },
      `${n} ${state}`)));
  }

  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
