"""Astra: a unified API for crypto trading, with a built-in exchange simulator."""

__version__ = "0.1.0"
