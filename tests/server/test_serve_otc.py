"""The OTC desk as a new user meets it: ``python -m astra serve`` with no configuration, as a
child process on a temporary data directory (ports 0: the system picks spare ones).

It prints the first key's OTC account, funded; a quote for it is priced (200) and accepted
(200); the trade's hedge becomes HEDGED (read with ``astra otc status --json``). Stopped by
SIGINT (its simulator child goes with it) and started again on the same data directory, it
reuses that account with its balances, sends the hedge legs a stopped gateway left PENDING or
SENT (each filled once), and refuses a quote issued before the restart, whose ephemeral
signing key died with the first process, as INVALID_QUOTE_SIGNATURE.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal as D
from pathlib import Path

import aiohttp
import pytest
from tests.serve_process import LISTENING, START_BOUND, TOKEN, serve_env

from astra.core.credentials import ExchangeCredentials
from astra.otc import OtcConfig
from astra.server.serve import check_otc_precision, otc_funds, otc_hedge_warning
from astra.store import ApiKeyStore, OtcStore, QuoteRow, open_database
from astra.trading.paper import LayeredCredentials

_SIM_PID = re.compile(r"simulator \(SIM\) running at \S+ \(pid (\d+)\)")
_OTC = re.compile(r"OTC desk: account ([0-9a-f-]{36}) \(([^)]*)\)")


class Serve:
    """One ``astra serve`` child and what it printed up to its OTC line."""

    def __init__(self, data_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "astra", "serve", "--data-dir", str(data_dir),
             "--port", "0", "--metrics-port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=serve_env(),
            start_new_session=True)  # its own process group: the simulator child is in it
        self.out = ""
        self.sim_pid: int | None = None

    async def started(self) -> re.Match[str]:
        """Read its output until the OTC desk's line; that line's match."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(START_BOUND):
            while True:
                line = await loop.run_in_executor(None, self.proc.stdout.readline)
                if not line:
                    raise AssertionError(f"astra serve exited: {self.out[-1500:]}")
                self.out += line
                if (pid := _SIM_PID.search(line)) is not None:
                    self.sim_pid = int(pid[1])
                if (otc := _OTC.search(line)) is not None:
                    return otc

    @property
    def base(self) -> str:
        return LISTENING.search(self.out)[1]

    async def stop(self) -> int:
        """SIGINT by its pid, as Ctrl-C; its exit status. The simulator child must be gone."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        loop = asyncio.get_running_loop()
        try:
            code = await loop.run_in_executor(None, self.proc.wait, 60)
        finally:
            self.kill()
        self.out += self.proc.stdout.read()
        self.proc.stdout.close()
        if self.sim_pid is not None:
            assert await _gone(self.sim_pid), f"simulator {self.sim_pid} outlived astra serve"
        return code

    def kill(self) -> None:
        """On any failure: the whole process group (serve and its simulator), by its id;
        only while serve is not reaped, so that the group id is still its own."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie awaiting its new parent's wait does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def _gone(pid: int) -> bool:
    """Whether ``pid`` is gone, within a bound."""
    for _ in range(300):
        if not _alive(pid):
            return True
        await asyncio.sleep(0.1)
    return False


async def _quote(http: aiohttp.ClientSession, base: str, body: dict) -> dict:
    """A quote once the books are in sync (right after start a member may still connect)."""
    async with asyncio.timeout(START_BOUND):
        while True:
            async with http.post(f"{base}/request-quote", json=body) as resp:
                answer = await resp.json()
            if resp.status == 200:
                return answer
            assert answer["code"] in ("STALE_BOOK", "INSUFFICIENT_LIQUIDITY"), answer
            await asyncio.sleep(0.2)


def _status(data_dir: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "astra", "otc", "status", "--json",
                          "--data-dir", str(data_dir)],
                         capture_output=True, text=True, timeout=60, env=serve_env())
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def _until_hedged(data_dir: Path, trades: int) -> dict:
    """``astra otc status --json`` once every trade's hedge is final (bounded)."""
    engine = open_database(data_dir=data_dir)
    try:
        store = OtcStore(engine)
        async with asyncio.timeout(START_BOUND):
            while True:
                summary = await asyncio.to_thread(store.summary)
                if summary["trades"] == trades and "PENDING" not in summary[
                        "tradesByHedgeState"]:
                    break
                await asyncio.sleep(0.2)
    finally:
        engine.dispose()
    return await asyncio.to_thread(_status, data_dir)


