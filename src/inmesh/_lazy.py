"""Lazy re-exports for packages: names are imported on first use.

Keeps ``import inmesh`` (and its subpackages) free of work: a package lists
which module holds each public name and gets a module ``__getattr__`` and
``__dir__`` that import it when asked, then cache it in the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, namespace: dict[str, Any], modules: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``.

    ``modules`` maps a public name to the module defining it: relative to the
    package (``"spiffe"``) or absolute (``"inmesh.config.store"``).
    """

    def getattr_(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = module if "." in module else f"{package}.{module}"
        value = getattr(importlib.import_module(target), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return getattr_, dir_
