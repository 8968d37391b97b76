"""``astra serve --role feed|edge`` as real processes: a nats-server with JetStream, the
simulator on loopback, one feed node and two edges.

- both edges serve the simulator's own book (REST at a recorded diff boundary, and a
  WebSocket client's rebuilt book at every update), mirrored through the feed;
- a stopped feed makes both edges answer 503 (never the old book) and send WebSocket clients
  a resync within the silence bound; a new feed process brings them back to the venue's book;
- the same ``clientOrderId`` raced on two edges (state in PostgreSQL) places one venue order;
- bad cluster settings end ``astra serve`` with a message naming them, before anything runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from tests.server.test_shared_state import MARKET, _call, _resting_price, cluster, pg  # noqa: F401

TOKEN = "rolesroles23." + "r" * 10 + "OLES" + "s" * 20 + "-_xyz0123"
AUTH = {"x-astra-api-key": f"Bearer {TOKEN}"}
CLUSTER = ('[cluster]\nnats_url = "{url}"\nheartbeat_seconds = 0.3\nsilence_seconds = 1.5\n'
           "lease_seconds = 6\n")


class Node:
    """``astra serve`` as a child process, its output in a file."""

    def __init__(self, tmp: Path, name: str, args: list[str], config: str) -> None:
        path = tmp / f"{name}.toml"
        path.write_text(config)
        self.log = tmp / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if k != "ASTRA_NATS_URL"}
        env.update(ASTRA_API_KEY=TOKEN, ASTRA_DATA_DIR=str(tmp / name))
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "astra", "serve", "--port", "0", "--metrics-port", "0",
                 "--config", str(path), *args], stdout=out, stderr=subprocess.STDOUT, env=env)

    async def wait_for(self, pattern: str, seconds: float = 60) -> re.Match:
        async with asyncio.timeout(seconds):
            while True:
                text = self.log.read_text(errors="replace")
                if found := re.search(pattern, text):
                    return found
                if self.proc.poll() is not None:
                    raise AssertionError(f"astra serve exited {self.proc.returncode}: "
                                         f"{text[-1500:]}")
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def _feed(tmp: Path, name: str, venues: str, nats: str) -> tuple[Node, str]:
    node = Node(tmp, name, ["--role", "feed"], venues + CLUSTER.format(url=nats))
    port = (await node.wait_for(r"health and metrics on port (\d+)"))[1]
    return node, f"http://127.0.0.1:{port}"


async def _edge(tmp: Path, name: str, venues: str, nats: str) -> tuple[Node, str, str]:
    node = Node(tmp, name, ["--role", "edge"], venues + CLUSTER.format(url=nats))
    found = await node.wait_for(r"listening on (http://\S+) \(metrics on port (\d+)\)")
    await node.wait_for(r"edge node \S+: books mirrored")
    return node, found[1], f"http://127.0.0.1:{found[2]}"


def _levels(book: dict) -> dict:
    return {side: {lv["price"]: lv["quantity"] for lv in book[side]} for side in ("bids", "asks")}


async def _venue_book(http: aiohttp.ClientSession, url: str, truth) -> dict:
    """The edge's REST book once it sits on a diff boundary the simulator recorded."""
    async with asyncio.timeout(30):
        while True:
            status, book = await _call(http, "GET", f"{url}/orderbook", params={"market": MARKET})
            if status == 200 and book["updateId"] in truth.books:
                return book
            await asyncio.sleep(0.05)