def _left_unhedged(data_dir: Path, account: str) -> tuple[str, str]:
    """What a gateway stopped mid-hedge leaves: a booked trade whose leg is PENDING, and one
    whose leg is SENT (journaled with its client order id, the send's outcome unknown)."""
    engine = open_database(data_dir=data_dir)
    try:
        # Written two minutes ago, as a stopped gateway's would be: past the hedger's lease
        # (60 s) on a leg another gateway might still be sending.
        store = OtcStore(engine, clock_ms=lambda: int(time.time() * 1000) - 120_000)
        now_us = int(time.time() * 1_000_000)
        made = []
        for n, signature in enumerate(("ab" * 32, "cd" * 32)):
            store.save_quote(QuoteRow(
                f"left-{n}", signature, "gone", account, "BTC", "USDT", D("0.001"), D(100),
                now_us + 60_000_000, "ACTIVE", now_us // 1000, None, D(100),
                {"hedges": [{"symbol": "SMART-SPOT-BTC-USDT", "side": "BUY",
                             "quantity": "0.001"}]}))
            trade, created = store.accept(f"left-{n}", account_id=account, now_us=now_us,
                                          day=time.strftime("%Y-%m-%d", time.gmtime()),
                                          daily_limit=None, inventory_limits={}, hedge=True)
            assert created
            made.append(trade.trade_id)
        (leg,) = store.hedges(trade_id=made[1])
        store.update_hedge(leg.hedge_id, state="SENT", attempts=1,
                           client_order_id=f"otc{leg.hedge_id}a1", sent_quantity=D("0.001"))
        return made[0], made[1]
    finally:
        engine.dispose()


def test_a_precision_setting_the_database_does_not_hold_is_refused(tmp_path):
    engine = open_database(data_dir=tmp_path)
    try:
        assert OtcStore(engine).precision("BTC") == 8  # fixed by a first use without config
        configured = OtcStore(engine, precision={"BTC": 6, "SOL": 4})
        with pytest.raises(ValueError, match=r"precision\.BTC = 6, .* BTC at 8 decimal places"):
            check_otc_precision(configured, {"BTC": 6, "SOL": 4})
        check_otc_precision(configured, {"BTC": 8, "SOL": 4})  # agrees; SOL's first use
        assert OtcStore(engine).precision("SOL") == 4
    finally:
        engine.dispose()


