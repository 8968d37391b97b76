"""msgspec models of Astra's public schema (REST bodies and WebSocket messages).

Invariants:
- Python attributes are snake_case; the JSON names are exactly the seed's camelCase
  (``base_asset`` <-> ``"baseAsset"``, ``update_id`` <-> ``"updateId"``), via ``rename="camel"``.
- Optional fields default to ``None`` and are omitted from the JSON when ``None``
  (``omit_defaults=True``), so ``msgspec.json.encode(MarketMetadata(...))`` gives the seed's
  sample byte for byte. Required fields never have defaults: an empty ``bids`` list is still
  sent as ``"bids":[]``.
- Enums are ``StrEnum``: a member *is* its wire string (``Side.BUY == "BUY"``), and msgspec
  encodes and decodes them by value.
- Prices and quantities are f64 on the wire, as in the seed; timestamps are integer
  milliseconds since the Unix epoch.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

import msgspec

__all__ = [
    "MAX_SIM_VENUES",
    "SIM_CODES",
    "SMART",
    "AssetType",
    "Bbo",
    "BboQuote",
    "BookResync",
    "BookUpdate",
    "ConsolidatedBook",
    "ConsolidatedLevel",
    "ConsolidatedUpdate",
    "DataType",
    "Error",
    "Exchange",
    "FeedState",
    "Level",
    "MarketMetadata",
    "MemberState",
    "OptionType",
    "OrderBook",
    "Side",
    "Trade",
    "TradesMessage",
    "WsAck",
    "WsError",
    "WsId",
    "sim_code",
    "venue_family",
]


MAX_SIM_VENUES = 16  # SIM, SIM2 ... SIM16: the built-in simulator's venues


class Exchange(StrEnum):
    """Trading venues: the seed's six, ``ASTER``, the built-in simulator's venues ``SIM``,
    ``SIM2`` ... ``SIM16`` (``astra sim --venues N``), and ``SMART``: not a venue but the
    consolidated book and smart order router across the configured ones."""

    BINANCE = "BINANCE"
    COINBASE = "COINBASE"
    OKX = "OKX"
    HUOBI = "HUOBI"  # HTX; the API keeps the seed's code
    KUCOIN = "KUCOIN"
    KRAKEN = "KRAKEN"
    ASTER = "ASTER"
    SIM = "SIM"
    SIM2 = "SIM2"
    SIM3 = "SIM3"
    SIM4 = "SIM4"
    SIM5 = "SIM5"
    SIM6 = "SIM6"
    SIM7 = "SIM7"
    SIM8 = "SIM8"
    SIM9 = "SIM9"
    SIM10 = "SIM10"
    SIM11 = "SIM11"
    SIM12 = "SIM12"
    SIM13 = "SIM13"
    SIM14 = "SIM14"
    SIM15 = "SIM15"
    SIM16 = "SIM16"
    SMART = "SMART"


SIM_CODES: tuple[str, ...] = ("SIM", *(f"SIM{n}" for n in range(2, MAX_SIM_VENUES + 1)))
SMART = "SMART"


def sim_code(index: int) -> str:
    """The code of the simulator's ``index``-th venue (1-based): SIM, SIM2, SIM3, ..."""
    if not 1 <= index <= MAX_SIM_VENUES:
        raise ValueError(f"the simulator runs 1 to {MAX_SIM_VENUES} venues, not {index}")
    return "SIM" if index == 1 else f"SIM{index}"


def venue_family(code: str) -> str:
    """``SIM`` for every simulator venue (they speak one API), else ``code`` itself: the key
    of per-venue tables (rate rules, error codes, order-id formats) shared by the SIMs."""
    return "SIM" if code in SIM_CODES else code


class AssetType(StrEnum):
    SPOT = "SPOT"
    PERP = "PERP"  # perpetual futures
    FUT = "FUT"  # expiring futures
    OPT = "OPT"  # options


class OptionType(StrEnum):
    CALL = "C"
    PUT = "P"


class Side(StrEnum):
    """Taker side of a trade."""

    BUY = "BUY"
    SELL = "SELL"


class DataType(StrEnum):
    """What a WebSocket subscription streams."""

    ORDERBOOK = "ORDERBOOK"
    TRADE = "TRADE"
    BBO = "BBO"  # best bid and offer, sent only when it changes


