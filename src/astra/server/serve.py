"""``astra serve``: keys, venues (by default a simulator child with three venues, ``SIM``,
``SIM2`` and ``SIM3``, each with a funded paper account for the first API key), gateway, until
Ctrl-C.

Invariant: the top-level settings of ``--config`` are checked before anything starts
(``check_settings``): a value of the wrong type or out of its range ends ``astra serve`` with
exit status 2 and a message naming the setting, rather than a gateway that fails every
connection or refuses every WebSocket. So is a flag its ``--role`` would ignore
(``wrong_role_flag``: ``--database-url`` on a feed, which keeps no state; ``--nats-url`` on
``all``, which uses no NATS).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
import tomllib
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

from astra.cluster.wire import ClusterConfig
from astra.core import SIM_CODES
from astra.history.config import HistoryConfig
from astra.marketdata.smart import SmartConfig
from astra.otc import OtcConfig, QuoteSigner
from astra.store import (
    ApiKeyStore,
    CredentialStore,
    OtcStore,
    default_data_dir,
    load_master_key,
    open_database,
)
from astra.store.credentials import MASTER_KEY_ENV
from astra.trading.paper import LayeredCredentials, create_paper_account
from astra.venues.native import book_cores

from .gateway import REPLAY_OPTIONS, Gateway, SimChild, load_config, venues_from_config
from .logformat import LOG_FORMATS, install_log_format
from .roles import ROLES, EdgeLink, FeedNode, shown_url

__all__ = ["add_serve_parser", "check_otc_precision", "check_settings", "edge_config_hint",
           "otc_funds", "otc_hedge_warning", "port_arg", "serve", "wrong_role_flag"]

API_KEY_ENV = "ASTRA_API_KEY"
DEFAULT_SIM_VENUES = 3  # with no configuration: SIM, SIM2 and SIM3 around one fair price
# On the simulator: the OTC desk's own account on each venue (what it hedges from) and the
# first key's OTC account (what its client trades from).
DESK_DEPOSIT = "USDT=5000000,BTC=50,ETH=500,SOL=20000"
OTC_PAPER_DEPOSIT = {"USDT": "100000", "USD": "100000", "BTC": "2", "ETH": "20"}
_DAY = 86400.0
# Top-level config settings passed to Gateway (see astra.server.gateway): (type, min, max).
# Zero is refused too: a 0 timeout would drop every connection, 0 sessions refuse every
# WebSocket, and 0 s revalidation would never close a revoked key's sessions.
_GATEWAY_SETTINGS: dict[str, tuple[type, float, float]] = {
    "header_timeout": (float, 0.001, _DAY),
    "keepalive_timeout": (float, 0.001, _DAY),
    "body_timeout": (float, 0.001, _DAY),
    "ws_connections_per_key": (int, 1, 100_000),
    "session_revalidate_seconds": (float, 0.001, _DAY),
}
_ADDRESS_SETTINGS: dict[str, tuple[type, float, float]] = {
    "port": (int, 0, 65535),
    "metrics_port": (int, 0, 65535),
}


def _checked(name: str, value: object, kind: type, low: float, high: float) -> int | float:
    # bool is an int in Python, but `true` is no number of seconds.
    ok_type = isinstance(value, int) if kind is int else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type:
        what = "an integer" if kind is int else "a number (seconds)"
        raise ValueError(f"config setting {name} must be {what}, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"config setting {name} must be between {low:g} and {high:g}, "
                         f"got {value!r}")
    return kind(value)


def check_settings(config: dict) -> dict[str, int | float]:
    """The Gateway keyword arguments of ``config``'s top-level settings, checked; raises
    ``ValueError`` naming the first bad setting. (``port``/``metrics_port``, ``host`` and
    ``log_format`` are checked too, and not returned.)"""
    for name, (kind, low, high) in _ADDRESS_SETTINGS.items():
        if name in config:
            _checked(name, config[name], kind, low, high)
    if "host" in config and not (isinstance(config["host"], str) and config["host"]):
        raise ValueError(f"config setting host must be an address, got {config['host']!r}")
    if "log_format" in config and config["log_format"] not in LOG_FORMATS:
        raise ValueError(f"config setting log_format must be one of {', '.join(LOG_FORMATS)}, "
                         f"got {config['log_format']!r}")
    return {name: _checked(name, config[name], *limits)
            for name, limits in _GATEWAY_SETTINGS.items() if name in config}


def port_arg(text: str) -> int:
    """A ``--port`` value: 0 to 65535 (the operating system would wrap 70000 to 4464)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {text!r}")
    return port


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run the gateway (on the simulator by default)")
    p.add_argument(
        "--host", default=None, help="address to bind (default 127.0.0.1; 0.0.0.0 in a container)"
    )
    p.add_argument("--port", type=port_arg, default=None, help="API port (default 8080)")
    p.add_argument("--metrics-port", type=port_arg, default=None,
                   help="metrics port (default 9090)")
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
    p.add_argument(
        "--role", choices=ROLES, default="all",
        help="all: one process (default); feed: venue connections, books published to NATS; "
        "edge: the API, books mirrored off NATS (see the README's scale-out section)")
    p.add_argument("--nats-url", default=None,
                   help="NATS server of --role feed|edge (default $ASTRA_NATS_URL, [cluster] "
                   "nats_url, nats://127.0.0.1:4222)")
    p.add_argument("--log-format", choices=LOG_FORMATS, default=None,
                   help="text (default) or json: one JSON object per log line, on stderr, "
                   "from INFO up (config: log_format)")


