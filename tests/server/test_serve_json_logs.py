"""``astra serve --log-format json``: one JSON object per log line, redacted like every log
line; ``log_format`` in the config is checked like the other settings. The served gateway's
``/metrics`` is scraped too: a real ``astra serve`` with its three simulated venues."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.serve_process import ServedAstra

from astra.cli import _parser
from astra.server.logformat import json_handler
from astra.server.serve import check_settings
from astra.trading.credentials import REDACTOR

TIMEOUT = 30
EXCHANGE_SECRET = "Jx4SECRETEXCHANGEVALUEwQ7pZ2"
FIELDS = {"time", "level", "logger", "message"}


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_lines_carry_the_fields_and_no_registered_secret():
    stream = io.StringIO()
    logger = logging.getLogger("astra.tests.jsonlogs")
    logger.propagate, logger.level = False, logging.INFO
    handler = json_handler(stream)
    logger.addHandler(handler)
    try:
        # As a request's credentials are registered while it uses them (server/private.py).
        with REDACTOR.redacting(EXCHANGE_SECRET):
            logger.warning("venue refused key %s", EXCHANGE_SECRET,
                           extra={"venue": "SIM", "secret": EXCHANGE_SECRET, "attempt": 2})
            try:
                raise RuntimeError(f"signature with {EXCHANGE_SECRET} rejected")
            except RuntimeError:
                logger.exception("order failed")
        logger.info("after the request: nothing registered, %s", "plain")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert EXCHANGE_SECRET not in text
    lines = _json_lines(text)
    assert len(lines) == 3 == len(text.splitlines())  # one object per line
    for line in lines:
        assert FIELDS <= set(line) and line["logger"] == "astra.tests.jsonlogs"
        assert line["time"].endswith("Z") and "T" in line["time"]
    first, failed, plain = lines
    assert first["level"] == "WARNING" and first["message"].startswith("venue refused key ")
    assert first["extra"] == {"venue": "SIM", "secret": REDACTOR.replacement, "attempt": 2}
    assert failed["level"] == "ERROR" and "RuntimeError: signature with" in failed["exception"]
    assert plain["message"] == "after the request: nothing registered, plain"
    assert "extra" not in plain and "exception" not in plain


def test_log_format_setting_and_flag_are_checked(capsys):
    assert check_settings({"log_format": "json"}) == {}
    with pytest.raises(ValueError, match="log_format must be one of text, json, got 'xml'"):
        check_settings({"log_format": "xml"})
    assert _parser().parse_args(["serve", "--log-format", "json"]).log_format == "json"
    assert _parser().parse_args(["serve"]).log_format is None  # the config's, else text
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(["serve", "--log-format", "xml"])
    assert exited.value.code == 2 and "--log-format" in capsys.readouterr().err


@pytest.fixture(scope="module")
def json_served(tmp_path_factory):
    """``astra serve --log-format json`` (the simulator child, three venues)."""
    server = ServedAstra(tmp_path_factory.mktemp("json-logs") / "data",
                         "--log-format", "json").start()
    try:
        yield server
    finally:
        server.stop()


async def _malformed(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET /balances?exchange=SIM HTTP/1.1\r\nHost: x\r\n"
                     f"x-astra-exchange-secret: {EXCHANGE_SECRET}\x7f\x02\r\n\r\n".encode())
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()


async def test_served_gateway_logs_json_lines_without_the_secret(json_served):
    port = int(json_served.base.rsplit(":", 1)[1])
    headers = {**json_served.headers(), "x-astra-exchange-key": "k" * 16,
               "x-astra-exchange-secret": EXCHANGE_SECRET}
    async with asyncio.timeout(TIMEOUT):
        assert (await _malformed(port)).split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
        async with aiohttp.ClientSession(json_served.base) as http, http.get(
                "/balances", params={"exchange": "SIM"}, headers=headers) as resp:
            assert resp.status in (401, 403) and EXCHANGE_SECRET not in await resp.text()
        for _ in range(400):  # the malformed request's line (INFO), once the child wrote it
            if "malformed request" in json_served.out:
                break
            await asyncio.sleep(0.05)
    lines = _json_lines(json_served.out)
    assert lines and all(FIELDS <= set(line) for line in lines)
    logged = [line for line in lines if line["message"].startswith("malformed request from")]
    assert logged and logged[0]["level"] == "INFO"
    assert logged[0]["logger"] == "astra.server.http"
    assert EXCHANGE_SECRET not in json_served.out
    # The banner stays plain text on stdout: only log records are JSON.
    assert "Astra gateway listening on" in json_served.out


async def test_served_metrics_show_every_venue_and_the_smart_book(json_served):
    markets = ["SIM-SPOT-BTC-USDT", "SIM2-SPOT-BTC-USDT", "SMART-SPOT-BTC-USDT"]
    async with aiohttp.ClientSession() as http, asyncio.timeout(TIMEOUT):
        for market in markets:
            async with http.get(f"{json_served.base}/orderbook", params={"market": market},
                                headers=json_served.headers()) as resp:
                assert resp.status == 200, await resp.text()
        async with http.get(f"{json_served.metrics_base}/metrics") as resp:
            text = await resp.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    synced = {(s.labels["venue"], s.labels["market"])
              for s in families["astra_book_state"].samples
              if s.labels["state"] == "synced" and s.value == 1}
    assert {("SIM", markets[0]), ("SIM2", markets[1]), ("SMART", markets[2])} <= synced
    assert families["astra_otc_events"].type == "counter"
    # The first key's OTC account was read at start (its balances printed), timed.
    db = {(s.labels["store"], s.labels["operation"]): s.value
          for s in families["astra_db_query_seconds"].samples
          if s.name == "astra_db_query_seconds_count"}
    assert db[("otc", "balances")] >= 1 and db[("api_keys", "read")] >= 1

