"""``astra otc`` as a user runs it: the real entry point (``python -m astra otc ...``) in a child
process on a SQLite file in a temporary data directory; bad input is exit code 2 with one line
on stderr and no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal as D
from pathlib import Path

import pytest

from astra.store import ApiKeyStore, OtcStore, QuoteRow, open_database

from .test_journal import _script_env


def astra(data_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = _script_env()
    env.pop("ASTRA_DATABASE_URL", None)
    env.pop("ASTRA_DATA_DIR", None)
    return subprocess.run([sys.executable, "-m", "astra", "otc", *argv,
                           "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60, env=env)


def refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2, one line on stderr naming ``words``, nothing on stdout, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.startswith("astra otc: ") and result.stderr.count("\n") == 1
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def key_id(data_dir: Path) -> str:
    engine = open_database(data_dir=data_dir)
    try:
        return ApiKeyStore(engine).create("otc desk").key_id
    finally:
        engine.dispose()


def test_accounts_create_list_deposit(data_dir: Path, key_id: str) -> None:
    made = astra(data_dir, "accounts", "create", "--key", key_id, "--name", "fund a",
                 "--spread-bps", "7.5", "--daily-volume", "1000000", "--json")
    assert made.returncode == 0, made.stderr
    account = json.loads(made.stdout)
    assert (account["keyId"], account["name"], account["spreadBps"], account["maxNotional"],
            account["dailyVolume"], account["balances"]) == (
        key_id, "fund a", "7.5", None, "1000000", {})
    plain = astra(data_dir, "accounts", "create", "--key", key_id)
    assert plain.returncode == 0 and plain.stdout.count("\n") == 1
    second = plain.stdout.strip()
    acc = account["accountId"]

    out = astra(data_dir, "accounts", "deposit", acc, "BTC", "1.5")
    assert out.returncode == 0 and out.stdout == "deposited 1.5 BTC: balance 1.5 BTC\n"
    out = astra(data_dir, "accounts", "deposit", acc, "USDT", "250.25")
    assert out.returncode == 0, out.stderr
    out = astra(data_dir, "accounts", "deposit", acc, "BTC", "-0.25")
    assert out.returncode == 0 and out.stdout == "withdrew 0.25 BTC: balance 1.25 BTC\n"

    listed = json.loads(astra(data_dir, "accounts", "list", "--key", key_id, "--json").stdout)
    by_id = {a["accountId"]: a for a in listed["accounts"]}
    assert set(by_id) == {acc, second}
    assert by_id[acc]["balances"] == {"BTC": "1.25", "USDT": "250.25"}
    assert by_id[second]["balances"] == {} and by_id[second]["spreadBps"] is None
    table = astra(data_dir, "accounts", "list").stdout
    assert acc in table and second in table and "BTC=1.25 USDT=250.25" in table
    assert "fund a" in table and "default" in table
    assert json.loads(astra(data_dir, "accounts", "list", "--key", "other", "--json").stdout) == {
        "accounts": []}

    engine = open_database(data_dir=data_dir)  # what the gateway will read
    try:
        assert OtcStore(engine).balances(acc) == {"BTC": D("1.25"), "USDT": D("250.25")}
    finally:
        engine.dispose()


def test_bad_input_is_exit_2_with_one_line(data_dir: Path, key_id: str) -> None:
    acc = astra(data_dir, "accounts", "create", "--key", key_id).stdout.strip()
    refused(astra(data_dir, "accounts", "deposit", acc, "BTC", "abc"), "AMOUNT", "abc")
    refused(astra(data_dir, "accounts", "deposit", acc, "BTC", "1.123456789"),
            "BTC amounts have at most 8 decimal places")
    refused(astra(data_dir, "accounts", "deposit", acc, "BTC", "-1"), "insufficient BTC")
    refused(astra(data_dir, "accounts", "deposit", acc, "btc", "1"), "asset")
    refused(astra(data_dir, "accounts", "deposit", "no-such-account", "BTC", "1"),
            "no OTC account", "no-such-account")
    refused(astra(data_dir, "accounts", "create", "--key", "nosuchkey234"),
            "no API key", "nosuchkey234")
    refused(astra(data_dir, "accounts", "create", "--key", key_id, "--max-notional", "lots"),
            "--max-notional")
    refused(astra(data_dir, "accounts", "create", "--key", key_id, "--spread-bps", "-1"),
            "spreadBps")
    engine = open_database(data_dir=data_dir)
    try:
        ApiKeyStore(engine).revoke(key_id)
        assert len(OtcStore(engine).accounts()) == 1  # nothing was created by the refusals
        assert OtcStore(engine).balances(acc) == {}
    finally:
        engine.dispose()
    refused(astra(data_dir, "accounts", "create", "--key", key_id), "revoked")


def test_halt_resume_status_audit(data_dir: Path, key_id: str) -> None:
    acc = astra(data_dir, "accounts", "create", "--key", key_id).stdout.strip()
    assert astra(data_dir, "accounts", "deposit", acc, "USDT", "1000").returncode == 0
    engine = open_database(data_dir=data_dir)
    try:  # one accepted quote, hedged by one leg with a recorded result
        store = OtcStore(engine)
        store.save_quote(QuoteRow("q1", "ab" * 32, "k1", acc, "BTC", "USDT", D("0.01"),
                                  D(500), 2**62, "ACTIVE", 1, None, D(500), {"hedges": [
                                      {"symbol": "SMART-SPOT-BTC-USDT", "side": "BUY",
                                       "quantity": "0.01"}]}))
        trade, _ = store.accept("q1", account_id=acc, now_us=1, day="2026-01-02",
                                daily_limit=None, inventory_limits={}, hedge=True)
        store.finish_trade(trade.trade_id, hedge_state="HEDGED", result_home=D("0.25"))
    finally:
        engine.dispose()

    out = astra(data_dir, "halt", "--reason", "venue maintenance")
    assert out.returncode == 0 and "venue maintenance" in out.stdout
    status = astra(data_dir, "status")
    assert status.returncode == 0, status.stderr
    assert "HALTED: venue maintenance" in status.stdout
    assert "BTC=-0.01 USDT=500" in status.stdout and "PENDING=1" in status.stdout
    assert "trades:    1 (HEDGED=1)\n" in status.stdout and "0.25" in status.stdout
    assert astra(data_dir, "resume").returncode == 0
    state = json.loads(astra(data_dir, "status", "--json").stdout)
    assert state == {"halted": None, "inventory": {"BTC": "-0.01", "USDT": "500"},
                     "trades": 1, "resultHome": "0.25",
                     "tradesByHedgeState": {"HEDGED": 1}, "hedgesByState": {"PENDING": 1}}

    audit = astra(data_dir, "audit", "--json")
    kinds = [json.loads(line)["kind"] for line in audit.stdout.splitlines()]
    assert kinds == ["RESUME", "HALT", "ACCEPT", "DEPOSIT", "ACCOUNT_CREATED"]
    halts = [json.loads(line) for line in astra(data_dir, "audit", "--kind", "HALT",
                                                "--json").stdout.splitlines()]
    assert [h["detail"] for h in halts] == [{"reason": "venue maintenance"}]
    text = astra(data_dir, "audit", "--limit", "2")
    assert text.returncode == 0 and len(text.stdout.splitlines()) == 2
    assert "RESUME" in text.stdout and "HALT" in text.stdout and "ACCEPT" not in text.stdout
    refused(astra(data_dir, "audit", "--limit", "0"), "--limit")


def test_no_traceback_for_a_bad_database_url(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ASTRA_DATABASE_URL"}
    env.update(_script_env())
    result = subprocess.run([sys.executable, "-m", "astra", "otc", "status", "--database-url",
                             "not a url hunter2"], capture_output=True, text=True, timeout=60,
                            env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