def _api_key(keys: ApiKeyStore) -> None:
    token = os.environ.get(API_KEY_ENV, "").strip()
    if token:
        keys.register(token)  # ValueError explains a malformed key without echoing it
        print(f"API key from ${API_KEY_ENV} registered")
    elif keys.active_count() == 0:
        issued = keys.create("first start")
        print("No API key existed; created one. It is shown once, keep it:")
        print(f"  x-astra-api-key: Bearer {issued.token}")


def check_otc_precision(store: OtcStore, precision: dict[str, int]) -> None:
    """``[otc.precision]`` against the database: an asset's places are fixed at its first use
    (balances are integer units at them), e.g. by ``astra otc accounts deposit``, which reads
    no config. A setting the database does not hold would be ignored without a word: refuse
    it (``ValueError`` naming it) instead."""
    for asset, places in sorted(precision.items()):
        held = store.precision(asset)  # a first use fixes it at the setting: no conflict
        if held != places:
            raise ValueError(f"[otc] precision.{asset} = {places}, but this database keeps "
                             f"{asset} at {held} decimal places since its first use: set it "
                             f"to {held} or remove it")


def otc_hedge_warning(otc: OtcConfig, venues: Iterable[str],
                      credentials: LayeredCredentials) -> str | None:
    """The line to print when the desk hedges (``hedge = "sor"``) on venues where its
    ``hedge_key`` has no credentials: every hedge there would fail after its attempts, trade
    after trade. (On the simulator ``astra serve`` gives the desk its own accounts.)"""
    if otc.hedge != "sor":
        return None
    missing = [v for v in venues if (otc.venues is None or v in otc.venues)
               and credentials.get(otc.hedge_key, v) is None]
    if not missing:
        return None
    return (f"  OTC desk: hedge_key {otc.hedge_key!r} has no credentials on "
            f"{', '.join(missing)}: hedges there will fail. Give the desk an API key (astra "
            "keys create), its exchange credentials (astra credentials set --key-id <its id>) "
            "and [otc] hedge_key = \"<its id>\", or hedge = \"off\"")


def otc_funds(balances: dict[str, Decimal]) -> str:
    """``"2 BTC, 0.00000001 ETH"``: never exponent notation (``str(Decimal)`` would print a
    dust balance as ``1E-8``)."""
    return ", ".join(f"{v:f} {k}" for k, v in balances.items() if v) or "nothing"


async def _otc_account(gateway: Gateway, key_id: str) -> None:
    """On the simulated venues, the first key gets a funded OTC account (once: an existing
    one is reused), so request-quote works at once."""
    store = gateway.desk.store

    def ensure() -> tuple[str, dict]:
        accounts = store.accounts(key_id)
        if accounts:
            account_id = accounts[0].account_id
        else:
            account_id = store.create_account(key_id, name="paper").account_id
            for asset, amount in OTC_PAPER_DEPOSIT.items():
                store.deposit(account_id, asset, Decimal(amount))
        return account_id, store.balances(account_id)

    account_id, balances = await asyncio.to_thread(ensure)
    print(f"  OTC desk: account {account_id} ({otc_funds(balances)}); POST /request-quote with "
          f'{{"accountId": "{account_id}", "fromAsset": "BTC", "toAsset": "USDT", '
          '"fromAmount": 0.1}', flush=True)


