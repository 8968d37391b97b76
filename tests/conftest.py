"""Shared fixtures: a real simulator on a loopback socket, torn down after each test."""

from __future__ import annotations

from pathlib import Path

import pytest

from astra.sim import SimExchange, SimServer

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"


def fixture_path(*parts: str) -> Path:
    """A file under ../shared/fixtures, or skip the test with the reason when it is absent."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"fixture {path} is absent (../shared/fixtures is not beside this clone)")
    return path


@pytest.fixture
def shared_fixture():
    """``shared_fixture("aster", "spot-exchangeInfo.json")`` -> Path, or skip when absent."""
    return fixture_path


@pytest.fixture
async def sim():
    """A running simulator (seed 1) on 127.0.0.1 with an ephemeral port."""
    async with SimServer(SimExchange(seed=1)) as server:
        yield server
