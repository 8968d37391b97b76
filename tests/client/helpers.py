"""Helpers of the SDK's tests: raw HTTP reads to compare the SDK's answers with, and the
book-at-the-same-updateId comparison."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from astra.client import AsyncAstra, LocalBook

BOUND = 30  # seconds any one network step of a test may take


async def raw_get(base: str, token: str, path: str, **params: Any) -> tuple[int, Any]:
    """``GET base+path`` with plain aiohttp: (status, decoded JSON)."""
    async with (aiohttp.ClientSession() as s, asyncio.timeout(BOUND),
                s.get(base + path, params=params,
                      headers={"x-astra-api-key": f"Bearer {token}"}) as r):
        return r.status, json.loads(await r.read())


def levels(book) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """A REST book's sides as (price, quantity) pairs."""
    return ([(lv.price, lv.quantity) for lv in book.bids],
            [(lv.price, lv.quantity) for lv in book.asks])


async def matches_rest(client: AsyncAstra, books: AsyncIterator[LocalBook],
                       book: LocalBook) -> LocalBook:
    """Advance ``books`` to the ``updateId`` of a fresh ``GET /orderbook`` and assert the
    local book equals it there (levels, and each SMART level's venues). Returns the book."""
    async with asyncio.timeout(BOUND):
        for _ in range(10):  # a resync between the two reads moves the ids: read again
            rest = await client.orderbook(book.market)
            while book.update_id is None or book.update_id < rest.update_id:
                book = await anext(books)
            if book.update_id == rest.update_id and book.synced:
                break
        else:
            raise AssertionError(f"never at the REST book's updateId ({rest.update_id})")
    assert (book.bids, book.asks) == levels(rest)
    if book.smart:
        assert {lv.price: lv.venues for lv in rest.bids} == book.bid_venues
        assert {lv.price: lv.venues for lv in rest.asks} == book.ask_venues
    return book
