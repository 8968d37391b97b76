"""Place a limit order far from the market, read it back, cancel it (blocking client).

    ASTRA_URL=http://127.0.0.1:8080 ASTRA_API_KEY=<key> python examples/place_and_cancel.py

With ``client_order_id`` the SDK may safely retry the POST: the gateway answers the same
order for the same id.
"""

import os
import uuid

from astra.client import Astra

MARKET = "SIM-SPOT-BTC-USDT"

with Astra(os.environ["ASTRA_URL"], os.environ["ASTRA_API_KEY"]) as astra:
    best_bid = astra.orderbook(MARKET, depth=1).bids[0].price
    price = round(best_bid * 0.9)  # 10 % below the market: it rests
    order = astra.place_order(MARKET, "BUY", "LIMIT", 0.001, price,
                              client_order_id=f"example-{uuid.uuid4().hex[:12]}")
    print(f"placed {order.order_id} {order.side} {order.quantity} @ {order.price}: "
          f"{order.status}")
    print(f"open orders: {[o.order_id for o in astra.orders(MARKET)]}")
    canceled = astra.cancel_order(MARKET, order.order_id)
    print(f"canceled {canceled.order_id}: {canceled.status}")
