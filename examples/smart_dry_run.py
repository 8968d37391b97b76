"""Ask the smart order router for its plan (nothing is sent), then send the order.

    ASTRA_URL=http://127.0.0.1:8080 ASTRA_API_KEY=<key> python examples/smart_dry_run.py
"""

import asyncio
import os
import uuid

from astra.client import AsyncAstra

MARKET = "SMART-SPOT-BTC-USDT"


async def main() -> None:
    async with AsyncAstra(os.environ["ASTRA_URL"], os.environ["ASTRA_API_KEY"]) as astra:
        plan = await astra.place_smart_order(MARKET, "BUY", "MARKET", 0.05,
                                             max_slippage_bps=50)  # dry_run=True by default
        for leg in plan.legs:
            print(f"plan: {leg.venue} {leg.quantity} up to {leg.limit_price}")
        print(f"plan: average {plan.average_price} net {plan.net_average_price} "
              f"vs best single venue {plan.best_single_venue} ({plan.vs_best_single_bps} bps)")
        order = await astra.place_smart_order(
            MARKET, "BUY", "MARKET", 0.05, max_slippage_bps=50, dry_run=False,
            client_order_id=f"ex-{uuid.uuid4().hex[:12]}")
        print(f"routed {order.order_id}: {order.status} {order.filled_quantity} "
              f"@ {order.average_price}")
        for fill in order.report.fills if order.report else []:
            print(f"filled: {fill.venue} {fill.quantity} @ {fill.average_price}")


if __name__ == "__main__":
    asyncio.run(main())
