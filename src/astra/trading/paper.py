"""Paper trading out of the box: ``astra serve`` on the built-in simulator funds a SIM account
and lends its credentials to the first API key, so a new user can place SIM orders at once.

The simulator child is started fresh by each ``astra serve`` (its accounts live as long as
it does), so these credentials are kept in memory only, never in the credential store: after a
restart they would name an account that no longer exists. Stored credentials, when a desk
has set some for SIM, take precedence.
"""

from __future__ import annotations

import aiohttp

from astra.core import Exchange

from .credentials import CredentialSource, ExchangeCredentials

__all__ = ["PAPER_DEPOSIT", "LayeredCredentials", "create_paper_account"]

PAPER_DEPOSIT = {"USDT": "100000", "BTC": "2", "ETH": "20", "SOL": "500"}


class LayeredCredentials:
    """A ``CredentialSource``: the store first, then in-memory defaults per (key id, venue)."""

    def __init__(self, store: CredentialSource | None = None) -> None:
        self.store = store
        self._defaults: dict[tuple[str, str], ExchangeCredentials] = {}

    def add_default(self, key_id: str, creds: ExchangeCredentials) -> None:
        self._defaults[(key_id, str(creds.exchange))] = creds

    def get(self, key_id: str, exchange: Exchange | str) -> ExchangeCredentials | None:
        if self.store is not None:
            found = self.store.get(key_id, exchange)
            if found is not None:
                return found
        return self._defaults.get((key_id, str(exchange)))


async def create_paper_account(
    sim_url: str, deposit: dict[str, str] = PAPER_DEPOSIT
) -> ExchangeCredentials:
    """Create a funded account on the simulator at ``sim_url`` (its loopback admin endpoint)."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.post(f"{sim_url}/admin/accounts", json={"deposit": deposit}) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise RuntimeError(f"the simulator refused a paper account: {body.get('msg')}")
    return ExchangeCredentials(
        exchange="SIM", private_key=body["signerPrivateKey"], account=body["user"]
    )
