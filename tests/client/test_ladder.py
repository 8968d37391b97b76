"""``astra book MARKET`` run headless (``--count N``: N frames to stdout) as a subprocess:
on a book that stands still (the simulator's clock stopped) the printed ladder is exactly
``GET /orderbook``; on the live SMART book it shows each level's venues; bad input exits
non-zero saying why."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

from astra.client import AsyncAstra

from .helpers import BOUND, levels

SRC = Path(__file__).resolve().parents[2] / "src"
ROW = re.compile(r"^│ (ask|bid)\s+│\s+(\S+)\s+│\s+(\S+)\s+│(?:\s+(.*?)\s+│)?$")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ASTRA_API_KEY"}
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


def _frames(out: str) -> list[dict]:
    """Each printed frame: its title line, asks and bids as (price, quantity), venues."""
    frames: list[dict] = []
    for line in out.splitlines():
        if "updateId" in line:
            frames.append({"title": line.strip(), "asks": [], "bids": [], "venues": []})
        elif (m := ROW.match(line)) is not None:
            frames[-1][m[1] + "s"].append((float(m[2]), float(m[3])))
            if m[4]:
                frames[-1]["venues"].append(m[4])
    return frames


async def _book(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "astra", "book", *args, env=env or _env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        async with asyncio.timeout(BOUND * 2):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, out.decode(), err.decode()


async def test_the_ladder_prints_exactly_the_book_it_is_fed(sim, gateway):
    gw, token = gateway
    market = "SIM-SPOT-BTC-USDT"
    async with AsyncAstra(gw.base_url, token) as client, asyncio.timeout(BOUND * 2):
        await client.orderbook(market, 1)  # its feed runs and is synced
        clock = sim.exchange._task  # the simulator's clock stops: the book stands still
        clock.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await clock
        previous = None
        while True:  # until the last diff flushed has reached the gateway
            await asyncio.sleep(0.3)
            rest = await client.orderbook(market, 5)
            if previous is not None and rest.update_id == previous:
                break
            previous = rest.update_id
        code, out, err = await _book(market, "--depth", "5", "--count", "1", "--url",
                                     gw.base_url, "--key", token)
        assert code == 0, err
        assert (await client.orderbook(market, 5)).update_id == rest.update_id  # still
    frames = _frames(out)
    assert len(frames) == 1
    frame, (bids, asks) = frames[0], levels(rest)
    assert f"{market}  updateId {rest.update_id}  synced" in frame["title"]
    assert len(bids) == len(asks) == 5
    assert frame["bids"] == bids and list(reversed(frame["asks"])) == asks
    assert frame["venues"] == []  # no venues column on a single venue's book
    assert f"spread {asks[0][0] - bids[0][0]:.10g}" in out


async def test_the_smart_ladder_shows_venues_and_members(served):
    code, out, err = await _book("SMART-SPOT-BTC-USDT", "--depth", "4", "--count", "3",
                                 env=_env(ASTRA_URL=served.base, ASTRA_API_KEY=served.token))
    assert code == 0, err
    frames = _frames(out)
    assert len(frames) == 3
    ids = [int(re.search(r"updateId (\d+)", f["title"])[1]) for f in frames]
    assert ids == sorted(ids) and len(set(ids)) == 3
    for frame in frames:
        assert len(frame["bids"]) == len(frame["asks"]) == 4
        assert frame["bids"] == sorted(frame["bids"], reverse=True)
        assert frame["asks"] == sorted(frame["asks"], reverse=True)  # worst ask on top
        for text, (_, quantity) in zip(frame["venues"], frame["asks"] + frame["bids"],
                                       strict=True):
            split = dict(part.split(":") for part in text.split())
            assert set(split) <= {"SIM", "SIM2", "SIM3"}
            assert sum(float(q) for q in split.values()) == quantity or abs(
                sum(float(q) for q in split.values()) - quantity) < 1e-9
    assert out.count("members: SIM synced, SIM2 synced, SIM3 synced") == 3


async def test_bad_input_exits_saying_why(served):
    code, _, err = await _book("SIM-SPOT-NOPE-USDT", "--count", "1", "--url", served.base,
                                 "--key", served.token)
    assert code == 1 and "MARKET_NOT_FOUND" in err and "SIM-SPOT-NOPE-USDT" in err
    code, _, err = await _book("SIM-SPOT-BTC-USDT", "--count", "1", "--url", served.base)
    assert code == 2 and "ASTRA_API_KEY" in err
