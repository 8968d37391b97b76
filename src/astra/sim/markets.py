"""The simulator's listed markets and their trading rules, as data.

Invariants:
- Prices and quantities are integers inside the simulator: a price is a count of
  ``10**-price_dp`` units and a quantity a count of ``10**-qty_dp`` units, so matching and
  aggregation are exact and never suffer float drift. Strings on the wire are formatted from
  those integers (``format_price`` / ``format_qty``) and parsed back exactly
  (``filters.parse_decimal``).
- ``tick`` and ``step`` are expressed in those integer units; a valid price is a multiple of
  ``tick`` and a valid quantity a multiple of ``step`` (the PRICE_FILTER / LOT_SIZE rules).
- ``exchange_info_symbol`` produces the same keys, in the same shape, as the live Aster
  ``exchangeInfo`` responses recorded in ``shared/fixtures/aster/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_MARKETS", "PERP_ORDER_TYPES", "SPOT_ORDER_TYPES", "SimMarket",
           "format_fixed"]

# The order types each side's exchangeInfo lists, as Aster documents them.
SPOT_ORDER_TYPES = ("LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                    "TAKE_PROFIT_MARKET")
PERP_ORDER_TYPES = (*SPOT_ORDER_TYPES, "TRAILING_STOP_MARKET")

MAX_NOTIONAL = "9000000"  # spot, as the live venue lists it


def format_fixed(value: int, dp: int) -> str:
    """Format an integer count of ``10**-dp`` units as a fixed-point decimal string."""
    if dp == 0:
        return str(value)
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 10**dp)
    return f"{sign}{whole}.{frac:0{dp}d}"


@dataclass(slots=True)
class SimMarket:
    """One listed instrument: ``kind`` is ``"spot"`` or ``"perp"`` (USD-M perpetual)."""

    symbol: str
    kind: str
    base: str
    quote: str
    price_dp: int
    qty_dp: int
    tick: int  # price step, in 10**-price_dp units
    step: int  # quantity step, in 10**-qty_dp units
    start_price: float
    min_price: int
    max_price: int
    max_qty: int
    max_market_qty: int
    min_notional: int = 5
    percent_up: str = "5"
    percent_down: str = "0.2"
    # Synthetic flow shape: spacing between maker levels, in ticks; typical maker size in units.
    level_spacing: int = 1
    typical_size: int = 1
    # Per-step log-return standard deviation of the fair price (spot markets: a perpetual's
    # fair price follows its spot market, see flow.py).
    volatility: float = 0.0004
    name: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def stream_id(self) -> str:
        return self.symbol.lower()

    @property
    def is_perp(self) -> bool:
        return self.kind == "perp"

    def format_price(self, units: int) -> str:
        return format_fixed(units, self.price_dp)

    def format_qty(self, units: int) -> str:
        return format_fixed(units, self.qty_dp)

    def price_units(self, price: float) -> int:
        """Nearest valid (tick-aligned) price at or above the minimum, in integer units."""
        units = round(price * 10**self.price_dp / self.tick) * self.tick
        return max(units, self.tick)

    def exchange_info_symbol(self) -> dict:
        """This market's entry in ``exchangeInfo.symbols``, shaped like the live venue's."""
        tick = format_fixed(self.tick, self.price_dp)
        step = format_fixed(self.step, self.qty_dp)
        price_filter = {
            "minPrice": format_fixed(self.min_price, self.price_dp),
            "maxPrice": format_fixed(self.max_price, self.price_dp),
            "filterType": "PRICE_FILTER",
            "tickSize": tick,
        }
        lot = {
            "stepSize": step,
            "filterType": "LOT_SIZE",
            "maxQty": format_fixed(self.max_qty, self.qty_dp),
            "minQty": step,
        }
        market_lot = {
            "stepSize": step,
            "filterType": "MARKET_LOT_SIZE",
            "maxQty": format_fixed(self.max_market_qty, self.qty_dp),
            "minQty": step,
        }
        max_orders = {"limit": 200, "filterType": "MAX_NUM_ORDERS"}
        if self.is_perp:
            return {
                "symbol": self.symbol,
                "pair": self.symbol,
                "contractType": "PERPETUAL",
                "deliveryDate": 4133404800000,
                "onboardDate": 1627628400000,
                "status": "TRADING",
                "maintMarginPercent": "2.5000",
                "requiredMarginPercent": "5.0000",
                "baseAsset": self.base,
                "quoteAsset": self.quote,
                "marginAsset": self.quote,
                "pricePrecision": self.price_dp,
                "quantityPrecision": self.qty_dp,
                "baseAssetPrecision": 8,
                "quotePrecision": 8,
                "underlyingType": "COIN",
                "underlyingSubType": [],
                "symbolType": 0,
                "tradingMode": 0,
                "name": self.name,
                "channel": "",
                "sequenceNo": 10,
                "twapMinNotional": "1000",
                "settlePlan": 0,
                "triggerProtect": "0.0200",
                "liquidationFee": "0.025000",
                "marketTakeBound": "0.02",
                "createTime": 1630045468108,
                "filters": [
                    price_filter,
                    lot,
                    market_lot,
                    max_orders,
                    {"limit": 10, "filterType": "MAX_NUM_ALGO_ORDERS"},
                    {"notional": str(self.min_notional), "filterType": "MIN_NOTIONAL"},
                    {
                        "multiplierDown": self.percent_down,
                        "multiplierUp": self.percent_up,
                        "ltMultiplierDown": "0",
                        "multiplierDecimal": "4",
                        "filterType": "PERCENT_PRICE",
                        "ltMultiplierUp": "0",
                    },
                ],
                "orderTypes": list(PERP_ORDER_TYPES),
                "timeInForce": ["GTC", "IOC", "FOK", "GTX", "HIDDEN"],
            }
        return {
            "status": "TRADING",
            "baseAsset": self.base,
            "quoteAsset": self.quote,
            "pricePrecision": self.price_dp,
            "quantityPrecision": self.qty_dp,
            "baseAssetPrecision": 8,
            "quotePrecision": 8,
            "listingTime": 1757489990658,
            "baseAssetAddress": None,
            "filters": [
                price_filter,
                lot,
                market_lot,
                max_orders,
                {"minNotional": str(self.min_notional), "filterType": "MIN_NOTIONAL"},
                {"maxNotional": MAX_NOTIONAL, "filterType": "MAX_NOTIONAL"},
                {
                    "maxNotional": MAX_NOTIONAL,
                    "minNotional": str(self.min_notional),
                    "avgPriceMins": 5,
                    "applyMinToMarket": True,
                    "filterType": "NOTIONAL",
                    "applyMaxToMarket": True,
                },
                {
                    "multiplierDown": self.percent_down,
                    "multiplierUp": self.percent_up,
                    "multiplierDecimal": "1",
                    "filterType": "PERCENT_PRICE",
                },
            ],
            "orderTypes": list(SPOT_ORDER_TYPES),
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "HIDDEN"],
            "symbol": self.symbol,
            "ocoAllowed": False,
        }


def _default_markets() -> tuple[SimMarket, ...]:
    # Rules mirror the live venue's BTC/ETH listings (fixtures/aster); SOL spot is not listed
    # there, so it follows the ETH spot pattern.
    spot = dict(kind="spot", quote="USDT", price_dp=2, tick=1, min_price=1)
    return (
        SimMarket(
            symbol="BTCUSDT",
            base="BTC",
            qty_dp=5,
            step=1,
            start_price=97000.0,
            max_price=10**9,
            max_qty=5000 * 10**5,
            max_market_qty=2 * 10**5,
            level_spacing=50,
            typical_size=2000,
            name="Bitcoin",
            **spot,
        ),
        SimMarket(
            symbol="ETHUSDT",
            base="ETH",
            qty_dp=4,
            step=1,
            start_price=3400.0,
            max_price=10**8,
            max_qty=5000 * 10**4,
            max_market_qty=10 * 10**4,
            level_spacing=5,
            typical_size=3000,
            name="Ethereum",
            **spot,
        ),
        SimMarket(
            symbol="SOLUSDT",
            base="SOL",
            qty_dp=3,
            step=1,
            start_price=180.0,
            max_price=10**7,
            max_qty=10**6 * 10**3,
            max_market_qty=5000 * 10**3,
            level_spacing=1,
            typical_size=20000,
            name="Solana",
            **spot,
        ),
        SimMarket(
            symbol="BTCUSDT",
            kind="perp",
            base="BTC",
            quote="USDT",
            price_dp=1,
            tick=1,
            qty_dp=3,
            step=1,
            start_price=97000.0,
            min_price=10,
            max_price=10**7,
            max_qty=1000 * 10**3,
            max_market_qty=120 * 10**3,
            percent_up="1.0200",
            percent_down="0.9800",
            level_spacing=5,
            typical_size=50,
            name="Bitcoin",
        ),
        SimMarket(
            symbol="ETHUSDT",
            kind="perp",
            base="ETH",
            quote="USDT",
            price_dp=2,
            tick=10,
            qty_dp=3,
            step=1,
            start_price=3400.0,
            min_price=3990,
            max_price=10**8,
            max_qty=10000 * 10**3,
            max_market_qty=2000 * 10**3,
            percent_up="1.0200",
            percent_down="0.9800",
            level_spacing=1,
            typical_size=800,
            name="Ethereum",
        ),
        SimMarket(
            symbol="SOLUSDT",
            kind="perp",
            base="SOL",
            quote="USDT",
            price_dp=4,
            tick=100,
            qty_dp=2,
            step=1,
            start_price=180.0,
            min_price=4200,
            max_price=10**9,
            max_qty=10**6 * 10**2,
            max_market_qty=5000 * 10**2,
            percent_up="1.0300",
            percent_down="0.9700",
            level_spacing=1,
            typical_size=2000,
            name="Solana",
        ),
    )


DEFAULT_MARKETS: tuple[SimMarket, ...] = _default_markets()
