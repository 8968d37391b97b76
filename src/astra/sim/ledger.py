"""The simulator's money: every balance of every account, in exact integer units.

Invariants (checked by ``Ledger.check`` and by the conservation property test):
- Amounts are integers of ``10**-AMOUNT_DP`` of an asset, so no float ever touches money;
  market prices/quantities convert exactly because every market has
  ``price_dp + qty_dp <= AMOUNT_DP``.
- Money only moves: every operation except ``deposit`` debits exactly what it credits, so for
  every asset ``sum(all balances, free + locked, every wallet) == deposited[asset]``.
- ``free`` and ``locked`` never go negative for a user account; ``lock`` / ``move`` refuse
  (``InsufficientBalance``) rather than overdraw. The house account (the synthetic traders,
  ``HOUSE``) is funded with a large deposit and is the counterparty of every user trade against
  the synthetic flow; the fee account (``FEES``) only receives.

Wallets: ``"spot"`` holds spot balances; ``"perp"`` holds the perpetual margin wallet (the
perpetual engine moves realized PnL, fees and funding between it and the house's).
"""

from __future__ import annotations

from collections import defaultdict

__all__ = [
    "AMOUNT_DP", "FEES", "HOUSE", "InsufficientBalance", "Ledger", "TranIds", "format_amount",
]

AMOUNT_DP = 8
HOUSE = -1  # the synthetic participants, as one account
FEES = 0  # commissions collected
HOUSE_FUNDING = 10**15 * 10**AMOUNT_DP  # per asset and wallet: the flow never runs dry


class InsufficientBalance(Exception):
    pass


def format_amount(units: int) -> str:
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**AMOUNT_DP)
    return f"{sign}{whole}.{frac:0{AMOUNT_DP}d}"


class TranIds:
    """One sequence of transaction ids for the money records of both venue sides (perpetual
    ``income``, spot ``transactionHistory``): ids never repeat across them, and a transfer,
    recorded on both, has one ``tranId`` in both."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        self.last += 1
        return self.last


class Ledger:
    """Balances per (wallet, account, asset): ``[free, locked]``."""

    def __init__(self) -> None:
        self._books: dict[str, dict[int, dict[str, list[int]]]] = {
            "spot": defaultdict(dict),
            "perp": defaultdict(dict),
        }
        self.deposited: dict[str, int] = defaultdict(int)
        self._house_assets: set[tuple[str, str]] = set()

    # -- reads -------------------------------------------------------------------------------
    def entry(self, wallet: str, account: int, asset: str) -> list[int]:
        if account == HOUSE and (wallet, asset) not in self._house_assets:
            # The house is funded lazily per asset, as an ordinary (counted) deposit.
            self._house_assets.add((wallet, asset))
            self.deposit(wallet, HOUSE, asset, HOUSE_FUNDING)
        book = self._books[wallet][account]
        slot = book.get(asset)
        if slot is None:
            slot = book[asset] = [0, 0]
        return slot

    def free(self, wallet: str, account: int, asset: str) -> int:
        return self.entry(wallet, account, asset)[0]

    def locked(self, wallet: str, account: int, asset: str) -> int:
        return self.entry(wallet, account, asset)[1]

    def balances(self, wallet: str, account: int) -> dict[str, tuple[int, int]]:
        return {a: (s[0], s[1]) for a, s in self._books[wallet][account].items()}

    def totals(self) -> dict[str, int]:
        """Sum of every balance per asset, all wallets and accounts (== ``deposited``)."""
        out: dict[str, int] = defaultdict(int)
        for accounts in self._books.values():
            for assets in accounts.values():
                for asset, (free, locked) in assets.items():
                    out[asset] += free + locked
        return dict(out)

    def check(self) -> None:
        totals = self.totals()
        for asset in set(totals) | set(self.deposited):
            assert totals.get(asset, 0) == self.deposited.get(asset, 0), asset
        for wallet, accounts in self._books.items():
            for account, assets in accounts.items():
                for asset, (free, locked) in assets.items():
                    assert locked >= 0, (wallet, account, asset)
                    assert free >= 0 or account == HOUSE, (wallet, account, asset, free)

    # -- writes ------------------------------------------------------------------------------
    def deposit(self, wallet: str, account: int, asset: str, amount: int) -> None:
        if amount < 0:
            raise ValueError("a deposit is positive")
        self.deposited[asset] += amount
        if account == HOUSE:
            self._house_assets.add((wallet, asset))
        self._books[wallet][account].setdefault(asset, [0, 0])[0] += amount

    def lock(self, wallet: str, account: int, asset: str, amount: int) -> None:
        slot = self.entry(wallet, account, asset)
        if slot[0] < amount:
            raise InsufficientBalance(asset)
        slot[0] -= amount
        slot[1] += amount

    def unlock(self, wallet: str, account: int, asset: str, amount: int) -> None:
        slot = self.entry(wallet, account, asset)
        assert slot[1] >= amount, "unlocking more than is locked"
        slot[1] -= amount
        slot[0] += amount

    def move(
        self,
        wallet: str,
        asset: str,
        amount: int,
        src: int,
        dst: int,
        *,
        from_locked: bool = False,
        dst_wallet: str | None = None,
        allow_negative: bool = False,
    ) -> None:
        """Move ``amount`` from ``src`` (free, or locked) to ``dst``'s free balance.

        ``allow_negative`` lets a perpetual wallet absorb a loss beyond its balance (the
        liquidation engine then settles the deficit with the house)."""
        if amount == 0:
            return
        if amount < 0:
            src, dst, amount = dst, src, -amount
            if from_locked:
                raise ValueError("a negative move cannot come from locked funds")
        source = self.entry(wallet, src, asset)
        index = 1 if from_locked else 0
        if source[index] < amount and src != HOUSE and not allow_negative:
            raise InsufficientBalance(asset)
        source[index] -= amount
        self.entry(dst_wallet or wallet, dst, asset)[0] += amount

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "books": {
                w: {str(a): {k: list(v) for k, v in assets.items()} for a, assets in accs.items()}
                for w, accs in self._books.items()
            },
            "deposited": dict(self.deposited),
            "house": sorted(f"{w}:{a}" for w, a in self._house_assets),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Ledger:
        ledger = cls()
        for wallet, accounts in data["books"].items():
            for account, assets in accounts.items():
                ledger._books[wallet][int(account)] = {k: list(v) for k, v in assets.items()}
        ledger.deposited.update(data["deposited"])
        ledger._house_assets = {tuple(x.split(":", 1)) for x in data["house"]}  # type: ignore[misc]
        return ledger
