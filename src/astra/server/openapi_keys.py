"""The ``/api-keys`` part of ``/openapi.json`` (``server/api_keys.py``; the ``admin`` scope).

Schemas are written out here (the routes answer plain dicts), kept in step with
``api_keys.key_json`` by ``tests/server/test_scopes.py``, which validates real answers
against them.
"""

from __future__ import annotations

from collections.abc import Callable

from astra.store import SCOPES

__all__ = ["API_KEY_SCHEMAS", "api_key_paths"]

_MS = {"type": ["integer", "null"], "description": "ms since the epoch"}
_SCOPES = {"type": "array", "items": {"type": "string", "enum": list(SCOPES)}, "minItems": 1}

API_KEY_SCHEMAS: dict[str, dict] = {
    "ApiKey": {
        "type": "object",
        "description": "An API key, never with its secret",
        "properties": {
            "keyId": {"type": "string"},
            "label": {"type": "string"},
            "scopes": _SCOPES,
            "createdAt": {"type": "integer"},
            "expiresAt": _MS,
            "allowIps": {"type": "array", "items": {"type": "string"}},
            "lastUsedAt": _MS,
            "revokedAt": _MS,
        },
        "required": ["keyId", "label", "scopes", "createdAt", "expiresAt", "allowIps",
                     "lastUsedAt", "revokedAt"],
    },
    "ApiKeyCreated": {
        "allOf": [
            {"$ref": "#/components/schemas/ApiKey"},
            {"type": "object", "required": ["token"], "properties": {"token": {
                "type": "string",
                "description": "<keyId>.<secret>: shown this once, stored nowhere"}}},
        ],
    },
    "ApiKeyRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["scopes"],
        "properties": {
            "label": {"type": "string", "maxLength": 200},
            "scopes": _SCOPES,
            "expiresAt": {"oneOf": [
                {"type": "integer", "description": "ms since the epoch"},
                {"type": "string", "description": "ISO 8601 date or time (UTC if no zone)"}]},
            "allowIps": {"type": "array", "items": {"type": "string"}, "maxItems": 64,
                         "description": "CIDRs (10.0.0.0/8); a bare address is its /32"},
        },
    },
    "ApiKeyList": {
        "type": "object",
        "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": {"$ref": "#/components/schemas/ApiKey"}}},
    },
}


def api_key_paths(param: Callable[..., dict], ref: Callable[[str], dict],
                  errors: dict) -> dict:
    def ok(name: str, status: str = "200", what: str = "OK") -> dict:
        return {status: {"description": what,
                         "content": {"application/json": {"schema": ref(name)}}}}

    admin = {"403": {"description": "the key lacks the 'admin' scope (FORBIDDEN)",
                     "content": {"application/json": {"schema": ref("Error")}}}}
    return {
        "/api-keys": {
            "get": {"summary": "Every API key, without secrets (admin scope)",
                    "parameters": [], "responses": {**ok("ApiKeyList"), **errors, **admin}},
            "post": {"summary": "Create an API key (admin scope): the token is in this answer "
                                "only",
                     "parameters": [],
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": ref("ApiKeyRequest")}}},
                     "responses": {**ok("ApiKeyCreated", "201", "created"), **errors,
                                   **admin}},
        },
        "/api-keys/{keyId}": {
            "delete": {"summary": "Revoke an API key at once: its open WebSockets close, its "
                                  "next request is a 401 (admin scope; 404 when unknown or "
                                  "already revoked)",
                       "parameters": [param("keyId", "the part of the key before the dot",
                                            where="path")],
                       "responses": {**ok("ApiKey"), **errors, **admin}},
        },
    }
