"""Astra's persistent state: SQLAlchemy Core over SQLite (embedded default) or PostgreSQL.

``open_database()`` gives the engine (tables created); ``ApiKeyStore`` manages API keys;
``add_keys_parser``/``run_keys`` are the ``astra keys`` command. Invariant: no API key secret
is ever written to disk or logs (only salted SHA-256 digests are stored).
"""

from ._db import (
    DATA_DIR_ENV,
    DATABASE_FILE,
    DATABASE_URL_ENV,
    METADATA,
    default_data_dir,
    open_database,
)
from .keys import API_KEYS, ApiKeyStore, IssuedKey, KeyInfo, parse_token
from .keys_cli import add_keys_parser, run_keys

__all__ = [
    "API_KEYS",
    "DATABASE_FILE",
    "DATABASE_URL_ENV",
    "DATA_DIR_ENV",
    "METADATA",
    "ApiKeyStore",
    "IssuedKey",
    "KeyInfo",
    "add_keys_parser",
    "default_data_dir",
    "open_database",
    "parse_token",
    "run_keys",
]
