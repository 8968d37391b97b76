"""The exchangeInfo symbol filters, enforced on every new order with Aster's documented codes.

Prices and quantities arrive as exact integer units of the market (see ``markets.py``), so
every rule below is integer arithmetic: PRICE_FILTER (``price``/``stopPrice`` within
[minPrice, maxPrice] and on the tick), LOT_SIZE (limit orders) and MARKET_LOT_SIZE (market
orders), MIN_NOTIONAL, PERCENT_PRICE (against the index price: the synthetic flow's fair
price) and MAX_NUM_ORDERS. The first rule broken is the one reported.
"""

from __future__ import annotations

from decimal import Decimal

from .markets import SimMarket

__all__ = [
    "MAX_NUM_ORDERS",
    "FilterError",
    "check_lot",
    "check_notional",
    "check_percent",
    "check_price",
    "check_stop_price",
    "parse_decimal",
]

MAX_NUM_ORDERS = 200  # the MAX_NUM_ORDERS filter's limit, as exchangeInfo lists it


class FilterError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def parse_decimal(text: str, name: str, dp: int) -> int:
    """Exact units of ``10**-dp`` of a decimal parameter, or the documented error."""
    if len(text) > 40 or not all(c in "0123456789.-+eE" for c in text):
        raise FilterError(-1100, f"Illegal characters found in parameter '{name}'.")
    try:  # the screen above already rules out NaN and Infinity
        value = Decimal(text)
    except ArithmeticError:
        raise FilterError(-1100, f"Illegal characters found in parameter '{name}'.") from None
    scaled = value.scaleb(dp)
    if scaled != scaled.to_integral_value():
        raise FilterError(-1111, "Precision is over the maximum defined for this asset.")
    return int(scaled)


def check_price(market: SimMarket, price: int) -> None:
    if price <= 0:
        raise FilterError(-4001, "Price less than 0.")
    if price < market.min_price:
        raise FilterError(-4013, "Price less than minimum price.")
    if price > market.max_price:
        raise FilterError(-4002, "Price greater than max price.")
    if (price - market.min_price) % market.tick:
        raise FilterError(-4014, "Price not increased by tick size.")


def check_stop_price(market: SimMarket, stop: int) -> None:
    if stop <= 0:
        raise FilterError(-4006, "Stop price less than zero.")
    if stop > market.max_price:
        raise FilterError(-4007, "Stop price greater than max price.")
    if stop < market.min_price:
        raise FilterError(-4013, "Price less than minimum price.")
    if (stop - market.min_price) % market.tick:
        raise FilterError(-4014, "Price not increased by tick size.")


def check_lot(market: SimMarket, qty: int, *, market_order: bool) -> None:
    if qty <= 0:
        raise FilterError(-4003, "Quantity less than zero.")
    if qty < market.step:
        raise FilterError(-4004, "Quantity less than minimum quantity.")
    if qty > (market.max_market_qty if market_order else market.max_qty):
        raise FilterError(-4005, "Quantity greater than maximum quantity.")
    if (qty - market.step) % market.step:
        raise FilterError(
            -4023, "The increment of the quantity is not a multiple of the step size."
        )


def check_notional(market: SimMarket, price: int, qty: int) -> None:
    """``price * qty >= minNotional`` in the quote asset (exact: units of 10**-(pdp+qdp))."""
    scale = 10 ** (market.price_dp + market.qty_dp)
    if price * qty < market.min_notional * scale:
        raise FilterError(
            -4164,
            f"Order notional must be no smaller than {market.min_notional} "
            "(unless you choose Reduce Only)",
        )


def check_percent(market: SimMarket, price: int, index_price: float) -> None:
    """PERCENT_PRICE: ``index * multiplierDown <= price <= index * multiplierUp``."""
    value = price / 10**market.price_dp
    if value > index_price * float(market.percent_up):
        raise FilterError(-4016, "Price is higher than mark price multiplier cap.")
    if value < index_price * float(market.percent_down):
        raise FilterError(-4024, "Price is lower than mark price multiplier floor.")
