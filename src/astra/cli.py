"""The ``astra`` command line: ``serve`` (the gateway), ``sim`` (the simulator), ``keys``,
``credentials``, ``otc``, ``history``, ``book`` (a live ladder of one book)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Coroutine, Sequence

from astra.core import MAX_SIM_VENUES

__all__ = ["main"]


def _run(coro: Coroutine) -> int | None:
    try:
        import uvloop
    except ImportError:  # uvloop is optional where it cannot be installed
        return asyncio.run(coro)
    return uvloop.run(coro)


def _add_sim_account_parser(sim: argparse.ArgumentParser) -> None:
    # Defined here, not in astra.sim.admin: importing the simulator (eth-account) would slow
    # every ``astra`` command's start by seconds.
    sub = sim.add_subparsers(dest="sim_command")
    account = sub.add_parser("account", help="manage simulator accounts")
    actions = account.add_subparsers(dest="account_command", required=True)
    create = actions.add_parser("create", help="create a funded account on a running simulator")
    create.add_argument("--url", default="http://127.0.0.1:7070", help="the simulator's base URL")
    create.add_argument(  # default: the simulator's (astra.sim.admin.DEFAULT_DEPOSIT)
        "--deposit",
        help="ASSET=AMOUNT,... credited to the spot and the perpetual wallet (default: the "
        "simulator's, as for astra serve's paper account; 'none' for an empty account)",
    )
    create.add_argument("--json", action="store_true", help="print one JSON object")


def _add_book_parser(sub: argparse._SubParsersAction) -> None:
    # Here, not in astra.client.ladder: importing the SDK and rich would slow every command.
    book = sub.add_parser("book", help="a live ladder of one book in the terminal (the SDK)")
    book.add_argument("market", help="e.g. SIM-SPOT-BTC-USDT or SMART-SPOT-BTC-USDT")
    book.add_argument("--depth", type=int, default=10, help="levels a side (default 10)")
    book.add_argument("--url", default=os.environ.get("ASTRA_URL", "http://127.0.0.1:8080"),
                      help="the gateway (default $ASTRA_URL or http://127.0.0.1:8080)")
    book.add_argument("--key", help="the API key (default $ASTRA_API_KEY)")
    book.add_argument("--count", type=int, metavar="N",
                      help="print N frames to stdout (no live redraw) and exit")
    book.add_argument("--once", dest="count", action="store_const", const=1,
                      help="print one frame and exit (--count 1)")
    book.add_argument("--width", type=int, default=100, help=argparse.SUPPRESS)
    book.add_argument("--timeout", type=float, default=30.0, help=argparse.SUPPRESS)


def _exit_at_stdin_eof() -> None:
    """Stop this process (SIGTERM: a clean shutdown) once stdin reaches end of file: the
    parent holds the pipe's other end, so EOF means the parent is gone, however it died."""

    def watch() -> None:
        with contextlib.suppress(OSError, ValueError):
            while os.read(sys.stdin.fileno(), 4096):
                pass  # the parent never writes; anything sent is ignored
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent: int) -> None:
    """On Linux, have the kernel send this process SIGTERM when its parent dies; then exit
    if ``parent`` (the pid the parent passed) is no longer the parent: it died before the
    request took effect. Done here, in the child at its start, rather than in a
    ``preexec_fn`` between fork and exec, which is unsafe in a parent with threads."""
    if sys.platform.startswith("linux"):
        import ctypes
        import ctypes.util

        libc = ctypes.util.find_library("c")
        if libc is not None:
            ctypes.CDLL(libc, use_errno=True).prctl(
                _PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if parent and os.getppid() != parent:
        print(f"astra sim: parent process {parent} is gone", file=sys.stderr)
        sys.exit(1)


def _venue_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_SIM_VENUES:
        raise argparse.ArgumentTypeError(
            f"the simulator runs 1 to {MAX_SIM_VENUES} venues, not {text!r}")
    return n


def _replay_plans(args: argparse.Namespace) -> dict:
    """``astra sim --replay ...`` checked and resolved against the record (exit 2 with the
    reason otherwise). Imported here only when asked: it loads pyarrow."""
    from astra.sim.replay import parse_replay_options, plan_replays

    try:
        sources = parse_replay_options(args.replay, args.replay_from, args.replay_to,
                                       args.replay_speed, args.venues)
        return plan_replays(sources, say=print)
    except ValueError as exc:
        print(f"astra sim: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    from astra.history.cli import add_history_parser
    from astra.server.serve import add_serve_parser, port_arg
    from astra.store import add_credentials_parser, add_keys_parser, add_otc_parser

    parser = argparse.ArgumentParser(prog="astra", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(sub)
    sim = sub.add_parser("sim", help="run the built-in exchange simulator (venues SIM, SIM2...)")
    sim.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    sim.add_argument(
        "--port", type=port_arg, default=7070,
        help="SIM's port; SIM2 gets PORT+1 and so on (0: each venue picks a free one)",
    )
    sim.add_argument("--seed", type=int, default=0, help="seed of the synthetic order flow")
    sim.add_argument(
        "--venues", type=_venue_count, default=1, metavar="N",
        help=f"run N venues SIM, SIM2 ... around one fair price (1 to {MAX_SIM_VENUES})",
    )
    sim.add_argument(
        "--no-latency", dest="latency", action="store_false",
        help="answer REST requests without the venues' simulated latency",
    )
    sim.add_argument(
        "--data", metavar="FILE",
        help="keep accounts, balances and orders in FILE across restarts (SIM's; SIM2's in "
        "FILE.SIM2 and so on)",
    )
    sim.add_argument(
        "--replay", action="append", default=[], metavar="[CODE=]DIR",
        help="replay the books recorded in DIR (astra serve's [history] dir) on venue CODE "
        "(default SIM): each market recorded there follows the record, its synthetic flow "
        "off (repeatable, one DIR per venue)",
    )
    sim.add_argument(
        "--replay-from", action="append", default=[], metavar="[CODE=]TIME",
        help="where the replay starts: ISO 8601 or Unix ms (default: the record's start)",
    )
    sim.add_argument(
        "--replay-to", action="append", default=[], metavar="[CODE=]TIME",
        help="where it ends, its last book then staying (default: the record's end)",
    )
    sim.add_argument(
        "--replay-speed", action="append", default=[], metavar="[CODE=]X",
        help="record seconds per simulated second (default 1)",
    )
    sim.add_argument(  # for `astra serve`, which runs the simulator as its child: its pid
        "--exit-with-parent", nargs="?", type=int, const=0, default=None, metavar="PID",
        help=argparse.SUPPRESS,
    )
    _add_sim_account_parser(sim)
    add_keys_parser(sub)
    add_credentials_parser(sub)
    add_otc_parser(sub)
    add_history_parser(sub)
    _add_book_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "sim" and args.sim_command == "account":
        from astra.sim.admin import run_account_command

        sys.exit(run_account_command(args))
    elif args.command == "sim":
        from astra.sim.cluster import serve_sim

        if args.exit_with_parent is not None:
            _die_with_parent(args.exit_with_parent)
            _exit_at_stdin_eof()
        replay = None
        if args.replay or args.replay_from or args.replay_to or args.replay_speed:
            replay = _replay_plans(args)
        sys.exit(_run(serve_sim(args.host, args.port, args.seed, args.data, args.venues,
                                args.latency, replay)))
    elif args.command == "serve":
        from astra.server.serve import serve

        sys.exit(_run(serve(args)))
    elif args.command == "keys":
        from astra.store import run_keys

        sys.exit(run_keys(args))
    elif args.command == "credentials":
        from astra.store import run_credentials

        sys.exit(run_credentials(args))
    elif args.command == "otc":
        from astra.store import run_otc

        sys.exit(run_otc(args))
    elif args.command == "history":
        from astra.history.cli import run_history

        sys.exit(run_history(args))
    elif args.command == "book":
        from astra.client.ladder import run_book

        sys.exit(run_book(args))


if __name__ == "__main__":
    main()
