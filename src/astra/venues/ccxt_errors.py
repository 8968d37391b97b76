"""What every venue's private ccxt client does with a server error ccxt cannot classify.

A 5xx answer whose body ccxt maps to no specific error becomes a plain ``ExchangeError``,
which reads as a refusal. It is not one: the venue may have executed the request (an order
may exist). ``ServerErrorsUnavailable`` makes it ``ExchangeNotAvailable`` instead, so an
order sent that way is reported as of unknown status and reconciled, never as rejected.
Mixed in first, before the ccxt class, by every ``*Private`` client.
"""

from __future__ import annotations

from typing import Any

from ccxt.base.errors import ExchangeError, ExchangeNotAvailable

__all__ = ["ServerErrorsUnavailable"]


class ServerErrorsUnavailable:
    id: str

    def handle_errors(self, code: int, reason: str, url: str, method: str, headers: Any,
                      body: Any, response: Any, *request: Any) -> Any:
        try:
            return super().handle_errors(  # type: ignore[misc]
                code, reason, url, method, headers, body, response, *request)
        except ExchangeError as exc:
            if code >= 500 and type(exc) is ExchangeError:
                raise ExchangeNotAvailable(f"{self.id} {code} {reason} {body}") from None
            raise