def wrong_role_flag(args: argparse.Namespace) -> str | None:
    """Why a flag given does not fit ``--role`` (``None`` when all do): said and refused
    (exit 2) rather than ignored, since the operator expects it to do something."""
    if args.role == "feed" and args.database_url:
        return ("a feed node keeps no state (no API keys, journal or ledger): --database-url "
                "is for the edges")
    if args.role == "all" and args.nats_url:
        return "--nats-url is for --role feed|edge (one process uses no NATS)"
    return None


def edge_config_hint(sim_urls: Mapping[str, str], nats_url: str) -> str:
    """What a feed node running its own simulator prints for the edges: the ``--config`` they
    need, as TOML lines to paste (indented, which TOML ignores), and how to trade there."""
    lines = ["  edges on this machine name its venues in their --config (the simulator stops "
             "with this feed: for a feed you restart, or a standby, run astra sim on its own "
             "and name it in every node's config):"]
    for code, url in sim_urls.items():
        lines += [f"    [venues.{code}]", f'    url = "{url}"']
    lines += ["    [cluster]", f'    nats_url = "{nats_url}"']
    lines.append("  orders on the edges need a simulator account: "
                 + _account_command(*next(iter(sim_urls.items()))))
    return "\n".join(lines)


def _account_command(code: str, url: str) -> str:
    # The simulator's admin endpoint answers on loopback only: run on its own machine.
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        url = f"{parts.scheme}://127.0.0.1:{parts.port or 80} on the simulator's machine"
    return (f"astra sim account create --url {url} (on {code}; each venue has its own), then "
            "the x-astra-exchange-* headers or astra credentials set")


