"""SMART markets: one consolidated market per instrument across the configured venues.

``SMART-SPOT-BTC-USDT`` merges every member venue's spot BTC/USDT market; ``SMART-PERP-BTC-USDT``
their linear USDT-margined perpetuals, ``SMART-PERP-BTC-USD-COINM`` their inverse ones.

Invariants (the merge rule):
- Two venue markets merge only when they have the same asset type, normalized base and quote
  (AbstractTokens, ``MarketMetadata.base_asset``/``quote_asset``), and for derivatives the same
  margin asset, the same contract kind (linear and inverse never merge) and the same expiry.
  Options never merge (no SMART option markets).
- A venue asset whose meaning is venue-specific (``VENUE_SPECIFIC_NAMES``: ``BCC`` is BCH on
  Binance, another coin elsewhere) and that this venue's own table does not map does not merge:
  two different tokens sharing a ticker are never one market.
- Assets that are only equivalent (USD, USDT, USDC) merge only when ``[smart] equivalent``
  lists them together; the SMART symbol and metadata then use the group's first name.
- A SMART market exists as soon as one configured member venue lists the market (a single
  member is still a SMART market: its symbol does not depend on how many venues are configured).
  Members are kept in the configured venue order (``[smart] venues``, else the gateway's).
- The SMART symbol is built from the normalized names; a linear derivative margined in another
  asset than its quote gets that asset as disambiguator (``SMART-PERP-BTC-USD-USDC``).

Loading (``SmartCatalog``): the answer is kept once every member venue's markets loaded.
Until then each answer is built from the venues loaded so far; one load per venue is in
flight, a load started by a call is waited for at most ``wait`` (a venue that hangs delays
one answer, not each), and ``missing`` names the venues left out (a SMART symbol not found
then is "not known yet", a 503, rather than a 404).

Configuration, ``[smart]`` (all optional)::

    venues = ["SIM", "SIM2", "SIM3"]     # members (default: every configured venue)
    equivalent = [["USDT", "USDC", "USD"]] # merge these as one asset (first name wins)
    stale_after = 30                       # s without a change before a synced book is stale
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from astra.core import (
    SMART,
    VENUE_SPECIFIC_NAMES,
    AssetType,
    InvalidMarket,
    MarketMetadata,
    MarketSymbol,
    VenueUnavailable,
    normalize_token,
    parse_market,
)
from astra.venues.base import Venue, VenueMarket

__all__ = [
    "SMART_PREFIX",
    "MemberBook",
    "SmartBooks",
    "SmartCatalog",
    "SmartConfig",
    "SmartMarket",
    "build_smart_markets",
    "is_smart",
]

SMART_PREFIX = SMART + "-"
_MERGED_TYPES = (AssetType.SPOT, AssetType.PERP, AssetType.FUT)


def is_smart(symbol: str) -> bool:
    return symbol.startswith(SMART_PREFIX)


@dataclass(frozen=True, slots=True)
class SmartConfig:
    venues: tuple[str, ...] | None = None  # None: every configured venue
    equivalent: tuple[tuple[str, ...], ...] = ()
    stale_after: float = 30.0

    @classmethod
    def from_config(cls, section: Mapping | None) -> SmartConfig:
        """The ``[smart]`` section, checked; ``ValueError`` names the bad key."""
        section = dict(section or {})
        unknown = set(section) - {"venues", "equivalent", "stale_after"}
        if unknown:
            raise ValueError(f"[smart]: unknown setting {sorted(unknown)[0]!r}")
        venues = section.get("venues")
        if venues is not None:
            if not isinstance(venues, list) or not all(isinstance(v, str) and v for v in venues):
                raise ValueError("[smart] venues must be a list of venue codes")
            venues = tuple(dict.fromkeys(v.upper() for v in venues))
        groups = section.get("equivalent") or []
        if not isinstance(groups, list) or not all(
            isinstance(g, list) and len(g) >= 2 and all(isinstance(a, str) and a for a in g)
            for g in groups
        ):
            raise ValueError("[smart] equivalent must be a list of lists of two or more assets")
        seen: set[str] = set()
        for group in groups:
            names = {a.upper() for a in group}
            if names & seen:
                raise ValueError(f"[smart] equivalent: {sorted(names & seen)[0]} is in two groups")
            seen |= names
        stale = section.get("stale_after", 30.0)
        if isinstance(stale, bool) or not isinstance(stale, int | float) or not 0 < stale <= 86400:
            raise ValueError(f"[smart] stale_after must be seconds in (0, 86400], got {stale!r}")
        return cls(venues, tuple(tuple(a.upper() for a in g) for g in groups), float(stale))

    def canonical(self, token: str) -> str:
        for group in self.equivalent:
            if token in group:
                return group[0]
        return token


@dataclass(frozen=True, slots=True)
class SmartMarket:
    symbol: str  # "SMART-SPOT-BTC-USDT", "SMART-PERP-BTC-USDT"
    metadata: MarketMetadata  # symbol, asset_type, normalized base/quote/margin, members
    members: dict[str, VenueMarket]  # venue code -> that venue's market (configured order)


@dataclass(frozen=True, slots=True)
class MemberBook:
    venue: str
    market: VenueMarket
    state: str  # "synced" | "connecting" | "resyncing" | "stale" | "disconnected"
    bids: list[tuple[float, float]]  # best first; base units; empty unless state == "synced"
    asks: list[tuple[float, float]]
    update_id: int | None
    taker_fee: float  # from metadata (0.0 when the venue publishes none)
    maker_fee: float


@dataclass(frozen=True, slots=True)
class SmartBooks:
    market: SmartMarket
    members: list[MemberBook]  # every requested member, whatever its state


def _mergeable(raw: str, exchange: str) -> bool:
    upper = raw.upper()
    return not (upper in VENUE_SPECIFIC_NAMES and normalize_token(upper, exchange) == upper)


def _group(market: VenueMarket, config: SmartConfig) -> tuple | None:
    """The merge key of ``market`` and the SMART symbol it merges under, or None."""
    meta = market.metadata
    if meta is None or meta.asset_type not in _MERGED_TYPES:
        return None
    try:
        parsed = parse_market(market.symbol)
    except InvalidMarket:
        return None
    if not (_mergeable(parsed.base, parsed.exchange) and _mergeable(parsed.quote, parsed.exchange)):
        return None
    base, quote = config.canonical(meta.base_asset), config.canonical(meta.quote_asset)
    if base == quote:
        return None
    derivative = meta.asset_type is not AssetType.SPOT
    inverse = derivative and parsed.is_coin_margined
    margin = None
    if derivative:
        margin = config.canonical(meta.margin_asset) if meta.margin_asset else (
            base if inverse else quote)
    disambiguator = "COINM" if inverse else (margin if margin not in (None, quote) else None)
    try:
        symbol = str(MarketSymbol(exchange=SMART, asset_type=meta.asset_type, base=base,
                                  quote=quote, expiry=meta.expiry, disambiguator=disambiguator))
    except InvalidMarket:
        return None
    return (meta.asset_type, base, quote, margin, inverse, meta.expiry), symbol


def build_smart_markets(
    markets_by_venue: Mapping[str, Mapping[str, VenueMarket]], config: SmartConfig,
    order: Sequence[str] | None = None,
) -> dict[str, SmartMarket]:
    """SMART markets from each member venue's markets (``order``: venue order, default the
    mapping's). A venue that lists two markets under one key keeps its first."""
    groups: dict[tuple, tuple[str, dict[str, VenueMarket]]] = {}
    for code in order or list(markets_by_venue):
        for market in (markets_by_venue.get(code) or {}).values():
            found = _group(market, config)
            if found is None:
                continue
            key, symbol = found
            members = groups.setdefault(key, (symbol, {}))[1]
            members.setdefault(code, market)
    smart: dict[str, SmartMarket] = {}
    for (asset_type, base, quote, margin, _inverse, expiry), (symbol, members) in sorted(
        groups.items(), key=lambda kv: kv[1][0]
    ):
        metadata = MarketMetadata(
            symbol=symbol, asset_type=asset_type, base_asset=base, quote_asset=quote,
            margin_asset=margin, expiry=expiry, status="TRADING",
            members=tuple(m.symbol for m in members.values()),
        )
        smart[symbol] = SmartMarket(symbol, metadata, members)
    return smart


