"""Quantities in base-asset units on every market, contracts included.

Astra's quantities (book levels, trades, orders, fills, positions) are in units of the
market's ``baseAsset``, as the API reference defines them. Many derivatives venues count
contracts instead: OKX (``ctVal * ctMult``), HTX and KuCoin futures (lots), Binance COIN-M
and Kraken inverse futures (USD per contract). ``ContractUnits`` converts between the two at
the edges of the gateway; venue packages, their books and their integrity checks keep the
venue's own units.

Invariants:
- ``ContractUnits.of(meta)`` is None when the venue's quantities already are base units
  (spot; a linear contract of size 1 or of no stated size): those values pass untouched.
- Linear contracts: ``base = contracts * contract_size``, exactly (decimal arithmetic, so
  0.01 * 3 is 0.03, not 0.030000000000000002).
- Inverse (coin-margined, ``-COINM``) futures and perpetuals are worth ``contract_size``
  units of the quote asset (options, whatever their margin, count the underlying):
  ``base = contracts * contract_size / price``, at the price of the level, the trade or the
  fill, rounded to 12 significant digits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import msgspec

from ._models import AssetType, MarketMetadata, Trade
from ._symbols import parse_market

__all__ = ["ContractUnits"]


def _exact(value: float) -> Decimal:
    return Decimal(repr(value))


def _significant(value: float) -> float:
    return float(f"{value:.12g}")


@dataclass(frozen=True, slots=True)
class ContractUnits:
    size: float  # base asset per contract (linear), quote asset per contract (inverse)
    inverse: bool
    # ``size`` as an exact decimal, made once: linear conversions run per level on the hot path
    _exact_size: Decimal = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_exact_size", _exact(self.size))

    @staticmethod
    def of(meta: MarketMetadata) -> ContractUnits | None:
        if meta.asset_type is AssetType.SPOT or not meta.contract_size:
            return None
        # Coin-margined futures count quote-currency contracts; options always count the
        # underlying (an OKX BTC option is 0.01 BTC however it is settled).
        inverse = (parse_market(meta.symbol).is_coin_margined
                   and meta.asset_type is not AssetType.OPT)
        if meta.contract_size == 1 and not inverse:
            return None
        return ContractUnits(float(meta.contract_size), inverse)

    def to_base(self, contracts: float, price: float | None) -> float:
        """``contracts`` in base units (inverse: at ``price``; 0 without one)."""
        if not self.inverse:
            return float(_exact(contracts) * self._exact_size)
        if not price:
            return 0.0
        return _significant(contracts * self.size / price)

    def to_contracts(self, quantity: float, price: float | None) -> float:
        """``quantity`` (base units) in contracts (inverse: at ``price``, which it needs)."""
        if not self.inverse:
            return float(_exact(quantity) / self._exact_size)
        if not price:
            raise ValueError("an inverse contract's quantity converts at a price")
        return _significant(quantity * price / self.size)

    def trades(self, trades: list[Trade]) -> list[Trade]:
        return [
            msgspec.structs.replace(t, quantity=self.to_base(t.quantity, t.price)) for t in trades
        ]

    def lot(self, contracts: float | None) -> float | None:
        """A size limit given in contracts (a lot, a minimum), in base units; None for an
        inverse contract, whose size in base units moves with the price."""
        if contracts is None or self.inverse:
            return None
        return self.to_base(contracts, None)
