"""The built-in exchange simulator (venue ``SIM``): an Aster-compatible venue with a matching
engine and seeded synthetic order flow, serving Aster's REST and WebSocket APIs on one port.
"""

from .app import SimExchange, VenueSide
from .engine import BUY, SELL, Fill, MatchingEngine, Order
from .markets import DEFAULT_MARKETS, SimMarket
from .server import SimServer, serve_sim
from .ws import WsLimits

__all__ = [
    "BUY",
    "DEFAULT_MARKETS",
    "SELL",
    "Fill",
    "MatchingEngine",
    "Order",
    "SimExchange",
    "SimMarket",
    "SimServer",
    "VenueSide",
    "WsLimits",
    "serve_sim",
]
