"""The API key remembered per keep-alive connection (``auth.ApiKeyAuth``), on a real gateway
(simulator on loopback, SQLite key store), over one raw HTTP/1.1 connection: the same header
again skips the token parse and hash, yet a revocation, a scope change, an expiry or another
key on the same connection is seen on the very next request."""

from __future__ import annotations

import asyncio
import json
import time

import sqlalchemy as sa

from astra.store.key_scopes import API_KEY_SCOPES

SPOT = "SIM-SPOT-BTC-USDT"
TIMEOUT = 20


class Connection:
    """One keep-alive HTTP/1.1 connection to the gateway: requests go one after another."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def get(self, path: str, token: str | None) -> tuple[int, dict]:
        key = f"x-astra-api-key: Bearer {token}\r\n" if token else ""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{key}\r\n".encode())
        async with asyncio.timeout(TIMEOUT):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines[1:] if line)
            headers = {k.lower(): v for k, v in headers.items()}
            assert headers.get("connection", "").lower() != "close", head
            body = await self.reader.readexactly(int(headers["content-length"]))
        return int(lines[0].split()[1]), json.loads(body)

    def close(self) -> None:
        self.writer.close()


def _memos(gw) -> list:
    """The gateway's open connections' remembered keys (the REST port's runner)."""
    server = gw._runners[0].server
    return [proto.auth_memo for proto in server._connections if proto.auth_memo is not None]


BOOK = f"/orderbook?market={SPOT}&depth=1"
ORDERS = "/orders"  # scope trade; without ?market= a 400 naming it (no venue is asked)


async def test_two_keys_alternating_on_one_connection_are_each_verified(gateway, key_store):
    gw, _ = gateway
    reader_key = key_store.create("reader", scopes=["read"])
    trader_key = key_store.create("trader", scopes=["read", "trade"])
    conn = await Connection.open(gw.port)
    try:
        for _ in range(2):
            status, _body = await conn.get(BOOK, reader_key.token)
            assert status == 200
            assert [m.info.key_id for m in _memos(gw)] == [reader_key.key_id]
            status, body = await conn.get(ORDERS, reader_key.token)  # the memo, then the scope
            assert (status, body["code"]) == (403, "FORBIDDEN")
            status, body = await conn.get(ORDERS, trader_key.token)  # another key: verified
            assert (status, body["parameter"]) == (400, "market")
            assert [m.info.key_id for m in _memos(gw)] == [trader_key.key_id]
            status, body = await conn.get(ORDERS, reader_key.token)  # and back again
            assert (status, body["code"]) == (403, "FORBIDDEN")
        # A wrong secret for the remembered key id: not the remembered header, so verified.
        key_id, secret = trader_key.token.split(".", 1)
        assert (await conn.get(BOOK, trader_key.token))[0] == 200
        forged = f"{key_id}.{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
        status, body = await conn.get(BOOK, forged)
        assert (status, body["code"]) == (401, "UNAUTHORIZED")
        assert (await conn.get(BOOK, None))[0] == 401  # no header at all
        assert (await conn.get(BOOK, trader_key.token))[0] == 200
    finally:
        conn.close()


async def test_a_revocation_is_seen_on_the_next_request_of_the_same_connection(
        gateway, key_store):
    gw, _ = gateway
    key = key_store.create("revoked soon")
    conn = await Connection.open(gw.port)
    try:
        for _ in range(3):
            assert (await conn.get(BOOK, key.token))[0] == 200
        assert [m.info.key_id for m in _memos(gw)] == [key.key_id]
        assert key_store.revoke(key.key_id)
        status, body = await conn.get(BOOK, key.token)
        assert (status, body["code"]) == (401, "UNAUTHORIZED")
        assert key.token not in json.dumps(body)
    finally:
        conn.close()


async def test_a_scope_change_is_seen_on_the_next_request_once_the_key_is_reread(
        gateway, key_store):
    # Scopes change in the database (no API changes them): the store sees it when it reads
    # the key again (its cache's TTL, or load()); the connection's memo must not outlive that.
    gw, _ = gateway
    key = key_store.create("desk", scopes=["read", "trade"])
    conn = await Connection.open(gw.port)

    def set_scopes(scopes: str) -> None:
        with key_store._engine.begin() as db:
            db.execute(sa.update(API_KEY_SCOPES).where(API_KEY_SCOPES.c.key_id == key.key_id)
                       .values(scopes=scopes))
        assert key_store.load(key.key_id).scopes == frozenset(scopes.split(","))

    try:
        for _ in range(2):
            status, body = await conn.get(ORDERS, key.token)
            assert (status, body["parameter"]) == (400, "market")
        set_scopes("read")
        status, body = await conn.get(ORDERS, key.token)
        assert (status, body["code"]) == (403, "FORBIDDEN")
        assert "'trade' scope" in body["message"]
        assert (await conn.get(BOOK, key.token))[0] == 200  # read is still granted
        set_scopes("read,trade")
        status, body = await conn.get(ORDERS, key.token)
        assert (status, body["parameter"]) == (400, "market")
    finally:
        conn.close()


async def test_an_expiry_is_seen_on_the_same_connection(gateway, key_store):
    gw, _ = gateway
    expires_at = int(time.time() * 1000) + 1500
    key = key_store.create("short lived", expires_at=expires_at)
    conn = await Connection.open(gw.port)
    try:
        assert (await conn.get(BOOK, key.token))[0] == 200
        async with asyncio.timeout(TIMEOUT):
            while time.time() * 1000 <= expires_at:
                status, _body = await conn.get(BOOK, key.token)
                # (a request at the very expiry may go either way; none after it succeeds)
                assert status in (200, 401)
                await asyncio.sleep(0.1)
        status, body = await conn.get(BOOK, key.token)
        assert status == 401 and "expired" in body["message"]
    finally:
        conn.close()
