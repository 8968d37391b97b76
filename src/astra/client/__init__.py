"""Astra's Python SDK: ``AsyncAstra`` (asyncio) and ``Astra`` (blocking), over the gateway's
HTTP and WebSocket API only.

```python
from astra.client import AsyncAstra

async with AsyncAstra("http://127.0.0.1:8080", api_key) as astra:
    book = await astra.orderbook("SIM-SPOT-BTC-USDT", depth=5)
    async for local in astra.watch_orderbook("SMART-SPOT-BTC-USDT"):
        print(local.update_id, local.best_bid, local.best_ask)
```

Invariants: this package imports nothing of Astra but ``astra.core`` (the server's models
and errors); errors are ``astra.core.AstraError`` subclasses (``except MarketNotFound``)
with ``status``, ``code``, ``message`` and ``parameter``; ``TransportError`` when no HTTP
answer came.
"""

from ._api import AsyncAstra, TimeArg
from ._book import BookGap, LocalBook
from ._http import ClientClosed, TransportError
from ._models import ApiKey, CanceledOrders, CreatedApiKey, ExchangeCapabilities, ExchangeInfo
from ._streams import Dropped, WsFeed
from ._sync import Astra, SyncIterator

__all__ = [
    "ApiKey",
    "Astra",
    "AsyncAstra",
    "BookGap",
    "CanceledOrders",
    "ClientClosed",
    "CreatedApiKey",
    "Dropped",
    "ExchangeCapabilities",
    "ExchangeInfo",
    "LocalBook",
    "SyncIterator",
    "TimeArg",
    "TransportError",
    "WsFeed",
]
