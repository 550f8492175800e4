"""Command-line front ends, one module a command; only these modules print.

- ``vwt-build-vocab``: :mod:`vwt.cli.build_vocab`
- ``vwt-convert-vocab``: :mod:`vwt.cli.convert_vocab`
- ``vwt-viz``: :mod:`vwt.cli.viz`
- ``vwt-bench``: :mod:`vwt.cli.bench`

Each imports nothing heavy before its arguments are parsed, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging

__all__ = ["positive_int", "seed_int", "configure_logging"]

# Libraries that put their own handler on their logger and also let records reach the root logger.
_SELF_HANDLING_LOGGERS = ("huggingface_hub",)


def positive_int(text: str) -> int:
    """argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def seed_int(text: str) -> int:
    """argparse type: a seed in [0, 2**32) (what numpy and scikit-learn accept)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"a seed must be in [0, 2**32), got {text}")
    return value


def configure_logging(verbose: bool, level: int = logging.INFO, fmt: str = "%(levelname)s %(message)s") -> None:
    """One handler for everything, on the root logger: each record printed once, in one format.

    huggingface_hub's loggers carry a handler of their own and also propagate to the root, so its
    warnings (download retries) would otherwise print twice.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else level, format=fmt)
    for name in _SELF_HANDLING_LOGGERS:
        with contextlib.suppress(ImportError):  # import now: its handler is added once, at import
            importlib.import_module(f"{name}.utils.logging")
        library = logging.getLogger(name)
        for handler in list(library.handlers):
            library.removeHandler(handler)
        library.propagate = True
