"""ContractUnits: venue contracts to base units and back, exactly for linear contracts, at the
price for inverse ones; markets already in base units are left alone."""

from __future__ import annotations

import pytest

from astra.core import AssetType, ContractUnits, MarketMetadata, Side, Trade


def meta(symbol: str, asset_type: AssetType, contract_size: float | None) -> MarketMetadata:
    base, quote = symbol.split("-")[2:4]
    return MarketMetadata(symbol=symbol, asset_type=asset_type, base_asset=base,
                          quote_asset=quote, contract_size=contract_size)


LINEAR = meta("OKX-PERP-BTC-USDT", AssetType.PERP, 0.01)
INVERSE = meta("BINANCE-PERP-BTC-USD-COINM", AssetType.PERP, 100.0)


@pytest.mark.parametrize("market", [
    meta("OKX-SPOT-BTC-USDT", AssetType.SPOT, None),
    meta("BINANCE-PERP-BTC-USDT", AssetType.PERP, 1.0),  # USD-M: quantities are base units
    meta("ASTER-PERP-BTC-USDT", AssetType.PERP, None),
])
def test_markets_in_base_units_need_no_conversion(market):
    assert ContractUnits.of(market) is None


def test_linear_contracts_convert_exactly_both_ways():
    units = ContractUnits.of(LINEAR)
    assert units == ContractUnits(0.01, inverse=False)
    assert units.to_base(3, None) == 0.03  # not 0.030000000000000002
    assert units.to_base(7, 123.4) == 0.07  # the price does not matter
    assert units.to_contracts(0.03, None) == 3.0
    assert units.lot(1) == 0.01
    assert (units.to_base(25.0, 68000.1), units.to_base(0.0, 68000.0)) == (0.25, 0.0)


def test_inverse_contracts_convert_at_the_price():
    units = ContractUnits.of(INVERSE)
    assert units == ContractUnits(100.0, inverse=True)
    assert units.to_base(5, 50000.0) == 0.01  # 5 x 100 USD at 50,000 USD per BTC
    assert units.to_contracts(0.01, 50000.0) == 5.0
    assert units.to_base(3, 68000.0) == pytest.approx(300 / 68000, rel=1e-12)
    assert units.to_base(3, None) == 0.0
    with pytest.raises(ValueError, match="price"):
        units.to_contracts(0.01, None)
    assert units.lot(1) is None  # a lot's base size moves with the price
    # Kraken's inverse futures are 1 USD each: size 1, still contracts.
    assert ContractUnits.of(meta("KRAKEN-PERP-XBT-USD-COINM", AssetType.PERP, 1.0)) == (
        ContractUnits(1.0, inverse=True))


def test_coin_margined_options_count_the_underlying():
    option = MarketMetadata(symbol="OKX-OPT-BTC-USD-220514-22000-C-COINM",
                            asset_type=AssetType.OPT, base_asset="BTC", quote_asset="USD",
                            contract_size=0.01)
    units = ContractUnits.of(option)
    assert units == ContractUnits(0.01, inverse=False)
    assert units.to_base(3, 500.0) == 0.03


def test_trades_convert_at_their_own_price():
    units = ContractUnits.of(INVERSE)
    trades = [Trade(price=50000.0, quantity=5, side=Side.BUY, time=1, trade_id="a"),
              Trade(price=40000.0, quantity=8, side=Side.SELL, time=2)]
    assert units.trades(trades) == [
        Trade(price=50000.0, quantity=0.01, side=Side.BUY, time=1, trade_id="a"),
        Trade(price=40000.0, quantity=0.02, side=Side.SELL, time=2)]
    assert trades[0].quantity == 5  # the venue's trades are not modified
