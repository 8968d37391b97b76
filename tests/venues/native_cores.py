"""The compiled book cores as test modules take them: imported, or the module skipped with
the reason where the core is not built, unless ``ASTRA_REQUIRE_NATIVE=1`` (CI) turns that skip
into a failure (a build that silently fell back to Python must not pass)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

__all__ = ["REQUIRED", "require_native"]

REQUIRED = os.environ.get("ASTRA_REQUIRE_NATIVE") == "1"


def require_native(name: str) -> ModuleType:
    """The compiled module ``name``; call it at a test module's top level."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # pragma: no cover - depends on the build
        if REQUIRED:
            raise AssertionError(f"ASTRA_REQUIRE_NATIVE=1 but {name} is not built: {exc}") from exc
        pytest.skip(f"{name} is not built here ({exc})", allow_module_level=True)
