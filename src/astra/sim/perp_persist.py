"""The perpetual side's part of the state document (``persist.py``): positions, settings,
income, transfers, funding history, isolated margin, Multi-Assets and countdowns.

Invariants:
- ``load_perp(dump_perp(side))`` on a fresh side restores every field ``dump_perp`` writes;
  the document is plain JSON (lists, not tuples or sets), so ``persist`` can encode it.
- A missing field loads as empty, so a document written before a field existed still loads.
- The tranId counter never goes backwards on load (the spot side shares it, ``app.py``, and
  is the one that saves it; older documents carry it here too).
- Only the perpetual state is here; orders and trades are ``OrderManager``'s, and
  ``PerpTrading.load`` restores this part first: re-entering open orders may fill against
  the positions.

The trading side is passed in as a ``perp_side.PerpSide``: ``perp`` imports this module, never
the reverse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .perp_positions import Position
from .records import history

if TYPE_CHECKING:
    from .perp_side import PerpSide

__all__ = ["dump_perp", "load_perp"]


def dump_perp(trading: PerpSide) -> dict:
    """The ``"perp"`` entry of a side's state document."""
    return {
        "positions": [[a, s, ps, p.amt, p.cost, p.realized, p.update_time]
                      for a, book in trading.positions.items() for (s, ps), p in book.items()],
        "leverage": [[a, s, v] for (a, s), v in trading.leverages.items()],
        "margin_type": [[a, s, v] for (a, s), v in trading.margin_types.items()],
        "dual": sorted(trading.dual),
        "income": [[a, list(rows)] for a, rows in trading.income.items()],
        "transfers": sorted([a, c] for a, c in trading.transfers),
        "funding_history": list(trading.funding_history),
        "isolated": [[a, s, ps, v] for (a, s, ps), v in trading.isolated.items()],
        "margin_history": [[a, list(rows)] for a, rows in trading.margin_history.items()],
        "multi_assets": sorted(trading.multi_assets),
        "countdowns": [[a, s, t] for (a, s), t in trading.countdowns.items()],
    }


def load_perp(trading: PerpSide, perp: dict) -> None:
    """Restore a ``dump_perp`` entry into ``trading`` (added to what it holds)."""
    for a, s, ps, amt, cost, realized, t in perp.get("positions", ()):
        trading.positions.setdefault(a, {})[(s, ps)] = Position(amt, cost, realized, t)
    trading.leverages.update({(a, s): v for a, s, v in perp.get("leverage", ())})
    trading.margin_types.update({(a, s): v for a, s, v in perp.get("margin_type", ())})
    trading.dual.update(perp.get("dual", ()))
    trading.income.update({a: history(rows) for a, rows in perp.get("income", ())})
    trading.transfers.update((a, c) for a, c in perp.get("transfers", ()))
    # The shared tranId counter is saved once, by the spot side; files written before that
    # carry it here too (the larger of the two is the last id used).
    trading.tran_ids.last = max(trading.tran_ids.last, perp.get("tran_id", 0))
    trading.funding_history.extend(perp.get("funding_history", ()))
    trading.isolated.update({(a, s, ps): v for a, s, ps, v in perp.get("isolated", ())})
    trading.margin_history.update({a: history(rows)
                                   for a, rows in perp.get("margin_history", ())})
    trading.multi_assets.update(perp.get("multi_assets", ()))
    trading.countdowns.update({(a, s): t for a, s, t in perp.get("countdowns", ())})
