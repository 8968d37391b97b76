"""``SimCluster`` starting or refusing to: every venue's port a real TCP port, a port in use
named with its venue and nothing left listening, a state file that cannot be loaded named
with its venue and file."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from astra.sim import SimCluster
from astra.sim.cluster import MAX_PORT


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@contextlib.contextmanager
def _held_pair():
    """(P, a listening socket on P + 1) with P free: a cluster from P finds SIM2's port taken."""
    for _ in range(20):
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1] - 1
        if port > 1024 and _bindable(port):
            try:
                yield port, held
            finally:
                held.close()
            return
        held.close()
    pytest.skip("no free port below a free ephemeral port was found")


@pytest.mark.parametrize(("venues", "port"), [(3, 65534), (2, MAX_PORT), (1, 70000)])
def test_ports_past_the_last_are_refused_before_any_state_loads(tmp_path, venues, port):
    data = tmp_path / "sim.json"
    data.write_bytes(b"not read")  # a state file is never opened for a cluster refused
    last = port + venues - 1
    with pytest.raises(ValueError, match=f"need ports {port} to {last}: the last port is 65535"):
        SimCluster(venues, port=port, clock=False, data_path=str(data))


def test_the_highest_ports_that_fit_are_taken():
    assert SimCluster(2, port=MAX_PORT - 1, clock=False).port == MAX_PORT - 1
    assert SimCluster(1, port=MAX_PORT, clock=False).port == MAX_PORT


async def test_a_port_in_use_names_its_venue_and_leaves_nothing_listening():
    with _held_pair() as (port, held):
        cluster = SimCluster(3, port=port, clock=False, latency=False)
        async with asyncio.timeout(20):
            with pytest.raises(OSError) as caught:
                await cluster.start()
        taken = held.getsockname()[1]
        assert caught.value.strerror.startswith(f"venue SIM2 cannot listen on 127.0.0.1:{taken}")
        assert caught.value.errno == caught.value.__cause__.errno  # EADDRINUSE, kept
        assert cluster.servers == {} and cluster._task is None
        assert _bindable(port)  # SIM, started first, was closed again


@pytest.mark.parametrize("content", [b"{not json", b'{"format": 99}'])
def test_a_state_file_that_cannot_be_loaded_names_its_venue_and_file(tmp_path, content):
    data = tmp_path / "sim.json"
    bad = tmp_path / "sim.json.SIM2"
    bad.write_bytes(content)
    with pytest.raises(ValueError) as caught:
        SimCluster(3, data_path=str(data), clock=False)
    text = str(caught.value)
    assert text.startswith(f"venue SIM2: {bad}: ") and text.count(str(bad)) == 1
    assert not data.exists()  # SIM's file is written only by a venue that ran


async def test_close_closes_every_venue_even_when_one_cannot_save(tmp_path):
    folder = tmp_path / "state"
    folder.mkdir()
    cluster = SimCluster(2, data_path=str(folder / "sim.json"), clock=False, latency=False)
    async with asyncio.timeout(20):
        await cluster.start()
        servers = list(cluster.servers.values())
        ports = [s.port for s in servers]
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()  # every venue's last save now fails
        try:
            with pytest.raises(FileNotFoundError):
                await cluster.close()
            assert cluster.servers == {}
            assert [_bindable(p) for p in ports] == [True, True]  # SIM closed after SIM2
        finally:
            for server in servers:
                with contextlib.suppress(OSError):
                    await server.close()