async def serve(args: argparse.Namespace) -> int:
    if (wrong := wrong_role_flag(args)) is not None:
        print(f"astra serve --role {args.role}: {wrong}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except (OSError, tomllib.TOMLDecodeError) as exc:  # missing, unreadable or not TOML
        print(f"astra serve: {args.config}: {exc}", file=sys.stderr)
        return 2
    where = args.config or "settings"
    try:
        settings = check_settings(config)
        smart = SmartConfig.from_config(config.get("smart"))  # [smart]: SMART markets
        otc = OtcConfig.from_config(config.get("otc"))  # [otc]: the OTC desk
        QuoteSigner.from_config(otc.section)  # its signing keys, checked before anything starts
        data_dir = args.data_dir or default_data_dir()
        # [history]: what to record. With no configuration at all (the simulator), the
        # simulator's BTC-USDT books and trades are recorded for two days.
        history = (HistoryConfig.default_for_simulator(data_dir)
                   if not config and not args.venues and args.role == "all"
                   else HistoryConfig.from_config(config.get("history"), data_dir))
        cluster = (ClusterConfig.from_config(config.get("cluster"), args.nats_url)
                   if args.role != "all" else None)
    except ValueError as exc:
        print(f"astra serve: {where}: {exc}", file=sys.stderr)
        return 2
    install_log_format(args.log_format or config.get("log_format", "text"))
    for code in filter(None, (args.venues or "").split(",")):
        config.setdefault("venues", {}).setdefault(code.strip().upper(), {})
    if args.role == "feed":  # no API, no database: venues, books, NATS
        return await _serve_feed(args, config, cluster, smart, where)
    if args.role == "edge" and not _edge_venues_named(config, where):
        return 2
    engine = open_database(args.database_url, args.data_dir)
    keys = ApiKeyStore(engine)
    try:
        _api_key(keys)
        # Stored exchange credentials need the master key; without it only headers work.
        store = CredentialStore(engine, load_master_key()) if os.environ.get(
            MASTER_KEY_ENV, "").strip() else None
        check_otc_precision(OtcStore(engine, precision=otc.precision), otc.precision)
    except ValueError as exc:
        print(f"astra serve: {exc}", file=sys.stderr)
        return 2
    credentials = LayeredCredentials(store)
    venues_config = {k.upper(): v or {} for k, v in (config.get("venues") or {}).items()}
    config["venues"] = venues_config
    # No venue named (SIM, SIM2, SIM3), or simulator venues named without a URL: run the
    # simulator as a child, with as many venues as the highest such code's index.
    from_child = [c for c, v in venues_config.items() if c in SIM_CODES and not v.get("url")]
    count = (max(SIM_CODES.index(c) + 1 for c in from_child) if from_child
             else 0 if venues_config else DEFAULT_SIM_VENUES)
    # Venues the gateway will serve: those named, else the child's. [otc] venues names some.
    serving = list(venues_config) or list(SIM_CODES[:count])
    missing = [v for v in otc.venues or () if v not in serving]
    if missing:
        print(f"astra serve: {where}: [otc] venues: {missing[0]} is not a served venue "
              f"(served: {', '.join(serving)})", file=sys.stderr)
        return 2
    # [venues.SIMx] replay = "DIR" (replay_from, replay_to, replay_speed): the child replays.
    replaying = {c: v for c, v in venues_config.items()
                 if any(v.get(k) not in (None, "") for k in REPLAY_OPTIONS)}
    for code, options in replaying.items():
        if code not in from_child or options.get("replay") in (None, ""):
            print(f"astra serve: {where}: [venues.{code}] replay options need replay = \"DIR\" "
                  "on a simulator venue without a url (SIM, SIM2 ...)", file=sys.stderr)
            return 2
    child = SimChild(args.seed, count, replaying,
                     say=lambda text: print(f"  simulator: {text}", flush=True)) if count else None
    stop = _stop_on_signals()
    link: EdgeLink | None = None
    try:
        sim_urls = await child.start() if child else {}
        served = {c: u for c, u in sim_urls.items() if not venues_config or c in from_child}
        first_key = next((k for k in keys.list() if k.active), None)
        paper_funds: dict[str, str] = {}
        if served and first_key is not None:  # paper trading out of the box, on every venue
            made = await asyncio.gather(
                *(create_paper_account(url, code) for code, url in served.items()))
            for paper, _ in made:
                credentials.add_default(first_key.key_id, paper)
            paper_funds = made[0][1]  # every venue's deposit is the simulator's default
        if served and otc.hedge == "sor":  # the OTC desk hedges from its own accounts
            desk_accounts = await asyncio.gather(
                *(create_paper_account(url, code, DESK_DEPOSIT) for code, url in served.items()))
            for paper, _ in desk_accounts:
                credentials.add_default(otc.hedge_key, paper)
        venues = venues_from_config(config, sim_urls)
        if cluster is not None:  # an edge: books from NATS, the venues' budgets shared
            link = await EdgeLink(cluster).start()
        gateway = Gateway(
            venues,
            keys,
            host=args.host or config.get("host", "127.0.0.1"),
            port=args.port if args.port is not None else config.get("port", 8080),
            metrics_port=args.metrics_port
            if args.metrics_port is not None
            else config.get("metrics_port", 9090),
            credentials=credentials,
            smart=smart,
            otc=otc,
            history=history,
            source=link.source if link is not None else None,
            **settings,
        )
        if link is not None:
            gateway.metrics.role, gateway.metrics.cluster = "edge", link.stats
        async with gateway:
            print(
                f"Astra gateway listening on {gateway.base_url} "
                f"(metrics on port {gateway.metrics_port}); venues: {', '.join(venues)}"
            )
            if link is not None:
                print(f"  edge node {link.name}: books mirrored from the feed nodes at NATS "
                      f"{shown_url(cluster.nats_url)}", flush=True)
            for code, url in served.items():
                print(f"  simulator ({code}) running at {url} (pid {child.proc.pid})")
            # Simulator venues by url (an edge's, or a shared `astra sim`): no paper account.
            if by_url := [c for c in venues if c in SIM_CODES and c not in served]:
                print(f"  orders on {', '.join(by_url)} need a simulator account: "
                      f"{_account_command(by_url[0], venues_config[by_url[0]]['url'])}")
            if served and first_key is not None:
                funds = ", ".join(f"{v} {k}" for k, v in paper_funds.items())
                print(f"  paper trading: an account on each of {', '.join(served)} with "
                      f"{funds} (spot and perp) for API key {first_key.key_id}; POST /orders "
                      "needs no exchange keys")
            # Bound to every interface (a container): the address a user types.
            shown = gateway.base_url.replace("://0.0.0.0:", "://localhost:")
            print(
                f"  try: curl -H 'x-astra-api-key: Bearer <key>' "
                f"'{shown}/orderbook?market={next(iter(venues))}-SPOT-BTC-USDT'",
                flush=True,
            )
            if sum(c in SIM_CODES for c in venues) > 1:  # the simulated venues' SMART book
                print(f"       curl -H 'x-astra-api-key: Bearer <key>' "
                      f"'{shown}/orderbook?market=SMART-SPOT-BTC-USDT'", flush=True)
            print(f"  terminal: {shown}/ in a browser (sign in with the key)", flush=True)
            print(f"  book cores: {book_cores()}", flush=True)
            if gateway.recorder is not None:
                print(f"  history: recording {', '.join(gateway.recorder.markets) or 'nothing yet'}"
                      f" to {history.dir} (written every {history.flush_seconds:g} s, kept "
                      f"{history.retention_days} days); GET /history/markets", flush=True)
            if (warning := otc_hedge_warning(otc, venues, credentials)) is not None:
                print(warning, flush=True)
            if served and first_key is not None:
                await _otc_account(gateway, first_key.key_id)
            # Start-up's objects (modules, markets, books) into the permanent generation: the
            # collector's full passes no longer walk them, which cuts the feed's p99 outliers.
            gc.collect()
            gc.freeze()
            await stop.wait()
            print("shutting down", flush=True)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"astra serve: {exc}", file=sys.stderr)
        return 1
    finally:
        if link is not None:
            await link.close()
        if child:
            await child.stop()
    return 0


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _edge_venues_named(config: dict, where: object) -> bool:
    """An edge serves the venues its feed nodes do, and trades on them itself: each must be
    named, a simulator venue with the ``url`` of the simulator the feeds use (a child of its
    own would be another market)."""
    venues = config.get("venues") or {}
    unnamed = [c for c, v in venues.items() if c in SIM_CODES and not v.get("url")]
    if venues and not unnamed:
        return True
    what = (f"[venues.{unnamed[0]}] needs the url of the simulator the feed nodes use"
            if unnamed else "name the venues the feed nodes serve ([venues.X] in --config)")
    print(f"astra serve --role edge: {where}: {what}", file=sys.stderr)
    return False


