"""Each script of ``examples/`` runs against a real ``astra serve`` (ASTRA_URL,
ASTRA_API_KEY from the environment, as a user runs them) and prints what it says it does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _run(served, script: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items()}
    env.update(ASTRA_URL=served.base, ASTRA_API_KEY=served.token,
               PYTHONPATH=str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], env=env,
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_examples_are_the_ones_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == [
        "otc_quote.py", "place_and_cancel.py", "smart_dry_run.py", "watch_book.py"]


def test_watch_book(served):
    out = _run(served, "watch_book.py", "SIM-SPOT-BTC-USDT", "5").splitlines()
    assert len(out) == 5
    ids = [int(re.search(r"updateId=(\d+)", line)[1]) for line in out]
    assert ids == sorted(set(ids))
    for line in out:
        bid, ask = (float(x) for x in re.search(r"bid=(\S+) x .* ask=(\S+) x", line).groups())
        assert line.startswith("SIM-SPOT-BTC-USDT ") and bid < ask


def test_place_and_cancel(served):
    out = _run(served, "place_and_cancel.py")
    placed = re.search(r"placed (\d+) BUY 0.001 @ \S+: NEW", out)
    assert placed, out
    assert f"'{placed[1]}'" in re.search(r"open orders: \[(.*)\]", out)[1]
    assert f"canceled {placed[1]}: CANCELED" in out


def test_smart_dry_run(served):
    out = _run(served, "smart_dry_run.py")
    legs = re.findall(r"plan: (SIM\d?) (\S+) up to", out)
    assert legs and abs(sum(float(q) for _, q in legs) - 0.05) < 1e-9
    routed = re.search(r"routed (sor-\S+): (FILLED|EXPIRED) (\S+) @", out)
    assert routed, out
    filled = [float(q) for q in re.findall(r"filled: SIM\d? (\S+) @", out)]
    assert abs(sum(filled) - float(routed[3])) < 1e-9


def test_otc_quote(served):
    out = _run(served, "otc_quote.py")
    assert f"account {served.otc_account}" in out
    quote = re.search(r"quote (\S+): 0.01 BTC for (\S+) USDT", out)
    trade = re.search(r"accepted: trade (\S+) at (\S+)", out)
    assert quote and trade, out
    assert f"convert {trade[1]}: 0.01 BTC at {trade[2]}" in out
