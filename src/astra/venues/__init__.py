"""Venue packages and the registry that builds them from configuration.

``build_venue(code, options)`` turns a config section (``[venues.OKX]`` with URL overrides)
into a Venue; each package is imported only when its venue is configured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from importlib import import_module

from astra.core import SIM_CODES

from .base import Venue

__all__ = ["VENUE_CODES", "build_venue"]


def _aster(code: str, options: dict) -> Venue:
    from .aster import AsterUrls, AsterVenue

    if code in SIM_CODES:
        url = options.pop("url", None)
        if not url:
            raise ValueError(f"venue {code} needs a url (or let astra serve start one)")
        _no_more(code, options)
        return AsterVenue(code, AsterUrls.for_simulator(url))
    return AsterVenue("ASTER", _urls(code, AsterUrls, options))


def _urls(code: str, urls_class: type, options: dict):
    """The venue's URL dataclass from config overrides, refusing unknown keys by name."""
    known = {f.name for f in dataclasses.fields(urls_class)}
    _no_more(code, {k: v for k, v in options.items() if k not in known})
    return urls_class(**options)


def _no_more(code: str, options: dict) -> None:
    if options:
        raise ValueError(f"venue {code}: unknown options {sorted(options)}")


# code -> factory(code, options). Packages register by module path so nothing is imported
# until that venue is configured.
_FACTORIES: dict[str, Callable[[str, dict], Venue] | str] = {
    **dict.fromkeys(SIM_CODES, _aster),
    "ASTER": _aster,
    "HUOBI": "astra.venues.htx",
    "OKX": "astra.venues.okx",
    "COINBASE": "astra.venues.coinbase",
    "BINANCE": "astra.venues.binance",
    "KRAKEN": "astra.venues.kraken",
    "KUCOIN": "astra.venues.kucoin",
}

VENUE_CODES = tuple(_FACTORIES)


def build_venue(code: str, options: dict | None = None) -> Venue:
    code = code.upper()
    factory = _FACTORIES.get(code)
    if factory is None:
        raise ValueError(
            f"venue {code} is not available in this version (available: {', '.join(VENUE_CODES)})"
        )
    if isinstance(factory, str):  # the package's from_config(code, options)
        factory = import_module(factory).from_config
    return factory(code, dict(options or {}))
