"""``Astra``: the synchronous client, a thin wrapper over ``AsyncAstra``.

Invariants:
- One event loop on one daemon thread per client; every method runs the async method of the
  same name there (``run_coroutine_threadsafe``) and returns its result or raises its
  exception. No logic of its own: the methods are generated from ``AsyncAstra``'s.
- ``watch_*`` return a blocking iterator over the async one (``close()`` it, or use it as a
  context manager, to stop the stream early); the objects it yields belong to the loop
  thread and are updated there only between two ``next()`` calls.
- ``close()`` closes the async client, stops the loop and joins its thread.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ._api import AsyncAstra

__all__ = ["Astra", "SyncIterator"]


async def _anext(agen: AsyncIterator) -> Any:
    return await agen.__anext__()  # (a coroutine, as run_coroutine_threadsafe needs)


class SyncIterator:
    """A blocking iterator over an async one running on the client's loop."""

    def __init__(self, agen: AsyncIterator, loop: asyncio.AbstractEventLoop) -> None:
        self._agen, self._loop = agen, loop

    def __iter__(self) -> Iterator:
        return self

    def __next__(self) -> Any:
        future = asyncio.run_coroutine_threadsafe(_anext(self._agen), self._loop)
        try:
            return future.result()
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        aclose = getattr(self._agen, "aclose", None)
        if aclose is not None and not self._loop.is_closed():
            asyncio.run_coroutine_threadsafe(aclose(), self._loop).result()

    def __enter__(self) -> SyncIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Astra:
    """The synchronous client: ``Astra(url, api_key, **options)`` takes ``AsyncAstra``'s
    arguments (but no ``session``) and has its methods, blocking."""

    def __init__(self, url: str, api_key: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="astra-client",
                                        daemon=True)
        self._thread.start()
        self._client = self._call(self._make(url, api_key, options))

    @staticmethod
    async def _make(url: str, api_key: str, options: dict) -> AsyncAstra:
        return AsyncAstra(url, api_key, **options)  # built on the loop that will use it

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def url(self) -> str:
        return self._client.url

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self._client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> Astra:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _blocking(name: str, method: Any) -> Any:
    @functools.wraps(method)
    def call(self: Astra, *args: Any, **kwargs: Any) -> Any:
        return self._call(getattr(self._client, name)(*args, **kwargs))

    return call


def _iterating(name: str, method: Any) -> Any:
    @functools.wraps(method)
    def call(self: Astra, *args: Any, **kwargs: Any) -> SyncIterator:
        return SyncIterator(getattr(self._client, name)(*args, **kwargs), self._loop)

    return call


for _name, _method in vars(AsyncAstra).items():
    if _name.startswith("_") or _name == "close":
        continue
    if inspect.iscoroutinefunction(_method):
        setattr(Astra, _name, _blocking(_name, _method))
    elif _name.startswith("watch_"):
        setattr(Astra, _name, _iterating(_name, _method))
