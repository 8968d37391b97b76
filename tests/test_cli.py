"""``astra sim`` as a user runs it: a child process on loopback, stopped by Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import msgspec
import pytest


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


def test_astra_sim_runs_several_venues_each_on_its_own_port():
    proc = subprocess.Popen(
        [sys.executable, "-m", "astra", "sim", "--venues", "3", "--port", "0", "--seed", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        while not any("new account" in line for line in lines):
            line = proc.stdout.readline()
            assert line, f"astra sim exited early: {''.join(lines)} {proc.stderr.read()}"
            lines.append(line)
        out = "".join(lines)
        venues = re.findall(r"venue (SIM\d*) \(seed 2\) listening on (http://[\d.:]+)", out)
        assert [code for code, _ in venues] == ["SIM", "SIM2", "SIM3"]
        assert len({url for _, url in venues}) == 3
        takers = set()
        for code, url in venues:
            for root in ("api", "fapi"):
                with urllib.request.urlopen(f"{url}/{root}/v1/depth?symbol=BTCUSDT",
                                            timeout=5) as resp:
                    book = msgspec.json.decode(resp.read())
                assert book["bids"] and book["asks"], (code, root)
                assert float(book["bids"][0][0]) < float(book["asks"][0][0])
            with urllib.request.urlopen(f"{url}/api/v1/exchangeInfo", timeout=5) as resp:
                info = msgspec.json.decode(resp.read())
            takers.add(info["symbols"][0]["takerCommissionRate"])
        assert len(takers) == 3  # three venues, three fee schedules
        created = subprocess.run(  # each venue has its own accounts: one on SIM2
            [sys.executable, "-m", "astra", "sim", "account", "create", "--url", venues[1][1],
             "--deposit", "USDT=5", "--json"],
            capture_output=True, text=True, timeout=30,
        )
        assert created.returncode == 0, created.stderr
        assert msgspec.json.decode(created.stdout)["deposit"] == {"USDT": "5"}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


@pytest.mark.parametrize("count", ["0", "17", "x"])
def test_astra_sim_refuses_a_venue_count_out_of_range(count):
    proc = subprocess.run(
        [sys.executable, "-m", "astra", "sim", "--venues", count, "--port", "0"],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    assert f"the simulator runs 1 to 16 venues, not '{count}'" in proc.stderr


@pytest.mark.parametrize(("args", "status", "said"), [
    (["--port", "70000"], 2, "argument --port: a port is 0 to 65535, not '70000'"),
    (["--venues", "3", "--port", "65534"], 1,
     "astra sim: 3 venue(s) from port 65534 need ports 65534 to 65536: the last port is 65535"),
])
def test_astra_sim_refuses_ports_past_the_last(args, status, said):
    # Not a port the operating system wraps around to (70000 would listen on 4464).
    proc = subprocess.run([sys.executable, "-m", "astra", "sim", *args],
                          capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout) == (status, "")
    assert said in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("flag", ["--port", "--metrics-port"])
def test_astra_serve_refuses_a_port_past_the_last(tmp_path, flag):
    env = {**os.environ, "ASTRA_DATA_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "astra", "serve", flag, "70000"],
                          capture_output=True, text=True, timeout=30, env=env)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert f"argument {flag}: a port is 0 to 65535, not '70000'" in proc.stderr


def test_astra_sim_with_a_venue_port_in_use_says_which_and_exits():
    import socket

    for _ in range(20):  # a free P whose P + 1 this test holds: SIM2's port is taken
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1] - 1
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                break
            except OSError:
                held.close()
    else:
        pytest.skip("no free port below a free ephemeral port was found")
    with held:
        proc = subprocess.run(
            [sys.executable, "-m", "astra", "sim", "--venues", "3", "--port", str(port)],
            capture_output=True, text=True, timeout=30,
        )
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr.startswith(f"astra sim: venue SIM2 cannot listen on 127.0.0.1:{port + 1}")
    assert "address already in use" in proc.stderr and "Traceback" not in proc.stderr


def test_astra_sim_refuses_a_state_file_it_could_never_save(tmp_path):
    # Its folder does not exist: found at start, not in a traceback at Ctrl-C.
    path = tmp_path / "missing" / "sim.json"
    proc = subprocess.run(
        [sys.executable, "-m", "astra", "sim", "--venues", "2", "--port", "0", "--data",
         str(path)], capture_output=True, text=True, timeout=30,
    )
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (f"astra sim: venue SIM: cannot write its trading state to {path} "
                           "(No such file or directory)\n")


def _serve(tmp_path, env_extra: dict[str, str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "ASTRA_API_KEY"}
    env.update(ASTRA_DATA_DIR=str(tmp_path), **env_extra)
    return subprocess.Popen(
        [sys.executable, "-m", "astra", "serve", "--port", "0", "--metrics-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _read_until_listening(proc: subprocess.Popen) -> str:
    lines = []  # up to the "try: curl" line, printed once every simulator venue is listed
    while not any("try: curl" in line for line in lines):
        line = proc.stdout.readline()
        assert line, f"astra serve exited early: {''.join(lines)} {proc.stderr.read()}"
        lines.append(line)
    return "".join(lines)


def _get(url: str, key: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"x-astra-api-key": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:
            return resp.status, msgspec.json.decode(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, msgspec.json.decode(err.read())


def test_astra_serve_prints_a_key_once_serves_sim_and_stops_its_child(tmp_path):
    proc = _serve(tmp_path, {})
    try:
        out = _read_until_listening(proc)
        key = re.search(r"Bearer (\S+)", out)[1]
        base = re.search(r"listening on (http://\S+)", out)[1]
        sim = re.search(r"running at (http://\S+)", out)[1]
        # No configuration: three simulated venues, SIM, SIM2 and SIM3, one child process.
        children = re.findall(r"simulator \((SIM\d*)\) running at (http://\S+) \(pid (\d+)\)", out)
        assert [c for c, _, _ in children] == ["SIM", "SIM2", "SIM3"]
        assert len({u for _, u, _ in children}) == 3 and len({p for _, _, p in children}) == 1
        assert "venues: SIM, SIM2, SIM3" in out
        for code in ("SIM", "SIM2", "SIM3"):
            status, book = _get(f"{base}/orderbook?market={code}-SPOT-BTC-USDT", key)
            assert status == 200 and book["bids"] and book["asks"]
        assert _get(f"{base}/orderbook?market=SIM-SPOT-BTC-USDT", "x" * 20 + ".y" * 20)[0] == 401
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        with pytest.raises(urllib.error.URLError):  # the simulator child is gone too
            urllib.request.urlopen(f"{sim}/api/v1/ping", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    # A second start on the same data directory keeps the key and prints none.
    proc = _serve(tmp_path, {})
    try:
        out = _read_until_listening(proc)
        assert "Bearer" not in out.split("listening on")[0]
        base = re.search(r"listening on (http://\S+)", out)[1]
        assert _get(f"{base}/markets?exchange=SIM", key)[0] == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)


def test_astra_serve_takes_its_key_from_the_environment(tmp_path):
    key = "kadjfasfl.KjUBAhdIafaDFSCsajfaIowSADxkaw"  # the seed's sample key
    proc = _serve(tmp_path, {"ASTRA_API_KEY": key})
    try:
        out = _read_until_listening(proc)
        assert key not in out and "registered" in out
        base = re.search(r"listening on (http://\S+)", out)[1]
        status, markets = _get(f"{base}/markets?exchange=SIM", key)
        assert status == 200 and len(markets) == 6
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


def test_astra_serve_paper_trades_on_sim_with_only_an_astra_key(tmp_path):
    key = "kadjfasfl.KjUBAhdIafaDFSCsajfaIowSADxkaw"
    proc = _serve(tmp_path, {"ASTRA_API_KEY": key})
    try:
        out = _read_until_listening(proc)
        base = re.search(r"listening on (http://\S+)", out)[1]
        assert "an account on each of SIM, SIM2, SIM3" in out
        # A paper account on every simulated venue: orders on SIM and on SIM2.
        for code in ("SIM", "SIM2"):
            body = msgspec.json.encode(
                {"market": f"{code}-SPOT-BTC-USDT", "side": "BUY", "type": "MARKET",
                 "quantity": 0.01}
            )
            request = urllib.request.Request(
                f"{base}/orders",
                data=body,
                method="POST",
                headers={"x-astra-api-key": f"Bearer {key}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=20) as resp:
                order = msgspec.json.decode(resp.read())
            assert order["status"] == "FILLED" and order["filledQuantity"] == 0.01
            assert order["market"] == f"{code}-SPOT-BTC-USDT"
            status, balances = _get(f"{base}/balances?exchange={code}", key)
            by_asset = {b["asset"]: b["total"] for b in balances}
            assert status == 200 and 2.0 < by_asset["BTC"] < 2.01 and by_asset["USDT"] < 100000
        # SIM3's account is funded and untouched: each venue keeps its own ledger.
        status, balances = _get(f"{base}/balances?exchange=SIM3", key)
        by_asset = {b["asset"]: b["total"] for b in balances}
        assert status == 200 and by_asset["BTC"] == 2.0 and by_asset["USDT"] == 100000
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


def _gone(pid: int) -> bool:
    """No such process, or a zombie (ended; not yet reaped by whoever adopted it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_astra_serve_killed_with_sigkill_takes_its_simulator_child_along(tmp_path):
    proc = _serve(tmp_path, {})
    child = None
    try:
        out = _read_until_listening(proc)
        child = int(re.search(r"running at \S+ \(pid (\d+)\)", out)[1])
        assert not _gone(child)
        proc.send_signal(signal.SIGKILL)  # no shutdown code runs in the gateway
        proc.wait(timeout=10)
        deadline = time.monotonic() + 30  # a bound on the wait, not a speed requirement
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(child), "the simulator outlived the gateway"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        if child is not None and not _gone(child):
            os.kill(child, signal.SIGKILL)


def test_astra_sim_for_a_parent_exits_when_its_stdin_closes():
    # The portable half of the above: the parent holds the child's stdin; EOF means it is gone.
    proc = subprocess.Popen(
        [sys.executable, "-m", "astra", "sim", "--port", "0", "--exit-with-parent"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening on" in proc.stdout.readline()
        proc.stdin.close()
        assert proc.wait(timeout=20) == 0
        assert "shutting down" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def test_astra_sim_for_a_parent_that_is_already_gone_exits_at_once():
    # The parent's pid comes on the command line: a child whose parent is not (or no longer)
    # that process exits before serving, even with its stdin still open.
    proc = subprocess.Popen(
        [sys.executable, "-m", "astra", "sim", "--port", "0", "--exit-with-parent", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.wait(timeout=20) == 1
        assert "listening on" not in proc.stdout.read()
        assert "parent process 1 is gone" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        proc.stdin.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG, /proc")
def test_astra_sim_asks_the_kernel_to_end_it_with_its_parent():
    # The child sets PR_SET_PDEATHSIG itself. Its stdin is a pipe this test holds open, so
    # only the kernel's signal can end it when its parent (a plain Python process) is killed.
    parent_code = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-m', 'astra', 'sim', '--port', '0',\n"
        "                          '--exit-with-parent', str(os.getpid())])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    read_end, write_end = os.pipe()
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdin=read_end, stdout=subprocess.PIPE, text=True
    )
    os.close(read_end)
    child = None
    try:
        child = int(parent.stdout.readline())
        assert "listening on" in parent.stdout.readline()  # the child's first line
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 30  # a bound on the wait, not a speed requirement
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(child), "the simulator outlived its parent"
    finally:
        os.close(write_end)
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=5)
        if child is not None and not _gone(child):
            os.kill(child, signal.SIGKILL)