# Levels and trades are created by the million on the feed path: frozen (hashable, immutable)
# and gc=False (they hold only floats/strings, so they can never be part of a cycle).
class Level(msgspec.Struct, frozen=True, gc=False):
    """One aggregated price level (the seed's Bid/Ask): ``{"price": .., "quantity": ..}``.

    In a ``BookUpdate`` a quantity of 0 deletes the level.
    """

    price: float
    quantity: float


class MarketMetadata(
    msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel", frozen=True, gc=False
):
    """One market as returned by ``GET /markets``.

    ``symbol`` keeps the venue's asset names (``KRAKEN-SPOT-XBT-USD``); ``base_asset``,
    ``quote_asset`` and ``margin_asset`` are normalized AbstractTokens (``BTC``).
    """

    symbol: str
    asset_type: AssetType
    base_asset: str
    quote_asset: str
    margin_asset: str | None = None
    tick_size: float | None = None
    lot_size: float | None = None
    min_quantity: float | None = None
    min_notional: float | None = None
    contract_size: float | None = None  # units of base_asset (or quote for inverse) per contract
    expiry: str | None = None  # YYMMDD, as in the symbol
    strike: float | None = None
    option_type: OptionType | None = None
    status: str | None = None  # venue trading status normalized by the venue package, e.g. TRADING
    exchange_symbol: str | None = None  # the venue's own instrument id, e.g. "BTCUSD_PERP"
    # The venue's published base-tier fee rates, as fractions (0.0004 = 4 bps).
    maker_fee: float | None = None
    taker_fee: float | None = None
    # SMART markets only: the member venues' market symbols, in the configured venue order.
    members: tuple[str, ...] | None = None