async def _serve_feed(args: argparse.Namespace, config: dict, cluster: ClusterConfig,
                      smart: SmartConfig, where: object) -> int:
    """``astra serve --role feed``: the venues (a simulator child when none is named, as
    ``astra serve``), their books published to NATS, ``/health`` and ``/metrics``."""
    venues_config = {k.upper(): v or {} for k, v in (config.get("venues") or {}).items()}
    config["venues"] = venues_config
    from_child = [c for c, v in venues_config.items() if c in SIM_CODES and not v.get("url")]
    count = (max(SIM_CODES.index(c) + 1 for c in from_child) if from_child
             else 0 if venues_config else DEFAULT_SIM_VENUES)
    child = SimChild(args.seed, count,
                     say=lambda text: print(f"  simulator: {text}", flush=True)) if count else None
    stop = _stop_on_signals()
    try:
        sim_urls = await child.start() if child else {}
        venues = venues_from_config(config, sim_urls)
        node = FeedNode(venues, cluster, host=args.host or config.get("host", "127.0.0.1"),
                        metrics_port=args.metrics_port if args.metrics_port is not None
                        else config.get("metrics_port", 9090), smart=smart)
        async with node:
            print(f"Astra feed node {node.name} publishing to NATS at "
                  f"{shown_url(cluster.nats_url)} (health and metrics on port "
                  f"{node.metrics_port}); venues: "
                  f"{', '.join(venues)}", flush=True)
            for code, url in sim_urls.items():
                print(f"  simulator ({code}) running at {url} (pid {child.proc.pid})")
            if sim_urls:
                print(edge_config_hint(sim_urls, shown_url(cluster.nats_url)), flush=True)
            await stop.wait()
            print("shutting down", flush=True)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"astra serve: {where}: {exc}" if isinstance(exc, ValueError)
              else f"astra serve: {exc}", file=sys.stderr)
        return 1
    finally:
        if child:
            await child.stop()
    return 0
