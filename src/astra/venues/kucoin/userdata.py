"""The ccxt.pro client of KuCoin user streams (``KucoinVenue.run_user_stream``).

ccxt.pro's ``kucoin`` keeps one order cache and one trade cache per client, shared by the
spot (``/spotMarket/tradeOrders``) and futures (``/contractMarket/tradeOrders``) watches,
and each watch returns "the newest N" of that cache, N counted since whichever watch read it
last. A spot and a futures event arriving together were then returned by both watches
(each side's fill delivered twice; a filter by side instead would lose one in other
interleavings). Here each side has caches of its own, so each watch only ever sees, and
counts, its own side's events.
"""

from __future__ import annotations

from typing import Any

import ccxt.pro as ccxt_pro

__all__ = ["KucoinUserStream"]


class KucoinUserStream(ccxt_pro.kucoin):
    """ccxt.pro's ``kucoin`` with spot and futures order/trade caches apart."""

    def __init__(self, config: dict | None = None) -> None:
        super().__init__(config or {})
        self._caches: dict[bool, tuple[Any, Any, Any]] = {}  # contract? -> the side's caches
        self._handling = False  # a message is being handled with its side's caches in place

    def _by_side(self, handle: Any, client: Any, message: dict) -> None:
        if self._handling:  # handle_order -> handle_my_trade: same message, same side
            handle(client, message)
            return
        contract = "contract" in str(message.get("topic") or "")  # /contractMarket/...
        shared = self.orders, self.triggerOrders, self.myTrades
        # ccxt creates a side's caches at its first event (they are None until then).
        self.orders, self.triggerOrders, self.myTrades = self._caches.get(
            contract, (None, None, None))
        self._handling = True
        try:
            handle(client, message)
        finally:
            self._caches[contract] = self.orders, self.triggerOrders, self.myTrades
            self.orders, self.triggerOrders, self.myTrades = shared
            self._handling = False

    def handle_order(self, client: Any, message: dict) -> None:
        self._by_side(super().handle_order, client, message)

    def handle_my_trade(self, client: Any, message: dict) -> None:
        self._by_side(super().handle_my_trade, client, message)
