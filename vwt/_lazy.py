"""Attributes of a package imported on first use (PEP 562), so that importing the package is instant;
and deprecated module paths that forward to where their names moved."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes", "moved_module"]


def lazy_attributes(package: str, names: Mapping[str, str], namespace: dict[str, Any]
                    ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps each public name to its submodule.

    A name equal to its submodule's last part (``"methods": ".methods"``) is the submodule itself.
    A resolved name is stored in ``namespace`` (the package's globals), so later lookups are plain.
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = importlib.import_module(module, package)
        if module.rsplit(".", 1)[-1] != name:
            value = getattr(value, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__


def moved_module(old: str, new: str) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a deprecated module path ``old`` whose names now live in ``new``.

    Each name read through ``old`` is ``new``'s own object, with a :class:`DeprecationWarning` that
    points at the line that read it.
    """

    def __getattr__(name: str) -> Any:
        value = getattr(importlib.import_module(new), name)
        if not name.startswith("__"):
            warnings.warn(f"{old} is deprecated: import {name} from {new} (or from vwt)", DeprecationWarning,
                          stacklevel=2)
        return value

    def __dir__() -> list[str]:
        return dir(importlib.import_module(new))

    return __getattr__, __dir__
