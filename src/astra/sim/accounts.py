"""Simulator accounts and their credentials.

Each account has both of Aster's credential sets: an API key + secret for the HMAC-signed v1
endpoints, and a user (main wallet) address + API-wallet (signer) address for the EIP-712
signed v3 endpoints. The signer's private key is generated, returned once to the creator and
never kept: the venue only needs the signer's address to check a signature. The HMAC secret
is kept, as on the real venue, because verifying an HMAC needs it; the persisted state file is
written with owner-only permissions for that reason.

Invariants: account ids are positive and never reused (owner ids < 0 are the synthetic flow's,
0 is the fee account); API keys and signer addresses are unique; look-ups by key compare the
whole key (a dict hit on a 64-hex-char random string, so timing reveals nothing useful).
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass

from eth_account import Account as EthAccount

__all__ = ["Account", "AccountRegistry", "NewCredentials"]


@dataclass(slots=True)
class Account:
    id: int
    api_key: str
    api_secret: str
    user: str  # checksummed main-wallet address
    signer: str  # checksummed API-wallet address
    created: int  # ms


@dataclass(frozen=True, slots=True)
class NewCredentials:
    """What ``astra sim account create`` prints: everything a client needs, shown once."""

    apiKey: str
    apiSecret: str
    user: str
    signer: str
    signerPrivateKey: str


class AccountRegistry:
    def __init__(self) -> None:
        self.accounts: dict[int, Account] = {}
        self._by_key: dict[str, Account] = {}
        self._by_signer: dict[str, Account] = {}
        self._by_user: dict[str, Account] = {}
        self._next_id = 1

    def create(self, now_ms: int) -> tuple[Account, NewCredentials]:
        signer = EthAccount.create()
        user = EthAccount.create()  # only its address matters to the venue
        account = Account(
            id=self._next_id,
            api_key=secrets.token_hex(32),
            api_secret=secrets.token_hex(32),
            user=user.address,
            signer=signer.address,
            created=now_ms,
        )
        self._next_id += 1
        self._add(account)
        creds = NewCredentials(
            apiKey=account.api_key,
            apiSecret=account.api_secret,
            user=account.user,
            signer=account.signer,
            signerPrivateKey="0x" + bytes(signer.key).hex(),
        )
        return account, creds

    def _add(self, account: Account) -> None:
        self.accounts[account.id] = account
        self._by_key[account.api_key] = account
        self._by_signer[account.signer.lower()] = account
        self._by_user[account.user.lower()] = account
        self._next_id = max(self._next_id, account.id + 1)

    # The signing module's credential registry protocol.
    def by_api_key(self, key: str) -> Account | None:
        return self._by_key.get(key)

    def by_signer(self, address: str) -> Account | None:
        return self._by_signer.get(address.lower())

    def by_user(self, address: str) -> Account | None:
        return self._by_user.get(address.lower())

    def to_dict(self) -> dict:
        return {"next_id": self._next_id, "accounts": [asdict(a) for a in self.accounts.values()]}

    @classmethod
    def from_dict(cls, data: dict) -> AccountRegistry:
        registry = cls()
        for row in data["accounts"]:
            registry._add(Account(**row))
        registry._next_id = max(registry._next_id, data["next_id"])
        return registry
