"""Method specs: the compact text a user types (``tome:r=13``) to :class:`vwt.methods.Method` objects.

Grammar: ``NAME[:KEY=VALUE[,KEY=VALUE...]]``, e.g. ``base``, ``intra:keep=0.5``,
``vwt:threshold=0.1,vocab=vocabularies/clip-p16-k1000,batching=pack``. Values parse as ``int``, then
``float``, then stay strings. ``keep`` is a fraction of the patches for every method (``vwt:keep=1`` and
``intra:keep=1`` both keep every patch), ``max_tokens`` a count (``intra:max_tokens=64``).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from typing import Any

from ..methods.registry import METHODS, Method, load

__all__ = ["parse_method_spec", "parse_method_specs", "format_method_spec", "output_key", "unique_labels"]


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def parse_method_spec(spec: str) -> Method:
    """One spec, e.g. ``"vwt:threshold=0.2,batching=pack"``, to an unbound :class:`~vwt.methods.Method`.

    Raises:
        ValueError: an unknown method name, or an option that is not ``key=value``.
    """
    name, _, rest = spec.strip().partition(":")
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r} in spec {spec!r}; choose one of {', '.join(METHODS)}")
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"option {item!r} of spec {spec!r} is not key=value")
        if key.strip() in options:
            raise ValueError(f"option {key.strip()!r} given twice in spec {spec!r}")
        options[key.strip()] = _value(value.strip())
    return load(name, **options)


def parse_method_specs(specs: str | Iterable[str]) -> list[Method]:
    """Several specs, separated by whitespace (one string) or given as a list (each may hold several)."""
    texts = [specs] if isinstance(specs, str) else list(specs)
    return [parse_method_spec(part) for text in texts for part in shlex.split(text)]


def format_method_spec(method: Method) -> str:
    """The spec text that :func:`parse_method_spec` turns back into ``method`` (for the results file)."""
    if not method.options:
        return method.name
    return method.name + ":" + ",".join(f"{k}={v}" for k, v in method.options.items())


def output_key(method: Method) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Methods with equal keys give the same outputs (up to float rounding): they differ only in batching."""
    return method.name, tuple(sorted((k, repr(v)) for k, v in method.options.items() if k != "batching"))


def unique_labels(methods: Sequence[Method]) -> list[str]:
    """Each method's :attr:`~vwt.methods.Method.label`, with ``#2``, ``#3`` ... appended to repeats."""
    seen: dict[str, int] = {}
    labels = []
    for method in methods:
        label = method.label
        seen[label] = seen.get(label, 0) + 1
        labels.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return labels
