"""The SDK's tests share one real ``astra serve`` per test worker (package scope: starting
one takes seconds, and the SDK's tests only add keys, orders and quotes to it)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def served(tmp_path_factory):
    """One real ``astra serve`` (simulator child with SIM/SIM2/SIM3, paper accounts, SMART,
    the OTC desk) for the SDK's tests: ``.base``, ``.token``, ``.otc_account``."""
    from tests.serve_process import ServedAstra

    server = ServedAstra(tmp_path_factory.mktemp("served-sdk") / "data").start()
    try:
        yield server
    finally:
        server.stop()
