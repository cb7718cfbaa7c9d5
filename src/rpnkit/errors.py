"""Exception types raised by rpnkit.

Every error that stems from a bad argument or configuration derives from
:class:`ConfigurationError`, itself a :class:`ValueError`, so callers can
catch one type. Unknown registry names raise :class:`UnknownNameError`,
which is both a ``ValueError`` and a ``KeyError``. A component without a closed-form
(sympy) expression raises :class:`NoClosedFormError` during symbolic export.
"""

from __future__ import annotations

import datetime
import difflib
import enum
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "ConfigurationError",
    "UnknownNameError",
    "NoClosedFormError",
    "closest",
    "did_you_mean",
    "short",
    "clip",
]


class ConfigurationError(ValueError):
    """A value given to rpnkit is invalid; the message says which and why."""


class UnknownNameError(ConfigurationError, KeyError):
    """A name that is not in a registry (component, optimizer, dataset ...)."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the text in quotes
        return str(self.args[0]) if self.args else ""


class NoClosedFormError(ConfigurationError):
    """A component of the model has no closed-form symbolic (sympy) expression."""


#: names longer than this get no "did you mean" suggestion (difflib is quadratic-ish)
_SUGGEST_MAX_LEN = 100


def closest(name: str, choices: Iterable[str]) -> str | None:
    """Return the closest valid spelling of ``name`` among ``choices`` (or None)."""
    name = name if isinstance(name, str) else short(name, _SUGGEST_MAX_LEN + 1)
    if len(name) > _SUGGEST_MAX_LEN:
        return None
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Text fragment ``" (did you mean 'x'?)"`` or an empty string."""
    best = closest(name, choices)
    return f" (did you mean {best!r}?)" if best else ""


# ----------------------------------------------------------------------------- bounded reprs
class _Full(Exception):
    """Raised by :func:`short` once the output is long enough."""


_MAX_LEVEL = 4  # containers nested deeper than this are shown as [...] / {...}
_BIG_INT_BITS = 256  # ints wider than this are described, not written out


def short(value: Any, limit: int = 80) -> str:
    """A repr of an untrusted ``value`` that is at most ``limit`` characters long.

    Unlike :func:`repr` it never walks more than a bounded part of a value: at most
    about ``limit`` items of a huge container, at most ``_MAX_LEVEL`` levels of a deeply
    nested or self-referential one, the first ``limit`` characters of a long string, and
    ints too long to print are described by their size. Anything cut is marked ``...``.
    """
    limit = max(int(limit), 8)
    parts: list[str] = []
    used = [0]

    def put(text: str) -> None:
        parts.append(text)
        used[0] += len(text)
        if used[0] > limit:
            raise _Full

    def seq(values: Iterable[Any], opened: str, closed: str, level: int, stack: frozenset[int],
            pairs: bool = False) -> None:
        put(opened)
        for i, item in enumerate(values):
            if i:
                put(", ")
            if pairs:
                walk(item[0], level, stack)
                put(": ")
                walk(item[1], level, stack)
            else:
                walk(item, level, stack)
        put(closed)

    def walk(v: Any, level: int, stack: frozenset[int]) -> None:
        if v is None or isinstance(v, (bool, float, complex, enum.Enum)):
            put(repr(v))
        elif isinstance(v, int):
            if v.bit_length() > _BIG_INT_BITS:
                digits = int(v.bit_length() * math.log10(2)) + 1
                put(f"<{'negative ' if v < 0 else ''}int of about {digits:,} digits>")
            else:
                put(repr(v))
        elif isinstance(v, (str, bytes, bytearray)):
            put(repr(v[: limit + 1]))
        elif isinstance(v, Mapping):
            if id(v) in stack or level >= _MAX_LEVEL:
                put("{...}")
            else:
                seq(iter(v.items()), "{", "}", level + 1, stack | {id(v)}, pairs=True)
        elif isinstance(v, list):
            if id(v) in stack or level >= _MAX_LEVEL:
                put("[...]")
            else:
                seq(v, "[", "]", level + 1, stack | {id(v)})
        elif isinstance(v, tuple):
            if id(v) in stack or level >= _MAX_LEVEL:
                put("(...)")
            else:
                seq(v, "(", ",)" if len(v) == 1 else ")", level + 1, stack | {id(v)})
        elif isinstance(v, (set, frozenset)):
            if not v:
                put(f"{type(v).__name__}()")
            elif level >= _MAX_LEVEL:
                put("{...}")
            else:
                seq(v, "{", "}", level + 1, stack)
        elif isinstance(v, (numbers.Number, datetime.date, datetime.time, datetime.timedelta,
                            os.PathLike)):
            put(repr(v)[: limit + 1])
        else:  # an arbitrary object: its repr might be huge or slow; show the type only
            put(f"<{type(v).__name__}>")

    try:
        walk(value, 0, frozenset())
    except _Full:
        text = "".join(parts)
        return text[: limit - 3] + "..."
    except Exception:  # a broken __repr__ / __iter__ somewhere inside
        return f"<{type(value).__name__}>"
    return "".join(parts)


def clip(text: Any, limit: int = 200) -> str:
    """``str(text)`` on one line, cut to at most ``limit`` characters (``...`` marks a cut)."""
    text = text if isinstance(text, str) else str(text)
    text = " ".join(text[: limit * 4 + 16].split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
