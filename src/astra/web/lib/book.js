// A local L2 book, kept by applying the `WS /ws?dataType=ORDERBOOK` messages (pure: no DOM).
// Invariants (the same rule as the Python SDK's LocalBook, astra/client/_book.py):
// - The book is usable ("synced") only from a snapshot on; a snapshot replaces it whole (its
//   updateId may be lower than the last one's: the venue restarted).
// - updateId continuity: on a SMART- market the gateway numbers messages +1 each, so an
//   update must be exactly the previous id + 1; on a single venue the id is the venue's own
//   sequence (it may jump), so an update must name the last id as its prevUpdateId (from a
//   gateway that sends none: increase). An update that breaks the rule returns "gap"
//   and leaves the book untouched: the caller reopens the stream (a fresh snapshot follows).
// - {"type":"resync"} empties the book and returns "resync"; updates are ignored until the
//   next snapshot.
// - Quantity 0 deletes a level. bids() is descending, asks() ascending; each level carries its
//   cumulative quantity and (SMART) its per-venue split. Sorted views are cached until a write.

export const SMART_PREFIX = "SMART-";

export class LocalBook {
  constructor(market) {
    this.market = market;
    this.smart = market.startsWith(SMART_PREFIX);
    this.state = "connecting"; // synced | resyncing | disconnected | connecting
    this.reason = null;
    this.updateId = null;
    this.timestamp = null;
    this.members = null; // SMART: the member books' states, from the last snapshot
    this.snapshots = 0;
    this.updates = 0;
    this.gaps = 0;
    this._bids = new Map(); // price -> {quantity, venues}
    this._asks = new Map();
    this._views = null;
  }

  get synced() { return this.state === "synced"; }

  /**
   * Apply one parsed message. Returns "ok" (a snapshot or an update changed the book),
   * "gap" (an update that does not continue the last updateId: reopen the stream),
   * "resync" (the server says the book is no longer trustworthy) or "ignored" (an update
   * before any snapshot, or a message that is not a book message).
   */
  apply(msg) {
    if (!msg || typeof msg !== "object") return "ignored";
    if (msg.type === "resync") {
      this.reset(msg.state || "resyncing", msg.reason || null);
      return "resync";
    }
    if (msg.type === "snapshot") {
      this._bids.clear();
      this._asks.clear();
      this.members = msg.members || null;
      this.snapshots += 1;
      this._write(msg);
      this.state = "synced";
      this.reason = null;
      return "ok";
    }
    if (msg.type !== "update" || !this.synced) return "ignored";
    if (!this.continues(msg.updateId, msg.prevUpdateId)) {
      this.gaps += 1;
      return "gap";
    }
    this.updates += 1;
    this._write(msg);
    return "ok";
  }

  /** Does ``updateId`` continue this book? (see the invariants above) */
  continues(updateId, prevUpdateId) {
    if (!Number.isFinite(updateId) || !Number.isFinite(this.updateId)) return false;
    if (this.smart) return updateId === this.updateId + 1;
    // The gateway's chain: the id of the message before this one, whatever the venue's ids.
    if (prevUpdateId !== undefined && prevUpdateId !== null) return prevUpdateId === this.updateId;
    return updateId > this.updateId;
  }

  /** Forget the levels: the book waits for a fresh snapshot (``state`` says why). */
  reset(state, reason = null) {
    this._bids.clear();
    this._asks.clear();
    this._views = null;
    this.state = state;
    this.reason = reason;
  }

  _write(msg) {
    for (const [levels, side] of [[msg.bids, this._bids], [msg.asks, this._asks]]) {
      for (const level of levels || []) {
        const price = Number(level.price);
        const quantity = Number(level.quantity);
        if (!(quantity > 0)) side.delete(price);
        else side.set(price, { quantity, venues: level.venues || null });
      }
    }
    this._views = null;
    this.updateId = msg.updateId;
    if (msg.timestamp !== undefined && msg.timestamp !== null) this.timestamp = msg.timestamp;
  }

  _sorted() {
    if (this._views === null) {
      const view = (side, descending) => {
        const prices = [...side.keys()].sort((a, b) => (descending ? b - a : a - b));
        let total = 0;
        return prices.map((price) => {
          const { quantity, venues } = side.get(price);
          total += quantity;
          return { price, quantity, total, venues };
        });
      };
      this._views = { bids: view(this._bids, true), asks: view(this._asks, false) };
    }
    return this._views;
  }

  /** [{price, quantity, total, venues}] best first (highest price), ``depth`` levels at most. */
  bids(depth = Infinity) { return this._sorted().bids.slice(0, depth); }

  /** [{price, quantity, total, venues}] best first (lowest price), ``depth`` levels at most. */
  asks(depth = Infinity) { return this._sorted().asks.slice(0, depth); }

  get bestBid() { return this._sorted().bids[0] || null; }
  get bestAsk() { return this._sorted().asks[0] || null; }

  get spread() {
    const bid = this.bestBid;
    const ask = this.bestAsk;
    return bid && ask ? ask.price - bid.price : null;
  }

  get mid() {
    const bid = this.bestBid;
    const ask = this.bestAsk;
    return bid && ask ? (ask.price + bid.price) / 2 : null;
  }

  /** The venues seen in the book's levels (SMART), sorted. */
  venues() {
    const seen = new Set();
    for (const side of [this._bids, this._asks]) {
      for (const { venues } of side.values()) {
        for (const code of Object.keys(venues || {})) seen.add(code);
      }
    }
    return [...seen].sort();
  }
}
