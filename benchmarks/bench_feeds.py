"""Depth messages/s through each venue's feed handler (parse + integrity check + book), side
by side in one run with ccxt.pro's handler for the same venue fed the same frames.

Each venue's harness is ``benchmarks/feeds/<venue>.py`` (its docstring says what exactly is
timed on both sides); this script runs them all and prints the ratios.

Usage: python benchmarks/bench_feeds.py [venue ...]
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORDED = HERE.parents[1] / "shared" / "fixtures" / "recorded"
# venue -> recording (None: the harness generates its own frames, no recording exists)
VENUES = {
    "binance": RECORDED / "BINANCE.ws.1.0",
    "okx": RECORDED / "OKX.ws.1.0",
    "kraken": RECORDED / "KRAKEN.ws.50.0",
    "kucoin": RECORDED / "KUCOIN.ws.1.0",
    "htx": RECORDED / "HUOBI.ws.44.0",
    "coinbase": None,
}


def _load(venue: str):
    spec = importlib.util.spec_from_file_location(f"feeds_{venue}", HERE / "feeds" / f"{venue}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(venue: str, result: dict) -> list[tuple[str, float, float]]:
    if "astra_msgs_per_s" in result:
        return [(venue, result["astra_msgs_per_s"], result["ccxt_msgs_per_s"])]
    # Harnesses with several stream kinds report <kind>_astra / <kind>_ccxt pairs.
    kinds = sorted({k.rsplit("_", 1)[0] for k in result if k.endswith("_astra")})
    return [(f"{venue} {k}", result[f"{k}_astra"], result[f"{k}_ccxt"]) for k in kinds]


def main(selected: list[str]) -> None:
    print(f"{'venue':<18}{'astra msg/s':>14}{'ccxt.pro msg/s':>16}{'ratio':>8}")
    for venue, recording in VENUES.items():
        if selected and venue not in selected:
            continue
        if not (HERE / "feeds" / f"{venue}.py").exists():
            print(f"{venue:<18}  (no harness)")
            continue
        if recording is not None and not recording.exists():
            print(f"{venue:<18}  (skipped: {recording} is absent)")
            continue
        # Without a recording the harness synthesizes its frames into this file.
        frames = recording or Path(tempfile.gettempdir()) / f"astra-bench-{venue}.jsonl"
        result = _load(venue).bench(frames)
        for name, ours, theirs in _rows(venue, result):
            ratio = ours / theirs if theirs else float("inf")
            print(f"{name:<18}{ours:>14,.0f}{theirs:>16,.0f}{ratio:>7.1f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
