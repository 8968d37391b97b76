"""``astra serve``: keys, venues (the simulator child by default), gateway, until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from astra.store import ApiKeyStore, CredentialStore, load_master_key, open_database
from astra.store.credentials import MASTER_KEY_ENV
from astra.trading.paper import LayeredCredentials, create_paper_account

from .gateway import Gateway, SimChild, load_config, venues_from_config

__all__ = ["add_serve_parser", "serve"]

API_KEY_ENV = "ASTRA_API_KEY"
# Top-level config settings passed to Gateway as they are (see astra.server.gateway).
_GATEWAY_SETTINGS = (
    "header_timeout",
    "keepalive_timeout",
    "ws_connections_per_key",
    "session_revalidate_seconds",
)


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run the gateway (on the simulator by default)")
    p.add_argument(
        "--host", default=None, help="address to bind (default 127.0.0.1; 0.0.0.0 in a container)"
    )
    p.add_argument("--port", type=int, default=None, help="API port (default 8080)")
    p.add_argument("--metrics-port", type=int, default=None, help="metrics port (default 9090)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="data directory (default $ASTRA_DATA_DIR or ~/.astra)",
    )
    p.add_argument("--database-url", default=None, help="SQLAlchemy URL instead of SQLite")
    p.add_argument("--config", type=Path, default=None, help="TOML file naming venues")
    p.add_argument(
        "--venues",
        default=None,
        help="comma-separated venues to serve, e.g. "
        "binance,okx (URLs from --config or the venues' defaults)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the simulator's order flow")


def _api_key(keys: ApiKeyStore) -> None:
    token = os.environ.get(API_KEY_ENV, "").strip()
    if token:
        keys.register(token)  # ValueError explains a malformed key without echoing it
        print(f"API key from ${API_KEY_ENV} registered")
    elif keys.active_count() == 0:
        issued = keys.create("first start")
        print("No API key existed; created one. It is shown once, keep it:")
        print(f"  x-astra-api-key: Bearer {issued.token}")


async def serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    for code in filter(None, (args.venues or "").split(",")):
        config.setdefault("venues", {}).setdefault(code.strip().upper(), {})
    engine = open_database(args.database_url, args.data_dir)
    keys = ApiKeyStore(engine)
    try:
        _api_key(keys)
        # Stored exchange credentials need the master key; without it only headers work.
        store = CredentialStore(engine, load_master_key()) if os.environ.get(
            MASTER_KEY_ENV, "").strip() else None
    except ValueError as exc:
        print(f"astra serve: {exc}", file=sys.stderr)
        return 2
    credentials = LayeredCredentials(store)
    venues_config = {k.upper(): v or {} for k, v in (config.get("venues") or {}).items()}
    config["venues"] = venues_config
    # No venue named, or SIM named without a URL: run the simulator as a child.
    wants_child = not venues_config or (
        "SIM" in venues_config and not venues_config["SIM"].get("url")
    )
    child = SimChild(args.seed) if wants_child else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        sim_url = await child.start() if child else None
        first_key = next((k for k in keys.list() if k.active), None)
        if child and first_key is not None:  # paper trading out of the box
            paper, paper_funds = await create_paper_account(sim_url)
            credentials.add_default(first_key.key_id, paper)
        venues = venues_from_config(config, sim_url)
        gateway = Gateway(
            venues,
            keys,
            host=args.host or config.get("host", "127.0.0.1"),
            port=args.port if args.port is not None else config.get("port", 8080),
            metrics_port=args.metrics_port
            if args.metrics_port is not None
            else config.get("metrics_port", 9090),
            credentials=credentials,
            **{k: config[k] for k in _GATEWAY_SETTINGS if k in config},
        )
        async with gateway:
            print(
                f"Astra gateway listening on {gateway.base_url} "
                f"(metrics on port {gateway.metrics_port}); venues: {', '.join(venues)}"
            )
            if child:
                print(f"  simulator (SIM) running at {sim_url} (pid {child.proc.pid})")
                if first_key is not None:
                    funds = ", ".join(f"{v} {k}" for k, v in paper_funds.items())
                    print(f"  paper trading: a SIM account with {funds} (spot and perp) "
                          f"for API key {first_key.key_id}; POST /orders needs no exchange keys")
            print(
                f"  try: curl -H 'x-astra-api-key: Bearer <key>' "
                f"'{gateway.base_url}/orderbook?market={next(iter(venues))}-SPOT-BTC-USDT'",
                flush=True,
            )
            await stop.wait()
            print("shutting down", flush=True)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"astra serve: {exc}", file=sys.stderr)
        return 1
    finally:
        if child:
            await child.stop()
    return 0
