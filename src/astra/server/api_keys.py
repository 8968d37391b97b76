"""``GET/POST/DELETE /api-keys``: API key management over HTTP (the ``admin`` scope).

Invariants:
- ``POST`` returns the token (``<keyId>.<secret>``) once, in its 201 answer; nothing else
  ever shows a secret or its hash (``GET`` lists keys without them).
- A body is validated before anything is written: an unknown scope, a CIDR that is not one,
  an expiry in the past are 400s naming ``scopes``, ``allowIps`` or ``expiresAt``.
- ``DELETE /api-keys/{keyId}`` revokes at once: the store's revocation listeners close the
  key's open WebSockets and the verify cache drops it, so its next request is a 401. An
  unknown or already revoked key is a 404. A key may revoke itself: a leaked admin key must
  be revocable over the API, and ``astra keys create`` on the host recovers admin access.
- Store calls block (SQL): they run in a worker thread, never on the loop. A body that does
  not arrive within ``body_timeout`` seconds is a 408 and the connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from aiohttp import web

from astra.core import InvalidParameter, NotFound, RequestTimeout
from astra.store import ApiKeyStore, KeyInfo, ScopeError

from .errors import error_response, json_response
from .params import check_json_nesting

__all__ = ["api_key_routes", "key_json"]

_FIELDS = {"label", "scopes", "expiresAt", "allowIps"}


def key_json(info: KeyInfo) -> dict[str, Any]:
    """A key as the API shows it: never its secret."""
    return {
        "keyId": info.key_id,
        "label": info.label,
        "scopes": sorted(info.scopes),
        "createdAt": info.created_at,
        "expiresAt": info.expires_at,
        "allowIps": list(info.allow_ips),
        "lastUsedAt": info.last_used_at,
        "revokedAt": info.revoked_at,
    }


def api_key_routes(store: ApiKeyStore, body_timeout: float = 30.0) -> list:
    """The routes, for ``app.add_routes`` behind the auth middleware (scope ``admin``)."""

    async def list_keys(request: web.Request) -> web.Response:
        keys = await asyncio.to_thread(store.list)
        return json_response({"keys": [key_json(k) for k in keys]})

    async def create(request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(body_timeout):
                raw = await request.read()
        except TimeoutError:
            resp = error_response(RequestTimeout(
                f"request body not received within {body_timeout:g} seconds", parameter="body"))
            resp.force_close()  # answered now and closed, as the private API does
            await resp.prepare(request)
            await resp.write_eof()
            request.protocol.force_close()
            return resp
        check_json_nesting(raw)  # before the decoder recurses into it
        try:
            body = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise InvalidParameter("body", "expected a JSON object") from None
        if not isinstance(body, dict):
            raise InvalidParameter("body", "expected a JSON object")
        for name in body:
            if name not in _FIELDS:
                raise InvalidParameter(str(name)[:60], "unknown field")
        label = body.get("label", "")
        if not isinstance(label, str):
            raise InvalidParameter("label", "expected a string")
        if "scopes" not in body:
            raise InvalidParameter("scopes", "name the key's scopes: read, trade, otc, admin")
        try:
            key = await asyncio.to_thread(
                store.create, label, scopes=body["scopes"],
                expires_at=body.get("expiresAt"), allow_ips=body.get("allowIps"))
        except ScopeError as err:
            raise InvalidParameter(err.parameter, str(err)) from None
        except ValueError as err:  # the label
            raise InvalidParameter("label", str(err)) from None
        info = await asyncio.to_thread(store.get, key.key_id)
        return json_response({**key_json(info), "token": key.token}, 201)

    async def revoke(request: web.Request) -> web.Response:
        key_id = request.match_info["keyId"]
        if not await asyncio.to_thread(store.revoke, key_id):
            raise NotFound(f"no active API key with id {key_id[:64]!r}", parameter="keyId")
        info = await asyncio.to_thread(store.get, key_id)
        return json_response(key_json(info))

    return [
        web.get("/api-keys", list_keys, allow_head=False),
        web.post("/api-keys", create),
        web.delete("/api-keys/{keyId}", revoke),
    ]
