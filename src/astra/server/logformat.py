"""``astra serve --log-format json``: one JSON object per log line, for log shippers.

Each line: ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``, ``message``, and,
when present, ``exception`` (the formatted traceback), ``stack`` and ``extra`` (the record's
``extra=`` fields, as JSON or their ``str``). Plain text (Python's default handling) stays
the default: ``text`` installs nothing.

Invariants:
- Every line goes through the same redaction as any log line (``astra.trading.credentials.
  REDACTOR``, exchange secrets registered while a request uses them; the WebSocket/access
  scrubbers of ``protocol.py`` are logger filters and apply before any handler): the handler
  carries the redactor as a filter (which also scrubs ``extra`` values), and the finished line
  is scrubbed once more, so a value never leaves through a field the filter does not know.
- JSON mode logs from INFO up (the feed state changes, sessions closed, malformed requests),
  except the per-request access log (``aiohttp.access``), which stays off as in text mode:
  one line per request would be a cost on the hot path.
- Installing is idempotent: one JSON handler on the root logger at most.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

from astra.trading.credentials import REDACTOR

__all__ = ["LOG_FORMATS", "JsonFormatter", "install_log_format", "json_handler"]

LOG_FORMATS = ("text", "json")
# A LogRecord's own attributes: whatever else a record holds came from ``extra=``.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        extra = {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS}
        if extra:
            line["extra"] = extra
        return REDACTOR.scrub(json.dumps(line, default=str, ensure_ascii=False))


class _JsonHandler(logging.StreamHandler):
    """The root logger's JSON handler (a class of its own: installing twice is a no-op)."""


def json_handler(stream: TextIO) -> logging.Handler:
    """A handler writing JSON lines to ``stream``, redacting as every log line is."""
    handler = _JsonHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(REDACTOR)  # scrubs messages, tracebacks and extra fields
    return handler


def install_log_format(log_format: str, stream: TextIO | None = None) -> None:
    """Set up logging for ``log_format`` (``LOG_FORMATS``): ``json`` puts a JSON handler on
    the root logger (stderr by default), ``text`` leaves Python's default alone."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, "
                         f"got {log_format!r}")
    if log_format == "text":
        return
    root = logging.getLogger()
    if any(isinstance(h, _JsonHandler) for h in root.handlers):
        return
    root.addHandler(json_handler(stream if stream is not None else sys.stderr))
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    access = logging.getLogger("aiohttp.access")
    if access.level == logging.NOTSET:
        access.setLevel(logging.WARNING)  # off, as in text mode: not a line per request
