"""``astra book MARKET``: a live ladder of one book in the terminal (rich), fed by
``AsyncAstra.watch_orderbook``.

Invariants:
- Asks above (best ask nearest the spread), bids below, the spread between; the title says
  the market, ``updateId`` and the book's state; a ``SMART-`` book has a venues column (each
  level's split by venue). Prices and quantities are printed as Python writes the floats the
  server sent (``repr``), so what is shown is exactly the book's.
- ``--count N`` renders N frames one after another to stdout (no live redraw, no colour) and
  exits 0: the headless mode tests and scripts use. Live mode redraws at most
  ``REFRESH_PER_SECOND`` times a second whatever the update rate.
- Errors print ``astra book: CODE: message`` on stderr and exit 1 (2 for a missing key or a
  depth below 1). The book is read once over REST first: a wrong key, an unknown market or a
  gateway that does not answer is that error, not a ladder forever "disconnected".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from astra.core import AstraError

from ._api import AsyncAstra
from ._book import LocalBook

__all__ = ["DEFAULT_URL", "REFRESH_PER_SECOND", "ladder_table", "run_book", "watch_ladder"]

DEFAULT_URL = "http://127.0.0.1:8080"
REFRESH_PER_SECOND = 8
_STATE_STYLE = {"synced": "green", "resyncing": "yellow", "disconnected": "red",
                "connecting": "yellow"}


def _venues(split: dict[str, float]) -> str:
    return " ".join(f"{venue}:{qty!r}" for venue, qty in sorted(split.items()))


def ladder_table(book: LocalBook) -> Table:
    """The book as a rich Table: asks (worst to best), the spread, bids (best to worst)."""
    state = Text(book.state, style=_STATE_STYLE.get(book.state, ""))
    title = Text.assemble(f"{book.market}  updateId {book.update_id}  ", state)
    if book.reason and not book.synced:
        title.append(f" ({book.reason})")
    table = Table(title=title, title_justify="left", min_width=len(title.plain) + 2)
    table.add_column("side")
    table.add_column("price", justify="right")
    table.add_column("quantity", justify="right")
    if book.smart:
        table.add_column("venues")
    for price, qty in reversed(book.asks):
        row = ["ask", Text(repr(price), style="red"), repr(qty)]
        table.add_row(*row, *([_venues(book.ask_venues.get(price, {}))] if book.smart else []))
    spread = book.spread
    table.add_row("", Text(f"spread {spread:.10g}" if spread is not None else "spread -",
                           style="bold"), "", *([""] if book.smart else []),
                  end_section=True)
    for price, qty in book.bids:
        row = ["bid", Text(repr(price), style="green"), repr(qty)]
        table.add_row(*row, *([_venues(book.bid_venues.get(price, {}))] if book.smart else []))
    if book.smart and book.members:
        table.caption = "members: " + ", ".join(f"{m.venue} {m.state}" for m in book.members)
    return table


async def watch_ladder(client: AsyncAstra, market: str, depth: int, count: int | None,
                       console: Console) -> None:
    """Render the book until interrupted, or ``count`` frames (plain output) then return."""
    books = client.watch_orderbook(market, depth, yield_resyncs=True)
    if count is not None:
        shown = 0
        async for book in books:
            console.print(ladder_table(book))
            shown += 1
            if shown >= count:
                break
        await books.aclose()
        return
    loop = asyncio.get_running_loop()
    with Live(console=console, refresh_per_second=REFRESH_PER_SECOND,
              auto_refresh=True) as live:
        due: asyncio.TimerHandle | None = None

        def draw(book: LocalBook) -> None:
            nonlocal due
            due = None
            live.update(ladder_table(book))  # built on the loop: the book is not mid-write

        async for book in books:
            if not book.synced:
                draw(book)  # a resync is shown at once
            elif due is None:  # one table per redraw, not one per update
                due = loop.call_later(1 / REFRESH_PER_SECOND, draw, book)


async def _main(args: argparse.Namespace, key: str) -> int:
    console = Console(color_system=None, force_terminal=False, width=args.width) \
        if args.count is not None else Console()
    async with AsyncAstra(args.url, key, timeout=args.timeout) as client:
        try:
            await client.orderbook(args.market, depth=1)  # key, scope, market, reachability
            await watch_ladder(client, args.market, args.depth, args.count, console)
        except AstraError as err:
            print(f"astra book: {err.code}: {err.message}", file=sys.stderr)
            return 1
    return 0


def run_book(args: argparse.Namespace) -> int:
    """``astra book``'s entry point (its parser is ``astra.cli``'s)."""
    key = args.key or os.environ.get("ASTRA_API_KEY")
    if not key:
        print("astra book: give an API key with --key or ASTRA_API_KEY", file=sys.stderr)
        return 2
    if args.depth < 1:
        print(f"astra book: --depth must be at least 1, got {args.depth}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(args, key))
    except KeyboardInterrupt:
        return 0
