"""Which compiled book cores run: each venue module asks ``load_native`` for its extension.

Invariant: a compiled module is used only when it imports and ``ASTRA_NATIVE`` is not ``0``;
otherwise the caller uses its pure-Python implementation, which defines the behaviour (the
compiled one is tested against it value for value). Every choice is recorded, so
``implementations()`` tells an operator (``astra serve`` logs it) and a test which ran.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["book_cores", "implementations", "load_native", "native_enabled"]

_chosen: dict[str, str] = {}  # module name -> "c" | "python (why)"


def native_enabled() -> bool:
    """False when the operator turned compiled code off (``ASTRA_NATIVE=0``)."""
    return os.environ.get("ASTRA_NATIVE", "1") != "0"


def load_native(name: str) -> ModuleType | None:
    """The compiled module ``name``, or None (not built here, or turned off)."""
    if not native_enabled():
        _chosen[name] = "python (ASTRA_NATIVE=0)"
        return None
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        _chosen[name] = f"python (not built: {exc})"
        return None
    _chosen[name] = "c"
    return module


def implementations() -> dict[str, str]:
    """Each compiled module asked for so far and what runs in its place."""
    return dict(_chosen)


def book_cores() -> str:
    """One line for an operator: which cores loaded so far are compiled, which are not and why."""
    chosen = {name.removeprefix("astra.venues."): how for name, how in implementations().items()}
    compiled = [name for name, how in sorted(chosen.items()) if how == "c"]
    fallback = [f"{name} {how}" for name, how in sorted(chosen.items()) if how != "c"]
    parts = [f"C ({', '.join(compiled)})"] if compiled else []
    return "; ".join(parts + fallback) or "none loaded"
