"""One real ``python -m astra serve`` child, as a new user starts it (no configuration: the
gateway, its simulator child with SIM/SIM2/SIM3, paper accounts, SMART and the OTC desk), on a
temporary data directory and spare loopback ports, for the terminal's and the SDK's tests.

``ServedAstra.start()`` blocks until the OTC desk's line (the last of the start) or raises with
what it printed; ``stop()`` sends SIGINT (as Ctrl-C) and, on any failure, kills the whole process
group (serve and its simulator) by its id. Synchronous on purpose: module-scoped fixtures and the
Playwright sync API use it outside any event loop.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["LISTENING", "START_BOUND", "TOKEN", "ServedAstra", "serve_env"]

TOKEN = re.compile(r"x-astra-api-key: Bearer (\S+)")
LISTENING = re.compile(r"Astra gateway listening on (http://\S+)")
_METRICS = re.compile(r"metrics on port (\d+)")
_OTC = re.compile(r"OTC desk: account ([0-9a-f-]{36})")
START_BOUND = 90.0  # seconds: two Python processes and three venues on a busy machine


def serve_env() -> dict[str, str]:
    """The environment of an ``astra serve`` child: no inherited data dir, database or keys
    (the first start makes a key and prints it), this checkout's ``src`` on the path."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("ASTRA_DATABASE_URL", "ASTRA_DATA_DIR", "ASTRA_MASTER_KEY",
                        "ASTRA_OTC_SIGNING_KEY")}
    env["ASTRA_API_KEY"] = ""  # the first start creates a key and prints it
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + \
        env.get("PYTHONPATH", "")
    return env


class ServedAstra:
    """``astra serve`` on ``data_dir``: ``base`` (http://127.0.0.1:PORT), ``token`` (the first
    key, full access), ``otc_account`` (its funded OTC account), ``out`` (what it printed)."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.out = ""
        self._reader: threading.Thread | None = None

    @property
    def base(self) -> str:
        return LISTENING.search(self.out)[1]

    @property
    def ws_base(self) -> str:
        return self.base.replace("http://", "ws://", 1)

    @property
    def metrics_base(self) -> str:
        return f"http://127.0.0.1:{_METRICS.search(self.out)[1]}"

    @property
    def token(self) -> str:
        return TOKEN.search(self.out)[1]

    @property
    def otc_account(self) -> str:
        return _OTC.search(self.out)[1]

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"x-astra-api-key": f"Bearer {token or self.token}"}

    def start(self) -> ServedAstra:
        """Start it (again, after ``stop()``: on the same data directory); what it prints from
        now on replaces ``out``."""
        self.out = ""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "astra", "serve", "--data-dir", str(self.data_dir),
             "--port", "0", "--metrics-port", "0", *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=serve_env(),
            start_new_session=True)  # its own process group: the simulator child is in it
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_BOUND
        while _OTC.search(self.out) is None:
            if self.proc.poll() is not None and not self._reader.is_alive():
                self.kill()
                raise AssertionError(f"astra serve exited: {self.out[-2000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"astra serve did not start in {START_BOUND:.0f} s: "
                                     f"{self.out[-2000:]}")
            time.sleep(0.05)
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:  # until EOF: the output never fills the pipe
            self.out += line

    def stop(self) -> int | None:
        """SIGINT by its pid, as Ctrl-C; its exit status (None when it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            return None
        finally:
            self.kill()
            if self._reader is not None:
                self._reader.join(5)

    def kill(self) -> None:
        """The whole process group (serve and its simulator), by its id; only while serve is
        not reaped, so that the group id is still its own."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
