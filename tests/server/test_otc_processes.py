"""Accept at most once across processes: two ``astra serve`` gateways on ONE database (a
SQLite file, and PostgreSQL when ``ASTRA_TEST_POSTGRES_URL`` names one), the same three
simulated venues and the same quote-signing key; 50 concurrent accepts of one quote, split
between the two gateways, book exactly one trade and move the balances once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import aiohttp
from tests.store.test_journal import Db
from tests.store.test_journal import db as db  # the fixture, on every backend

from astra.store import ApiKeyStore
from astra.store.otc import OtcStore

SIGNING = "ab" * 32
_LISTENING = re.compile(rb"listening on (http://\S+)")


async def _start_gateway(url: str, config: Path, data_dir: Path) -> tuple[subprocess.Popen,
                                                                           str]:
    proc = subprocess.Popen(  # noqa: ASYNC220 - its stdout is read line by line off the loop
        [sys.executable, "-m", "astra", "serve", "--port", "0", "--metrics-port", "0",
         "--database-url", url, "--config", str(config), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "ASTRA_API_KEY": ""})
    seen = b""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(60):
            while True:
                line = await loop.run_in_executor(None, proc.stdout.readline)
                if not line:
                    raise AssertionError(f"astra serve exited: {seen[-800:]!r}")
                seen += line
                found = _LISTENING.search(line)
                if found:
                    return proc, found[1].decode()
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def _url(db: Db) -> str:
    if not db.schema:
        return db.url
    return f"{db.url}?options=-csearch_path%3D{db.schema}"  # the test's own schema


async def test_two_gateways_on_one_database_book_a_quote_once(db: Db, sor_sims, tmp_path):
    keys = ApiKeyStore(db.engine)
    token = keys.create("two gateways").token
    key_id = token.split(".")[0]
    store = OtcStore(db.engine)
    account = store.create_account(key_id).account_id
    store.deposit(account, "USDT", Decimal(100000))
    config = tmp_path / "astra.toml"
    venues = "".join(f'[venues.{code}]\nurl = "{sim.base_url}"\n'
                     for code, sim in sor_sims.items())
    config.write_text(f'{venues}[otc]\nhedge = "off"\nsigning_key_id = "k1"\n'
                      f'signing_keys = {{ k1 = "{SIGNING}" }}\n')
    procs = []
    try:
        for i in range(2):
            procs.append(await _start_gateway(_url(db), config, tmp_path / f"d{i}"))
        headers = {"x-astra-api-key": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with asyncio.timeout(60):
                while True:  # the books of the first gateway in sync: a quote is priced
                    async with http.post(f"{procs[0][1]}/request-quote", json={
                            "accountId": account, "fromAsset": "BTC", "toAsset": "USDT",
                            "fromAmount": 0.25}) as resp:
                        quoted = await resp.json()
                    if resp.status == 200:
                        break
                    assert resp.status in (422, 503), quoted  # books not in sync yet
                    await asyncio.sleep(0.2)

            async def accept(base: str) -> tuple[int, dict]:
                async with http.post(f"{base}/accept-quote",
                                     json={"quote": quoted["quote"]}) as resp:
                    return resp.status, await resp.json()

            async with asyncio.timeout(60):
                answers = await asyncio.gather(*(accept(procs[i % 2][1]) for i in range(50)))
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
    assert [status for status, _ in answers] == [200] * 50, answers
    assert len({body["trade"]["tradeId"] for _, body in answers}) == 1
    trades = store.trades(account)
    assert len(trades) == 1
    quote = quoted["quote"]
    balances = store.balances(account)
    assert balances["BTC"] == Decimal(str(quote["fromAssetQuantity"]))
    assert balances["USDT"] == Decimal(100000) - Decimal(str(quote["toAssetQuantity"]))
    accepts = store.audit_rows(kind="ACCEPT", limit=100)
    assert len(accepts) == 1