class SmartCatalog:
    """The SMART markets of ``venues`` under ``config`` (see the module docstring)."""

    def __init__(self, venues: Mapping[str, Venue], config: SmartConfig) -> None:
        self.venues, self.config = venues, config
        self.missing: list[str] = []  # member venues left out of the last answer
        self._kept: dict[str, SmartMarket] | None = None
        self._loads: dict[str, asyncio.Task] = {}  # member venue -> its markets' load

    def codes(self) -> list[str]:
        """The member venues, in configured order (``[smart] venues``, else every venue)."""
        wanted = self.config.venues
        return [c for c in wanted if c in self.venues] if wanted else list(self.venues)

    def _load(self, code: str, fresh: list[asyncio.Task]) -> asyncio.Task:
        task = self._loads.get(code)
        if task is None or (task.done() and (task.cancelled() or task.exception())):
            task = self._loads[code] = asyncio.create_task(self.venues[code].load_markets())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # seen: no log
            fresh.append(task)
        return task

    async def markets(self, wait: float) -> dict[str, SmartMarket]:
        if self._kept is not None:
            return self._kept
        codes = self.codes()
        fresh: list[asyncio.Task] = []
        loads = [self._load(c, fresh) for c in codes]
        if fresh:
            await asyncio.wait(fresh, timeout=wait)
        loaded = {c: t.result() for c, t in zip(codes, loads, strict=True)
                  if t.done() and not t.cancelled() and not t.exception()
                  and isinstance(t.result(), dict)}
        smart = build_smart_markets(loaded, self.config, codes)
        self.missing = [c for c in codes if c not in loaded]
        if not self.missing:
            self._kept, self._loads = smart, {}
        return smart

    def unavailable(self, what: str) -> VenueUnavailable:
        return VenueUnavailable(
            "SMART", f"{what}: the markets of {', '.join(self.missing)} are unavailable",
            retry_after=1.0)

    async def close(self) -> None:
        for task in self._loads.values():
            task.cancel()
        await asyncio.gather(*self._loads.values(), return_exceptions=True)