def test_serve_exits_2_on_a_precision_setting_after_a_cli_deposit(tmp_path):
    data = tmp_path / "data"
    engine = open_database(data_dir=data)
    try:
        account = OtcStore(engine).create_account(ApiKeyStore(engine).create("k").key_id)
    finally:
        engine.dispose()
    cli = [sys.executable, "-m", "astra"]
    deposit = subprocess.run([*cli, "otc", "accounts", "deposit", account.account_id, "BTC",
                                    "1", "--data-dir", str(data)],
                             capture_output=True, text=True, timeout=60, env=serve_env())
    assert deposit.returncode == 0, deposit.stderr
    config = tmp_path / "astra.toml"
    config.write_text("[otc.precision]\nBTC = 6\n")
    served = subprocess.run([*cli, "serve", "--data-dir", str(data), "--port", "0",
                                   "--metrics-port", "0", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, env=serve_env())
    assert served.returncode == 2, (served.stdout, served.stderr)
    assert "precision.BTC = 6" in served.stderr and "Traceback" not in served.stderr
    assert "simulator" not in served.stdout  # refused before anything started


def test_a_desk_without_hedging_credentials_on_a_venue_is_told_at_start():
    credentials = LayeredCredentials()  # as astra serve gives the desk on the simulator
    credentials.add_default("otc-desk", ExchangeCredentials("SIM", api_key="k", secret="s"))
    warning = otc_hedge_warning(OtcConfig(), ["SIM", "BINANCE", "OKX"], credentials)
    assert warning is not None and "'otc-desk' has no credentials on BINANCE, OKX:" in warning
    assert 'hedge_key = "<its id>"' in warning
    assert otc_hedge_warning(OtcConfig(), ["SIM"], credentials) is None
    only_sim = OtcConfig.from_config({"venues": ["sim"]})  # the desk hedges on SIM alone
    assert otc_hedge_warning(only_sim, ["SIM", "BINANCE"], credentials) is None
    off = OtcConfig.from_config({"hedge": "off"})
    assert otc_hedge_warning(off, ["BINANCE"], credentials) is None


def test_funds_are_printed_without_exponents():
    assert otc_funds({"BTC": D("1E-8"), "ETH": D(0), "USDT": D("1E+5")}) == (
        "0.00000001 BTC, 100000 USDT")
    assert otc_funds({}) == "nothing"


async def test_serve_gives_an_otc_account_that_trades_hedges_and_survives_a_restart(tmp_path):
    data = tmp_path / "data"
    first = Serve(data)
    try:
        otc = await first.started()
        account, funds = otc[1], otc[2]
        assert funds == "2 BTC, 20 ETH, 100000 USD, 100000 USDT"
        assert "hedges there will fail" not in first.out  # the desk's own simulator accounts
        token = TOKEN.search(first.out)[1]
        headers = {"x-astra-api-key": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            quoted = await _quote(http, first.base, {
                "accountId": account, "fromAsset": "BTC", "toAsset": "USDT",
                "fromAmount": 0.01})
            quote = quoted["quote"]
            assert (quote["accountId"], quote["fromAssetQuantity"]) == (account, 0.01)
            async with http.post(f"{first.base}/accept-quote", json=quoted) as resp:
                accepted = await resp.json()
                assert resp.status == 200, accepted
            trade = accepted["trade"]
            assert (trade["quoteId"], trade["toAssetQuantity"]) == (
                quoted["quoteId"], quote["toAssetQuantity"])
            # Issued, never accepted: signed with this process's ephemeral key.
            before_restart = await _quote(http, first.base, {
                "accountId": account, "fromAsset": "ETH", "toAsset": "USDT",
                "fromAmount": 0.1})
        status = await _until_hedged(data, trades=1)
        assert status["tradesByHedgeState"] == {"HEDGED": 1}
        assert status["hedgesByState"] == {"DONE": 1}
        assert status["halted"] is None
        assert await first.stop() == 0
        assert "shutting down" in first.out
    finally:
        first.kill()

    pending, sent = _left_unhedged(data, account)
    second = Serve(data)
    try:
        otc = await second.started()
        assert otc[1] == account  # reused, not a second account
        paid = D(str(quote["toAssetQuantity"])) + D(200)  # and the two trades left unhedged
        assert otc[2] == (f"2.012 BTC, 20 ETH, 100000 USD, {D(100000) - paid:f} USDT")
        assert "No API key existed" not in second.out  # the first key is still the key
        engine = open_database(data_dir=data)
        try:
            store = OtcStore(engine)
            assert [a.account_id for a in store.accounts()] == [account]
        finally:
            engine.dispose()
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(f"{second.base}/accept-quote", json=before_restart) as resp:
                refused = await resp.json()
                assert (resp.status, refused["code"]) == (400, "INVALID_QUOTE_SIGNATURE")
        status = await _until_hedged(data, trades=3)
        assert status["tradesByHedgeState"] == {"HEDGED": 3}
        assert status["hedgesByState"] == {"DONE": 3}
        engine = open_database(data_dir=data)
        try:
            store = OtcStore(engine)
            for trade_id in (pending, sent):
                (leg,) = store.hedges(trade_id=trade_id)
                assert (leg.state, leg.filled) == ("DONE", D("0.001")), leg  # once, not twice
            (leg,) = store.hedges(trade_id=sent)
            # Resumed under the id it was left SENT with (a later id only for a real miss:
            # an IOC that met a book which had moved, as the venues' clocks run here).
            sends = [r["detail"]["clientOrderId"] for r in reversed(
                store.audit_rows(trade_id=sent, kind="HEDGE_SENT"))]
            assert sends[0] == f"otc{leg.hedge_id}a1" and leg.client_order_id == sends[-1]
            assert store.balances(account)["ETH"] == D(20)  # the refused quote moved nothing
        finally:
            engine.dispose()
        assert await second.stop() == 0
    finally:
        second.kill()
