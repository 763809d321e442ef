"""Lazy package exports (PEP 562): public names resolve to their module on first access.

Packages list ``name -> module`` and set ``__getattr__ = lazy_getattr(__name__, _EXPORTS)``, so importing
a package never imports torch, transformers, datasets or ray until a name that needs them is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` and returns its ``name``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
