"""The built-in exchange simulator (venues ``SIM``, ``SIM2`` ...): Aster-compatible venues,
each with a matching engine and seeded synthetic order flow, serving Aster's REST and
WebSocket APIs on a port of its own; several venues in one process share one fair-value path
(``SimCluster``).
"""

from .app import SimExchange, VenueSide
from .cluster import SimCluster, serve_sim
from .engine import BUY, SELL, Fill, MatchingEngine, Order
from .markets import DEFAULT_MARKETS, SimMarket
from .server import SimServer
from .venues import VenueProfile, profile_for
from .ws import WsLimits

__all__ = [
    "BUY",
    "DEFAULT_MARKETS",
    "SELL",
    "Fill",
    "MatchingEngine",
    "Order",
    "SimCluster",
    "SimExchange",
    "SimMarket",
    "SimServer",
    "VenueProfile",
    "VenueSide",
    "WsLimits",
    "profile_for",
    "serve_sim",
]
