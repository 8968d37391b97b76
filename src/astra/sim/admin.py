"""Simulator administration: accounts with deposits (``POST /admin/accounts``), loopback only,
and the ``astra sim account create`` client for it (its arguments are parsed in ``astra.cli``).

Deposits are credited to the spot wallet and, separately, to the perpetual margin wallet, so a
new account can trade both sides at once. Amounts are exact decimals (at most 8 places).

One default: a body without ``deposit`` (or with ``null``) gets ``DEFAULT_DEPOSIT``, so
``astra sim account create`` without ``--deposit`` and ``astra serve``'s paper account are
funded alike; ``""`` or ``{}`` (``--deposit none``) makes an empty account. The response adds
``deposit``, the amounts credited (to each wallet), to the credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
from dataclasses import asdict
from decimal import Decimal, InvalidOperation

import aiohttp
from aiohttp import web

from .ledger import AMOUNT_DP

__all__ = ["DEFAULT_DEPOSIT", "admin_routes", "parse_deposits", "run_account_command"]

MAX_DEPOSIT = 10**12  # per asset; far above any simulated balance, far below the house's
DEFAULT_DEPOSIT = "USDT=100000,BTC=2,ETH=20,SOL=500"  # enough to trade every listed market
_EMPTY = ("", "none")  # --deposit values that ask for an empty account


class DepositError(ValueError):
    pass


def parse_deposits(spec: object) -> dict[str, int]:
    """``"USDT=100000,BTC=2"`` or ``{"USDT": "100000"}`` -> ledger units per asset."""
    if isinstance(spec, str):
        pairs = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            asset, sep, amount = part.partition("=")
            if not sep:
                raise DepositError(f"deposit {part!r} is not ASSET=AMOUNT")
            pairs.append((asset.strip(), amount.strip()))
    elif isinstance(spec, dict):
        pairs = [(str(k), str(v)) for k, v in spec.items()]
    else:
        raise DepositError("deposit must be ASSET=AMOUNT,... or an object")
    out: dict[str, int] = {}
    for asset, text in pairs:
        if not asset.isascii() or not asset.isalnum() or len(asset) > 20:
            raise DepositError(f"invalid asset {asset!r}")
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise DepositError(f"invalid amount {text!r} for {asset}") from None
        if not value.is_finite() or value < 0 or value > MAX_DEPOSIT:
            raise DepositError(f"amount for {asset} must be between 0 and {MAX_DEPOSIT}")
        units = value.scaleb(AMOUNT_DP)
        if units != units.to_integral_value():
            raise DepositError(f"amount for {asset} has more than {AMOUNT_DP} decimals")
        out[asset.upper()] = out.get(asset.upper(), 0) + int(units)
    return out


def _is_loopback(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


def admin_routes(exchange) -> list[web.RouteDef]:
    async def create_account(request: web.Request) -> web.Response:
        if not _is_loopback(request):
            return web.json_response(
                {"code": -1002, "msg": "You are not authorized to execute this request."},
                status=403,
            )
        body = {}
        if request.can_read_body:
            try:
                body = await request.json()
            except (ValueError, UnicodeDecodeError):
                return web.json_response({"code": -1130, "msg": "Body is not JSON."}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"code": -1130, "msg": "Body is not an object."}, status=400)
        spec = body.get("deposit")
        try:
            deposits = parse_deposits(DEFAULT_DEPOSIT if spec is None else spec)
        except DepositError as exc:
            return web.json_response({"code": -1130, "msg": str(exc)}, status=400)
        creds = exchange.create_account(deposits)
        return web.json_response({**asdict(creds), "deposit": _amounts(deposits)})

    return [web.post("/admin/accounts", create_account)]


def _amounts(deposits: dict[str, int]) -> dict[str, str]:
    """Ledger units -> plain decimal strings ("100000", "0.5"), zero amounts left out."""
    return {asset: format(Decimal(units).scaleb(-AMOUNT_DP).normalize(), "f")
            for asset, units in deposits.items() if units}


async def _create(url: str, deposit: str | None) -> dict:
    timeout = aiohttp.ClientTimeout(total=10)
    body = {} if deposit is None else {"deposit": deposit}  # none: the simulator's default
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(f"{url.rstrip('/')}/admin/accounts", json=body) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise RuntimeError(body.get("msg", f"HTTP {resp.status}"))
            return body


def run_account_command(args: argparse.Namespace) -> int:
    deposit = args.deposit
    if deposit is not None and deposit.strip().lower() in _EMPTY:
        deposit = ""
    try:
        parse_deposits(DEFAULT_DEPOSIT if deposit is None else deposit)
    except DepositError as exc:
        print(f"astra sim account create: {exc}", file=sys.stderr)
        return 2
    try:
        creds = asyncio.run(_create(args.url, deposit))
    except (TimeoutError, aiohttp.ClientError, RuntimeError, ValueError) as exc:
        print(f"astra sim account create: cannot create an account at {args.url}: {exc}",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(creds))
        return 0
    print("Simulator account created (the secret and private key are shown only now):")
    for label, key in (("API key", "apiKey"), ("API secret", "apiSecret"), ("user", "user"),
                       ("signer", "signer"), ("signer private key", "signerPrivateKey")):
        print(f"  {label:<19} {creds[key]}")
    funds = ", ".join(f"{v} {k}" for k, v in creds.get("deposit", {}).items()) or "nothing"
    print(f"  {'deposited':<19} {funds} (spot and perpetual wallets each)")
    return 0
