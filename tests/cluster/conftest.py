"""Cluster fixtures: a real nats-server with JetStream on loopback per test."""

from __future__ import annotations

import pytest

from .natsd import NatsServer


@pytest.fixture
def nats_server(tmp_path):
    """A running ``nats-server -js`` on 127.0.0.1 (``.url``, ``.restart()``, ``.stop()``)."""
    server = NatsServer(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()
