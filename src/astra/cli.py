"""The ``astra`` command line: ``serve`` (the gateway), ``sim`` (the simulator), ``keys``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence

__all__ = ["main"]


def _run(coro: Coroutine) -> int | None:
    try:
        import uvloop
    except ImportError:  # uvloop is optional where it cannot be installed
        return asyncio.run(coro)
    return uvloop.run(coro)


def _parser() -> argparse.ArgumentParser:
    from astra.server.serve import add_serve_parser
    from astra.store import add_keys_parser

    parser = argparse.ArgumentParser(prog="astra", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(sub)
    sim = sub.add_parser("sim", help="run the built-in exchange simulator (venue SIM)")
    sim.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    sim.add_argument("--port", type=int, default=7070, help="port (0 picks a free one)")
    sim.add_argument("--seed", type=int, default=0, help="seed of the synthetic order flow")
    add_keys_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "sim":
        from astra.sim.server import serve_sim

        _run(serve_sim(args.host, args.port, args.seed))
    elif args.command == "serve":
        from astra.server.serve import serve

        sys.exit(_run(serve(args)))
    elif args.command == "keys":
        from astra.store import run_keys

        sys.exit(run_keys(args))
