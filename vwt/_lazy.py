"""Attributes of a package imported on first use (PEP 562), so that importing the package is instant;
and deprecated module paths that forward to where their names moved."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes", "moved_module", "renamed_attributes"]


def lazy_attributes(package: str, names: Mapping[str, str], namespace: dict[str, Any],
                    renamed: Mapping[str, str] | None = None
                    ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps each public name to its submodule.

    A name equal to its submodule's last part (``"methods": ".methods"``) is the submodule itself.
    A resolved name is stored in ``namespace`` (the package's globals), so later lookups are plain.
    ``renamed`` maps old names to public ones: reading an old name warns (:class:`DeprecationWarning`)
    every time and returns the new name's object.
    """

    def __getattr__(name: str) -> Any:
        if renamed and name in renamed:
            warnings.warn(f"{package}.{name} is deprecated: use {renamed[name]}", DeprecationWarning, stacklevel=2)
            return __getattr__(renamed[name])
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


def renamed_attributes(module: str, renamed: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """``__getattr__`` for ``module`` whose names in ``renamed`` (old -> new) were renamed.

    Reading an old name returns the new name's object from ``namespace`` (the module's globals), with a
    :class:`DeprecationWarning` that points at the line that read it.
    """

    def __getattr__(name: str) -> Any:
        new = renamed.get(name)
        if new is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(f"{module}.{name} is deprecated: use {new}", DeprecationWarning, stacklevel=2)
        return namespace[new]

    return __getattr__
