"""``astra serve --role feed|edge`` as an operator runs it, as real processes on loopback (a
nats-server with JetStream, ``astra serve`` children, the simulator).

- a feed with no config runs its own simulator and prints the edges' ``--config`` as TOML to
  paste: an edge started on exactly those lines serves the venues' books, trades and SMART
  book, the URLs of its ``curl`` hints answer, and an order placed with the simulator account
  the printed command creates is accepted; Ctrl-C (SIGINT) stops each node with status 0 and
  the feed's simulator child with it; the feed listens on its metrics port only;
- a standby feed takes over when the first stops: the edge never goes stale and goes on
  serving the venue's own book;
- a flag the role would ignore (``--database-url`` on a feed, ``--nats-url`` on ``all``) is
  refused (status 2) naming it; a NATS password or token is never printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import aiohttp
import pytest
from tests.cluster.natsd import NatsServer

from astra.server.roles import shown_url
from astra.server.serve import edge_config_hint

TOKEN = "opsclust23ab." + "o" * 10 + "PERA" + "t" * 20 + "-_xyz0123"
AUTH = {"x-astra-api-key": f"Bearer {TOKEN}"}
MARKET = "SIM-SPOT-BTC-USDT"


@pytest.fixture
def natsd(tmp_path):
    server = NatsServer(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


def _env(tmp: Path, name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ASTRA_NATS_URL", "ASTRA_DATABASE_URL", "ASTRA_MASTER_KEY")}
    env.update(ASTRA_API_KEY=TOKEN, ASTRA_DATA_DIR=str(tmp / name))
    return env


class Node:
    """``astra serve`` as a child process, its output in a file."""

    def __init__(self, tmp: Path, name: str, args: list[str]) -> None:
        self.log = tmp / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "astra", "serve", "--metrics-port", "0", *args],
                stdout=out, stderr=subprocess.STDOUT, env=_env(tmp, name))

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_for(self, pattern: str, seconds: float = 60) -> re.Match:
        async with asyncio.timeout(seconds):
            while True:
                if found := re.search(pattern, self.text(), re.M):
                    return found
                if self.proc.poll() is not None:
                    raise AssertionError(f"astra serve exited {self.proc.returncode}: "
                                         f"{self.text()[-1500:]}")
                await asyncio.sleep(0.05)

    async def interrupt(self) -> int:
        """Ctrl-C: SIGINT, then its exit status."""
        self.proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            while True:
                if self.proc.poll() is not None:
                    return self.proc.returncode
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports ``pid`` listens on (Linux /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def _pasted_block(text: str) -> str:
    """The indented TOML lines the feed printed for the edges, as a user copies them."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "edges on this machine name" in line)
    block = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        block.append(line)
    return "\n".join(block) + "\n"