class OrderBook(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """L2 snapshot returned by ``GET /orderbook``: bids descending, asks ascending.

    ``market``, ``update_id`` and ``timestamp`` are optional only so that the seed's bare
    ``{"bids": [...], "asks": [...]}`` response still decodes; the gateway always sets them.
    """

    market: str | None = None
    bids: list[Level]
    asks: list[Level]
    update_id: int | None = None
    timestamp: int | None = None


class BookUpdate(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """WebSocket ORDERBOOK message: first a full ``snapshot``, then ``update`` deltas.

    ``update_id`` is the venue's sequence id: larger means later, per market (a venue may
    advance it by more than one per message). ``prev_update_id`` (updates of a live book) is
    the ``update_id`` of the message before it on this stream: a client whose last id differs
    has missed one and must resync. ``timestamp`` is the venue's event time when it sends one.
    """

    type: Literal["snapshot", "update"]
    market: str
    update_id: int
    bids: list[Level]
    asks: list[Level]
    timestamp: int | None = None
    prev_update_id: int | None = None


class FeedState(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """Why a market's live data cannot be served right now.

    ``state``: ``connecting`` (its feed is starting), ``resyncing`` (a gap, a bad checksum
    or a restarted stream: waiting for a fresh snapshot on a live connection) or
    ``disconnected`` (the connection to the venue is lost or refused; reconnecting with
    backoff). ``since``: epoch milliseconds when it entered that state; ``reason``: the last
    cause, in words.
    """

    state: Literal["connecting", "resyncing", "disconnected"]
    since: int
    reason: str | None = None


class BookResync(
    msgspec.Struct, tag="resync", tag_field="type", kw_only=True, omit_defaults=True,
    rename="camel",
):
    """WebSocket message ``{"type": "resync", ...}``. ORDERBOOK: the book stopped being
    trustworthy (gap, checksum, disconnect); discard it and wait for the next ``snapshot``,
    which replaces it whole (its ``updateId`` may be lower than the last one's when the venue
    restarted its sequence). TRADE: the trade feed dropped, so trades may be missing until
    it is back (no snapshot follows; re-read ``GET /trades`` to fill the gap)."""

    market: str
    reason: str
    state: Literal["connecting", "resyncing", "disconnected"]
    since: int


class Trade(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel", gc=False):
    """One public trade: ``side`` is the taker's side, ``time`` in epoch milliseconds."""

    price: float
    quantity: float
    side: Side
    time: int
    trade_id: str | None = None  # the venue's trade id when it has one (dedup after reconnect)


class TradesMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """WebSocket TRADE message: the trades since the previous message, and their market (set on
    live streams and replays, where one connection may carry several markets)."""

    trades: list[Trade]
    market: str | None = None


class Error(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """Error body: ``{"code": "INVALID_MARKET", "message": "..."}`` plus optional context."""

    code: str
    message: str
    parameter: str | None = None  # the request parameter at fault
    venue: str | None = None  # the venue that rejected or failed the request
    venue_code: str | None = None  # the venue's own error code, as text
    retry_after: float | None = None  # seconds; also sent as a Retry-After header on HTTP
    feed: FeedState | None = None  # a market's feed state, when its live data is unavailable
    members: list[MemberState] | None = None  # a SMART market's member books, when none is live


# --- WS /ws control messages (one connection, many subscriptions) -----------------------------

WsId = str | int | float  # a client message's ``id``: any JSON string or number, echoed back


class WsAck(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """The answer to a ``{"op":"subscribe"|"unsubscribe",...}`` message on ``WS /ws``."""

    type: Literal["subscribed", "unsubscribed"]
    market: str
    data_type: str
    id: WsId | None = None  # the message's own ``id``, when it had one


class WsError(Error, kw_only=True, omit_defaults=True, rename="camel", tag_field="type",
              tag="error"):
    """A refused message on ``WS /ws``: ``{"type":"error"}`` and the HTTP error body of the
    same fault, plus the message's ``id``; the connection stays open."""

    id: WsId | None = None


# --- the consolidated (SMART) book and best bid/offer ------------------------------------------


class MemberState(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """One member venue of a SMART market and the state of its book: ``synced`` (it
    contributes), ``connecting``, ``resyncing``, ``stale`` (synced, but unchanged for longer
    than the configured ``stale_after``) or ``disconnected``."""

    venue: str
    market: str
    state: Literal["synced", "connecting", "resyncing", "stale", "disconnected"]
    since: int | None = None  # epoch ms when it entered that state
    reason: str | None = None


class ConsolidatedLevel(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """A SMART book level: ``quantity`` is the sum of ``venues``' quantities at ``price``
    (base units). In a ``ConsolidatedUpdate`` a quantity of 0 deletes the level."""

    price: float
    quantity: float
    venues: dict[str, float]


class ConsolidatedBook(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """``GET /orderbook`` on a ``SMART-`` market: the in-sync members' books merged at exact
    venue prices (bids descending, asks ascending; a crossed book is shown as it is).
    ``fee_adjusted``: prices are net of each venue's taker fee (bids x (1 - fee), asks x
    (1 + fee)). ``members`` lists every requested member venue and its book's state."""

    market: str
    bids: list[ConsolidatedLevel]
    asks: list[ConsolidatedLevel]
    update_id: int
    timestamp: int | None = None
    fee_adjusted: bool = False
    members: list[MemberState]


class ConsolidatedUpdate(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """WebSocket ORDERBOOK message of a ``SMART-`` market. ``update_id`` is the gateway's own
    sequence for that market: +1 per message, never reused (also across member resyncs). A
    ``snapshot`` (with ``members``) follows any member's change of state."""

    type: Literal["snapshot", "update"]
    market: str
    update_id: int
    bids: list[ConsolidatedLevel]
    asks: list[ConsolidatedLevel]
    timestamp: int | None = None
    members: list[MemberState] | None = None


class BboQuote(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True, gc=False):
    """One side of the best bid and offer; ``venue`` is where it rests (on SMART, the venue
    with the most quantity at that price when several share it; ``venues`` has them all)."""

    price: float
    quantity: float
    venue: str
    venues: dict[str, float] | None = None  # SMART only


class Bbo(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """``GET /bbo`` and WebSocket ``dataType=BBO``: the best bid and offer (None when that
    side is empty). ``update_id``: the book's (single venue) or the gateway's (SMART)."""

    type: Literal["bbo"]
    market: str
    bid: BboQuote | None = None
    ask: BboQuote | None = None
    update_id: int
    timestamp: int | None = None
