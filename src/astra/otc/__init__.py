"""The OTC desk: signed, expiring quotes priced from the consolidated books.

Pure pieces (no I/O): ``assets`` (asset names, amounts at each asset's precision),
``pricing`` (the route and the walk of the SMART books, the inventory skew) and ``signing``
(the HMAC of a quote under a rotatable key). The services build on them: ``desk`` (quotes and
accepts over the store's ledger), ``hedger`` (the desk's hedges through the router) and
``config`` (the ``[otc]`` settings).
"""

from .assets import check_amount, check_asset, plain, quantize_down, quantize_up
from .config import OtcConfig
from .desk import Desk
from .hedger import Hedger
from .pricing import (
    HedgeLeg,
    Hop,
    MemberLevels,
    PairBook,
    Priced,
    UsdRule,
    find_route,
    inventory_skew_bps,
    price_quote,
)
from .signing import QuoteSigner, canonical

__all__ = [
    "Desk",
    "HedgeLeg",
    "Hedger",
    "Hop",
    "MemberLevels",
    "OtcConfig",
    "PairBook",
    "Priced",
    "QuoteSigner",
    "UsdRule",
    "canonical",
    "check_amount",
    "check_asset",
    "find_route",
    "inventory_skew_bps",
    "plain",
    "price_quote",
    "quantize_down",
    "quantize_up",
]