async def _get(http: aiohttp.ClientSession, url: str, **params) -> tuple[int, dict]:
    async with http.get(url, params=params or None) as resp:
        return resp.status, await resp.json()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_a_feed_with_its_own_simulator_prints_the_config_its_edges_run_on(
        tmp_path, natsd):
    nodes: list[Node] = []
    try:
        feed = Node(tmp_path, "feed", ["--role", "feed", "--nats-url", natsd.url])
        nodes.append(feed)
        ops = (await feed.wait_for(r"health and metrics on port (\d+)"))[1]
        await feed.wait_for(r"^\s+nats_url = ")
        sim_pid = int((await feed.wait_for(r"simulator \(SIM\) running at \S+ \(pid (\d+)\)"))[1])
        # The feed has no client API: its one listening port is the metrics port.
        assert _listening_ports(feed.proc.pid) == {int(ops)}
        block = _pasted_block(feed.text())
        config = tomllib.loads(block)  # copy-pastable as printed
        assert sorted(config["venues"]) == ["SIM", "SIM2", "SIM3"]
        assert config["cluster"] == {"nats_url": natsd.url}
        (tmp_path / "edge.toml").write_text(block)
        edge = Node(tmp_path, "edge", ["--role", "edge", "--config", str(tmp_path / "edge.toml"),
                                       "--port", "0"])
        nodes.append(edge)
        listening = r"listening on (http://\S+) \(metrics on port (\d+)"
        base, edge_ops = (await edge.wait_for(listening)).groups()
        await edge.wait_for(r"^\s+curl .*SMART-SPOT-BTC-USDT")
        hints = re.findall(r"curl -H '[^']+' '(http://[^']+)'", edge.text())
        assert [h.split("=")[-1] for h in hints] == [MARKET, "SMART-SPOT-BTC-USDT"]
        assert all(h.startswith(base) for h in hints)
        account = re.search(r"simulator account: astra sim account create --url (\S+) \(on SIM;",
                            feed.text())
        assert account and account[1] == config["venues"]["SIM"]["url"]
        assert "orders on SIM, SIM2, SIM3 need a simulator account" in edge.text()
        async with aiohttp.ClientSession(headers=AUTH) as http, asyncio.timeout(120):
            for url in hints:  # each hint, as printed, answers with a live book
                while True:
                    async with http.get(url) as resp:
                        book = await resp.json()
                    if resp.status == 200:
                        break
                    assert resp.status == 503, book  # the mirror is on its way, no more
                    await asyncio.sleep(0.2)
                assert book["bids"] and book["asks"]
                if "SMART" not in url:  # a consolidated book may be crossed, a venue's not
                    assert book["bids"][0]["price"] < book["asks"][0]["price"]
            status, smart = await _get(http, f"{base}/orderbook", market="SMART-SPOT-BTC-USDT")
            assert status == 200 and {m["venue"] for m in smart["members"]} == {
                "SIM", "SIM2", "SIM3"}
            status, trades = await _get(http, f"{base}/trades", market=MARKET, limit=5)
            assert status == 200 and 0 < len(trades["trades"]) <= 5, trades
            status, health = await _get(http, f"http://127.0.0.1:{edge_ops}/health")
            assert (status, health["role"]) == (200, "edge")
            status, health = await _get(http, f"http://127.0.0.1:{ops}/health")
            assert (status, health["role"]) == (200, "feed")
            # The account the printed command creates trades on the edge (header mode).
            made = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "astra", "sim", "account", "create",
                                 "--url", account[1], "--json"],
                capture_output=True, text=True, timeout=60)
            assert made.returncode == 0, made.stderr
            creds = json.loads(made.stdout)
            headers = {"x-astra-exchange-key": creds["apiKey"],
                       "x-astra-exchange-secret": creds["apiSecret"]}
            price = book["bids"][-1]["price"]  # the SMART book's deepest bid: rests on SIM
            body = {"market": MARKET, "side": "BUY", "type": "LIMIT", "quantity": 0.001,
                    "price": price}
            async with http.post(f"{base}/orders", json=body, headers=headers) as resp:
                order = await resp.json()
            assert resp.status == 200 and order["status"] == "NEW", order
            async with http.get(f"{base}/orders", params={"market": MARKET},
                                headers=headers) as resp:
                assert [o["orderId"] for o in await resp.json()] == [order["orderId"]]
        # Ctrl-C on each node: status 0, and the feed's simulator goes with it.
        assert await edge.interrupt() == 0, edge.text()[-800:]
        assert await feed.interrupt() == 0, feed.text()[-800:]
        async with asyncio.timeout(15):
            while True:
                if _gone(sim_pid):
                    break
                await asyncio.sleep(0.05)
    finally:
        for node in nodes:
            node.kill()


def _levels(book: dict) -> dict:
    return {side: {lv["price"]: lv["quantity"] for lv in book[side]} for side in ("bids", "asks")}


async def _metric(http: aiohttp.ClientSession, ops: str, name: str) -> int:
    async with http.get(f"{ops}/metrics") as resp:
        found = re.search(rf"^{name} (\d+)(?:\.0)?$", await resp.text(), re.M)
    assert found, name
    return int(found[1])


