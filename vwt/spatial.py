"""Deprecated path: use :mod:`vwt.tokenize.spatial` (or the names in :mod:`vwt`)."""

from ._lazy import moved_module

__getattr__, __dir__ = moved_module(__name__, "vwt.tokenize.spatial")