async def test_two_edges_mirror_the_venue_and_go_stale_without_their_feed(
        tmp_path, nats_server, sim, sim_books, client_book):
    truth = sim_books(sim, "spot", "BTCUSDT")
    venues = f'[venues.SIM]\nurl = "{sim.base_url}"\n'
    nodes: list[Node] = []
    try:
        feed, feed_ops = await _feed(tmp_path, "feed", venues, nats_server.url)
        nodes.append(feed)
        edge1, url1, ops1 = await _edge(tmp_path, "edge1", venues, nats_server.url)
        edge2, url2, ops2 = await _edge(tmp_path, "edge2", venues, nats_server.url)
        nodes += [edge1, edge2]
        async with aiohttp.ClientSession(headers=AUTH) as http, asyncio.timeout(150):
            for url in (url1, url2):  # each edge's book is the venue's, level for level
                book = await _venue_book(http, url, truth)
                assert _levels(book) == truth.books[book["updateId"]]
                assert book["bids"] and book["asks"]
            # A WebSocket client of edge 1: every update continues the venue's book.
            ws_url = f"{url1.replace('http', 'ws')}/ws?market={MARKET}&dataType=ORDERBOOK"
            async with http.ws_connect(ws_url) as ws:
                first = json.loads((await ws.receive(timeout=10)).data)
                assert first["type"] == "snapshot"
                mirror = client_book()
                mirror.apply(first)
                checked = 0
                while checked < 15:
                    msg = json.loads((await ws.receive(timeout=10)).data)
                    assert msg["type"] == "update", msg
                    levels = mirror.apply(msg)
                    if msg["updateId"] in truth.books:
                        assert levels == truth.books[msg["updateId"]], msg["updateId"]
                        checked += 1
            status, health = await _call(http, "GET", f"{feed_ops}/health")
            assert status == 200 and health["role"] == "feed" and health["venues"] == ["SIM"]
            status, health = await _call(http, "GET", f"{ops2}/health")
            assert status == 200 and health["role"] == "edge"
            async with http.get(f"{ops1}/metrics") as resp:
                metrics = await resp.text()
            delivered = re.search(r"^astra_cluster_edge_messages_total (\d+)(?:\.0)?$",
                                  metrics, re.M)
            assert delivered and int(delivered[1]) > 15
            async with http.get(f"{feed_ops}/metrics") as resp:
                published = re.search(r"^astra_cluster_feed_published_total (\d+)(?:\.0)?$",
                                       await resp.text(), re.M)
            assert published and int(published[1]) >= int(delivered[1])

            # The feed stops: both edges answer 503 (never the last book), a WS client of
            # edge 2 is told, within the silence bound (1.5 s) and well before this timeout.
            async with http.ws_connect(ws_url.replace(url1.split("//")[1],
                                                      url2.split("//")[1])) as ws2:
                assert json.loads((await ws2.receive(timeout=10)).data)["type"] == "snapshot"
                feed.stop()
                async with asyncio.timeout(15):
                    while True:
                        msg = json.loads((await ws2.receive(timeout=10)).data)
                        if msg["type"] == "resync":
                            break
                assert msg["state"] == "disconnected" and "feed" in msg["reason"], msg
                for url in (url1, url2):  # each edge's own sweep: within the bound too
                    async with asyncio.timeout(5):
                        while True:
                            status, body = await _call(http, "GET", f"{url}/orderbook",
                                                       params={"market": MARKET})
                            if status != 200:
                                break
                            await asyncio.sleep(0.05)
                    assert status == 503 and body["code"] == "VENUE_UNAVAILABLE", body
                    assert "disconnected" in body["message"]
                # A new feed process: the edges come back to the venue's own book.
                feed2, _ = await _feed(tmp_path, "feed2", venues, nats_server.url)
                nodes.append(feed2)
                async with asyncio.timeout(30):
                    while True:
                        msg = json.loads((await ws2.receive(timeout=15)).data)
                        if msg["type"] == "snapshot":
                            break
            for url in (url1, url2):
                book = await _venue_book(http, url, truth)
                assert _levels(book) == truth.books[book["updateId"]]
    finally:
        for node in nodes:
            node.stop()
    for node in nodes:
        assert node.proc.returncode == 0, node.log.read_text()[-800:]


async def test_one_client_order_id_on_two_edges_places_one_venue_order(cluster, nats_server):  # noqa: F811
    venues = f'[venues.SIM]\nurl = "{cluster.sims["SIM"].base_url}"\n'
    feed, _ = await _feed(cluster.tmp, "feed", venues, nats_server.url)
    try:
        cluster.serve_args = ["--role", "edge"]
        cluster.extra_config = CLUSTER.format(url=nats_server.url)
        a, b = await asyncio.gather(cluster.start("a"), cluster.start("b"))
        async with aiohttp.ClientSession(headers=cluster.headers) as http, asyncio.timeout(90):
            price = await _resting_price(http, a)  # edge a's mirrored book is up
            bodies = [{"market": MARKET, "side": "BUY", "type": "LIMIT", "quantity": 0.001,
                       "price": price, "clientOrderId": f"edge-race-{i}"} for i in range(8)]
            answers = [await asyncio.gather(_call(http, "POST", f"{a.url}/orders", json=body),
                                            _call(http, "POST", f"{b.url}/orders", json=body))
                       for body in bodies]
        placed: dict[str, int] = {}
        for order in cluster.venue_orders():
            placed[order.client_id] = placed.get(order.client_id, 0) + 1
        assert placed == {body["clientOrderId"]: 1 for body in bodies}
        for (sa_, ja), (sb, jb) in answers:
            assert (sa_, sb) == (200, 200) and ja["orderId"] == jb["orderId"], (ja, jb)
    finally:
        feed.stop()


@pytest.mark.parametrize(("config", "args", "says", "status"), [
    ("", ["--role", "edge"], "name the venues the feed nodes serve", 2),
    ("[venues.SIM]\n", ["--role", "edge"], "[venues.SIM] needs the url", 2),
    ("[cluster]\nsilence_seconds = 0\n", ["--role", "feed"], "silence_seconds", 2),
    ("[cluster]\nnats_url = \"http://x\"\n", ["--role", "edge"], "nats_url", 2),
    ("[cluster]\nbogus = 1\n", ["--role", "feed"], "bogus", 2),
    ("", ["--role", "sideways"], "invalid choice", 2),
])
def test_bad_cluster_settings_exit_naming_them(tmp_path, config, args, says, status):
    path = tmp_path / "c.toml"
    path.write_text(config)
    env = {k: v for k, v in os.environ.items() if k != "ASTRA_NATS_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "astra", "serve", "--config", str(path), "--port", "0",
         "--metrics-port", "0", "--data-dir", str(tmp_path / "d"), *args],
        capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == status, done.stderr
    assert says in done.stderr


def test_a_node_without_its_nats_server_says_so(tmp_path):
    """No NATS at the URL: exit 1 naming it (no half-started node)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed when the block ends: nothing listens there
    path = tmp_path / "c.toml"
    path.write_text(f'[venues.SIM]\nurl = "http://127.0.0.1:9"\n[cluster]\n'
                    f'nats_url = "nats://127.0.0.1:{dead}"\n')
    env = {k: v for k, v in os.environ.items() if k != "ASTRA_NATS_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "astra", "serve", "--role", "edge", "--config", str(path),
         "--port", "0", "--metrics-port", "0", "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1, done.stderr
    assert f"cannot reach NATS at nats://127.0.0.1:{dead}" in done.stderr
