"""``astra sim`` as a user runs it: a child process on loopback, stopped by Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import urllib.request

import msgspec


def test_astra_sim_prints_urls_serves_and_stops_on_ctrl_c():
    proc = subprocess.Popen(
        [sys.executable, "-m", "astra", "sim", "--port", "0", "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [proc.stdout.readline() for _ in range(5)]
        base = re.search(r"listening on (http://127\.0\.0\.1:\d+)", lines[0])[1]
        assert f"perp WebSocket  {base.replace('http', 'ws')}/fstream" in "".join(lines)
        with urllib.request.urlopen(f"{base}/api/v1/ping", timeout=5) as resp:
            assert resp.status == 200 and resp.read() == b"{}"
        with urllib.request.urlopen(f"{base}/fapi/v1/exchangeInfo", timeout=5) as resp:
            info = msgspec.json.decode(resp.read())
        assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert "shutting down" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