async def test_a_standby_feed_takes_over_and_the_edge_goes_on(
        tmp_path, natsd, sim, sim_books, client_book):
    truth = sim_books(sim, "spot", "BTCUSDT")
    # A silence bound far beyond a hand-over: an edge that went stale would show it.
    (tmp_path / "c.toml").write_text(
        f'[venues.SIM]\nurl = "{sim.base_url}"\n[cluster]\nnats_url = "{natsd.url}"\n'
        "heartbeat_seconds = 0.3\nsilence_seconds = 10\nlease_seconds = 6\n")
    config = ["--config", str(tmp_path / "c.toml")]
    nodes: list[Node] = []
    try:
        first = Node(tmp_path, "feed1", ["--role", "feed", *config])
        nodes.append(first)
        await first.wait_for(r"health and metrics on port")
        edge = Node(tmp_path, "edge", ["--role", "edge", "--port", "0", *config])
        nodes.append(edge)
        listening = r"listening on (http://\S+) \(metrics on port (\d+)"
        base, edge_ops = (await edge.wait_for(listening)).groups()
        edge_ops = f"http://127.0.0.1:{edge_ops}"
        ws_url = f"{base.replace('http', 'ws')}/ws?market={MARKET}&dataType=ORDERBOOK"
        async with aiohttp.ClientSession(headers=AUTH) as http, asyncio.timeout(150), \
                http.ws_connect(ws_url) as ws:
            assert json.loads((await ws.receive(timeout=30)).data)["type"] == "snapshot"
            standby = Node(tmp_path, "feed2", ["--role", "feed", *config])
            nodes.append(standby)
            standby_ops = "http://127.0.0.1:" + (
                await standby.wait_for(r"health and metrics on port (\d+)"))[1]
            while True:  # until it heard a want and left the market to the first feed
                if await _metric(http, standby_ops, "astra_cluster_feed_yielded_total"):
                    break
                await asyncio.sleep(0.1)
            assert await _metric(http, standby_ops, "astra_cluster_feed_published_total") == 0
            assert await first.interrupt() == 0, first.text()[-800:]
            # The standby's snapshot re-bases the client; every update then continues the
            # venue's book.
            while True:
                msg = json.loads((await ws.receive(timeout=30)).data)
                if msg["type"] == "snapshot":
                    break
            mirror, checked = client_book(), 0
            mirror.apply(msg)
            while checked < 10:
                msg = json.loads((await ws.receive(timeout=10)).data)
                levels = mirror.apply(msg)
                if msg["type"] != "snapshot" and msg["updateId"] in truth.books:
                    assert msg["type"] == "update", msg
                    assert levels == truth.books[msg["updateId"]], msg["updateId"]
                    checked += 1
            async with http.get(f"{base}/orderbook", params={"market": MARKET}) as resp:
                assert resp.status == 200
            assert await _metric(http, standby_ops, "astra_cluster_feed_published_total") > 0
            assert await _metric(http, edge_ops, "astra_cluster_edge_stale_total") == 0
        assert await edge.interrupt() == 0, edge.text()[-800:]
        assert await standby.interrupt() == 0, standby.text()[-800:]
    finally:
        for node in nodes:
            node.kill()


@pytest.mark.parametrize(("args", "says"), [
    (["--role", "feed", "--database-url", "postgresql+psycopg://astra@127.0.0.1:1/astra"],
     "astra serve --role feed: a feed node keeps no state"),
    (["--nats-url", "nats://127.0.0.1:1"], "astra serve --role all: --nats-url is for --role"),
])
def test_a_flag_the_role_would_ignore_is_refused(tmp_path, args, says):
    done = subprocess.run(
        [sys.executable, "-m", "astra", "serve", "--port", "0", "--metrics-port", "0", *args],
        capture_output=True, text=True, timeout=60, env=_env(tmp_path, "d"))
    assert done.returncode == 2, done.stderr
    assert says in done.stderr
    assert "listening" not in done.stdout


def test_a_nats_password_or_token_is_never_printed(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nothing listens there once the block ends
    (tmp_path / "c.toml").write_text(
        f'[venues.SIM]\nurl = "http://127.0.0.1:9"\n[cluster]\n'
        f'nats_url = "nats://astra:hunter2@127.0.0.1:{dead}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "astra", "serve", "--role", "edge", "--config",
         str(tmp_path / "c.toml"), "--port", "0", "--metrics-port", "0"],
        capture_output=True, text=True, timeout=60, env=_env(tmp_path, "d"))
    assert done.returncode == 1, done.stderr
    assert f"cannot reach NATS at nats://astra:***@127.0.0.1:{dead}" in done.stderr
    assert "hunter2" not in done.stdout + done.stderr


@pytest.mark.parametrize(("url", "shown"), [
    ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
    ("nats://astra:s3cret@nats:4222", "nats://astra:***@nats:4222"),
    ("tls://astra:s3cret@[::1]:4222", "tls://astra:***@[::1]:4222"),
    ("nats://s3cret@nats:4222", "nats://***@nats:4222"),  # token authentication
])
def test_shown_url_hides_the_credentials(url, shown):
    assert shown_url(url) == shown


def test_the_edge_config_hint_is_toml_and_names_the_simulators_loopback():
    urls = {"SIM": "http://127.0.0.1:7070", "SIM2": "http://127.0.0.1:7071"}
    hint = edge_config_hint(urls, "nats://127.0.0.1:4222")
    assert tomllib.loads(_pasted_block(hint)) == {
        "venues": {"SIM": {"url": urls["SIM"]}, "SIM2": {"url": urls["SIM2"]}},
        "cluster": {"nats_url": "nats://127.0.0.1:4222"}}
    assert "astra sim account create --url http://127.0.0.1:7070 (on SIM;" in hint
    # The simulator's admin endpoint answers on loopback only: the command says where to run.
    remote = edge_config_hint({"SIM": "http://sim:7070"}, "nats://nats:4222")
    assert ("astra sim account create --url http://127.0.0.1:7070 on the simulator's machine"
            in remote)
