"""Request a firm OTC quote, accept it before it expires, list the account's converts.

    ASTRA_URL=http://127.0.0.1:8080 ASTRA_API_KEY=<key> python examples/otc_quote.py
"""

import asyncio
import os
import time

from astra.client import AsyncAstra


async def main() -> None:
    async with AsyncAstra(os.environ["ASTRA_URL"], os.environ["ASTRA_API_KEY"]) as astra:
        account = (await astra.otc_accounts())[0]
        print(f"account {account.account_id}: {dict(account.balances)}")
        answer = await astra.request_quote(account.account_id, "BTC", "USDT",
                                           from_amount="0.01")  # buy 0.01 BTC
        quote = answer.quote
        left = quote.expiry_time / 1e6 - time.time()
        print(f"quote {answer.quote_id}: {quote.from_asset_quantity} {quote.from_asset} for "
              f"{quote.to_asset_quantity} {quote.to_asset}, {left:.1f} s to accept")
        trade = (await astra.accept_quote(answer)).trade
        print(f"accepted: trade {trade.trade_id} at {trade.price}")
        for convert in await astra.converts(account.account_id, limit=3):
            print(f"convert {convert.trade_id}: {convert.from_asset_quantity} "
                  f"{convert.from_asset} at {convert.price}")


if __name__ == "__main__":
    asyncio.run(main())
