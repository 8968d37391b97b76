"""Watch a live book with the SDK: the best bid and ask after each update.

    ASTRA_URL=http://127.0.0.1:8080 ASTRA_API_KEY=<key> python examples/watch_book.py \
        [MARKET] [UPDATES]

The local book checks ``updateId`` continuity and resyncs itself (reconnecting) on a gap.
"""

import asyncio
import os
import sys

from astra.client import AsyncAstra


async def main(market: str, updates: int) -> None:
    async with AsyncAstra(os.environ["ASTRA_URL"], os.environ["ASTRA_API_KEY"]) as astra:
        seen = 0
        async for book in astra.watch_orderbook(market, depth=5):
            (bid, bid_qty), (ask, ask_qty) = book.bids[0], book.asks[0]
            print(f"{book.market} updateId={book.update_id} bid={bid} x {bid_qty} "
                  f"ask={ask} x {ask_qty}")
            seen += 1
            if seen >= updates:
                break


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "SMART-SPOT-BTC-USDT",
                     int(sys.argv[2]) if len(sys.argv) > 2 else 10))
