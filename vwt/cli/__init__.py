"""Command-line front ends, one module a command; only these modules print.

- ``vwt-build-vocab``: :mod:`vwt.cli.build_vocab`
- ``vwt-convert-vocab``: :mod:`vwt.cli.convert_vocab`
- ``vwt-viz``: :mod:`vwt.cli.viz`
- ``vwt-bench``: :mod:`vwt.cli.bench`

Each imports nothing heavy before its arguments are parsed, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse

__all__ = ["positive_int"]


def positive_int(text: str) -> int:
    """argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
