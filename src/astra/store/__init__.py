"""Astra's persistent state: SQLAlchemy Core over SQLite (embedded default) or PostgreSQL.

``open_database()`` gives the engine (tables created); ``ApiKeyStore`` manages API keys;
``add_keys_parser``/``run_keys`` are the ``astra keys`` command; ``OrderJournal`` writes every
order intent before it is sent and reconciles unknown outcomes (``journal.py``);
``CredentialStore`` keeps exchange credentials encrypted under ``ASTRA_MASTER_KEY``
(``astra credentials``, ``credentials_cli.py``); ``OtcStore`` is the OTC desk's ledger, quotes,
trades and audit trail (``otc.py``, ``astra otc``). Invariant: no API key secret is ever written to
disk or logs (only salted SHA-256 digests are stored), no exchange credential in clear.
"""

from ._db import (
    DATA_DIR_ENV,
    DATABASE_FILE,
    DATABASE_URL_ENV,
    METADATA,
    default_data_dir,
    open_database,
)
from .credentials import (
    EXCHANGE_CREDENTIALS,
    MASTER_KEY_ENV,
    CredentialDecryptionError,
    CredentialStore,
    CredentialStoreError,
    MasterKeyError,
    StoredCredentials,
    UnknownApiKey,
    generate_master_key,
    load_master_key,
)
from .credentials_cli import add_credentials_parser, run_credentials
from .journal import (
    CLIENT_ORDER_ID_PREFIX,
    ORDERS_JOURNAL,
    RECONCILE_GRACE_MS,
    ClientOrderIdConflict,
    InvalidTransition,
    JournalEntry,
    JournalState,
    OrderJournal,
    generate_client_order_id,
    is_valid_client_order_id,
)
from .key_scopes import (
    API_KEY_SCOPES,
    SCOPES,
    TOUCH_EVERY,
    ScopeError,
    ip_allowed,
    parse_allow_ips,
    parse_expiry,
    parse_scopes,
)
from .keys import API_KEYS, ApiKeyStore, IssuedKey, KeyInfo, parse_token
from .keys_cli import add_keys_parser, run_keys
from .otc import AccountRow, DuplicateSignature, HedgeRow, OtcStore, QuoteRow, TradeRow
from .otc_cli import add_otc_parser, run_otc

__all__ = [
    "API_KEYS",
    "API_KEY_SCOPES",
    "CLIENT_ORDER_ID_PREFIX",
    "DATABASE_FILE",
    "DATABASE_URL_ENV",
    "DATA_DIR_ENV",
    "EXCHANGE_CREDENTIALS",
    "MASTER_KEY_ENV",
    "METADATA",
    "ORDERS_JOURNAL",
    "RECONCILE_GRACE_MS",
    "SCOPES",
    "TOUCH_EVERY",
    "AccountRow",
    "ApiKeyStore",
    "ClientOrderIdConflict",
    "CredentialDecryptionError",
    "CredentialStore",
    "CredentialStoreError",
    "DuplicateSignature",
    "HedgeRow",
    "InvalidTransition",
    "IssuedKey",
    "JournalEntry",
    "JournalState",
    "KeyInfo",
    "MasterKeyError",
    "OrderJournal",
    "OtcStore",
    "QuoteRow",
    "ScopeError",
    "StoredCredentials",
    "TradeRow",
    "UnknownApiKey",
    "add_credentials_parser",
    "add_keys_parser",
    "add_otc_parser",
    "default_data_dir",
    "generate_client_order_id",
    "generate_master_key",
    "ip_allowed",
    "is_valid_client_order_id",
    "load_master_key",
    "open_database",
    "parse_allow_ips",
    "parse_expiry",
    "parse_scopes",
    "parse_token",
    "run_credentials",
    "run_keys",
    "run_otc",
]
