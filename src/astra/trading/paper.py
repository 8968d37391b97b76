"""Paper trading out of the box: ``astra serve`` on the built-in simulator funds an account on
each simulated venue it starts (``SIM``, ``SIM2``, ``SIM3``) and lends their credentials to the
first API key, so a new user can place orders on any of them, and routed ones, at once.

The simulator child is started fresh by each ``astra serve`` (its accounts live as long as
it does), so these credentials are kept in memory only, never in the credential store: after a
restart they would name an account that no longer exists. Stored credentials, when a desk
has set some for a venue, take precedence.
"""

from __future__ import annotations

import aiohttp

from astra.core import Exchange
from astra.core.credentials import ExchangeCredentials

from .credentials import CredentialSource

__all__ = ["LayeredCredentials", "create_paper_account"]


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
    sim_url: str, venue: str = "SIM", deposit: str | None = None
) -> tuple[ExchangeCredentials, dict[str, str]]:
    """Create an account on the simulated venue ``venue`` at ``sim_url`` (its loopback admin
    endpoint), funded with ``deposit`` (``"USDT=100000,BTC=2"``), by default the simulator's
    default deposit (the one ``astra sim account create`` gives too); returns its credentials
    (for ``venue``) and the amounts deposited, by asset."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        body = {} if deposit is None else {"deposit": deposit}
        async with http.post(f"{sim_url}/admin/accounts", json=body) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise RuntimeError(
                    f"the simulator ({venue}) refused a paper account: {body.get('msg')}")
    creds = ExchangeCredentials(
        exchange=venue, private_key=body["signerPrivateKey"], account=body["user"]
    )
    return creds, body.get("deposit", {})
