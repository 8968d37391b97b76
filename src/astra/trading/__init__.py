"""Astra trading: order management, idempotent client ids, persistence, exchange credentials."""

__all__ = []
