"""Astra's core market model: symbols, tokens, API models and errors.

Everything other packages need is imported from here (``from astra.core import parse_market``);
the ``_``-prefixed modules are private and may be reorganized.
"""

from ._errors import (
    AstraError,
    Conflict,
    Forbidden,
    InvalidMarket,
    InvalidParameter,
    MarketNotFound,
    MissingParameter,
    NotFound,
    RateLimited,
    Unauthorized,
    UnknownExchange,
    Unprocessable,
    VenueError,
    VenueTimeout,
    VenueUnavailable,
)
from ._models import (
    AssetType,
    BookUpdate,
    DataType,
    Error,
    Exchange,
    Level,
    MarketMetadata,
    OptionType,
    OrderBook,
    Side,
    Trade,
    TradesMessage,
)
from ._symbols import MAX_MARKET_LENGTH, MarketSymbol, is_valid_market, parse_market
from ._tokens import normalize_token

__all__ = [
    "MAX_MARKET_LENGTH",
    "AssetType",
    "AstraError",
    "BookUpdate",
    "Conflict",
    "DataType",
    "Error",
    "Exchange",
    "Forbidden",
    "InvalidMarket",
    "InvalidParameter",
    "Level",
    "MarketMetadata",
    "MarketNotFound",
    "MarketSymbol",
    "MissingParameter",
    "NotFound",
    "OptionType",
    "OrderBook",
    "RateLimited",
    "Side",
    "Trade",
    "TradesMessage",
    "Unauthorized",
    "UnknownExchange",
    "Unprocessable",
    "VenueError",
    "VenueTimeout",
    "VenueUnavailable",
    "is_valid_market",
    "normalize_token",
    "parse_market",
]
