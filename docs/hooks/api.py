"""The API reference's two build steps (MkDocs hook and griffe extension; not part of the site).

- :class:`LazyExports` (a griffe extension, named in ``mkdocs.yml``): the stage packages build ``__all__`` at
  run time from their lazy-import table (``__all__ = sorted(_LAZY)``), which static analysis cannot read, so
  the extension takes ``__all__`` from the imported package. Importing a lazy package imports nothing heavy.
- :class:`SphinxRoles` (a griffe extension): docstrings here cross-reference Sphinx style (``:class:`X```);
  Markdown has no such roles, so they are shown as code (``X``).
- :func:`on_pre_build` (an MkDocs hook): every public name of the library (each module's ``__all__``, the
  lab in ``vwt.bench`` aside) must have a docstring. mkdocstrings renders a missing one as nothing, silently;
  this logs a warning per name, which ``mkdocs build --strict`` turns into a failed build.
"""

from __future__ import annotations

import ast
import importlib
import logging
import re
import sys
from pathlib import Path
from typing import Any

import griffe

UNCHECKED = ("vwt.bench",)  # the lab: not part of the library or its reference
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # document (and import) the checkout this file is in, not an installed copy
log = logging.getLogger("mkdocs.hooks.api")  # under "mkdocs", so --strict counts its warnings


class LazyExports(griffe.Extension):
    """A module with a ``_LAZY`` table exports its runtime ``__all__``."""

    def on_module_members(self, *, node: ast.AST | griffe.ObjectNode, mod: griffe.Module, **kwargs: Any) -> None:
        """Set ``mod.exports`` from the imported module when the module defines ``_LAZY``."""
        if "_LAZY" in mod.members:
            mod.exports = list(importlib.import_module(mod.path).__all__)


class SphinxRoles(griffe.Extension):
    """Docstrings' Sphinx roles (``:func:`~a.b` ``) become Markdown code (`` `a.b` ``)."""

    ROLE = re.compile(r":(?:mod|class|func|meth|attr|data|exc):`~?([^`]+)`")

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring in place."""
        if obj.docstring is not None:
            obj.docstring.value = self.ROLE.sub(r"`\1`", obj.docstring.value)


def undocumented(package: griffe.Module) -> list[str]:
    """Public names of ``package`` (its ``__all__``, dunders aside) that have no docstring or do not resolve."""
    missing = []
    for name in package.exports or []:
        name = str(name)
        if name.startswith("__"):
            continue
        try:
            obj = package[name]
            docstring = obj.docstring  # resolves an alias to the object it names
        except (KeyError, griffe.AliasResolutionError) as error:
            missing.append(f"{package.path}.{name} (not found: {error})")
            continue
        if docstring is None or not docstring.value.strip():
            missing.append(f"{package.path}.{name} (defined in {getattr(obj, 'target_path', obj.path)})")
    return missing


def modules(module: griffe.Module) -> list[griffe.Module]:
    """``module`` and all its submodules, depth first, without the unchecked ones."""
    if module.path.startswith(UNCHECKED):
        return []
    return [module, *(sub for child in module.modules.values() for sub in modules(child))]


def on_pre_build(config: Any) -> None:
    """MkDocs hook: warn (a failure under ``--strict``) for each public name without a docstring."""
    loader = griffe.GriffeLoader(search_paths=[str(ROOT)], extensions=griffe.load_extensions(LazyExports))
    package = loader.load("vwt")
    loader.resolve_aliases(external=False)
    for module in modules(package):
        for name in undocumented(module):
            log.warning("public name without a docstring: %s", name)
