"""AbstractToken normalization: a venue's asset name -> Astra's AbstractToken (``XBT`` -> ``BTC``).

Market *symbols* keep the venue's names (``KRAKEN-SPOT-XBT-USD``); ``MarketMetadata``'s
``baseAsset``/``quoteAsset``/``marginAsset`` carry the normalized token (``BTC``/``USD``).

Invariants:
- ``normalize_token`` upper-cases, then applies the exchange's own table, then the global
  table, else returns the (upper-cased) name unchanged: unknown names pass through.
- The tables are explicit: there is no prefix-stripping rule, because Kraken's ``X``/``Z``
  prefixes only apply to its legacy assets (``XTZ`` is Tezos, ``ZRX`` is 0x).
- Normalizing twice gives the same result as normalizing once.
"""

from __future__ import annotations

__all__ = ["VENUE_SPECIFIC_NAMES", "normalize_token"]

# Names that mean the same token on every venue.
_GLOBAL: dict[str, str] = {
    "XBT": "BTC",  # ISO-4217-style code for bitcoin: Kraken, BitMEX, KuCoin futures (XBTUSDTM)
}

# Names whose meaning depends on the venue.
_BY_EXCHANGE: dict[str, dict[str, str]] = {
    # Kraken's legacy asset ids: X-prefixed crypto, Z-prefixed fiat (as in its REST Assets and
    # Balance responses, e.g. pair XXBTZUSD), plus XDG, its own code for dogecoin.
    "KRAKEN": {
        "XXBT": "BTC",
        "XDG": "DOGE",
        "XXDG": "DOGE",
        "XETH": "ETH",
        "XETC": "ETC",
        "XLTC": "LTC",
        "XXRP": "XRP",
        "XXLM": "XLM",
        "XXMR": "XMR",
        "XZEC": "ZEC",
        "XREP": "REP",
        "XMLN": "MLN",
        "ZUSD": "USD",
        "ZEUR": "EUR",
        "ZGBP": "GBP",
        "ZJPY": "JPY",
        "ZCAD": "CAD",
    },
    # Binance's historical Bitcoin Cash tickers: BCC until the Nov 2018 fork, then BCHABC
    # (renamed BCH in 2019) and BCHSV (renamed BSV). Elsewhere BCC was a different coin.
    "BINANCE": {
        "BCC": "BCH",
        "BCHABC": "BCH",
        "BCHSV": "BSV",
    },
}

_EMPTY: dict[str, str] = {}

# Names that mean a particular token only on some venues (``BCC`` is BCH on Binance, another
# coin elsewhere): on a venue whose table does not map them, their meaning is unknown.
VENUE_SPECIFIC_NAMES: frozenset[str] = frozenset(n for t in _BY_EXCHANGE.values() for n in t)


def normalize_token(name: str, exchange: str | None = None) -> str:
    """The AbstractToken for a venue asset name, e.g. ``("XXBT", "KRAKEN") -> "BTC"``."""
    upper = name.upper()
    if exchange is not None:
        token = _BY_EXCHANGE.get(exchange.upper(), _EMPTY).get(upper)
        if token is not None:
            return token
    return _GLOBAL.get(upper, upper)
